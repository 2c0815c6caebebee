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

async fn every_pod_falls_back_and_the_proxy_sees_no_more_than_the_buckets(
    cloud: Cloud,
    mode: Mode,
) {
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
