//! The pod lifecycle against the real apiserver: pods bound to the virtual node are placed,
//! created at the simulated provider, kept in sync, failed with reasons, and deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use burstgate::config::RunConfig;
use burstgate::controller::context::Gateway;
use burstgate::controller::events::EventReason;
use burstgate::controller::pod;
use burstgate::controller::pod_cache::PodCache;
use burstgate::controller::status::WaitReason;
use burstgate::metrics::RaceLabels;
use burstgate::policy::model::ProviderKind;
use burstgate::policy::{Policy, load_files};
use burstgate::provider::factories::SimFactory;
use burstgate::provider::registry::Factory;
use burstgate::provider::sim::{
    ANNOTATION_EXIT_AFTER, ANNOTATION_EXIT_CODE, SimCloud, SimProvider,
};
use burstgate::provider::{Owner, Provider, WorkloadSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::{
    eventually, failing_gateway, kube_admin, kube_gateway, recording_gateway, unique_name,
};

const WAIT: Duration = Duration::from_secs(60);

fn policy(quota_pods: u32) -> Arc<Policy> {
    let yaml = format!(
        "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {{name: sim-local, provider: sim, region: local, latencyMs: 5, pricing: {{vcpuHour: 0.04, gibHour: 0.004}}, quota: {{vcpu: 64, pods: {quota_pods}}}}}\n  rules:\n    - {{name: all, match: {{}}}}\n"
    );
    Arc::new(load_files(&[("test.yaml".into(), yaml)]).unwrap())
}

/// A gateway running only the pod lifecycle, for one test's own node name.
struct Running {
    gw: Arc<Gateway>,
    cloud: Arc<SimCloud>,
    policy_tx: watch::Sender<Option<Arc<Policy>>>,
    shutdown: CancellationToken,
    /// Stops the pod cache's watch alone: the cache keeps what it has seen, and no more.
    watch_stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    node: String,
    ns: String,
    /// The test's own client (cluster admin): the gateway runs as its least-privilege identity.
    admin: kube::Client,
}

async fn start(node: &str, ns: &str, policy: Arc<Policy>, cloud: Arc<SimCloud>) -> Running {
    start_with(node, ns, policy, cloud, "600").await
}

async fn start_with(
    node: &str,
    ns: &str,
    policy: Arc<Policy>,
    cloud: Arc<SimCloud>,
    gc_min_age: &str,
) -> Running {
    // The gateway runs as the identity deploy/rbac grants (tests/peers/kustomize/gateway-rbac).
    start_as(kube_gateway().await, node, ns, policy, cloud, gc_min_age).await
}

/// [`start_with`] with the gateway's `client` (one that records its requests, say).
async fn start_as(
    client: kube::Client,
    node: &str,
    ns: &str,
    policy: Arc<Policy>,
    cloud: Arc<SimCloud>,
    gc_min_age: &str,
) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = RunConfig::from_flags(&[
        "--node-name",
        node,
        "--cluster-id",
        "it",
        "--node-ip",
        "10.9.9.9",
        "--gc-min-age-seconds",
        gc_min_age,
    ])
    .unwrap();
    let (policy_tx, policy_rx) = watch::channel(Some(policy));
    let factories: BTreeMap<ProviderKind, Arc<dyn Factory>> = BTreeMap::from([(
        ProviderKind::Sim,
        Arc::new(SimFactory::new(cloud.clone())) as Arc<dyn Factory>,
    )]);
    let gw = Gateway::new(client, config, policy_rx, factories, Default::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(burstgate::gateway::sync_providers(
        gw.clone(),
        shutdown.clone(),
    ));
    let watch_stop = shutdown.child_token();
    let (pods, pod_watch) = PodCache::new(&gw, watch_stop.clone());
    tokio::spawn(pod_watch);
    let task = tokio::spawn(pod::run(gw.clone(), pods, shutdown.clone()));
    Running {
        gw,
        cloud,
        policy_tx,
        shutdown,
        watch_stop,
        task,
        node: node.into(),
        ns: ns.into(),
        admin: kube_admin().await,
    }
}

impl Running {
    async fn stop(self) -> (Arc<SimCloud>, watch::Sender<Option<Arc<Policy>>>) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the pod controller stops on shutdown")
            .unwrap();
        (self.cloud, self.policy_tx)
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// The resourceVersion of pod `name` in the gateway's pod cache, while it leads.
    fn cached_version(&self, name: &str) -> Option<String> {
        let store = self.gw.pod_store()?;
        let pod = store.get(&ObjectRef::new(name).within(&self.ns))?;
        pod.resource_version()
    }
}

async fn namespace(client: &kube::Client) -> String {
    let ns = unique_name("pods");
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    ns
}

fn pod_manifest(name: &str, node: &str, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn wait_phase(api: &Api<Pod>, name: &str, want: &str) -> Pod {
    eventually(&format!("pod {name} reaches {want}"), WAIT, || async {
        api.get(name).await.ok().filter(|p| phase(p) == want)
    })
    .await
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_pod_bound_to_the_node_runs_with_an_ip_annotations_and_a_placement_event() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::from_millis(500), 100),
    )
    .await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest("web", &gw.node, json!({})),
    )
    .await
    .unwrap();
    let running = eventually("web is Running and Ready", WAIT, || async {
        api.get("web").await.ok().filter(|p| {
            phase(p) == "Running"
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await;
    let status = running.status.clone().unwrap();
    assert!(
        status
            .pod_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.244.")),
        "{status:?}"
    );
    assert_eq!(status.host_ip.as_deref(), Some("10.9.9.9"));
    let a = running.annotations();
    assert_eq!(
        a.get("burstgate.io/target").map(String::as_str),
        Some("sim-local")
    );
    assert_eq!(
        a.get("burstgate.io/provider").map(String::as_str),
        Some("sim")
    );
    assert_eq!(
        a.get("burstgate.io/resource-id"),
        Some(&format!("bg-{}", running.uid().unwrap()))
    );
    assert_eq!(
        a.get("burstgate.io/hourly-cost").map(String::as_str),
        Some("0.011000")
    );
    let events = events_for(&client, &ns, "web").await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == EventReason::Placed.as_str() && n.starts_with("placed on sim-local")),
        "{events:?}"
    );
    assert_eq!(gw.cloud.creates(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_target_the_gateway_cannot_serve_is_never_offered_and_the_placement_says_why() {
    // aci-cheap is the cheapest target, but this gateway has no ACI adapter at all.
    let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: aci-cheap, provider: aci, region: eastus, latencyMs: 5, pricing: {vcpuHour: 0.001, gibHour: 0.0001}}\n    - {name: sim-local, provider: sim, region: local, latencyMs: 5, pricing: {vcpuHour: 0.04, gibHour: 0.004}, quota: {vcpu: 64, pods: 100}}\n  rules:\n    - {name: all, match: {}, objective: cost}\n";
    let policy = Arc::new(load_files(&[("test.yaml".into(), yaml.into())]).unwrap());
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy,
        SimCloud::new(Duration::from_millis(200), 100),
    )
    .await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest("web", &gw.node, json!({})),
    )
    .await
    .unwrap();
    let placed = eventually("web is placed", WAIT, || async {
        api.get("web")
            .await
            .ok()
            .filter(|p| p.annotations().contains_key("burstgate.io/target"))
    })
    .await;
    assert_eq!(
        placed
            .annotations()
            .get("burstgate.io/target")
            .map(String::as_str),
        Some("sim-local"),
        "the cheapest target has no adapter"
    );
    let events = eventually("the Placed event", WAIT, || async {
        let events = events_for(&client, &ns, "web").await;
        events
            .iter()
            .any(|(r, _)| r == EventReason::Placed.as_str())
            .then_some(events)
    })
    .await;
    let (_, note) = events
        .iter()
        .find(|(r, _)| r == EventReason::Placed.as_str())
        .unwrap();
    assert!(
        note.starts_with("placed on sim-local") && !note.contains("aci-cheap"),
        "the unusable target is not offered as an alternative: {note}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn deleting_a_pod_deletes_its_workload_and_gives_back_its_quota() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &pod_manifest(&format!("p{i}"), &gw.node, json!({})),
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        wait_phase(&api, &format!("p{i}"), "Running").await;
    }
    assert_eq!(gw.cloud.ids().len(), 3);
    for i in 0..3 {
        api.delete(&format!("p{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually("all pods are removed", WAIT, || async {
        api.list(&ListParams::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
    assert!(
        gw.cloud.ids().is_empty(),
        "workloads left: {:?}",
        gw.cloud.ids()
    );
    assert_eq!(gw.gw.reserved_pods(), 0, "the ledger is back to zero");
    gw.stop().await;
}

#[tokio::test]
async fn a_host_path_pod_fails_as_unsupported_with_a_warning_event() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    let extra = json!({"spec": {"volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}]}});
    api.create(&PostParams::default(), &pod_manifest("hp", &gw.node, extra))
        .await
        .unwrap();
    let failed = wait_phase(&api, "hp", "Failed").await;
    let status = failed.status.unwrap();
    assert_eq!(
        status.reason.as_deref(),
        Some(EventReason::Unsupported.as_str())
    );
    assert!(status.message.unwrap().contains("hostPath volume logs"));
    // The Event is published after the status is patched: wait for it.
    eventually("an Unsupported warning event on the pod", WAIT, || async {
        let events = events_for(&client, &ns, "hp").await;
        events
            .iter()
            .any(|(r, _)| r == EventReason::Unsupported.as_str())
            .then_some(())
    })
    .await;
    assert_eq!(gw.cloud.creates(), 0, "nothing reached the provider");
    gw.stop().await;
}

/// A gateway whose one target has no room, and pod `name` bound to its node, as the apiserver
/// has it once it says it waits for room (reason `BurstPending`).
async fn waiting(client: &kube::Client, name: &str) -> (Running, Pod) {
    let ns = namespace(client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(0),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest(name, &gw.node, json!({})),
    )
    .await
    .unwrap();
    let pod = eventually(&format!("{name} says why it waits"), WAIT, || async {
        api.get(name).await.ok().filter(|p| {
            p.status.as_ref().and_then(|s| s.reason.as_deref())
                == Some(WaitReason::BurstPending.as_str())
        })
    })
    .await;
    (gw, pod)
}

#[tokio::test]
async fn a_pod_no_target_can_take_waits_with_a_reason_and_is_placed_after_a_policy_change() {
    let client = kube_admin().await;
    let (gw, pending) = waiting(&client, "waiter").await;
    let (api, ns) = (gw.pods(), gw.ns.clone());
    let message = pending.status.unwrap().message.unwrap();
    assert!(
        message.contains("sim-local: quota: 0 of 0 pods left, pod needs 1"),
        "{message}"
    );
    // The Event is published after the status is patched: wait for it.
    eventually("a NoTarget warning event on the pod", WAIT, || async {
        let events = events_for(&client, &ns, "waiter").await;
        events
            .iter()
            .any(|(r, n)| r == EventReason::NoTarget.as_str() && n.contains("quota"))
            .then_some(())
    })
    .await;
    gw.policy_tx.send_replace(Some(policy(10)));
    wait_phase(&api, "waiter", "Running").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_placement_decided_from_a_cache_behind_another_writer_is_not_written_over_its_placement()
{
    let client = kube_admin().await;
    let (gw, waiting) = waiting(&client, "late").await;
    let api = gw.pods();
    // The cache holds the waiting pod, then sees nothing more: as a new leader's cache may not
    // yet have seen the last placement of the leader before it.
    eventually("the cache to hold the waiting pod", WAIT, || async {
        let cached = gw.cached_version("late")?;
        (Some(cached) == waiting.resource_version()).then_some(())
    })
    .await;
    gw.watch_stop.cancel();
    api.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"burstgate.io/target": "placed-by-another"}}}),
        ),
    )
    .await
    .unwrap();
    // Room on sim-local: the gateway decides the pod again, from its cache.
    let changed = || {
        gw.gw
            .metrics()
            .expected_races
            .get_or_create(&RaceLabels {
                kind: "pod_changed".into(),
            })
            .get()
    };
    let before = changed();
    gw.policy_tx.send_replace(Some(policy(10)));
    eventually("the placement's write to conflict", WAIT, || async {
        (changed() > before).then_some(())
    })
    .await;
    let pod = api.get("late").await.unwrap();
    assert_eq!(
        pod.annotations()
            .get("burstgate.io/target")
            .map(String::as_str),
        Some("placed-by-another"),
        "the other writer's placement stands"
    );
    assert_eq!(gw.cloud.creates(), 0, "no workload from the stale decision");
    assert_eq!(gw.gw.reserved_pods(), 0, "its reservation released");
    gw.stop().await;
}

#[tokio::test]
async fn a_workload_that_exits_non_zero_fails_the_pod_with_its_exit_code() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    let extra = json!({"metadata": {"annotations": {ANNOTATION_EXIT_AFTER: "1", ANNOTATION_EXIT_CODE: "3"}}, "spec": {"restartPolicy": "Never"}});
    api.create(
        &PostParams::default(),
        &pod_manifest("job", &gw.node, extra),
    )
    .await
    .unwrap();
    let failed = wait_phase(&api, "job", "Failed").await;
    let term = failed.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 3);
    eventually("the ledger releases a finished pod", WAIT, || async {
        (gw.gw.reserved_pods() == 0).then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn an_inaccessible_image_fails_the_pod_with_the_providers_message() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    let extra =
        json!({"spec": {"containers": [{"name": "app", "image": "invalid.example/team/app:1"}]}});
    api.create(
        &PostParams::default(),
        &pod_manifest("badimg", &gw.node, extra),
    )
    .await
    .unwrap();
    let failed = wait_phase(&api, "badimg", "Failed").await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InaccessibleImage"));
    assert!(
        status
            .message
            .unwrap()
            .contains("The image 'invalid.example/team/app:1'")
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_workload_deleted_behind_the_gateways_back_reaches_a_true_status() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = start(
        &unique_name("vn"),
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
    )
    .await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest(
            "never",
            &gw.node,
            json!({"spec": {"restartPolicy": "Never"}}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &pod_manifest("always", &gw.node, json!({})),
    )
    .await
    .unwrap();
    let never = wait_phase(&api, "never", "Running").await;
    let always = wait_phase(&api, "always", "Running").await;
    assert!(
        gw.cloud
            .remove_out_of_band(&format!("bg-{}", never.uid().unwrap()))
    );
    assert!(
        gw.cloud
            .remove_out_of_band(&format!("bg-{}", always.uid().unwrap()))
    );
    let lost = wait_phase(&api, "never", "Failed").await;
    assert_eq!(
        lost.status.unwrap().reason.as_deref(),
        Some(EventReason::WorkloadLost.as_str())
    );
    eventually(
        "the Always pod's workload is created again",
        WAIT,
        || async {
            gw.cloud
                .ids()
                .contains(&format!("bg-{}", always.uid().unwrap()))
                .then_some(())
        },
    )
    .await;
    assert_eq!(gw.cloud.creates(), 3);
    gw.stop().await;
}

/// A new term (a restart, a leadership won again) reads every Running workload once and finds
/// its pod's status as the last term wrote it: nothing to write. The apiserver stores a container
/// status written without `lastState` as `lastState: {}`, which compared as news and cost a
/// PATCH per Running pod at each new term (100,000 at 100,000 pods).
#[tokio::test]
async fn a_new_term_writes_no_status_to_pods_whose_workloads_did_not_change() {
    let gw = with_bare_pods("t", 3, Duration::from_millis(200), 10).await;
    let (api, node, ns) = (gw.pods(), gw.node.clone(), gw.ns.clone());
    for i in 0..3 {
        wait_phase(&api, &format!("t{i}"), "Running").await;
    }
    let (cloud, policy_tx) = gw.stop().await;
    let (client, sent) = recording_gateway().await;
    let policy = policy_tx.borrow().clone().unwrap();
    let gw = start_as(client, &node, &ns, policy, cloud, "600").await;
    // Past a status read of every Running workload (each 10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let status_writes: Vec<String> = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| *m == http::Method::PATCH && p.ends_with("/status"))
        .map(|(_, p)| p.clone())
        .collect();
    assert!(
        status_writes.is_empty(),
        "the new term wrote statuses that did not change: {status_writes:?}"
    );
    gw.stop().await;
}

/// A gateway in a new namespace on a new node, over a sim cloud of `capacity` workloads (and a
/// quota of as many pods) starting in `cold_start`, with `n` bare pods `{prefix}0..` created.
async fn with_bare_pods(prefix: &str, n: usize, cold_start: Duration, capacity: u32) -> Running {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let node = unique_name("vn");
    let cloud = SimCloud::new(cold_start, capacity as usize);
    let gw = start(&node, &ns, policy(capacity), cloud).await;
    let api = gw.pods();
    for i in 0..n {
        api.create(
            &PostParams::default(),
            &pod_manifest(&format!("{prefix}{i}"), &node, json!({})),
        )
        .await
        .unwrap();
    }
    gw
}

#[tokio::test]
async fn restarting_the_gateway_mid_burst_never_decides_a_placed_pod_again() {
    let n = 200;
    let gw = with_bare_pods("b", n, Duration::from_secs(2), 500).await;
    let (api, node, ns, client) = (gw.pods(), gw.node.clone(), gw.ns.clone(), gw.admin.clone());
    // Stop while the burst is under way: some placed, some not yet.
    eventually("a part of the burst is placed", WAIT, || async {
        (gw.cloud.ids().len() >= 20).then_some(())
    })
    .await;
    let before: BTreeMap<String, String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| {
            p.annotations()
                .get("burstgate.io/policy-hash")
                .map(|_| (p.name_any(), p.annotations()["burstgate.io/target"].clone()))
        })
        .collect();
    let (cloud, policy_tx) = gw.stop().await;
    let gw = start(&node, &ns, policy_tx.borrow().clone().unwrap(), cloud).await;
    eventually(
        "every pod of the burst is Running",
        Duration::from_secs(180),
        || async {
            let pods = api.list(&ListParams::default()).await.ok()?;
            (pods.items.len() == n && pods.items.iter().all(|p| phase(p) == "Running"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        gw.cloud.creates(),
        n as u64,
        "exactly one workload per pod, across the restart"
    );
    assert_eq!(gw.gw.reserved_pods(), n, "the ledger holds every pod once");
    let events = events_for(&client, &ns, "b0").await;
    assert_eq!(
        events
            .iter()
            .filter(|(r, _)| r == EventReason::Placed.as_str())
            .count(),
        1,
        "{events:?}"
    );
    for (name, target) in before {
        let p = api.get(&name).await.unwrap();
        assert_eq!(
            p.annotations()["burstgate.io/target"],
            target,
            "{name} kept its placement"
        );
    }
    gw.stop().await;
}

/// A sim workload `bg-<uid>` tagged as this test gateway's (cluster `it`, `node`) for the pod
/// `ns/name` of `uid`, as a leader would have made it.
fn tagged_workload(
    ns: &str,
    node: &str,
    name: &str,
    uid: &str,
) -> burstgate::provider::WorkloadSpec {
    burstgate::provider::WorkloadSpec {
        id: format!("bg-{uid}"),
        owner: burstgate::provider::Owner {
            cluster_id: "it".into(),
            node: node.into(),
            namespace: ns.into(),
            pod: name.into(),
            pod_uid: uid.into(),
        },
        target: "sim-local".into(),
        region: "local".into(),
        size: Default::default(),
        pod: pod_manifest(name, node, json!({})),
        resolved: Default::default(),
    }
}

#[tokio::test]
async fn orphan_workloads_are_collected_and_live_ones_are_kept() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let node = unique_name("vn");
    let cloud = SimCloud::new(Duration::ZERO, 100);
    // A workload left behind by a pod that no longer exists (e.g. force-deleted while the
    // gateway was down), tagged with this cluster and node.
    let orphan = tagged_workload(&ns, &node, "gone", "gone");
    // Another cluster's workload on a node of the same name must never be touched.
    let foreign = WorkloadSpec {
        id: "bg-foreign".into(),
        owner: Owner {
            cluster_id: "other".into(),
            ..orphan.owner.clone()
        },
        ..orphan.clone()
    };
    SimProvider::new(cloud.clone())
        .create(&orphan)
        .await
        .unwrap();
    SimProvider::new(cloud.clone())
        .create(&foreign)
        .await
        .unwrap();
    let (client, sent) = recording_gateway().await;
    let gw = start_as(client, &node, &ns, policy(100), cloud, "2").await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest("live", &node, json!({})),
    )
    .await
    .unwrap();
    let live = wait_phase(&api, "live", "Running").await;
    eventually("the orphan is deleted", WAIT, || async {
        (!gw.cloud.ids().contains(&"bg-gone".to_string())).then_some(())
    })
    .await;
    // Past the minimum age, the live pod's workload is still there; the passes over it (one a
    // second) found it in the pod cache and asked the apiserver nothing.
    let pod_reads = || {
        let sent = sent.lock().unwrap();
        sent.iter()
            .filter(|(m, p)| *m == http::Method::GET && p.contains("/pods"))
            .count()
    };
    let reads_before = pod_reads();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = gw.cloud.ids();
    assert!(
        ids.contains(&format!("bg-{}", live.uid().unwrap())),
        "{ids:?}"
    );
    assert!(ids.contains(&"bg-foreign".to_string()), "{ids:?}");
    assert_eq!(pod_reads(), reads_before, "{:?}", sent.lock().unwrap());
    gw.stop().await;
}

#[tokio::test]
async fn a_workload_whose_pod_the_cache_has_not_seen_yet_is_not_collected() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let node = unique_name("vn");
    let gw = start_with(
        &node,
        &ns,
        policy(100),
        SimCloud::new(Duration::ZERO, 100),
        "2",
    )
    .await;
    let api = gw.pods();
    api.create(
        &PostParams::default(),
        &pod_manifest("first", &node, json!({})),
    )
    .await
    .unwrap();
    wait_phase(&api, "first", "Running").await;
    // From now on the cache sees nothing: a pod created now exists at the apiserver only, as
    // for a cache behind it, while its workload (made by a leader before, say) is listed.
    gw.watch_stop.cancel();
    let unseen = api
        .create(
            &PostParams::default(),
            &pod_manifest("unseen", &node, json!({})),
        )
        .await
        .unwrap();
    let workload = |name: &str, uid: &str| tagged_workload(&ns, &node, name, uid);
    let unseen_id = format!("bg-{}", unseen.uid().unwrap());
    let sim = SimProvider::new(gw.cloud.clone());
    sim.create(&workload("unseen", &unseen.uid().unwrap()))
        .await
        .unwrap();
    // A true orphan of the same age: once it is collected, a pass has judged both.
    sim.create(&workload("gone", "gone")).await.unwrap();
    eventually("the true orphan is deleted", WAIT, || async {
        (!gw.cloud.ids().contains(&"bg-gone".to_string())).then_some(())
    })
    .await;
    assert!(
        gw.cloud.ids().contains(&unseen_id),
        "the workload of a live pod the cache had not seen was collected"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_orphan_whose_pod_cannot_be_read_holds_back_only_itself_and_is_collected_once_it_can_be()
{
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let node = unique_name("vn");
    let cloud = SimCloud::new(Duration::ZERO, 100);
    let sim = SimProvider::new(cloud.clone());
    for name in ["unreadable", "gone"] {
        sim.create(&tagged_workload(&ns, &node, name, name))
            .await
            .unwrap();
    }
    // Reading the pod of one orphan fails (the apiserver unreachable for that request) until
    // the fault is lifted.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let unreadable = format!("/api/v1/namespaces/{ns}/pods/unreadable");
    let fails = failing.clone();
    let client = failing_gateway(Arc::new(move |method, path| {
        method == http::Method::GET
            && path == unreadable
            && fails.load(std::sync::atomic::Ordering::SeqCst)
    }))
    .await;
    let gw = start_as(client, &node, &ns, policy(100), cloud, "2").await;
    eventually("the other orphan is deleted", WAIT, || async {
        (!gw.cloud.ids().contains(&"bg-gone".to_string())).then_some(())
    })
    .await;
    assert!(
        gw.cloud.ids().contains(&"bg-unreadable".to_string()),
        "a workload whose pod could not be read was deleted"
    );
    assert!(
        gw.gw.metrics().gc_failures.get() >= 1,
        "the failed read is counted"
    );
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(
        "the orphan whose pod can be read again is deleted",
        WAIT,
        || async { (!gw.cloud.ids().contains(&"bg-unreadable".to_string())).then_some(()) },
    )
    .await;
    gw.stop().await;
}
