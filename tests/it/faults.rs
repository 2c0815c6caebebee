//! The fault matrix, through the real peers: `burstgate run` (the binary) with a cheap cloud
//! target and a dearer simulated fallback. Faults come in the clouds' own shapes: ACI's from the
//! ACI emulator (429 `SubscriptionRequestsThrottled`, 409 `ServiceUnavailable` for a region down,
//! 500 `InternalServerError` with ARM's body), AWS's and the network's (resets, requests never
//! answered) from the project's fault proxy in front of Prism or moto.
//!
//! Never two copies (docs/architecture.md, step 7) decides where a pod goes. A refusal that
//! proves nothing started (throttling of every attempt, a region down, an open circuit before any
//! attempt) sends the pod to the fallback at once: every pod runs there. A create whose outcome
//! is unknown (the connection reset, no answer) may have started a workload: the pods the gateway
//! tried wait on the cloud target, Pending, with a `WorkloadInDoubt` Event naming it and no
//! workload anywhere else, while the pods it never tried fall back; once the fault lifts, each
//! waiting pod runs with exactly one workload (checked on the peers' own records: the emulator's
//! creation log, a tap in front of moto). In both, none is lost, and the request rate measured
//! at the proxy never exceeds the target's buckets, with many more pods than the buckets hold
//! (so these checks fail when the limiter is removed: docs/performance.md). Faults that come and
//! go, scoped to one step (create, status, list, delete): the circuit opens, goes half-open and
//! closes; pods placed before keep their target and a true status; pods created during the fault
//! run once, on the fallback or on the target that may have their workload; pods deleted during
//! the fault stay Terminating until the target confirms and leave no workload; new pods return
//! to the preferred target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burstgate::controller::events::EventReason;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::copies::{EcsTap, Lifetimes};
use crate::common::fault_proxy::{FaultProxy, Flavor, Mode, Operation};
use crate::common::gateway::{
    Gateway, NodeCleanup, aci_faults, aci_groups, aks_deployment, azure_env, gateway_namespace,
    moto_env, node_ready, subscription_id,
};
use crate::common::{ecs_client, kube_admin, peers, unique_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    Aci,
    Fargate,
}

/// Pods of the rate checks: many more than the buckets let through at once (burst 3), so that
/// without the limiter their first attempts alone exceed [`PEAK`].
const PODS: usize = 16;

/// Pods deployed once the circuit is open, in the faults of unknown outcome: the gateway does
/// not try them on the cloud target, so they fall back.
const LATE: usize = 4;

/// The cloud target's buckets (burst 3, 2/s): at most 3 + 2 requests of a class in any second.
const PEAK: usize = 5;

/// How the cloud misbehaves.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// At the fault proxy: the network (resets, hangs) or AWS's answers.
    Proxy(Mode),
    /// ACI's 429 `SubscriptionRequestsThrottled` with `Retry-After: 1`, from the emulator.
    AciThrottle,
    /// ACI's 409 `ServiceUnavailable`: the region is down (creates only), from the emulator.
    AciRegionDown,
    /// ARM's 500 `InternalServerError`, from the emulator.
    AciServerError,
}

impl Operation {
    /// The emulator's name of this step (`operation` of its faults).
    fn emulator_name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Status => "status",
            Operation::List => "list",
            Operation::Delete => "delete",
        }
    }
}

