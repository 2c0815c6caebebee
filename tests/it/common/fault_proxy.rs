//! A fault-injecting HTTP proxy of the project's own, put in front of a real peer (moto, Prism):
//! it forwards requests unchanged, or answers them with throttling (429 + Retry-After, AWS's
//! `ThrottlingException` body), 503s (a region outage) or dropped connections, and records when
//! each request arrived so a test can measure the rate the gateway really sent.

use std::convert::Infallible;
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
    /// Answer 429 with `Retry-After: 1` and a `ThrottlingException` body.
    Throttle,
    /// Answer 503 (the region is down).
    Outage,
    /// Close the connection without answering.
    Reset,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// When each request arrived, with its AWS operation (`x-amz-target`'s last part).
    arrivals: Vec<(Instant, String)>,
}

/// A running proxy.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
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
                        handle(req, client.clone(), upstream.clone(), state.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { url, state }
    }

    /// Switches what the proxy does.
    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
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

async fn handle(
    req: Request<Incoming>,
    client: reqwest::Client,
    upstream: String,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mode = {
        let mut s = state.lock().unwrap();
        let op = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_string();
        s.arrivals.push((Instant::now(), op));
        s.mode.unwrap_or(Mode::Pass)
    };
    let answer = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        r
    };
    match mode {
        Mode::Throttle => {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r.headers_mut()
                .insert("x-amzn-errortype", "ThrottlingException".parse().unwrap());
            return Ok(r);
        }
        Mode::Outage => {
            return Ok(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"__type":"ServiceUnavailableException","message":"Service Unavailable"}"#,
            ));
        }
        Mode::Reset => {
            // Never answer: hyper drops the connection when the test's deadline passes; a long
            // sleep is what a black-holed region looks like to the client.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(answer(StatusCode::GATEWAY_TIMEOUT, "{}"));
        }
        Mode::Pass => {}
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
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
    let Ok(resp) = forward.send().await else {
        return Ok(answer(StatusCode::BAD_GATEWAY, "{}"));
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| *k != "content-length" && *k != "transfer-encoding" && *k != "connection")
    {
        r.headers_mut().insert(k, v.clone());
    }
    Ok(r)
}
