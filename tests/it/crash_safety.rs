//! Crash safety, counted at the peers: `burstgate run` (the real binary) is killed with SIGKILL
//! at random points of a 300-pod burst across ACI (the emulator behind Prism) and Fargate (moto)
//! and restarted, ten times; then every pod must have exactly one workload, with the status and
//! IP the peer reports, and workloads left behind by pods deleted while the gateway was down must
//! be collected.
//!
//! `BURSTGATE_CRASH_PODS`, `BURSTGATE_CRASH_KILLS` and `BURSTGATE_CRASH_SEED` replay or shrink a
//! run; the seed of every run is printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::gateway::{
    Gateway, NodeCleanup, aci_faults, aci_groups, aks_deployment, azure_env, gateway_namespace,
    moto_env, node_ready,
};
use crate::common::{ecs_client, eventually, kube_admin, peers, unique_name};

/// splitmix64: kill points reproducible from the printed seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn guid(rng: &mut Rng) -> String {
    let h = format!("{:016x}{:016x}", rng.next(), rng.next());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A workload as its peer reports it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    name: String,
    pub(crate) ip: Option<String>,
    /// The container group's instance state, or the task's lastStatus.
    state: String,
}

/// What one peer holds for the test, by pod UID: the live workloads, and every workload ever
/// started (stopped ones included).
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub(crate) live: BTreeMap<String, Vec<Live>>,
    pub(crate) ever: BTreeMap<String, usize>,
}

impl Census {
    pub(crate) fn live_count(&self) -> usize {
        self.live.values().map(Vec::len).sum()
    }

    pub(crate) fn duplicates(&self) -> usize {
        self.live.values().filter(|w| w.len() > 1).count()
    }

    fn ever_duplicated(&self) -> usize {
        self.ever.values().filter(|n| **n > 1).count()
    }
}

