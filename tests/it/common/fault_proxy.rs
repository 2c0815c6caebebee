//! A fault-injecting HTTP proxy of the project's own, put in front of a real peer (moto, Prism):
//! it forwards requests unchanged, or answers them with AWS's throttling (429 + Retry-After,
//! `ThrottlingException`) or outage (503 `ServiceUnavailableException`), or closes connections
//! without an answer (resets) or never answers (timeouts) - for every request or only those of
//! one [`Operation`], until the test lifts the fault - and records when each request arrived so
//! a test can measure the rate the gateway really sent, and which pods' workloads (`bg-<pod
//! UID>`) the requests named, so a test knows which pods the gateway tried on the cloud. ARM's
//! own error answers come from the ACI emulator's faults (ACI's real codes and bodies), not from
//! here.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the peer.
    Pass,
    /// Answer 429 with `Retry-After: 1` and AWS's throttling body (AWS only).
    Throttle,
    /// Answer 503 `ServiceUnavailableException` (AWS only).
    Outage,
    /// Close the connection without answering.
    Reset,
    /// Never answer (a black-holed region): the client's timeout has to fire.
    Hang,
}

/// Whose error bodies the proxy answers with, and how it names a request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// AWS JSON 1.1: the operation is `x-amz-target`'s last part (`RunTask`).
    Aws,
    /// Azure Resource Manager: the operation is the HTTP method (`PUT`, `GET`, `DELETE`).
    Arm,
}

/// One step of an adapter, as the requests it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `RunTask`, `RegisterTaskDefinition`; ARM `PUT` of a group.
    Create,
    /// `DescribeTasks`; ARM `GET` of a group and the lists (a status read lists, then gets).
    Status,
    /// `ListTasks`; ARM's lists of groups.
    List,
    /// `StopTask`; ARM `DELETE` of a group.
    Delete,
}

impl Operation {
    /// Whether a request (its AWS operation, or its ARM method and path) belongs to this step.
    fn covers(self, flavor: Flavor, op: &str, path: &str) -> bool {
        let list = path.trim_end_matches('/').ends_with("/containerGroups");
        let group = path.contains("/containerGroups/")
            && path.trim_end_matches('/').rsplit('/').nth(1) == Some("containerGroups");
        match (self, flavor) {
            (Operation::Create, Flavor::Aws) => matches!(op, "RunTask" | "RegisterTaskDefinition"),
            (Operation::Status, Flavor::Aws) => op == "DescribeTasks",
            (Operation::List, Flavor::Aws) => op == "ListTasks",
            (Operation::Delete, Flavor::Aws) => op == "StopTask",
            (Operation::Create, Flavor::Arm) => op == "PUT" && group,
            (Operation::Status, Flavor::Arm) => op == "GET" && (group || list),
            (Operation::List, Flavor::Arm) => op == "GET" && list,
            (Operation::Delete, Flavor::Arm) => op == "DELETE" && group,
        }
    }
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// The only operation `mode` applies to (the others pass); `None`: every request.
    scope: Option<Operation>,
    /// When each request arrived, with its AWS operation (`x-amz-target`'s last part).
    arrivals: Vec<(Instant, String)>,
    /// The pod UIDs whose workload id (`bg-<pod UID>`) a request named, in its path or body,
    /// whatever the proxy then did with it.
    named: BTreeSet<String>,
    /// The operations of the requests that named no workload (ECS `ListTasks` of a cluster, as
    /// orphan GC lists it, not of one workload's `startedBy`), in order.
    unnamed: Vec<String>,
}