/// A gateway whose cheap cloud target sits behind a fault proxy, with a dearer simulated
/// fallback (`sim-local`).
struct Setup {
    client: kube::Client,
    ns: String,
    node: String,
    _cleanup: NodeCleanup,
    proxy: FaultProxy,
    gw: Gateway,
    target: &'static str,
    reads: Vec<&'static str>,
    writes: Vec<&'static str>,
    /// The emulator subscription (ACI) or the ECS cluster (Fargate) of the cloud target.
    account: String,
    cloud: Cloud,
    /// Fargate: the recording tap between the fault proxy and moto (when tasks lived).
    tap: Option<EcsTap>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Starts the gateway with `extra` environment (its flags' `BURSTGATE_*` variables).
    async fn start(cloud: Cloud, extra: &[(&'static str, &str)]) -> Setup {
        let peers = peers();
        let client = kube_admin().await;
        let ns = gateway_namespace(&client, "faults").await;
        let node = unique_name("vfault");
        let _cleanup = NodeCleanup(node.clone());
        let (proxy, block, mut env, target, reads, writes, account, tap) = match cloud {
            Cloud::Aci => {
                let proxy = FaultProxy::start_as(peers.get("ACI_PRISM_URL"), Flavor::Arm).await;
                let subscription = subscription_id();
                let block = format!(
                    "    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {{vcpuHour: 0.03, gibHour: 0.003}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-faults}}
"
                );
                let env = azure_env(&proxy.url);
                let (reads, writes) = (vec!["GET"], vec!["PUT"]);
                (
                    proxy,
                    block,
                    env,
                    "aci-eastus",
                    reads,
                    writes,
                    subscription,
                    None,
                )
            }
            Cloud::Fargate => {
                // gateway -> fault proxy -> tap -> moto: the tap times every task that lived.
                let tap = EcsTap::start().await;
                let proxy = FaultProxy::start(&tap.url).await;
                let cluster = unique_name("faults");
                let block = format!(
                    "    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
",
                    region = peers.get("ECS_REGION"),
                    subnet = peers.get("ECS_TEST_SUBNET"),
                    sg = peers.get("ECS_TEST_SG"),
                );
                // As operators do: the cluster exists before the gateway lists it.
                ecs_client()
                    .create_cluster()
                    .cluster_name(&cluster)
                    .send()
                    .await
                    .unwrap();
                let env = moto_env(&proxy.url);
                let reads = vec!["ListTasks", "DescribeTasks", "DescribeTaskDefinition"];
                let writes = vec!["RunTask", "RegisterTaskDefinition"];
                (
                    proxy,
                    block,
                    env,
                    "fargate-use1",
                    reads,
                    writes,
                    cluster,
                    Some(tap),
                )
            }
        };
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let dir = tempfile::tempdir().unwrap();
        let policy = format!(
            "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
{block}      rateLimits:
        - {{operation: read, burst: 3, perSecond: 2}}
        - {{operation: create, burst: 3, perSecond: 2}}
    - name: sim-local
      provider: sim
      region: local
      pricing: {{vcpuHour: 0.5, gibHour: 0.05}}
  rules:
    - name: everything
      match: {{}}
"
        );
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
        let gw = Gateway::start_with_env(&node, &ns, dir.path(), "solo", env);
        node_ready(&client, &node).await;
        Setup {
            client,
            ns,
            node,
            _cleanup,
            proxy,
            gw,
            target,
            reads,
            writes,
            account,
            cloud,
            tap,
            _dir: dir,
        }
    }

    /// Makes the cloud misbehave on `on` (every request when `None`) until [`Setup::lift`].
    async fn inject(&self, fault: Fault, on: Option<Operation>) {
        let operation = on.map(Operation::emulator_name);
        let faults = match fault {
            Fault::Proxy(mode) => return self.proxy.set_scoped(mode, on),
            Fault::AciThrottle => {
                json!({"throttle": {"seconds": 3600, "retryAfterSeconds": 1, "operation": operation}})
            }
            Fault::AciServerError => {
                json!({"errors": {"seconds": 3600, "status": 500, "operation": operation}})
            }
            Fault::AciRegionDown => {
                assert!(
                    matches!(on, None | Some(Operation::Create)),
                    "ACI refuses creates only"
                );
                json!({"regionDown": ["eastus"]})
            }
        };
        aci_faults(&self.account, faults).await;
    }

    /// Lifts the fault: the cloud answers as usual again.
    async fn lift(&self, fault: Fault) {
        match fault {
            Fault::Proxy(_) => self.proxy.set(Mode::Pass),
            _ => {
                let none = json!({"throttle": null, "errors": null, "regionDown": null});
                aci_faults(&self.account, none).await
            }
        }
    }

    async fn deploy(&self, app: &str, n: usize) {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .create(
                &PostParams::default(),
                &aks_deployment(app, n as i32, &self.node),
            )
            .await
            .unwrap();
    }

    /// The pods of Deployment `app` once all `n` run.
    async fn running(&self, app: &str, n: usize) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        self.gw
            .eventually(
                &format!("{n} pods of {app} Running"),
                Duration::from_secs(120),
                || async {
                    let list = pods
                        .list(&ListParams::default().labels(&format!("app={app}")))
                        .await
                        .ok()?
                        .items;
                    let running = list.iter().filter(|p| phase(p) == Some("Running")).count();
                    (list.len() == n && running == n).then_some(list)
                },
            )
            .await
    }

    /// How many times the cloud target's circuit entered `state` (`open`, `half-open`,
    /// `closed`): `burstgate_circuit_transitions_total` at the gateway's `/metrics`.
    fn transitions(&self, state: &str) -> u64 {
        let (target, state) = (
            format!("target=\"{}\"", self.target),
            format!("state=\"{state}\""),
        );
        self.gw
            .scrape()
            .lines()
            .filter(|l| l.starts_with("burstgate_circuit_transitions_total{"))
            .filter(|l| l.contains(&target) && l.contains(&state))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn circuit_entered(&self, state: &'static str, times: u64) {
        self.gw
            .eventually(
                &format!("the circuit of {} {state}", self.target),
                Duration::from_secs(120),
                || async { (self.transitions(state) >= times).then_some(()) },
            )
            .await;
    }

    /// Every workload the cloud target's peer ever ran, by pod UID, with when it was alive.
    async fn lifetimes(&self) -> Lifetimes {
        let mut lives = Lifetimes::default();
        match (&self.cloud, &self.tap) {
            (Cloud::Aci, _) => lives.add_aci(&self.account).await,
            (Cloud::Fargate, Some(tap)) => {
                lives.add_fargate(&ecs_client(), &self.account, tap).await
            }
            (Cloud::Fargate, None) => unreachable!("a Fargate setup has its tap"),
        }
        lives
    }

    /// The pods of Deployment `app`.
    async fn pods(&self, app: &str) -> Option<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?;
        Some(list.items)
    }

    /// Pod UID -> the messages of its `WorkloadInDoubt` Events.
    async fn in_doubt_events(&self) -> Option<BTreeMap<String, Vec<String>>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut by_uid = BTreeMap::<String, Vec<String>>::new();
        for e in events.list(&ListParams::default()).await.ok()?.items {
            if e.reason.as_deref() == Some(EventReason::WorkloadInDoubt.as_str())
                && let Some(uid) = e.involved_object.uid.clone()
            {
                by_uid
                    .entry(uid)
                    .or_default()
                    .push(e.message.unwrap_or_default());
            }
        }
        Some(by_uid)
    }

    /// Whether `p` waits on the cloud target in doubt: placed there, Pending, and told so by a
    /// `WorkloadInDoubt` Event naming the target.
    fn waits_in_doubt(&self, p: &Pod, events: &BTreeMap<String, Vec<String>>) -> bool {
        target_of(p) == self.target
            && phase(p) == Some("Pending")
            && p.uid()
                .and_then(|uid| events.get(&uid))
                .is_some_and(|m| m.iter().any(|m| m.contains(self.target)))
    }

    /// How many of these pods' workloads are alive at the cloud target's peer.
    async fn workloads_alive(&self, uids: &[String]) -> usize {
        let ids: Vec<String> = uids.iter().map(|u| format!("bg-{u}")).collect();
        match self.cloud {
            Cloud::Aci => aci_groups(&self.account)
                .await
                .iter()
                .filter(|g| ids.iter().any(|id| g["name"].as_str() == Some(id.as_str())))
                .count(),
            Cloud::Fargate => {
                let ecs = ecs_client();
                let mut alive = 0;
                for id in &ids {
                    let listed = ecs
                        .list_tasks()
                        .cluster(&self.account)
                        .started_by(id)
                        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                        .send()
                        .await
                        .unwrap();
                    alive += listed.task_arns().len();
                }
                alive
            }
        }
    }
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn target_of(p: &Pod) -> &str {
    p.annotations()
        .get("burstgate.io/target")
        .map_or("", String::as_str)
}

async fn every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
    cloud: Cloud,
    fault: Fault,
) {
    let s = Setup::start(cloud, &[]).await;
    s.inject(fault, None).await;
    let began = Instant::now();
    s.deploy("burst", PODS).await;
    let running =
        s.gw.eventually(
            &format!("{cloud:?} {fault:?}: {PODS} pods Running on the fallback"),
            Duration::from_secs(120),
            || async {
                let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
                let list = pods
                    .list(&ListParams::default().labels("app=burst"))
                    .await
                    .ok()?
                    .items;
                let on_fallback = list
                    .iter()
                    .filter(|p| target_of(p) == "sim-local" && phase(p) == Some("Running"));
                (list.len() == PODS && on_fallback.count() == PODS).then_some(list)
            },
        )
        .await;
    let took = began.elapsed();

    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns);
    let rejections: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(EventReason::ProviderRejected.as_str()))
        .filter_map(|e| e.message)
        .collect();
    let (peak_reads, peak_writes) = (
        s.proxy.max_in_window(&s.reads, Duration::from_secs(1)),
        s.proxy.max_in_window(&s.writes, Duration::from_secs(1)),
    );
    println!(
        "faults: {cloud:?} {fault:?}: {PODS} pods on the fallback {:.1}s after the Deployment; {} requests at the proxy, \
         peak {peak_reads} reads and {peak_writes} writes in one second (buckets allow {PEAK}); first rejection: {:?}",
        took.as_secs_f64(),
        s.proxy.requests(),
        rejections.first(),
    );
    assert_eq!(running.len(), PODS, "no pod lost");
    assert!(s.proxy.requests() > 0, "the gateway did try {}", s.target);
    assert!(
        rejections.iter().any(|m| m.contains(s.target)),
        "a ProviderRejected Event names {}: {rejections:?}",
        s.target
    );
    assert!(
        peak_reads <= PEAK,
        "{peak_reads} reads in one second exceed the read bucket"
    );
    assert!(
        peak_writes <= PEAK,
        "{peak_writes} writes in one second exceed the create bucket"
    );
}

