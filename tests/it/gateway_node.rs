//! The virtual node, leader election and policy reload against the real control plane: the node
//! registers as an AKS virtual node and its heartbeat keeps the real node-lifecycle controller
//! content, the real scheduler binds AKS manifests to it, its Ready condition means something,
//! others' conditions, labels and taints survive, two replicas elect one leader, and a bad policy
//! edit keeps the last good policy serving with a Warning Event on the node.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burstgate::config::RunConfig;
use burstgate::controller::context::Gateway;
use burstgate::controller::events::EventReason;
use burstgate::controller::leader::{ElectionConfig, LEADER_LEASE_NAME, LeaderElector};
use burstgate::controller::node::{self, NodeTiming};
use burstgate::controller::reload::{self, PolicyReloader, ReloadOutcome};
use burstgate::policy::model::ProviderKind;
use burstgate::policy::{ExclusionReason, Policy, load_files};
use burstgate::provider::factories::SimFactory;
use burstgate::provider::registry::Factory;
use burstgate::provider::sim::SimCloud;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{
    create_namespace, eventually, grant_leader_election, kube_admin, kube_gateway,
    recording_gateway, unique_name,
};

const WAIT: Duration = Duration::from_secs(60);
const TAINT_KEY: &str = "virtual-kubelet.io/provider";

/// Timing that shows changes within a second or two, for tests that are not about the defaults.
fn fast() -> NodeTiming {
    NodeTiming {
        lease_renew: Duration::from_secs(2),
        evaluate: Duration::from_millis(500),
        status_refresh: Duration::from_secs(2),
        ..NodeTiming::default()
    }
}

/// A policy with one simulated target (8 vCPU, 32 GiB, 20 pods) and, optionally, an ACI one.
fn sim_policy(with_aci: bool) -> Arc<Policy> {
    let mut yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: sim-local, provider: sim, region: local, quota: {vcpu: 8, memoryGiB: 32, pods: 20}}\n".to_owned();
    if with_aci {
        yaml.push_str("    - {name: aci-eastus, provider: aci, region: eastus, quota: {vcpu: 100, pods: 100}}\n");
    }
    Arc::new(load_files(&[("p.yaml".into(), yaml)]).expect("a valid policy"))
}

/// A policy whose only target is ACI, which the test gateway has no adapter for.
fn aci_only_policy() -> Arc<Policy> {
    let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: aci-eastus, provider: aci, region: eastus}\n";
    Arc::new(load_files(&[("p.yaml".into(), yaml.into())]).expect("a valid policy"))
}

fn gateway(
    client: kube::Client,
    node: &str,
    policy: watch::Receiver<Option<Arc<Policy>>>,
) -> Arc<Gateway> {
    let config = RunConfig::from_flags(&[
        "--node-name",
        node,
        "--cluster-id",
        "it",
        "--node-ip",
        "10.9.9.9",
        "--kubelet-port",
        "10250",
        "--identity",
        "it-replica",
    ])
    .expect("valid flags");
    let sim: Arc<dyn Factory> = Arc::new(SimFactory::new(SimCloud::new(Duration::ZERO, 100)));
    Gateway::new(
        client,
        config,
        policy,
        BTreeMap::from([(ProviderKind::Sim, sim)]),
        Default::default(),
    )
}

/// A node controller running for one test's own node name.
struct Running {
    gw: Arc<Gateway>,
    policy_tx: watch::Sender<Option<Arc<Policy>>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), node::Error>>,
    node: String,
}

async fn start(node: &str, policy: Option<Arc<Policy>>, timing: NodeTiming) -> Running {
    let (policy_tx, policy_rx) = watch::channel(policy);
    // The gateway runs as the identity deploy/rbac grants (tests/peers/kustomize/gateway-rbac).
    let gw = gateway(kube_gateway().await, node, policy_rx);
    let shutdown = CancellationToken::new();
    tokio::spawn(burstgate::gateway::sync_providers(
        gw.clone(),
        shutdown.clone(),
    ));
    let task = tokio::spawn(node::run_node_with(gw.clone(), shutdown.clone(), timing));
    Running {
        gw,
        policy_tx,
        shutdown,
        task,
        node: node.to_owned(),
    }
}

