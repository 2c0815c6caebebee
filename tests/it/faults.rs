//! The fault matrix, through the project's fault proxy in front of the real peers: `burstgate
//! run` (the binary) with a cheap cloud target behind the proxy and a dearer fallback. Whatever
//! the cloud does (429 storms, a region outage, connections reset, requests never answered),
//! every pod falls back and runs, none is lost, the app team gets an Event naming the failure,
//! and the request rate measured at the proxy never exceeds the target's buckets.

use std::time::{Duration, Instant};

use burstgate::controller::events::EventReason;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

use crate::common::fault_proxy::{FaultProxy, Flavor, Mode};
use crate::common::gateway::{
    Gateway, NodeCleanup, aks_deployment, azure_env, gateway_namespace, moto_env, node_ready,
    subscription_id,
};
use crate::common::{kube_admin, peers, unique_name};

#[derive(Debug, Clone, Copy)]
enum Cloud {
    Aci,
    Fargate,
}

const PODS: usize = 4;

/// The cloud target's buckets (burst 3, 2/s): at most 3 + 2 requests of a class in any second.
const PEAK: usize = 5;

/// A gateway whose cheap cloud target sits behind a fault proxy in `mode`, with a dearer
/// simulated fallback (`sim-local`).
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
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(cloud: Cloud, mode: Mode) -> Setup {
        let peers = peers();
        let client = kube_admin().await;
        let ns = gateway_namespace(&client, "faults").await;
        let node = unique_name("vfault");
        let _cleanup = NodeCleanup(node.clone());
        let (proxy, block, env, target, reads, writes) = match cloud {
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
                (proxy, block, env, "aci-eastus", vec!["GET"], vec!["PUT"])
            }
            Cloud::Fargate => {
                let proxy = FaultProxy::start(peers.get("ECS_ENDPOINT")).await;
                let block = format!(
                    "    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
",
                    region = peers.get("ECS_REGION"),
                    cluster = unique_name("faults"),
                    subnet = peers.get("ECS_TEST_SUBNET"),
                    sg = peers.get("ECS_TEST_SG"),
                );
                let env = moto_env(&proxy.url);
                let reads = vec!["ListTasks", "DescribeTasks", "DescribeTaskDefinition"];
                (
                    proxy,
                    block,
                    env,
                    "fargate-use1",
                    reads,
                    vec!["RunTask", "RegisterTaskDefinition"],
                )
            }
        };
        proxy.set(mode);
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
            _dir: dir,
        }
    }
}

async fn every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
    cloud: Cloud,
    mode: Mode,
) {
    let Setup {
        client,
        ns,
        node,
        _cleanup,
        proxy,
        gw,
        target,
        reads,
        writes,
        _dir,
    } = Setup::start(cloud, mode).await;
    let began = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &aks_deployment("burst", PODS as i32, &node),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = gw
        .eventually(
            &format!("{cloud:?} {mode:?}: {PODS} pods Running on the fallback"),
            Duration::from_secs(100),
            || async {
                let list = pods
                    .list(&ListParams::default().labels("app=burst"))
                    .await
                    .ok()?
                    .items;
                let on_fallback = list.iter().filter(|p| {
                    p.annotations()
                        .get("burstgate.io/target")
                        .map(String::as_str)
                        == Some("sim-local")
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
                (list.len() == PODS && on_fallback.count() == PODS).then_some(list)
            },
        )
        .await;
    let took = began.elapsed();

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
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
        proxy.max_in_window(&reads, Duration::from_secs(1)),
        proxy.max_in_window(&writes, Duration::from_secs(1)),
    );
    println!(
        "faults: {cloud:?} {mode:?}: {PODS} pods on the fallback {:.1}s after the Deployment; {} requests at the proxy, \
         peak {peak_reads} reads and {peak_writes} writes in one second (buckets allow {PEAK}); first rejection: {:?}",
        took.as_secs_f64(),
        proxy.requests(),
        rejections.first(),
    );
    assert_eq!(running.len(), PODS, "no pod lost");
    assert!(proxy.requests() > 0, "the gateway did try {target}");
    assert!(
        rejections.iter().any(|m| m.contains(target)),
        "a ProviderRejected Event names {target}: {rejections:?}"
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
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Aci, Mode::Throttle)
        .await;
}

#[tokio::test]
async fn an_aci_region_outage_sends_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Aci, Mode::Outage)
        .await;
}

#[tokio::test]
async fn arm_connections_reset_send_aci_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Aci, Mode::Reset).await;
}