/// Creates whose outcome is unknown (every request reset, or never answered): the gateway may
/// have started a workload with any create it tried, so a pod it tried must not run elsewhere
/// until the target answers. While the fault stays: every pod the gateway tried on the cloud
/// target (a request naming its workload reached the proxy) waits there in doubt, Pending, with a
/// `WorkloadInDoubt` Event naming the target and no workload on the fallback (its placement
/// still names the target) or at the peer; the pods deployed once the circuit is open, never
/// tried, run on the fallback at once, and every pod is accounted for. Once the fault lifts,
/// every pod runs: each waiting pod with exactly one workload (on the target: one at the peer,
/// one ever; moved only after the target confirmed nothing was left: none ever there), no pod
/// ever had two alive at once (the peer's own records), and the proxy never saw more requests
/// of a class in one second than the buckets allow.
async fn pods_tried_wait_in_doubt_the_others_fall_back_and_the_proxy_sees_no_more_than_the_buckets(
    cloud: Cloud,
    mode: Mode,
) {
    let s = Setup::start(cloud, &[]).await;
    let fault = Fault::Proxy(mode);
    s.inject(fault, None).await;
    let began = Instant::now();
    s.deploy("burst", PODS).await;
    s.circuit_entered("open", 1).await;
    let opened = began.elapsed();
    s.deploy("late", LATE).await;
    let (burst, late) =
        s.gw.eventually(
            &format!(
                "{cloud:?} {fault:?}: every pod in doubt on {} or Running on the fallback",
                s.target
            ),
            Duration::from_secs(120),
            || async {
                let (burst, late) = (s.pods("burst").await?, s.pods("late").await?);
                let events = s.in_doubt_events().await?;
                let settled = burst.iter().chain(&late).all(|p| {
                    s.waits_in_doubt(p, &events)
                        || (target_of(p) == "sim-local" && phase(p) == Some("Running"))
                });
                (burst.len() == PODS && late.len() == LATE && settled).then_some((burst, late))
            },
        )
        .await;
    let settled = began.elapsed();
    let tried = s.proxy.pods_named();
    let everyone: Vec<&Pod> = burst.iter().chain(&late).collect();
    let (waiting, fell_back): (Vec<&Pod>, Vec<&Pod>) = everyone
        .iter()
        .copied()
        .partition(|p| target_of(p) == s.target);
    let uids = |pods: &[&Pod]| -> Vec<String> { pods.iter().filter_map(|p| p.uid()).collect() };
    let (waiting_uids, fell_back_uids) = (uids(&waiting), uids(&fell_back));
    let alive_during = s.workloads_alive(&waiting_uids).await;
    println!(
        "faults: {cloud:?} {fault:?}: circuit open {:.1}s after the Deployment; {} of {PODS} pods in doubt on {} and {} \
         on the fallback {:.1}s after it ({} of {LATE} deployed later on the fallback)",
        opened.as_secs_f64(),
        waiting.len(),
        s.target,
        fell_back.len(),
        settled.as_secs_f64(),
        late.iter().filter(|p| target_of(p) == "sim-local").count(),
    );
    assert!(
        !waiting.is_empty(),
        "the pods tried on {} wait in doubt",
        s.target
    );
    for p in &waiting {
        assert!(
            tried.contains(&p.uid().unwrap()),
            "{} waits in doubt on {} although the gateway never tried it there",
            p.name_any(),
            s.target
        );
    }
    for p in &fell_back {
        assert!(
            !tried.contains(&p.uid().unwrap()),
            "{} was tried on {} (its create may have landed) and still ran on the fallback",
            p.name_any(),
            s.target
        );
    }
    assert!(
        late.iter().any(|p| target_of(p) == "sim-local"),
        "pods never tried fall back"
    );
    assert_eq!(alive_during, 0, "no workload of a waiting pod at the peer");

    s.lift(fault).await;
    let lifted = began.elapsed();
    let after: Vec<Pod> =
        s.gw.eventually(
            &format!("{cloud:?} {fault:?} lifted: every pod Running"),
            Duration::from_secs(120),
            || async {
                let pods: Vec<Pod> = [s.pods("burst").await?, s.pods("late").await?].concat();
                let running = pods.iter().filter(|p| phase(p) == Some("Running")).count();
                (pods.len() == PODS + LATE && running == PODS + LATE).then_some(pods)
            },
        )
        .await;
    let ran = began.elapsed();
    let (on_target, moved): (Vec<&Pod>, Vec<&Pod>) = after
        .iter()
        .filter(|p| waiting_uids.contains(&p.uid().unwrap()))
        .partition(|p| target_of(p) == s.target);
    let lives = s.lifetimes().await;
    let ever = |uid: &String| lives.by_uid.get(uid).map_or(0, Vec::len);
    println!(
        "faults: {cloud:?} {fault:?}: lifted at {:.1}s, every pod Running at {:.1}s: {} waiting pods ran on {}, {} moved \
         after it confirmed nothing was left; {} requests at the proxy, peak {} reads and {} writes in one second \
         (buckets allow {PEAK})",
        lifted.as_secs_f64(),
        ran.as_secs_f64(),
        on_target.len(),
        s.target,
        moved.len(),
        s.proxy.requests(),
        s.proxy.max_in_window(&s.reads, Duration::from_secs(1)),
        s.proxy.max_in_window(&s.writes, Duration::from_secs(1)),
    );
    lives.assert_never_two_at_once(&format!("{cloud:?} {fault:?}"));
    assert_eq!(
        on_target.len() + moved.len(),
        waiting.len(),
        "no waiting pod lost"
    );
    for p in &moved {
        assert_eq!(
            target_of(p),
            "sim-local",
            "{} moved to the fallback",
            p.name_any()
        );
    }
    let on_target_uids = uids(&on_target);
    assert_eq!(
        s.workloads_alive(&on_target_uids).await,
        on_target.len(),
        "each pod that waited runs on {} with one workload",
        s.target
    );
    for uid in &on_target_uids {
        assert_eq!(ever(uid), 1, "pod {uid}: one workload ever at {}", s.target);
    }
    for uid in uids(&moved).iter().chain(&fell_back_uids) {
        assert_eq!(
            ever(uid),
            0,
            "pod {uid} runs on the fallback: no workload ever at {}",
            s.target
        );
    }
    for p in &after {
        if fell_back_uids.contains(&p.uid().unwrap()) {
            assert_eq!(
                target_of(p),
                "sim-local",
                "{} kept the fallback",
                p.name_any()
            );
        }
    }
    let (peak_reads, peak_writes) = (
        s.proxy.max_in_window(&s.reads, Duration::from_secs(1)),
        s.proxy.max_in_window(&s.writes, Duration::from_secs(1)),
    );
    assert!(
        peak_reads <= PEAK,
        "{peak_reads} reads in one second exceed the read bucket"
    );
    assert!(
        peak_writes <= PEAK,
        "{peak_writes} writes in one second exceed the create bucket"
    );
}