impl Running {
    /// Stops the node controller; `Err` says how it failed to stop cleanly.
    async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Err(_) => Err("the node controller did not stop within 20 s of shutdown".into()),
            Ok(Err(join)) => Err(format!("the node task failed: {join}")),
            Ok(Ok(Err(err))) => Err(format!("the node controller ended with an error: {err}")),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// Stops the node controller, deletes its node and Lease, then asserts it stopped cleanly.
    async fn stop_and_delete(self, client: &kube::Client) {
        let name = self.node.clone();
        let stopped = self.stop().await;
        delete_node(client, &name).await;
        stopped.expect("clean stop");
    }
}

/// Runs `body`, then `cleanup` whatever happened, then re-raises a failure of `body`.
async fn with_cleanup(body: impl Future<Output = ()>, cleanup: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Deletes the node and its heartbeat Lease.
async fn delete_node(client: &kube::Client, node: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(node, &DeleteParams::default())
        .await;
    let _ = Api::<Lease>::namespaced(client.clone(), node::NODE_LEASE_NAMESPACE)
        .delete(node, &DeleteParams::default())
        .await;
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn ready(node: &Node) -> Option<(String, String, String)> {
    condition(node, "Ready").map(|c| {
        (
            c.status.clone(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        )
    })
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| t.key.clone())
        .collect()
}

fn capacity(node: &Node) -> BTreeMap<String, String> {
    node.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Waits until the node's Ready condition has `status` and `reason`.
async fn wait_ready(nodes: &Api<Node>, node: &str, status: &str, reason: &str) -> Node {
    wait_ready_saying(nodes, node, status, reason, "").await
}

/// [`wait_ready`] until the condition's message also contains `says`: the message can pass
/// through intermediate states (an adapter still being built) before it settles.
async fn wait_ready_saying(
    nodes: &Api<Node>,
    node: &str,
    status: &str,
    reason: &str,
    says: &str,
) -> Node {
    eventually(
        &format!("node {node} Ready={status} ({reason}) saying {says:?}"),
        WAIT,
        || async {
            nodes.get(node).await.ok().filter(|n| {
                ready(n).is_some_and(|(s, r, m)| s == status && r == reason && m.contains(says))
            })
        },
    )
    .await
}

/// `(type, reason, note)` of the Events about `node`, read back through the core/v1 API that
/// `kubectl describe node` uses (involvedObject kind, name and uid = name).
async fn node_events(client: &kube::Client, node: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::all(client.clone());
    let selector = format!(
        "involvedObject.kind=Node,involvedObject.name={node},involvedObject.uid={node},involvedObject.namespace="
    );
    api.list(&ListParams::default().fields(&selector))
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_node_registers_as_an_aks_virtual_node_and_its_heartbeat_keeps_it_ready_past_the_grace_period()
 {
    let client = kube_admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), node::NODE_LEASE_NAMESPACE);
    let name = unique_name("vn-heartbeat");
    let started = tokio::time::Instant::now();
    // Default timing: the heartbeat the real node-lifecycle controller sees is the production one.
    let running = start(&name, Some(sim_policy(true)), NodeTiming::default()).await;

    let body = async {
        let registered = wait_ready(&nodes, &name, "True", node::REASON_READY).await;
        let labels = registered.metadata.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("type", "virtual-kubelet"),
            ("kubernetes.io/role", "agent"),
            ("kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/hostname", name.as_str()),
        ] {
            assert_eq!(
                labels.get(k).map(String::as_str),
                Some(v),
                "label {k}: {labels:?}"
            );
        }
        let taint = registered
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .and_then(|ts| ts.iter().find(|t| t.key == TAINT_KEY))
            .cloned();
        let taint = taint.expect("the virtual-kubelet taint");
        assert_eq!(
            (taint.value.as_deref(), taint.effect.as_str()),
            (Some("azure"), "NoSchedule")
        );
        // Only sim-local is usable (no ACI adapter): capacity is its quota alone.
        let cap = capacity(&registered);
        assert_eq!(
            (
                cap["cpu"].as_str(),
                cap["memory"].as_str(),
                cap["pods"].as_str()
            ),
            ("8", "32Gi", "20"),
            "{cap:?}"
        );
        let status = registered.status.clone().unwrap();
        assert_eq!(
            status.allocatable.as_ref().map(|a| a["pods"].0.as_str()),
            Some("20")
        );
        let addresses = status.addresses.clone().unwrap_or_default();
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == "10.9.9.9"),
            "{addresses:?}"
        );
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "Hostname" && a.address == name),
            "{addresses:?}"
        );
        assert_eq!(
            status
                .daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|k| k.port),
            Some(10250)
        );
        let info = status.node_info.clone().unwrap();
        assert!(
            info.kubelet_version.contains("burstgate"),
            "{}",
            info.kubelet_version
        );
        assert_eq!(
            (info.operating_system.as_str(), info.architecture.as_str()),
            ("linux", "amd64")
        );
        let (_, _, message) = ready(&registered).unwrap();
        assert!(
            message.contains("aci-eastus: provider aci is not enabled on this gateway"),
            "{message}"
        );
        for pressure in [
            "MemoryPressure",
            "DiskPressure",
            "PIDPressure",
            "NetworkUnavailable",
        ] {
            assert_eq!(
                condition(&registered, pressure).map(|c| c.status.as_str()),
                Some("False"),
                "{pressure}"
            );
        }

        // The heartbeat Lease is the kubelet's: named after the node, held by it, 40 s, renewed.
        let lease = eventually("the heartbeat lease", WAIT, || async {
            leases.get_opt(&name).await.ok().flatten()
        })
        .await;
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owner = lease.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner.iter().any(|o| o.kind == "Node" && o.name == name),
            "owned by the node: {owner:?}"
        );
        let first_renew = spec.renew_time.unwrap().0;
        eventually(
            "the lease to be renewed",
            Duration::from_secs(25),
            || async {
                let renewed = leases.get(&name).await.ok()?.spec?.renew_time?.0;
                (renewed > first_renew).then_some(())
            },
        )
        .await;
        let first_heartbeat = condition(&registered, "Ready")
            .and_then(|c| c.last_heartbeat_time.clone())
            .unwrap()
            .0;

        // Past the 40 s grace period, and past one status refresh (60 s), looked at every second:
        // never marked unreachable or not ready, never Unknown, always Ready by the gateway's word.
        while tokio::time::Instant::now() < started + Duration::from_secs(65) {
            let now = nodes.get(&name).await.expect("the node");
            let keys = taint_keys(&now);
            assert!(
                !keys.iter().any(|k| k == "node.kubernetes.io/unreachable"
                    || k == "node.kubernetes.io/not-ready"),
                "taints after {:?}: {keys:?}",
                started.elapsed()
            );
            let (status, reason, _) = ready(&now).unwrap();
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", node::REASON_READY),
                "after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let later = nodes.get(&name).await.expect("the node");
        let heartbeat = condition(&later, "Ready")
            .and_then(|c| c.last_heartbeat_time.clone())
            .unwrap()
            .0;
        assert!(
            heartbeat > first_heartbeat,
            "lastHeartbeatTime advanced: {first_heartbeat} -> {heartbeat}"
        );
        let transition = condition(&later, "Ready")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap()
            .0;
        assert!(
            transition < heartbeat,
            "an unchanged condition keeps its transition time"
        );
    };
    with_cleanup(body, async {
        running.stop_and_delete(&client).await;
    })
    .await;
}

