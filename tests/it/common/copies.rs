//! Never two copies, at any instant: every workload the peers ever ran for a pod, with the
//! interval it was alive, across providers, and the check that no pod UID ever had two alive at
//! once.
//!
//! - ACI: the emulator's creation log (`GET /_emulator/history`, see its README): alive from the
//!   creating PUT until a DELETE removed the group (or still).
//! - Fargate: moto keeps stopped tasks (ListTasks `desiredStatus=STOPPED`, DescribeTasks with
//!   their tags), so it says which tasks ever ran for a pod, but moto 5.2.5's `Task` has no
//!   `createdAt`/`startedAt`/`stoppingAt`/`stoppedAt` (its model has no such attribute; the
//!   answers leave them out). The times come from [`EcsTap`], a recording pass-through of the
//!   test's own in front of moto: a task is alive from the moment its RunTask request reached the
//!   tap (before moto saw it) until moto's answer to its StopTask came back (after moto stopped
//!   it). Both bounds are the conservative ones, so an overlap is never hidden by the tap.
//!   A task moto knows and the tap never saw start counts as alive since forever; a stopped
//!   task whose stop the tap never saw, as alive still.
//!
//! The emulator and the tap read the same machine clock (seconds since 1970).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::common::fault_proxy::{relay, relayed};
use crate::common::peers;

/// One workload's life at its peer, in seconds since 1970.
#[derive(Debug, Clone, PartialEq)]
pub struct Alive {
    /// Which workload: `aci <resource id>` or `fargate <task ARN>`.
    pub workload: String,
    /// When it started to exist.
    pub from: f64,
    /// When it was gone; `None`: it still exists (or its end is unknown).
    pub until: Option<f64>,
}

impl Alive {
    fn overlaps(&self, other: &Alive) -> bool {
        let end = |a: &Alive| a.until.unwrap_or(f64::INFINITY);
        self.from < end(other) && other.from < end(self)
    }
}

impl std::fmt::Display for Alive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: f64| {
            chrono::DateTime::from_timestamp_micros((t * 1e6) as i64)
                .map(|d| d.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_else(|| "since forever".into())
        };
        match self.until {
            Some(until) => write!(
                f,
                "{} alive {} .. {}",
                self.workload,
                at(self.from),
                at(until)
            ),
            None => write!(f, "{} alive {} .. still", self.workload, at(self.from)),
        }
    }
}

/// Two workloads of one pod alive at the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Doubled {
    pub uid: String,
    pub first: Alive,
    pub second: Alive,
}

impl std::fmt::Display for Doubled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pod UID {} had two workloads alive at once: {} and {}",
            self.uid, self.first, self.second
        )
    }
}