#[tokio::test]
async fn an_arm_throttling_storm_sends_aci_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Aci,
        Fault::AciThrottle,
    )
    .await;
}

#[tokio::test]
async fn an_aci_region_outage_sends_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Aci,
        Fault::AciRegionDown,
    )
    .await;
}

#[tokio::test]
async fn arm_connections_reset_keep_tried_aci_pods_in_doubt_until_aci_answers_within_the_buckets() {
    pods_tried_wait_in_doubt_the_others_fall_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Aci,
        Mode::Reset,
    )
    .await;
}

#[tokio::test]
async fn arm_requests_never_answered_keep_tried_aci_pods_in_doubt_until_aci_answers_within_the_buckets()
 {
    pods_tried_wait_in_doubt_the_others_fall_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Aci,
        Mode::Hang,
    )
    .await;
}

#[tokio::test]
async fn an_ecs_throttling_storm_sends_fargate_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Fargate,
        Fault::Proxy(Mode::Throttle),
    )
    .await;
}

#[tokio::test]
async fn ecs_connections_reset_keep_tried_fargate_pods_in_doubt_until_ecs_answers_within_the_buckets()
 {
    pods_tried_wait_in_doubt_the_others_fall_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Fargate,
        Mode::Reset,
    )
    .await;
}

#[tokio::test]
async fn ecs_requests_never_answered_keep_tried_fargate_pods_in_doubt_until_ecs_answers_within_the_buckets()
 {
    pods_tried_wait_in_doubt_the_others_fall_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Fargate,
        Mode::Hang,
    )
    .await;
}