#[tokio::test]
async fn a_deployment_written_for_aks_virtual_nodes_is_bound_to_the_gateway_node_by_the_real_scheduler()
 {
    let client = kube_admin().await;
    let name = unique_name("vn-sched");
    let ns = unique_name("vn-sched");
    create_namespace(&client, &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // A GPU target too: the node must offer nvidia.com/gpu, or a GPU pod never schedules.
    let gpu_policy = {
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: sim-local, provider: sim, region: local, quota: {vcpu: 8, memoryGiB: 32, pods: 20}}\n    - {name: sim-t4, provider: sim, region: eastus, quota: {vcpu: 16, pods: 4}, limits: {gpus: [T4]}}\n";
        Arc::new(load_files(&[("p.yaml".into(), yaml.into())]).expect("a valid policy"))
    };
    let running = start(&name, Some(gpu_policy), fast()).await;

    let body = async {
        // The manifest AKS documents for virtual nodes, plus the hostname so that parallel tests'
        // virtual nodes do not take the pod.
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "aks-app" },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "aks-app" } },
                "template": {
                    "metadata": { "labels": { "app": "aks-app" } },
                    "spec": {
                        "containers": [{ "name": "app", "image": "mcr.microsoft.com/azuredocs/aci-helloworld" }],
                        "nodeSelector": { "kubernetes.io/role": "agent", "beta.kubernetes.io/os": "linux", "type": "virtual-kubelet", "kubernetes.io/hostname": name },
                        "tolerations": [
                            { "key": "virtual-kubelet.io/provider", "operator": "Exists" },
                            { "key": "azure.com/aci", "effect": "NoSchedule" },
                        ],
                    },
                },
            },
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create the deployment");
        let bound = eventually(
            "the scheduler to bind the pod",
            Duration::from_secs(90),
            || async {
                pods.list(&ListParams::default().labels("app=aks-app"))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            },
        )
        .await;
        assert_eq!(
            bound.spec.and_then(|s| s.node_name).as_deref(),
            Some(name.as_str())
        );

        // A GPU pod as AKS documents it for virtual nodes: bound too.
        let gpu: Pod = serde_json::from_value(json!({
            "metadata": { "name": "gpu-job", "labels": { "app": "gpu-job" } },
            "spec": {
                "containers": [{ "name": "train", "image": "mcr.microsoft.com/azuredocs/samples-tf-mnist-demo:gpu",
                                 "resources": { "limits": { "nvidia.com/gpu": "1" } } }],
                "nodeSelector": { "type": "virtual-kubelet", "kubernetes.io/hostname": name },
                "tolerations": [{ "key": "virtual-kubelet.io/provider", "operator": "Exists" }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &gpu)
            .await
            .expect("create the GPU pod");
        let bound = eventually(
            "the scheduler to bind the GPU pod",
            Duration::from_secs(90),
            || async {
                pods.get("gpu-job")
                    .await
                    .ok()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            },
        )
        .await;
        assert_eq!(
            bound.spec.and_then(|s| s.node_name).as_deref(),
            Some(name.as_str())
        );
        let node = Api::<Node>::all(client.clone()).get(&name).await.unwrap();
        assert_eq!(
            capacity(&node).get("nvidia.com/gpu").map(String::as_str),
            Some("4"),
            "one GPU per pod of the GPU target"
        );
    };
    with_cleanup(body, async {
        let stopped = running.stop().await;
        let _ = deployments
            .delete("aks-app", &DeleteParams::background())
            .await;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        eventually("the test's pods to go", WAIT, || async {
            let left = pods.list(&ListParams::default()).await.ok()?.items;
            for p in &left {
                let _ = pods
                    .delete(p.metadata.name.as_deref().unwrap_or_default(), &now)
                    .await;
            }
            left.is_empty().then_some(())
        })
        .await;
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
        delete_node(&client, &name).await;
        stopped.expect("clean stop");
    })
    .await;
}

#[tokio::test]
async fn the_node_is_ready_only_while_a_policy_has_a_usable_target_and_says_why_not() {
    let client = kube_admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = unique_name("vn-ready");
    let running = start(&name, None, fast()).await;
    let (gw, policy_tx) = (running.gw.clone(), running.policy_tx.clone());

    let body = async {
        let none = wait_ready(&nodes, &name, "False", node::REASON_NO_POLICY).await;
        assert_eq!(
            capacity(&none).get("pods").map(String::as_str),
            Some("0"),
            "no policy, no room"
        );

        policy_tx.send_replace(Some(aci_only_policy()));
        // Until the registry has tried to build its adapter, the target is "not ready yet".
        let says = "aci-eastus: provider aci is not enabled on this gateway";
        let no_target =
            wait_ready_saying(&nodes, &name, "False", node::REASON_NO_USABLE_TARGET, says).await;
        assert_eq!(
            capacity(&no_target).get("cpu").map(String::as_str),
            Some("0")
        );

        policy_tx.send_replace(Some(sim_policy(false)));
        let usable = wait_ready(&nodes, &name, "True", node::REASON_READY).await;
        assert_eq!(
            capacity(&usable).get("pods").map(String::as_str),
            Some("20")
        );

        // A target's circuit opens: health, not policy, changed; the node follows.
        gw.set_exclusion("sim-local", Some(ExclusionReason::CircuitOpen));
        wait_ready_saying(
            &nodes,
            &name,
            "False",
            node::REASON_NO_USABLE_TARGET,
            "sim-local: circuit open",
        )
        .await;

        let events = eventually("the readiness events", WAIT, || async {
            let events = node_events(&client, &name).await;
            let has = |reason: &str| events.iter().any(|(_, r, _)| r == reason);
            (has(EventReason::NoPolicy.as_str())
                && has(EventReason::NoUsableTarget.as_str())
                && has(EventReason::NodeReady.as_str()))
            .then_some(events)
        })
        .await;
        assert!(
            events
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == EventReason::NoUsableTarget.as_str()),
            "{events:?}"
        );
    };
    with_cleanup(body, async {
        running.stop_and_delete(&client).await;
    })
    .await;
}

#[tokio::test]
async fn a_condition_written_by_someone_else_survives_the_gateway_status_patches() {
    let client = kube_admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = unique_name("vn-foreign");
    let running = start(&name, Some(sim_policy(false)), fast()).await;
    let policy_tx = running.policy_tx.clone();

    let body = async {
        let before = wait_ready(&nodes, &name, "True", node::REASON_READY).await;
        let beat = condition(&before, "Ready")
            .and_then(|c| c.last_heartbeat_time.clone())
            .unwrap()
            .0;
        // What node-problem-detector would write, with its own strategic merge patch.
        let now = format!("{:.0}", Timestamp::now());
        let foreign = json!({ "status": { "conditions": [{
            "type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock", "message": "kernel has no deadlock",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }] } });
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&foreign))
            .await
            .expect("patch a foreign condition");

        // A readiness flip (a real change) and a few refreshes later, the foreign condition is there.
        policy_tx.send_replace(Some(aci_only_policy()));
        wait_ready(&nodes, &name, "False", node::REASON_NO_USABLE_TARGET).await;
        policy_tx.send_replace(Some(sim_policy(false)));
        let after = eventually("two more heartbeats of the gateway", WAIT, || async {
            let n = nodes.get(&name).await.ok()?;
            let c = condition(&n, "Ready")?;
            (c.status == "True"
                && c.last_heartbeat_time.as_ref()?.0 > beat + Duration::from_secs(4))
            .then_some(n)
        })
        .await;
        let kept = condition(&after, "KernelDeadlock").expect("the foreign condition survives");
        assert_eq!(
            (kept.status.as_str(), kept.reason.as_deref()),
            ("False", Some("KernelHasNoDeadlock"))
        );
    };
    with_cleanup(body, async {
        running.stop_and_delete(&client).await;
    })
    .await;
}