#[tokio::test]
async fn arm_requests_never_answered_send_aci_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Aci, Mode::Hang).await;
}

#[tokio::test]
async fn an_ecs_throttling_storm_sends_fargate_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
        Cloud::Fargate,
        Mode::Throttle,
    )
    .await;
}

#[tokio::test]
async fn ecs_connections_reset_send_fargate_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Fargate, Mode::Reset)
        .await;
}

#[tokio::test]
async fn ecs_requests_never_answered_send_fargate_pods_to_the_next_target_within_the_buckets() {
    every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(Cloud::Fargate, Mode::Hang)
        .await;
}

/// `burstgate_circuit_state` of `target` at the gateway's `/metrics`: 0 closed, 1 half-open,
/// 2 open.
fn circuit_state(gw: &Gateway, target: &str) -> Option<i64> {
    let label = format!("target=\"{target}\"");
    gw.scrape()
        .lines()
        .find(|l| l.starts_with("burstgate_circuit_state{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The pods of Deployment `app` once all `n` run, by the target each was placed on.
async fn running_on(s: &Setup, app: &str, n: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    s.gw.eventually(
        &format!("{n} pods of {app} Running"),
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?
                .items;
            let running = list
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (list.len() == n && running == n).then(|| {
                list.iter()
                    .map(|p| {
                        p.annotations()
                            .get("burstgate.io/target")
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect()
            })
        },
    )
    .await
}

#[tokio::test]
async fn an_aci_outage_that_lifts_opens_the_circuit_and_then_new_pods_return_to_aci_while_placed_pods_stay()
 {
    let s = Setup::start(Cloud::Aci, Mode::Outage).await;
    let began = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns);
    let deploy = |name: &'static str, n: i32| {
        let (deployments, node) = (deployments.clone(), s.node.clone());
        async move {
            deployments
                .create(&PostParams::default(), &aks_deployment(name, n, &node))
                .await
                .unwrap();
        }
    };
    // During the outage: every create gives up on ACI (a target-level failure each); five of
    // them open the circuit, and every pod runs on the fallback.
    deploy("during", 6).await;
    let during = running_on(&s, "during", 6).await;
    assert!(during.iter().all(|t| t == "sim-local"), "{during:?}");
    s.gw.eventually("the circuit open", Duration::from_secs(60), || async {
        (circuit_state(&s.gw, s.target) == Some(2)).then_some(())
    })
    .await;
    let opened = began.elapsed();

    // After its cool-down the circuit half-opens by itself (no call needed): the node says the
    // target is offered again. The outage still lasts, so a probe may open it once more.
    let half_open_note = format!(
        "target {} offered again: its circuit is half-open",
        s.target
    );
    s.gw.eventually(
        "a node Event offering the target again",
        Duration::from_secs(60),
        || async {
            let events: Api<Event> = Api::all(s.client.clone());
            let selector = format!("involvedObject.kind=Node,involvedObject.name={}", s.node);
            let list = events
                .list(&ListParams::default().fields(&selector))
                .await
                .ok()?
                .items;
            list.iter()
                .any(|e| e.message.as_deref() == Some(half_open_note.as_str()))
                .then_some(())
        },
    )
    .await;
    let half_open = began.elapsed();

    // The outage lifts: the next call is the probe (here a new pod's create, the target being
    // offered again); it succeeds and the circuit closes.
    s.proxy.set(Mode::Pass);
    deploy("probe", 1).await;
    running_on(&s, "probe", 1).await;
    s.gw.eventually("the circuit closed", Duration::from_secs(150), || async {
        (circuit_state(&s.gw, s.target) == Some(0)).then_some(())
    })
    .await;
    let closed = began.elapsed();

    // New pods go to the preferred (cheaper) target again; the pods placed during the outage
    // keep theirs.
    deploy("after", 3).await;
    let after = running_on(&s, "after", 3).await;
    assert!(after.iter().all(|t| t == s.target), "{after:?}");
    let during = running_on(&s, "during", 6).await;
    assert!(during.iter().all(|t| t == "sim-local"), "{during:?}");
    println!(
        "faults: an ACI outage that lifts: {} requests at the proxy; the circuit seen open {:.1}s after the burst, half-open at {:.1}s, closed at {:.1}s after the outage lifted; new pods on {}",
        s.proxy.requests(),
        opened.as_secs_f64(),
        half_open.as_secs_f64(),
        closed.as_secs_f64(),
        s.target
    );
}