/// The gateway's patience in the faults that lift: a call gives up after 5 s of retries (3 s
/// per attempt), three such failures of one request class in a row open the circuit, and it
/// half-opens 5 s later. The defaults (20 s, 10 s, 5, 30 s) behave the same, only slower.
const IMPATIENT: [(&str, &str); 4] = [
    ("BURSTGATE_RETRY_DEADLINE_SECONDS", "5"),
    ("BURSTGATE_CALL_TIMEOUT_SECONDS", "3"),
    ("BURSTGATE_CIRCUIT_FAILURES", "3"),
    ("BURSTGATE_CIRCUIT_COOL_DOWN_SECONDS", "5"),
];

/// A fault on one step comes and goes: pods run on the cloud target first, the fault makes
/// that step fail until the circuit opens, then it lifts. The circuit went open, half-open,
/// closed; pods placed before keep their target and a true status; pods deleted during the
/// fault stay until the target confirms, then are gone with their workloads; pods created
/// during it run once: refused (a region down), on the fallback and never in doubt; of unknown
/// outcome, on the fallback with no workload ever at the target, or on the target they waited
/// for with exactly one, never two alive at once; new pods go to the cloud target again.
async fn a_fault_that_lifts(cloud: Cloud, fault: Fault, step: Operation) {
    let mut extra = IMPATIENT.to_vec();
    if step == Operation::List {
        // Orphan GC lists owned workloads every second (it finds none to delete).
        extra.push(("BURSTGATE_GC_MIN_AGE_SECONDS", "2"));
    }
    let s = Setup::start(cloud, &extra).await;
    let began = Instant::now();
    s.deploy("before", 2).await;
    let before = s.running("before", 2).await;
    assert!(before.iter().all(|p| target_of(p) == s.target));
    let before_uids: Vec<String> = before.iter().filter_map(|p| p.uid()).collect();

    let opened_before = s.transitions("open");
    s.inject(fault, Some(step)).await;
    let faulted = began.elapsed();
    match step {
        // New pods' creates fail, each a target-level failure.
        Operation::Create => s.deploy("during", 3).await,
        // Every status read (and, with GC every second, every listing) fails on its own.
        Operation::Status | Operation::List => {}
        // The deletes fail; the pods stay Terminating and are retried.
        Operation::Delete => {
            Api::<Deployment>::namespaced(s.client.clone(), &s.ns)
                .delete("before", &DeleteParams::foreground())
                .await
                .unwrap();
        }
    }
    s.circuit_entered("open", opened_before + 1).await;
    let opened = began.elapsed();
    if step == Operation::Delete {
        // The target has not confirmed a delete: the pods wait, Terminating.
        let waiting = s.pods("before").await.unwrap_or_default();
        assert_eq!(
            waiting
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .count(),
            2,
            "the pods deleted during the fault stay Terminating while {} cannot confirm",
            s.target
        );
    }
    let (half_open_before, closed_before) = (s.transitions("half-open"), s.transitions("closed"));
    s.lift(fault).await;
    let lifted = began.elapsed();
    s.circuit_entered("closed", closed_before + 1).await;
    let closed = began.elapsed();
    assert!(
        s.transitions("half-open") > half_open_before,
        "the circuit closed through half-open"
    );
    assert!(
        s.transitions("open") >= s.transitions("half-open"),
        "every half-open followed an open"
    );

    s.deploy("after", 2).await;
    let after = s.running("after", 2).await;
    assert!(
        after.iter().all(|p| target_of(p) == s.target),
        "new pods return to {}: {:?}",
        s.target,
        after.iter().map(target_of).collect::<Vec<_>>()
    );
    if step == Operation::Create {
        let during = s.running("during", 3).await;
        let in_doubt = s.in_doubt_events().await.unwrap_or_default();
        let lives = s.lifetimes().await;
        lives.assert_never_two_at_once(&format!("{cloud:?} {fault:?} on {step:?}"));
        let waited = during
            .iter()
            .filter(|p| in_doubt.contains_key(&p.uid().unwrap()))
            .count();
        println!(
            "faults: {cloud:?} {fault:?} on {step:?}: of the 3 pods created during the fault, {waited} waited in doubt; \
             they run on {:?}",
            during.iter().map(target_of).collect::<Vec<_>>()
        );
        for p in &during {
            let uid = p.uid().unwrap();
            let ever = lives.by_uid.get(&uid).map_or(0, Vec::len);
            match target_of(p) {
                "sim-local" => assert_eq!(
                    ever,
                    0,
                    "{} runs on the fallback: no workload ever at {}",
                    p.name_any(),
                    s.target
                ),
                t if t == s.target => assert_eq!(
                    ever,
                    1,
                    "{} runs on {t} with one workload ever",
                    p.name_any()
                ),
                t => panic!("{} runs on {t}", p.name_any()),
            }
            if let Some(messages) = in_doubt.get(&uid) {
                assert!(
                    messages.iter().all(|m| m.contains(s.target)),
                    "the WorkloadInDoubt Events of {} name {}: {messages:?}",
                    p.name_any(),
                    s.target
                );
            }
        }
        if matches!(fault, Fault::AciRegionDown) {
            // A refusal proves nothing started: the pods moved at once, never in doubt.
            assert!(during.iter().all(|p| target_of(p) == "sim-local"));
            assert_eq!(waited, 0, "a region down leaves nothing in doubt");
        }
    }
    if step == Operation::Delete {
        let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
        s.gw.eventually(
            "the pods deleted during the fault gone",
            Duration::from_secs(60),
            || async {
                let left = pods
                    .list(&ListParams::default().labels("app=before"))
                    .await
                    .ok()?;
                left.items.is_empty().then_some(())
            },
        )
        .await;
        assert_eq!(
            s.workloads_alive(&before_uids).await,
            0,
            "no orphan at {}",
            s.target
        );
    } else {
        // Placed before, still there, with a status that tells the truth: Running, an IP, one
        // workload each at the peer, and Ready on ACI (moto never reports a task's containers
        // RUNNING, so Fargate pods stay ContainersNotReady with or without faults).
        let now = s.running("before", 2).await;
        for p in &now {
            assert_eq!(target_of(p), s.target, "{} kept its target", p.name_any());
            assert!(before_uids.contains(&p.uid().unwrap()), "the same pods");
            let status = p.status.as_ref().unwrap();
            assert!(status.pod_ip.is_some(), "{} has an IP", p.name_any());
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            assert!(ready || s.cloud == Cloud::Fargate, "{} Ready", p.name_any());
        }
        assert_eq!(
            s.workloads_alive(&before_uids).await,
            2,
            "one workload each"
        );
    }
    println!(
        "faults: {cloud:?} {fault:?} on {step:?} that lifts: fault at {:.1}s, circuit open at {:.1}s, lifted at {:.1}s, closed at {:.1}s \
         (transitions: {} open, {} half-open, {} closed); {} requests at the proxy",
        faulted.as_secs_f64(),
        opened.as_secs_f64(),
        lifted.as_secs_f64(),
        closed.as_secs_f64(),
        s.transitions("open"),
        s.transitions("half-open"),
        s.transitions("closed"),
        s.proxy.requests(),
    );
}