#[tokio::test]
async fn taking_over_an_existing_node_keeps_the_labels_and_taints_of_others() {
    let client = kube_admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let name = unique_name("vn-existing");
    let existing: Node = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "team": "ops", "type": "something-else" } },
        "spec": { "taints": [{ "key": "example.com/maintenance", "value": "true", "effect": "PreferNoSchedule" }] },
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &existing)
        .await
        .expect("create the node beforehand");
    let running = start(&name, Some(sim_policy(false)), fast()).await;

    let body = async {
        let taken = wait_ready(&nodes, &name, "True", node::REASON_READY).await;
        let labels = taken.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("team").map(String::as_str),
            Some("ops"),
            "others' label kept"
        );
        assert_eq!(
            labels.get("type").map(String::as_str),
            Some("virtual-kubelet"),
            "ours set"
        );
        let keys = taint_keys(&taken);
        assert!(
            keys.iter().any(|k| k == "example.com/maintenance"),
            "others' taint kept: {keys:?}"
        );
        assert!(keys.iter().any(|k| k == TAINT_KEY), "ours added: {keys:?}");

        // Someone removes our taint; the gateway puts it back at its next status patch.
        let without: Vec<_> = taken
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key != TAINT_KEY)
            .collect();
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "taints": without } })),
            )
            .await
            .expect("remove our taint");
        eventually("the gateway to restore its taint", WAIT, || async {
            let n = nodes.get(&name).await.ok()?;
            let keys = taint_keys(&n);
            (keys.iter().any(|k| k == TAINT_KEY)
                && keys.iter().any(|k| k == "example.com/maintenance"))
            .then_some(())
        })
        .await;
    };
    with_cleanup(body, async {
        running.stop_and_delete(&client).await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_policy_edit_keeps_the_last_good_policy_serving_and_warns_on_the_node() {
    let client = kube_admin().await;
    let name = unique_name("vn-reload");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.yaml");
    let good = |target: &str| {
        format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {{name: {target}, provider: sim, region: local}}\n"
        )
    };
    std::fs::write(&file, good("first")).unwrap();
    let (tx, rx) = watch::channel(None);
    let gw = gateway(kube_gateway().await, &name, rx.clone());
    let shutdown = CancellationToken::new();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn(reload::run_reload(
        PolicyReloader::new(dir.path(), tx),
        gw,
        shutdown.clone(),
        {
            let outcomes = outcomes.clone();
            move |o: &ReloadOutcome| outcomes.lock().unwrap().push(o.metric_label())
        },
    ));
    let hash =
        |rx: &watch::Receiver<Option<Arc<Policy>>>| rx.borrow().as_ref().map(|p| p.hash.clone());

    let body = async {
        let first = eventually("the first load", WAIT, || async { hash(&rx) }).await;
        std::fs::write(&file, "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: broken, provider: nowhere, region: local}\n").unwrap();
        let (_, _, note) = eventually("a PolicyInvalid warning on the node", WAIT, || async {
            node_events(&client, &name)
                .await
                .into_iter()
                .find(|(t, r, _)| t == "Warning" && r == EventReason::PolicyInvalid.as_str())
        })
        .await;
        assert!(
            note.contains("targets.yaml") && note.contains("provider"),
            "names the file and field: {note}"
        );
        assert!(
            note.contains(&format!("still serving policy {first}")),
            "{note}"
        );
        assert_eq!(
            hash(&rx),
            Some(first.clone()),
            "the last good policy keeps serving"
        );

        std::fs::write(&file, good("second")).unwrap();
        let second = eventually("the fixed policy to load", WAIT, || async {
            hash(&rx).filter(|h| *h != first)
        })
        .await;
        eventually("a PolicyLoaded event with the new hash", WAIT, || async {
            node_events(&client, &name)
                .await
                .into_iter()
                .find(|(t, r, n)| {
                    t == "Normal" && r == EventReason::PolicyLoaded.as_str() && n.contains(&second)
                })
        })
        .await;
        let seen = outcomes.lock().unwrap().clone();
        assert_eq!(
            (seen.first(), seen.last()),
            (Some(&"loaded"), Some(&"loaded")),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|o| **o == "loaded").count(),
            2,
            "{seen:?}"
        );
        assert!(seen.contains(&"rejected"), "{seen:?}");
    };
    with_cleanup(body, async {
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the reloader stops on shutdown")
            .unwrap();
    })
    .await;
}