/// The container groups of `subscription` at the emulator (its control API reads its state).
pub(crate) async fn aci_census(subscription: &str) -> Census {
    let mut census = Census::default();
    for g in aci_groups(subscription).await {
        let Some(uid) = g["tags"]["burstgate.io-pod-uid"]
            .as_str()
            .map(str::to_string)
        else {
            continue;
        };
        *census.ever.entry(uid.clone()).or_default() += 1;
        if g["provisioningState"] != "Deleting" {
            census.live.entry(uid).or_default().push(Live {
                name: g["name"].as_str().unwrap_or_default().to_string(),
                ip: g["ip"].as_str().map(str::to_string),
                state: g["state"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    census
}

/// The tasks of `cluster` at moto, RUNNING and STOPPED, by their pod-uid tag.
pub(crate) async fn fargate_census(ecs: &aws_sdk_ecs::Client, cluster: &str) -> Census {
    use aws_sdk_ecs::types::{DesiredStatus, TaskField};
    let mut census = Census::default();
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
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
        for chunk in arns.chunks(100) {
            let described = ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .expect("DescribeTasks on moto");
            for t in described.tasks() {
                let uid = t
                    .tags()
                    .iter()
                    .find(|tag| tag.key() == Some("burstgate.io/pod-uid"))
                    .and_then(|tag| tag.value());
                let Some(uid) = uid.map(str::to_string) else {
                    continue;
                };
                *census.ever.entry(uid.clone()).or_default() += 1;
                if t.last_status() != Some("STOPPED") && t.desired_status() != Some("STOPPED") {
                    let ip = t
                        .attachments()
                        .iter()
                        .flat_map(|a| a.details())
                        .find(|d| d.name() == Some("privateIPv4Address"))
                        .and_then(|d| d.value())
                        .map(str::to_string);
                    census.live.entry(uid).or_default().push(Live {
                        name: t.task_arn().unwrap_or_default().to_string(),
                        ip,
                        state: t.last_status().unwrap_or_default().to_string(),
                    });
                }
            }
        }
    }
    census
}

#[tokio::test]
async fn a_gateway_killed_at_random_points_of_a_300_pod_burst_leaves_no_duplicate_no_orphan_and_true_statuses()
 {
    let n = setting("BURSTGATE_CRASH_PODS", 300) as usize;
    let kills = setting("BURSTGATE_CRASH_KILLS", 10);
    let seed = setting(
        "BURSTGATE_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!(
        "crash safety: {n} pods, {kills} kills, seed {seed} (BURSTGATE_CRASH_SEED={seed} replays the kill points)"
    );
    let mut rng = Rng(seed);
    let peers = peers();
    let client = kube_admin().await;
    let ns = gateway_namespace(&client, "crash").await;
    let node = unique_name("vcrash");
    let _cleanup = NodeCleanup(node.clone());

    // ACI: a subscription of the test's own at the emulator, reached through Prism; containers
    // come up after a second. Fargate: a cluster of the test's own on moto.
    let subscription = guid(&mut rng);
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    let ecs = ecs_client();
    let cluster = unique_name("crash");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");

    // ACI is cheaper, so it fills first up to a third of the burst (100 of 300: its regional
    // capacity of container groups); the rest goes to Fargate. The ACI create limits (100 per 5 min) are raised as an operator with
    // a quota increase would, so the burst is not spread over minutes.
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {{vcpuHour: 0.03, gibHour: 0.003}}
      quota: {{vcpu: 100, pods: {aci_pods}}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-crash}}
      rateLimits:
        - {{operation: create, burst: 400, perSecond: 40}}
    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445}}
      quota: {{vcpu: 100, pods: 300}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
  rules:
    - name: everything
      match: {{}}
",
        aci_pods = (n / 3).max(1),
        region = peers.get("ECS_REGION"),
        subnet = peers.get("ECS_TEST_SUBNET"),
        sg = peers.get("ECS_TEST_SG"),
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let mut env = moto_env(peers.get("ECS_ENDPOINT"));
    env.extend(azure_env(peers.get("ACI_PRISM_URL")));
    env.push(("BURSTGATE_GC_MIN_AGE_SECONDS", "20".into()));
    let start = || Gateway::start_with_env(&node, &ns, dir.path(), "crashy", env.clone());

    let mut gw = start();
    node_ready(&client, &node).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let began = Instant::now();
    deployments
        .create(
            &PostParams::default(),
            &aks_deployment("burst", n as i32, &node),
        )
        .await
        .unwrap();
    let mut kill_points = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(500, 8000)).await;
        kill_points.push(format!("{:.1}s", began.elapsed().as_secs_f64()));
        gw.kill();
        gw = start();
    }
    println!("crash safety: killed at {}", kill_points.join(", "));

    // Every pod placed, with an IP, and exactly one live workload for it at the peers.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (_, first_aci, first_fargate) = gw
        .eventually(
            &format!("{n} pods placed with one workload each"),
            Duration::from_secs(420),
            || async {
                let list = pods
                    .list(&ListParams::default().labels("app=burst"))
                    .await
                    .ok()?
                    .items;
                let placed = list
                    .iter()
                    .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
                    .count();
                if list.len() != n || placed != n {
                    return None;
                }
                let (aci, fargate) = (
                    aci_census(&subscription).await,
                    fargate_census(&ecs, &cluster).await,
                );
                (aci.live_count() + fargate.live_count() >= n).then_some((list, aci, fargate))
            },
        )
        .await;
    println!(
        "crash safety: {n} pods placed {:.1}s after the Deployment was created",
        began.elapsed().as_secs_f64()
    );
    let copies_at_settle = first_aci.live_count() + first_fargate.live_count() - n;
    // A pod moved off a target whose answer was unknown may leave a copy there for a moment:
    // orphan GC removes such strays (past its minimum age). Give it two passes.
    let (list, aci, fargate) = eventually(
        "stray copies collected",
        Duration::from_secs(90),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=burst"))
                .await
                .ok()?
                .items;
            let (aci, fargate) = (
                aci_census(&subscription).await,
                fargate_census(&ecs, &cluster).await,
            );
            (aci.live_count() + fargate.live_count() == n).then_some((list, aci, fargate))
        },
    )
    .await;
    let mut by_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut untrue = Vec::new();
    for p in &list {
        let uid = p.uid().unwrap_or_default();
        let target = p
            .annotations()
            .get("burstgate.io/target")
            .cloned()
            .unwrap_or_default();
        *by_target.entry(target.clone()).or_default() += 1;
        let status = p.status.clone().unwrap_or_default();
        let workloads = match target.as_str() {
            "aci-eastus" => aci.live.get(&uid),
            "fargate-use1" => fargate.live.get(&uid),
            _ => None,
        };
        let Some(workloads) = workloads else {
            missing.push(format!("{} ({target})", p.name_any()));
            continue;
        };
        // The pod says what its peer says: its workload's IP, and the phase of the workload's
        // state (a container group Running, with Ready; a task RUNNING, though moto leaves its
        // containers PENDING, or still PENDING/PROVISIONING).
        let live = &workloads[0];
        let ip_matches = live.ip.as_deref() == status.pod_ip.as_deref();
        let ready = status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let phase = status.phase.as_deref().unwrap_or_default();
        let phase_true = match (target.as_str(), live.state.as_str()) {
            ("aci-eastus", "Running") => phase == "Running" && ready,
            ("aci-eastus", "Pending") => phase == "Pending",
            ("fargate-use1", "RUNNING") => phase == "Running",
            ("fargate-use1", "PROVISIONING" | "PENDING" | "ACTIVATING") => phase == "Pending",
            _ => false,
        };
        if !ip_matches || !phase_true {
            untrue.push(format!(
                "{} on {target}: phase {phase}, ready {ready}, ip {:?}; the peer has {} {} with ip {:?}",
                p.name_any(),
                status.pod_ip,
                live.name,
                live.state,
                live.ip
            ));
        }
    }
    let pod_uids: std::collections::HashSet<String> = list.iter().filter_map(|p| p.uid()).collect();
    let strays: usize = aci
        .live
        .keys()
        .chain(fargate.live.keys())
        .filter(|uid| !pod_uids.contains(*uid))
        .count();
    let both: usize = aci
        .live
        .keys()
        .filter(|uid| fargate.live.contains_key(*uid))
        .count();
    let ever_created = aci.ever.values().sum::<usize>() + fargate.ever.values().sum::<usize>();
    println!(
        "crash safety: placements {by_target:?}; live workloads ACI {} + Fargate {}; workloads ever started {ever_created}; \
         copies collected as strays after settling {copies_at_settle}; duplicates: ACI {} Fargate {} across providers {both}, \
         ever duplicated {}; missing {}; untrue statuses {}; strays {strays}",
        aci.live_count(),
        fargate.live_count(),
        aci.duplicates(),
        fargate.duplicates(),
        aci.ever_duplicated() + fargate.ever_duplicated(),
        missing.len(),
        untrue.len(),
    );
    assert_eq!(
        aci.duplicates() + fargate.duplicates() + both,
        0,
        "duplicate live workloads"
    );
    assert_eq!(
        aci.ever_duplicated() + fargate.ever_duplicated(),
        0,
        "a pod was started twice at some point"
    );
    assert!(
        missing.is_empty(),
        "pods without a workload at their peer: {missing:?}"
    );
    assert!(
        untrue.is_empty(),
        "pods whose status is not their peer's: {untrue:#?}"
    );
    assert_eq!(strays, 0, "live workloads of no pod");
    assert!(
        by_target.get("aci-eastus").is_some_and(|c| *c > 0),
        "some pods on ACI: {by_target:?}"
    );
    assert!(
        by_target.get("fargate-use1").is_some_and(|c| *c > 0),
        "some pods on Fargate: {by_target:?}"
    );

    // Orphans: the Deployment and its pods are deleted while the gateway is down (pods forced
    // out, as a node drain with --force would); restarted, the gateway must collect every
    // workload they left at the peers.
    gw.kill();
    deployments
        .delete("burst", &DeleteParams::background())
        .await
        .unwrap();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    eventually("every pod forced out", Duration::from_secs(120), || async {
        let left = pods
            .list(&ListParams::default().labels("app=burst"))
            .await
            .ok()?
            .items;
        for p in &left {
            let _ = pods.delete(&p.name_any(), &now).await;
        }
        left.is_empty().then_some(())
    })
    .await;
    let orphans = aci_census(&subscription).await.live_count()
        + fargate_census(&ecs, &cluster).await.live_count();
    let collecting = Instant::now();
    let gw = start();
    gw.eventually(
        "every orphan collected",
        Duration::from_secs(200),
        || async {
            let left = aci_census(&subscription).await.live_count()
                + fargate_census(&ecs, &cluster).await.live_count();
            (left == 0).then_some(())
        },
    )
    .await;
    println!(
        "crash safety: {orphans} orphans left by pods deleted while the gateway was down, all collected {:.1}s after it restarted; 0 left",
        collecting.elapsed().as_secs_f64()
    );
    assert!(orphans > 0, "the scenario left no orphan to collect");
}