/// Every pair of workloads of one pod UID whose lives overlap (each pair once, earlier first).
pub fn doubled(lives: &BTreeMap<String, Vec<Alive>>) -> Vec<Doubled> {
    let mut out = Vec::new();
    for (uid, alive) in lives {
        let mut sorted = alive.clone();
        sorted.sort_by(|a, b| a.from.total_cmp(&b.from));
        for (i, a) in sorted.iter().enumerate() {
            for b in &sorted[i + 1..] {
                if a.overlaps(b) {
                    out.push(Doubled {
                        uid: uid.clone(),
                        first: a.clone(),
                        second: b.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Every workload ever run, by pod UID, across the peers of a test.
#[derive(Debug, Default)]
pub struct Lifetimes {
    pub by_uid: BTreeMap<String, Vec<Alive>>,
    /// PUTs that hit an existing container group (updates or re-creates of one workload).
    pub aci_puts_on_existing: usize,
    /// Tasks whose start, or whose stop, the tap did not see (counted as alive since forever,
    /// or still): a gateway that reached moto around the tap.
    pub fargate_untimed: usize,
}

impl Lifetimes {
    /// Workloads ever created.
    pub fn ever(&self) -> usize {
        self.by_uid.values().map(Vec::len).sum()
    }

    /// Pod UIDs with more than one workload in their history (one after the other, or not).
    pub fn moved_or_recreated(&self) -> usize {
        self.by_uid.values().filter(|v| v.len() > 1).count()
    }

    /// Pod UIDs that ever had two workloads alive at once.
    pub fn doubled(&self) -> Vec<Doubled> {
        doubled(&self.by_uid)
    }

    /// Panics naming every pod UID that ever had two workloads alive at once.
    pub fn assert_never_two_at_once(&self, context: &str) {
        let doubled = self.doubled();
        assert!(
            doubled.is_empty(),
            "{context}: {} pod(s) ever had two workloads alive at the same instant:\n{}",
            doubled.len(),
            doubled
                .iter()
                .map(|d| format!("  {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Adds the container groups of `subscription` from the emulator's creation log.
    pub async fn add_aci(&mut self, subscription: &str) {
        let url = format!(
            "{}/_emulator/history?subscriptionId={subscription}",
            peers().get("ACI_EMULATOR_URL").trim_end_matches('/')
        );
        let history: Value = reqwest::get(&url)
            .await
            .expect("emulator history")
            .json()
            .await
            .expect("history JSON");
        for g in history["groups"].as_array().into_iter().flatten() {
            self.aci_puts_on_existing += g["puts"].as_array().map_or(0, Vec::len);
            let Some(uid) = g["podUid"].as_str() else {
                continue;
            };
            self.by_uid.entry(uid.to_string()).or_default().push(Alive {
                workload: format!("aci {}", g["id"].as_str().unwrap_or_default()),
                from: g["createdAtEpoch"].as_f64().expect("createdAtEpoch"),
                until: g["deletedAtEpoch"].as_f64(),
            });
        }
    }

    /// Adds every task of `cluster` moto knows (running and stopped), timed by `tap`.
    pub async fn add_fargate(&mut self, ecs: &aws_sdk_ecs::Client, cluster: &str, tap: &EcsTap) {
        let (started, stopped) = tap.times();
        for (arn, uid, status) in ecs_tasks(ecs, cluster).await {
            let from = started.get(&arn).copied();
            let until = if status == "STOPPED" {
                stopped.get(&arn).copied()
            } else {
                None
            };
            if from.is_none() || (status == "STOPPED" && until.is_none()) {
                self.fargate_untimed += 1;
            }
            let from = from.unwrap_or(0.0);
            self.by_uid.entry(uid).or_default().push(Alive {
                workload: format!("fargate {arn}"),
                from,
                until,
            });
        }
    }
}

/// Every task of `cluster` at moto whose desired status is `status`, described with its tags.
pub async fn described_tasks(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    status: aws_sdk_ecs::types::DesiredStatus,
) -> Vec<aws_sdk_ecs::types::Task> {
    use aws_sdk_ecs::types::TaskField;
    let mut arns = Vec::new();
    let mut next = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(status.clone())
            .set_next_token(next)
            .send()
            .await
            .expect("ListTasks on moto");
        arns.extend(page.task_arns().iter().cloned());
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let described = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .expect("DescribeTasks on moto");
        tasks.extend(described.tasks().iter().cloned());
    }
    tasks
}

/// The pod UID a task is tagged with.
pub fn task_pod_uid(t: &aws_sdk_ecs::types::Task) -> Option<&str> {
    t.tags()
        .iter()
        .find(|tag| tag.key() == Some("burstgate.io/pod-uid"))
        .and_then(|tag| tag.value())
}

/// Every task of `cluster` at moto, running and stopped, with a pod-uid tag: (ARN, pod UID,
/// lastStatus).
pub async fn ecs_tasks(ecs: &aws_sdk_ecs::Client, cluster: &str) -> Vec<(String, String, String)> {
    use aws_sdk_ecs::types::DesiredStatus;
    // A task stopped between the two listings is listed twice: once is enough.
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        for t in described_tasks(ecs, cluster, status).await {
            if let (Some(uid), Some(arn)) = (task_pod_uid(&t), t.task_arn()) {
                let last = t.last_status().unwrap_or_default().to_string();
                out.insert(arn.to_string(), (uid.to_string(), last));
            }
        }
    }
    out.into_iter()
        .map(|(arn, (uid, status))| (arn, uid, status))
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[derive(Default)]
struct TapLog {
    /// Task ARN -> when the RunTask request that started it reached the tap.
    started: BTreeMap<String, f64>,
    /// Task ARN -> when moto's first successful answer to a StopTask of it came back.
    stopped: BTreeMap<String, f64>,
    run_tasks: usize,
}

/// A recording pass-through of the test's own in front of moto: it forwards every request
/// unchanged and notes when each task was started and stopped (see the module doc). Told to
/// ([`EcsTap::lose_answers_from`]), it still forwards every request (moto acts on it) but closes
/// the connection instead of answering: a cloud that did the work and whose answer was lost.
pub struct EcsTap {
    /// `http://127.0.0.1:<port>`: the `AWS_ENDPOINT_URL` to give the gateway.
    pub url: String,
    log: Arc<Mutex<TapLog>>,
    loss: Arc<Loss>,
}

/// When the tap loses answers.
#[derive(Default)]
struct Loss {
    /// Every answer is lost.
    on: AtomicBool,
    /// Every answer is lost from the first request of this operation on (that one's included).
    from: Mutex<Option<String>>,
}

impl Loss {
    fn loses(&self, operation: &str) -> bool {
        let mut from = self.from.lock().unwrap();
        if from.as_deref() == Some(operation) {
            *from = None;
            self.on.store(true, Ordering::SeqCst);
        }
        self.on.load(Ordering::SeqCst)
    }
}

impl EcsTap {
    /// Starts a tap in front of the peers' moto.
    pub async fn start() -> EcsTap {
        let upstream = peers()
            .get("ECS_ENDPOINT")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the ECS tap");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Arc<Mutex<TapLog>> = Arc::default();
        let loss: Arc<Loss> = Arc::default();
        let client = reqwest::Client::new();
        let (shared_log, shared_loss) = (log.clone(), loss.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream) = (client.clone(), upstream.clone());
                let (log, loss) = (shared_log.clone(), shared_loss.clone());
                tokio::spawn(async move {
                    // Each exchange runs to its end in a task of its own: a gateway killed while
                    // its RunTask is in flight drops the connection, and moto's answer must be
                    // logged all the same.
                    let service = service_fn(move |req| {
                        let exchange = tokio::spawn(forward(
                            req,
                            client.clone(),
                            upstream.clone(),
                            log.clone(),
                            loss.clone(),
                        ));
                        async move { exchange.await.unwrap_or(Err(Lost)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EcsTap { url, log, loss }
    }

    /// From the next request of `operation` (e.g. `RunTask`) on, every answer is lost (the
    /// requests still reach moto) until [`EcsTap::answer_again`].
    pub fn lose_answers_from(&self, operation: &str) {
        *self.loss.from.lock().unwrap() = Some(operation.to_string());
    }

    /// Answers are forwarded again.
    pub fn answer_again(&self) {
        *self.loss.from.lock().unwrap() = None;
        self.loss.on.store(false, Ordering::SeqCst);
    }

    /// (ARN -> started, ARN -> stopped).
    fn times(&self) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
        let log = self.log.lock().unwrap();
        (log.started.clone(), log.stopped.clone())
    }

    /// RunTask requests that started a task.
    pub fn run_tasks(&self) -> usize {
        self.log.lock().unwrap().run_tasks
    }
}

/// The tap answered nothing: hyper closes the connection.
#[derive(Debug)]
struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer was lost on purpose")
    }
}

impl std::error::Error for Lost {}

async fn forward(
    req: Request<Incoming>,
    client: reqwest::Client,
    upstream: String,
    log: Arc<Mutex<TapLog>>,
    loss: Arc<Loss>,
) -> Result<Response<Full<Bytes>>, Lost> {
    let arrived = unix_now();
    let (parts, body) = req.into_parts();
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some((status, headers, bytes)) = relay(&client, &upstream, &parts, body).await else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(r);
    };
    let answered = unix_now();
    if status.is_success() && (operation == "RunTask" || operation == "StopTask") {
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut log = log.lock().unwrap();
        if operation == "RunTask" {
            for arn in answer["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["taskArn"].as_str())
            {
                log.run_tasks += 1;
                log.started.insert(arn.to_string(), arrived);
            }
        } else if let Some(arn) = answer["task"]["taskArn"].as_str() {
            log.stopped.entry(arn.to_string()).or_insert(answered);
        }
    }
    if loss.loses(&operation) {
        return Err(Lost);
    }
    Ok(relayed(status, &headers, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(workload: &str, from: f64, until: Option<f64>) -> Alive {
        Alive {
            workload: workload.into(),
            from,
            until,
        }
    }

    #[test]
    fn workloads_one_after_the_other_never_count_as_two_at_once() {
        let lives = BTreeMap::from([(
            "u".to_string(),
            vec![
                alive("fargate t2", 20.0, None),
                alive("aci g", 1.0, Some(10.0)),
                // Gone at the very instant the next one starts: still one at a time.
                alive("fargate t1", 10.0, Some(20.0)),
            ],
        )]);
        assert!(doubled(&lives).is_empty());
    }

    #[test]
    fn overlapping_lives_of_one_pod_are_reported_with_both_workloads_and_their_intervals() {
        let lives = BTreeMap::from([
            (
                "u1".to_string(),
                vec![
                    alive("fargate t", 5.0, Some(7.0)),
                    alive("aci g", 1.0, Some(6.0)),
                ],
            ),
            // Other pods' workloads never pair with each other.
            ("u2".to_string(), vec![alive("aci h", 0.0, None)]),
            ("u3".to_string(), vec![alive("aci i", 0.0, None)]),
        ]);
        let got = doubled(&lives);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uid, "u1");
        assert_eq!(got[0].first.workload, "aci g");
        assert_eq!(got[0].second.workload, "fargate t");
        let message = got[0].to_string();
        assert!(message.contains("pod UID u1") && message.contains("aci g alive"));
    }

    #[test]
    fn a_workload_still_alive_or_of_unknown_start_overlaps_everything_after_or_before_it() {
        let lives = BTreeMap::from([(
            "u".to_string(),
            vec![
                alive("aci g", 100.0, None),
                alive("fargate never seen starting", 0.0, Some(150.0)),
                alive("fargate t", 1000.0, Some(1001.0)),
            ],
        )]);
        let got = doubled(&lives);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got.iter().all(|d| d.first.from <= d.second.from));
    }
}
