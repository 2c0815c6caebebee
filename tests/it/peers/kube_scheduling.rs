//! The real kube-controller-manager and kube-scheduler with a virtual node: a Deployment written
//! for AKS virtual nodes gets its pod from a ReplicaSet and bound to a Node that carries the
//! labels and taint of DESIGN.md; without the toleration the scheduler refuses the node.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common;

const TAINT_KEY: &str = "virtual-kubelet.io/provider";
/// A second taint, valued with the node's name, keeps pods of tests running in parallel (which
/// tolerate only the provider taint) off this test's node.
const TEST_TAINT_KEY: &str = "burstgate.io/test-node";

/// The Node status a virtual kubelet reports, with a fresh heartbeat.
fn ready_status() -> Value {
    let now = format!("{:.0}", Timestamp::now());
    json!({
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "burstgate test node",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "capacity": { "cpu": "100", "memory": "512Gi", "pods": "100" },
        "allocatable": { "cpu": "100", "memory": "512Gi", "pods": "100" },
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.20.2",
            "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
            "machineID": "", "osImage": "", "systemUUID": "",
        },
    })
}

/// A Node labelled and tainted as DESIGN.md says burstgate's virtual node is.
fn virtual_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "virtual-kubelet",
                "kubernetes.io/role": "agent",
                "kubernetes.io/os": "linux",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
            },
        },
        "spec": {
            "taints": [
                { "key": TAINT_KEY, "value": "azure", "effect": "NoSchedule" },
                { "key": TEST_TAINT_KEY, "value": name, "effect": "NoSchedule" },
            ],
        },
        "status": ready_status(),
    }))
    .expect("a valid Node")
}

/// A one-replica Deployment with the AKS virtual-node nodeSelector, tolerating the provider taint
/// or not. The selector also names this test's node, since parallel tests may register virtual
/// nodes too, and both tolerate the test's own taint.
fn deployment(name: &str, node: &str, tolerate: bool) -> Deployment {
    let mut tolerations = vec![
        json!({ "key": TEST_TAINT_KEY, "operator": "Equal", "value": node, "effect": "NoSchedule" }),
    ];
    if tolerate {
        tolerations.push(json!({ "key": TAINT_KEY, "operator": "Equal", "value": "azure", "effect": "NoSchedule" }));
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "containers": [{ "name": "app", "image": "nginx:1.27" }],
                    "nodeSelector": {
                        "type": "virtual-kubelet",
                        "kubernetes.io/role": "agent",
                        "beta.kubernetes.io/os": "linux",
                        "kubernetes.io/hostname": node,
                    },
                    "tolerations": tolerations,
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))
    .expect("a valid Deployment")
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

#[tokio::test]
async fn a_deployment_pod_is_bound_to_the_virtual_node_by_the_real_scheduler() {
    let client = common::kube_admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let node = common::unique_name("vnode");
    let tolerant = common::unique_name("tolerant");
    let intolerant = common::unique_name("intolerant");

    let body = async {
        nodes
            .create(&PostParams::default(), &virtual_node(&node))
            .await
            .expect("create the virtual node");
        // Heartbeats as a virtual kubelet sends them, so that the node-lifecycle controller keeps
        // the node Ready (it lifts the not-ready taint the NodeTaint admission put on it).
        let heartbeat = tokio::spawn({
            let (nodes, node) = (nodes.clone(), node.clone());
            async move {
                loop {
                    let status = json!({ "status": ready_status() });
                    let _ = nodes
                        .patch_status(&node, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        });

        for (name, tolerate) in [(&tolerant, true), (&intolerant, false)] {
            deployments
                .create(&PostParams::default(), &deployment(name, &node, tolerate))
                .await
                .expect("create a deployment");
        }

        let bound = common::eventually(
            "the scheduler to bind the tolerant pod",
            Duration::from_secs(90),
            || async {
                pods_of(&pods, &tolerant)
                    .await
                    .into_iter()
                    .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            },
        )
        .await;
        assert_eq!(
            bound.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node.as_str())
        );
        let owner = bound
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default();
        assert!(
            owner
                .iter()
                .any(|o| o.kind == "ReplicaSet" && o.name.starts_with(&tolerant)),
            "the pod was made by the Deployment's ReplicaSet: {owner:?}"
        );

        // The pod without the toleration is refused: it stays unbound with the taint as the reason.
        let refused = common::eventually(
            "the scheduler to refuse the intolerant pod",
            Duration::from_secs(60),
            || async {
                pods_of(&pods, &intolerant).await.into_iter().find(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.type_ == "PodScheduled"
                                    && c.status == "False"
                                    && c.reason.as_deref() == Some("Unschedulable")
                            })
                        })
                })
            },
        )
        .await;
        assert_eq!(
            refused.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            None,
            "the intolerant pod is not bound"
        );
        let message = refused
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find_map(|c| (c.type_ == "PodScheduled").then_some(c.message.unwrap_or_default()))
            .unwrap_or_default();
        assert!(
            message.contains(TAINT_KEY),
            "the scheduler names the virtual node's taint: {message}"
        );
        heartbeat.abort();
    };
    let outcome = AssertUnwindSafe(body).catch_unwind().await;

    // Clean up whatever happened: deployments first (so no new pods), then pods, then the node.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for name in [&tolerant, &intolerant] {
        let _ = deployments.delete(name, &DeleteParams::background()).await;
    }
    common::eventually(
        "the test's pods to be deleted",
        Duration::from_secs(60),
        || async {
            let mut left = 0;
            for app in [&tolerant, &intolerant] {
                for pod in pods_of(&pods, app).await {
                    left += 1;
                    let _ = pods
                        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &now)
                        .await;
                }
            }
            (left == 0).then_some(())
        },
    )
    .await;
    let _ = nodes.delete(&node, &DeleteParams::default()).await;

    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