/// A running proxy.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    flavor: Flavor,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://host:port`), an AWS endpoint.
    pub async fn start(upstream: &str) -> FaultProxy {
        FaultProxy::start_as(upstream, Flavor::Aws).await
    }

    /// Starts a proxy forwarding to `upstream`, answering faults as `flavor`'s cloud does.
    pub async fn start_as(upstream: &str, flavor: Flavor) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let client = reqwest::Client::builder().build().expect("an HTTP client");
        let (upstream, shared) = (upstream.trim_end_matches('/').to_string(), state.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, state) = (client.clone(), upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, flavor, client.clone(), upstream.clone(), state.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { url, flavor, state }
    }

    /// Switches what the proxy does with every request.
    pub fn set(&self, mode: Mode) {
        self.set_scoped(mode, None);
    }

    /// Switches what the proxy does with the requests of `scope` (all when `None`); the others
    /// pass. `set(Mode::Pass)` lifts the fault.
    pub fn set_scoped(&self, mode: Mode, scope: Option<Operation>) {
        assert!(
            self.flavor == Flavor::Aws || !matches!(mode, Mode::Throttle | Mode::Outage),
            "ARM's throttling and outages come from the ACI emulator, in ACI's own shapes"
        );
        let mut s = self.state.lock().unwrap();
        s.mode = Some(mode);
        s.scope = scope;
    }

    /// When the last request arrived, if any did.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.state
            .lock()
            .unwrap()
            .arrivals
            .last()
            .map(|(at, _)| *at)
    }

    /// The pod UIDs whose workload some request named (the gateway tried that pod here), with
    /// or without an answer.
    pub fn pods_named(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().named.clone()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().arrivals.len()
    }

    /// Requests of these operations seen so far.
    pub fn requests_of(&self, operations: &[&str]) -> usize {
        self.state
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(_, op)| operations.contains(&op.as_str()))
            .count()
    }

    /// Requests of these operations seen so far that named no workload.
    pub fn requests_naming_no_workload(&self, operations: &[&str]) -> usize {
        self.state
            .lock()
            .unwrap()
            .unnamed
            .iter()
            .filter(|op| operations.contains(&op.as_str()))
            .count()
    }

    /// The most requests of `operations` that arrived within any `window`.
    pub fn max_in_window(&self, operations: &[&str], window: Duration) -> usize {
        let arrivals: Vec<Instant> = self
            .state
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(_, op)| operations.contains(&op.as_str()))
            .map(|(t, _)| *t)
            .collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..arrivals.len() {
            while arrivals[end].duration_since(arrivals[start]) > window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

/// The proxy answered nothing: hyper closes the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

/// The pod UIDs of the workload ids (`bg-<pod UID>`) named in `text`.
fn workload_uids(text: &str) -> Vec<String> {
    text.match_indices("bg-")
        .filter_map(|(at, _)| text.get(at + 3..at + 3 + 36))
        .filter(|uid| {
            uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && uid.matches('-').count() == 4
        })
        .map(str::to_string)
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    flavor: Flavor,
    client: reqwest::Client,
    upstream: String,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    // The whole request is read before the fault applies: a reset or a hang then hits a request
    // the gateway sent in full, whose outcome it cannot know.
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mode = {
        let mut s = state.lock().unwrap();
        let op = match flavor {
            Flavor::Aws => parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or("")
                .to_string(),
            Flavor::Arm => parts.method.as_str().to_string(),
        };
        let path = parts.uri.path();
        let mode = match s.scope {
            Some(scope) if !scope.covers(flavor, &op, path) => Mode::Pass,
            _ => s.mode.unwrap_or(Mode::Pass),
        };
        let named: Vec<String> = workload_uids(path)
            .into_iter()
            .chain(workload_uids(&String::from_utf8_lossy(&body)))
            .collect();
        if named.is_empty() {
            s.unnamed.push(op.clone());
        }
        s.arrivals.push((arrived, op));
        s.named.extend(named);
        mode
    };
    let answer = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        let content_type = match flavor {
            Flavor::Aws => "application/x-amz-json-1.1",
            Flavor::Arm => "application/json; charset=utf-8",
        };
        r.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        r
    };
    match (mode, flavor) {
        (Mode::Throttle, Flavor::Aws) => {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r.headers_mut()
                .insert("x-amzn-errortype", "ThrottlingException".parse().unwrap());
            return Ok(r);
        }
        (Mode::Outage, Flavor::Aws) => {
            return Ok(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"__type":"ServiceUnavailableException","message":"Service Unavailable"}"#,
            ));
        }
        (Mode::Reset, _) => return Err(Dropped),
        (Mode::Hang, _) => {
            // What a black-holed region looks like to the client: nothing, until it gives up.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Err(Dropped);
        }
        (Mode::Throttle | Mode::Outage, Flavor::Arm) => unreachable!("refused by set_scoped"),
        (Mode::Pass, _) => {}
    }
    match relay(&client, &upstream, &parts, body).await {
        Some((status, headers, bytes)) => Ok(relayed(status, &headers, bytes)),
        None => Ok(answer(StatusCode::BAD_GATEWAY, "{}")),
    }
}

/// Sends the request `parts` + `body` on to `upstream` (`http://host:port`) as it came (but
/// `host` and `content-length`); its answer, or `None` when the upstream did not answer.
pub async fn relay(
    client: &reqwest::Client,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Option<(StatusCode, hyper::HeaderMap, Bytes)> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = client
        .request(parts.method.clone(), format!("{upstream}{path}"))
        .body(body);
    for (k, v) in parts
        .headers
        .iter()
        .filter(|(k, _)| *k != "host" && *k != "content-length")
    {
        forward = forward.header(k, v);
    }
    let resp = forward.send().await.ok()?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    Some((status, headers, resp.bytes().await.unwrap_or_default()))
}

/// The upstream's answer as the proxy's own (framing headers are the proxy's to set).
pub fn relayed(
    status: StatusCode,
    headers: &hyper::HeaderMap,
    bytes: Bytes,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| *k != "content-length" && *k != "transfer-encoding" && *k != "connection")
    {
        r.headers_mut().insert(k, v.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_are_found_in_arm_paths_and_aws_bodies_and_nothing_else_counts() {
        let uid = "0b5c1f4e-9a7d-4c3b-8e21-5f6a7b8c9d0e";
        let path = format!(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerInstance/containerGroups/bg-{uid}"
        );
        assert_eq!(workload_uids(&path), vec![uid.to_string()]);
        let body = format!(r#"{{"cluster":"c","startedBy":"bg-{uid}","desiredStatus":"RUNNING"}}"#);
        assert_eq!(workload_uids(&body), vec![uid.to_string()]);
        assert!(workload_uids("/containerGroups?api-version=2023-05-01").is_empty());
        assert!(workload_uids(r#"{"family":"bg-web-1234"}"#).is_empty());
    }
}
