//! Kills at every step: `burstgate run` (the real binary) is made to abort exactly after each
//! named step of a pod's journey (`BURSTGATE_FAIL_AFTER`, see `src/failpoint.rs`), on ACI (the
//! emulator behind Prism) and on Fargate (moto, behind the test's recording tap), and restarted.
//! After each kill the invariants are counted at the peer: every pod has exactly one live
//! workload, its IP is the workload's, no pod ever had two workloads alive at the same instant
//! (the peers' logs, `common::copies`), deleted pods leave no workload, and orphans are
//! collected.

use std::process::ExitStatus;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use burstgate::failpoint::FailPoint;

use crate::common::copies::{EcsTap, Lifetimes};
use crate::common::gateway::{
    Gateway, NodeCleanup, aci_faults, aks_deployment, azure_env, gateway_namespace, moto_env,
    node_ready, subscription_id,
};
use crate::common::{ecs_client, eventually, kube_admin, peers, unique_name};
use crate::crash_safety::{Census, aci_census, fargate_census};

const SETTLE: Duration = Duration::from_secs(120);
const PODS: i32 = 3;

/// The one target of a test, and how to count its workloads.
enum Peer {
    Aci { subscription: String },
    Fargate { cluster: String },
}

impl Peer {
    async fn census(&self) -> Census {
        match self {
            Peer::Aci { subscription } => aci_census(subscription).await,
            Peer::Fargate { cluster } => fargate_census(&ecs_client(), cluster).await,
        }
    }

    /// Every workload the peer ever ran for the test, with when it was alive.
    async fn lifetimes(&self, tap: &EcsTap) -> Lifetimes {
        let mut lives = Lifetimes::default();
        match self {
            Peer::Aci { subscription } => lives.add_aci(subscription).await,
            Peer::Fargate { cluster } => lives.add_fargate(&ecs_client(), cluster, tap).await,
        }
        lives
    }
}

/// One test's world: a namespace, a virtual node, a policy with one target, the environment
/// that reaches its peer.
struct World {
    client: kube::Client,
    ns: String,
    node: String,
    _cleanup: NodeCleanup,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    peer: Peer,
    /// The gateway reaches moto through it.
    tap: EcsTap,
}

impl World {
    async fn new(peer: Peer) -> World {
        let peers = peers();
        let client = kube_admin().await;
        let ns = gateway_namespace(&client, "fail").await;
        let node = unique_name("vfail");
        let target = match &peer {
            Peer::Aci { subscription } => {
                aci_faults(subscription, json!({"provisioningDelaySeconds": 1})).await;
                format!(
                    "{{name: aci-eastus, provider: aci, region: eastus, aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-fail}}}}"
                )
            }
            Peer::Fargate { cluster } => {
                ecs_client()
                    .create_cluster()
                    .cluster_name(cluster)
                    .send()
                    .await
                    .expect("CreateCluster on moto");
                format!(
                    "{{name: fargate-use1, provider: fargate, region: {}, fargate: {{cluster: {cluster}, subnets: [{}], securityGroups: [{}]}}}}",
                    peers.get("ECS_REGION"),
                    peers.get("ECS_TEST_SUBNET"),
                    peers.get("ECS_TEST_SG"),
                )
            }
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.yaml"),
            format!(
                "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {target}\n  rules:\n    - {{name: everything, match: {{}}}}\n"
            ),
        )
        .unwrap();
        let tap = EcsTap::start().await;
        let mut env = moto_env(&tap.url);
        env.extend(azure_env(peers.get("ACI_PRISM_URL")));
        // Orphans are collected a few seconds after they are first seen.
        env.push(("BURSTGATE_GC_MIN_AGE_SECONDS", "4".into()));
        World {
            client,
            _cleanup: NodeCleanup(node.clone()),
            ns,
            node,
            dir,
            env,
            peer,
            tap,
        }
    }

    /// Panics when a pod of the test ever had two workloads alive at once.
    async fn never_two_at_once(&self, when: &str) {
        self.peer
            .lifetimes(&self.tap)
            .await
            .assert_never_two_at_once(when);
    }