/// One replica of the election test: its elector task, shutdown token and leadership watch.
struct Replica {
    identity: String,
    shutdown: CancellationToken,
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<(), burstgate::controller::leader::Error>>,
}

/// Counts replicas doing leader work at once, and the most ever seen.
#[derive(Default)]
struct Work {
    active: AtomicUsize,
    most: AtomicUsize,
    terms: Mutex<Vec<String>>,
}

/// Decrements the active count when the leader's work ends, even if its future is dropped.
struct Active(Arc<Work>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn replica(client: &kube::Client, ns: &str, identity: &str, work: &Arc<Work>) -> Replica {
    let elector = LeaderElector::new(
        client.clone(),
        ElectionConfig::new(ns, identity, Duration::from_secs(3)),
    );
    let leading = elector.subscribe();
    let shutdown = CancellationToken::new();
    let (work, id) = (work.clone(), identity.to_owned());
    let task = tokio::spawn(elector.run(shutdown.clone(), move |term| {
        let (work, id) = (work.clone(), id.clone());
        async move {
            let now = work.active.fetch_add(1, Ordering::SeqCst) + 1;
            work.most.fetch_max(now, Ordering::SeqCst);
            work.terms.lock().unwrap().push(id);
            let _active = Active(work);
            term.cancelled().await;
        }
    }));
    Replica {
        identity: identity.to_owned(),
        shutdown,
        leading,
        task,
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get(LEADER_LEASE_NAME)
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_standby_takes_over_when_it_goes() {
    let client = kube_admin().await;
    let ns = unique_name("leader");
    create_namespace(&client, &ns).await;
    grant_leader_election(&client, &ns).await;
    let elector_client = kube_gateway().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let work = Arc::new(Work::default());

    let body = async {
        let a = replica(&elector_client, &ns, "replica-a", &work);
        let b = replica(&elector_client, &ns, "replica-b", &work);
        let first = eventually("one replica to lead", Duration::from_secs(10), || async {
            holder(&leases).await
        })
        .await;
        // Over more than a lease period, exactly one replica leads, and it is the Lease holder.
        for _ in 0..20 {
            let leaders = [&a, &b].iter().filter(|r| *r.leading.borrow()).count();
            assert!(leaders <= 1, "never two leaders");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some(first.as_str()),
            "the leader kept its lease"
        );
        let (leader, standby) = if a.identity == first { (a, b) } else { (b, a) };
        assert!(*leader.leading.borrow() && !*standby.leading.borrow());

        // Graceful shutdown releases the lease: the standby leads at its next attempt.
        let handover = tokio::time::Instant::now();
        leader.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), leader.task)
            .await
            .expect("the leader stops")
            .unwrap()
            .expect("the leader stepped down cleanly");
        assert!(!*leader.leading.borrow());
        let mut standby_leading = standby.leading.clone();
        tokio::time::timeout(Duration::from_secs(3), standby_leading.wait_for(|l| *l))
            .await
            .expect("the standby takes over at once")
            .unwrap();
        assert!(
            handover.elapsed() < Duration::from_secs(3),
            "no lease period to wait: {:?}",
            handover.elapsed()
        );
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some(standby.identity.as_str())
        );

        // A leader that dies without releasing: a new standby waits out the lease, then leads.
        let c = replica(&elector_client, &ns, "replica-c", &work);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!*c.leading.borrow(), "c stands by while b renews");
        let died = tokio::time::Instant::now();
        standby.task.abort();
        let _ = standby.task.await;
        let mut c_leading = c.leading.clone();
        tokio::time::timeout(Duration::from_secs(8), c_leading.wait_for(|l| *l))
            .await
            .expect("c takes over within the lease period")
            .unwrap();
        let took = died.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "c respected the dead leader's lease: {took:?}"
        );
        assert!(
            took <= Duration::from_secs(3 + 2),
            "within one lease period and a retry: {took:?}"
        );
        assert_eq!(holder(&leases).await.as_deref(), Some("replica-c"));

        // Someone else takes the lease: c stops its work and stands by.
        intrude(&leases).await;
        tokio::time::timeout(Duration::from_secs(5), c_leading.wait_for(|l| !*l))
            .await
            .expect("c steps down")
            .unwrap();
        assert_eq!(
            work.active.load(Ordering::SeqCst),
            0,
            "no leader work left running"
        );

        c.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), c.task)
            .await
            .expect("c stops")
            .unwrap()
            .expect("c stepped down cleanly");
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some("intruder"),
            "c does not release a lease it does not hold"
        );
        assert_eq!(
            work.most.load(Ordering::SeqCst),
            1,
            "leader work never overlapped"
        );
        assert_eq!(
            *work.terms.lock().unwrap(),
            [
                first.clone(),
                standby.identity.clone(),
                "replica-c".to_owned()
            ]
        );
    };
    with_cleanup(body, async {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
    })
    .await;
}