#[tokio::test]
async fn an_aci_region_down_on_create_that_lifts_closes_the_circuit_and_new_pods_return_to_aci() {
    a_fault_that_lifts(Cloud::Aci, Fault::AciRegionDown, Operation::Create).await;
}

#[tokio::test]
async fn arm_server_errors_on_status_reads_that_lift_leave_aci_pods_placed_and_their_status_true() {
    a_fault_that_lifts(Cloud::Aci, Fault::AciServerError, Operation::Status).await;
}

#[tokio::test]
async fn arm_lists_never_answered_then_answered_again_close_the_aci_circuit() {
    a_fault_that_lifts(Cloud::Aci, Fault::Proxy(Mode::Hang), Operation::List).await;
}

#[tokio::test]
async fn aci_deletes_reset_during_a_fault_complete_after_it_without_orphans() {
    a_fault_that_lifts(Cloud::Aci, Fault::Proxy(Mode::Reset), Operation::Delete).await;
}

#[tokio::test]
async fn ecs_run_task_never_answered_then_answered_again_sends_new_pods_back_to_fargate() {
    a_fault_that_lifts(Cloud::Fargate, Fault::Proxy(Mode::Hang), Operation::Create).await;
}

#[tokio::test]
async fn an_ecs_throttling_storm_on_describe_tasks_that_lifts_leaves_fargate_statuses_true() {
    a_fault_that_lifts(
        Cloud::Fargate,
        Fault::Proxy(Mode::Throttle),
        Operation::Status,
    )
    .await;
}

#[tokio::test]
async fn ecs_list_tasks_reset_then_answered_again_close_the_fargate_circuit() {
    a_fault_that_lifts(Cloud::Fargate, Fault::Proxy(Mode::Reset), Operation::List).await;
}

#[tokio::test]
async fn fargate_deletes_during_an_ecs_outage_complete_after_it_without_orphans() {
    a_fault_that_lifts(
        Cloud::Fargate,
        Fault::Proxy(Mode::Outage),
        Operation::Delete,
    )
    .await;
}