    fn start(&self, armed: Option<FailPoint>) -> Gateway {
        let mut env = self.env.clone();
        if let Some(point) = armed {
            env.push((burstgate::failpoint::ENV, point.as_str().into()));
        }
        Gateway::start_with_env(&self.node, &self.ns, self.dir.path(), "failing", env)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn deploy(&self, name: &str) {
        self.deployments()
            .create(
                &PostParams::default(),
                &aks_deployment(name, PODS, &self.node),
            )
            .await
            .unwrap();
    }

    /// Waits until every pod of every Deployment of the test runs with exactly one live workload
    /// at the peer, whose IP is the pod's, and no other workload lives; returns the pod count.
    async fn settled(&self, gw: &Gateway, what: &str) -> usize {
        gw.eventually(what, SETTLE, || async {
            let pods = self.pods().list(&ListParams::default()).await.ok()?.items;
            let census = self.peer.census().await;
            let ok = !pods.is_empty()
                && census.live_count() == pods.len()
                && census.duplicates() == 0
                && pods.iter().all(|p| {
                    let uid = p.uid().unwrap_or_default();
                    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                    let live = census.live.get(&uid).map(Vec::as_slice).unwrap_or_default();
                    ip.is_some() && live.len() == 1 && live[0].ip == ip
                });
            ok.then_some(pods.len())
        })
        .await
    }

    /// Waits until no pod is left and no workload lives at the peer.
    async fn emptied(&self, gw: &Gateway, what: &str) {
        gw.eventually(what, SETTLE, || async {
            let pods = self.pods().list(&ListParams::default()).await.ok()?.items;
            (pods.is_empty() && self.peer.census().await.live_count() == 0).then_some(())
        })
        .await
    }

    async fn delete_deployment(&self, name: &str) {
        self.deployments()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

fn aborted(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(6)
}

/// Every step of placement and creation: the gateway aborts right after it, a new one takes
/// over, and each pod still ends with exactly one workload.
async fn kills_during_placement(world: &World) {
    for (i, point) in [
        FailPoint::Decided,
        FailPoint::Annotated,
        FailPoint::ProviderAccepted,
        FailPoint::StatusPatched,
    ]
    .into_iter()
    .enumerate()
    {
        let mut gw = world.start(Some(point));
        node_ready(&world.client, &world.node).await;
        world.deploy(&format!("d{i}")).await;
        let status = gw.exited(SETTLE).await;
        assert!(aborted(status), "{point:?}: {status:?}\n{}", gw.log_tail());
        assert!(
            gw.log_tail()
                .contains(&format!("fail point {} reached", point.as_str())),
            "{}",
            gw.log_tail()
        );
        let gw = world.start(None);
        let pods = world
            .settled(
                &gw,
                &format!("one workload per pod after a kill {}", point.as_str()),
            )
            .await;
        assert_eq!(pods, PODS as usize * (i + 1));
        world
            .never_two_at_once(&format!("a kill after {}", point.as_str()))
            .await;
        gw.kill();
    }
}

/// A kill right after the provider accepted a delete: the pod and its workload are gone once a
/// new gateway takes over.
async fn kill_after_a_delete(world: &World) {
    let mut gw = world.start(Some(FailPoint::DeleteCalled));
    for i in 0..4 {
        world.delete_deployment(&format!("d{i}")).await;
    }
    let status = gw.exited(SETTLE).await;
    assert!(aborted(status), "{status:?}\n{}", gw.log_tail());
    let gw = world.start(None);
    world
        .emptied(&gw, "every pod and workload gone after a kill mid-delete")
        .await;
    world.never_two_at_once("a kill after delete-called").await;
    gw.kill();
}

/// Pods force-deleted while the gateway is down leave orphans; a gateway killed right after
/// GC listed them, then a new one, collects them all.
async fn kill_after_gc_listed(world: &World) {
    let gw = world.start(None);
    world.deploy("orphans").await;
    world.settled(&gw, "the orphans' pods running").await;
    gw.kill();
    world.delete_deployment("orphans").await;
    // With the gateway down nobody finishes the pods' deletion: force it, once the ReplicaSet
    // that would make new ones is gone.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(world.client.clone(), &world.ns);
    eventually("the ReplicaSet gone", SETTLE, || async {
        let left = replica_sets.list(&ListParams::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let pods = world.pods();
    eventually("the pods force-deleted", SETTLE, || async {
        let left = pods.list(&ListParams::default()).await.ok()?.items;
        for p in &left {
            let _ = pods.delete(&p.name_any(), &force).await;
        }
        left.is_empty().then_some(())
    })
    .await;
    assert_eq!(world.peer.census().await.live_count(), PODS as usize);
    let mut gw = world.start(Some(FailPoint::GcListed));
    let status = gw.exited(SETTLE).await;
    assert!(aborted(status), "{status:?}\n{}", gw.log_tail());
    let gw = world.start(None);
    world
        .emptied(&gw, "the orphans collected after a kill mid-GC")
        .await;
    let lives = world.peer.lifetimes(&world.tap).await;
    lives.assert_never_two_at_once("a kill after gc-listed");
    println!(
        "fail points: workloads ever created {}, ever doubled 0",
        lives.ever()
    );
    gw.kill();
}

#[tokio::test]
async fn a_gateway_killed_after_each_step_on_aci_leaves_one_workload_per_pod_and_no_orphan() {
    let world = World::new(Peer::Aci {
        subscription: subscription_id(),
    })
    .await;
    kills_during_placement(&world).await;
    kill_after_a_delete(&world).await;
    kill_after_gc_listed(&world).await;
}

#[tokio::test]
async fn a_gateway_killed_after_each_step_on_fargate_leaves_one_workload_per_pod_and_no_orphan() {
    let world = World::new(Peer::Fargate {
        cluster: unique_name("fail"),
    })
    .await;
    kills_during_placement(&world).await;
    kill_after_a_delete(&world).await;
    kill_after_gc_listed(&world).await;
}