/// Someone else writes itself into the Lease as holder, for an hour.
async fn intrude(leases: &Api<Lease>) {
    eventually(
        "the intruder to take the lease (409s retried)",
        Duration::from_secs(10),
        || async {
            let mut lease = leases.get(LEADER_LEASE_NAME).await.ok()?;
            let spec = lease.spec.as_mut()?;
            spec.holder_identity = Some("intruder".into());
            spec.lease_duration_seconds = Some(3600);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            leases
                .replace(LEADER_LEASE_NAME, &PostParams::default(), &lease)
                .await
                .ok()
        },
    )
    .await;
}

#[tokio::test]
async fn a_leader_renews_its_lease_in_one_write_and_reads_it_again_only_after_another_wrote_it() {
    let client = kube_admin().await;
    let ns = unique_name("leader-renew");
    create_namespace(&client, &ns).await;
    grant_leader_election(&client, &ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let (gateway, sent) = recording_gateway().await;
    let elector = LeaderElector::new(
        gateway,
        ElectionConfig::new(&ns, "renewer", Duration::from_secs(3)),
    );
    let mut leading = elector.subscribe();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(elector.run(
        shutdown.clone(),
        |term| async move { term.cancelled().await },
    ));
    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEADER_LEASE_NAME}");
    let calls = |method: http::Method| {
        let sent = sent.lock().unwrap();
        sent.iter()
            .filter(|(m, p)| *m == method && *p == lease_path)
            .count()
    };
    let renew_time = || async {
        let lease = leases.get(LEADER_LEASE_NAME).await.unwrap();
        lease.spec.unwrap().renew_time.unwrap()
    };
    // Renewals: every retry period (0.4 s), each a new renewTime.
    let renewed_after = |before: MicroTime, what: &'static str| {
        let renew_time = &renew_time;
        async move {
            eventually(what, Duration::from_secs(10), || async {
                (renew_time().await != before).then_some(())
            })
            .await
        }
    };

    let body = async {
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
            .await
            .expect("the replica leads")
            .unwrap();
        let reads_to_lead = calls(http::Method::GET);
        for _ in 0..3 {
            renewed_after(renew_time().await, "a renewal").await;
        }
        assert_eq!(
            calls(http::Method::GET),
            reads_to_lead,
            "renewals read nothing: {:?}",
            sent.lock().unwrap()
        );
        assert!(calls(http::Method::PUT) >= 3);

        // Someone else writes the Lease, leaving this replica its holder: the next renewal's
        // write conflicts, so it reads the Lease once, finds itself the holder and renews.
        let before = eventually(
            "the other write (409s retried)",
            Duration::from_secs(10),
            || async {
                let mut lease = leases.get(LEADER_LEASE_NAME).await.ok()?;
                lease
                    .metadata
                    .labels
                    .get_or_insert_default()
                    .insert("touched".into(), "by-an-operator".into());
                let written = leases
                    .replace(LEADER_LEASE_NAME, &PostParams::default(), &lease)
                    .await
                    .ok()?;
                written.spec?.renew_time
            },
        )
        .await;
        renewed_after(before, "a renewal after the conflict").await;
        renewed_after(renew_time().await, "the next renewal").await;
        assert_eq!(calls(http::Method::GET), reads_to_lead + 1);
        assert!(*leading.borrow(), "still the leader");
        let lease = leases.get(LEADER_LEASE_NAME).await.unwrap();
        assert_eq!(
            lease.spec.unwrap().holder_identity.as_deref(),
            Some("renewer")
        );
        assert_eq!(
            lease.metadata.labels.unwrap()["touched"],
            "by-an-operator",
            "the renewal kept the other writer's change"
        );
        shutdown.cancel();
        task.await.unwrap().unwrap();
    };
    with_cleanup(body, async {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_leader_whose_work_will_not_stop_is_fenced_out_within_its_stop_budget() {
    let client = kube_admin().await;
    let ns = unique_name("leader-fence");
    create_namespace(&client, &ns).await;
    grant_leader_election(&client, &ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let config = ElectionConfig::new(&ns, "stuck", Duration::from_secs(3));
    let budget = config.stop_budget();
    let elector = LeaderElector::new(kube_gateway().await, config);
    let mut leading = elector.subscribe();
    // Work that ignores its term, as a call hung on a partitioned apiserver would.
    let task = tokio::spawn(elector.run(CancellationToken::new(), |_term| {
        std::future::pending::<()>()
    }));

    let body = async {
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
            .await
            .expect("the replica leads")
            .unwrap();
        intrude(&leases).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the elector gives up within the renew period and the stop budget")
            .unwrap();
        match ended {
            Err(err @ burstgate::controller::leader::Error::ControllersStuck { after }) => {
                assert_eq!(after, budget);
                assert!(!err.is_retryable(), "{err}");
            }
            other => panic!("expected ControllersStuck, got {other:?}"),
        }
        assert_eq!(
            holder(&leases).await.as_deref(),
            Some("intruder"),
            "the fenced replica wrote nothing more"
        );
    };
    with_cleanup(body, async {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_leader_shutting_down_clears_the_holder_of_its_lease() {
    let client = kube_admin().await;
    let ns = unique_name("leader-release");
    create_namespace(&client, &ns).await;
    grant_leader_election(&client, &ns).await;
    let elector_client = kube_gateway().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let work = Arc::new(Work::default());

    let body = async {
        let only = replica(&elector_client, &ns, "only", &work);
        let mut leading = only.leading.clone();
        tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
            .await
            .expect("the only replica leads")
            .unwrap();
        assert_eq!(holder(&leases).await.as_deref(), Some("only"));
        only.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), only.task)
            .await
            .expect("it stops")
            .unwrap()
            .expect("it stepped down cleanly");
        let lease = leases.get(LEADER_LEASE_NAME).await.unwrap();
        assert_eq!(holder(&leases).await, None, "released: {:?}", lease.spec);
        assert_eq!(work.active.load(Ordering::SeqCst), 0);
    };
    with_cleanup(body, async {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
    })
    .await;
}
