//! Crash safety, counted at the peers: `burstgate run` (the real binary) is killed with SIGKILL
//! at random points of a burst across ACI (the emulator behind Prism) and Fargate (moto, behind
//! the test's recording tap) and restarted; then every pod must have exactly one live workload,
//! with the status and IP the peer reports, no pod may ever have had two workloads alive at the
//! same instant (from the peers' logs, `common::copies`), and workloads left behind by pods
//! deleted while the gateway was down must be collected by orphan GC.
//!
//! Knobs (environment of the test): `BURSTGATE_CRASH_PODS` (300), `BURSTGATE_CRASH_KILLS` (10),
//! `BURSTGATE_CRASH_SEED` (the clock; printed, replays the kill points),
//! `BURSTGATE_CRASH_GC_MIN_AGE_SECONDS` (20, or `production` for the gateway's default, 600).
//! `scripts/crash.sh` runs the big one (1,000 pods, 20 kills, production GC age).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::copies::{EcsTap, Lifetimes, described_tasks, task_pod_uid};
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

pub(crate) fn setting(name: &str, default: u64) -> u64 {
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

/// The live workloads one peer holds for the test, by pod UID (their history is
/// `common::copies::Lifetimes`).
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub(crate) live: BTreeMap<String, Vec<Live>>,
}

impl Census {
    pub(crate) fn live_count(&self) -> usize {
        self.live.values().map(Vec::len).sum()
    }

    pub(crate) fn duplicates(&self) -> usize {
        self.live.values().filter(|w| w.len() > 1).count()
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

/// The live tasks of `cluster` at moto, by their pod-uid tag.
pub(crate) async fn fargate_census(ecs: &aws_sdk_ecs::Client, cluster: &str) -> Census {
    let mut census = Census::default();
    let running = aws_sdk_ecs::types::DesiredStatus::Running;
    for t in described_tasks(ecs, cluster, running).await {
        let Some(uid) = task_pod_uid(&t).map(str::to_string) else {
            continue;
        };
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
    census
}

/// Where the pods stood when the gateway was killed (it is dead: nothing moves but the peers
/// finishing calls already sent).
#[derive(Debug, Default, Clone, Copy)]
struct Landing {
    /// Pods the Deployment had made.
    pods: usize,
    /// Placed (annotations written), no workload at any peer yet.
    annotated_not_created: usize,
    /// A workload at a peer, no IP in the pod's status yet.
    created_no_status: usize,
    /// The status mirrors the workload (an IP).
    with_status: usize,
}

async fn landing(
    pods: &Api<Pod>,
    subscription: &str,
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    tap: &EcsTap,
) -> Landing {
    let list = pods
        .list(&ListParams::default().labels("app=burst"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut lives = Lifetimes::default();
    lives.add_aci(subscription).await;
    lives.add_fargate(ecs, cluster, tap).await;
    let mut out = Landing {
        pods: list.len(),
        ..Landing::default()
    };
    for p in &list {
        let uid = p.uid().unwrap_or_default();
        let annotated = p.annotations().contains_key("burstgate.io/target");
        let created = lives.by_uid.contains_key(&uid);
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
        if ip {
            out.with_status += 1;
        } else if created {
            out.created_no_status += 1;
        } else if annotated {
            out.annotated_not_created += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_gateway_killed_at_random_points_of_a_burst_never_runs_a_pod_twice_and_leaves_no_orphan_and_true_statuses()
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
    let gc_min_age = match std::env::var("BURSTGATE_CRASH_GC_MIN_AGE_SECONDS").as_deref() {
        Ok("production") => burstgate::config::DEFAULT_GC_MIN_AGE_SECONDS,
        _ => setting("BURSTGATE_CRASH_GC_MIN_AGE_SECONDS", 20),
    };
    println!(
        "crash safety: {n} pods, {kills} kills, GC minimum age {gc_min_age}s (production: {}s), seed {seed} (BURSTGATE_CRASH_SEED={seed} replays the kill points)",
        burstgate::config::DEFAULT_GC_MIN_AGE_SECONDS
    );
    let started = Instant::now();
    let mut rng = Rng(seed);
    let peers = peers();
    let client = kube_admin().await;
    let ns = gateway_namespace(&client, "crash").await;
    let node = unique_name("vcrash");
    let _cleanup = NodeCleanup(node.clone());

    // ACI: a subscription of the test's own at the emulator, reached through Prism; containers
    // come up after a second. Its regional quota is raised to a third of the burst, as an
    // operator's quota increase would. Fargate: a cluster of the test's own on moto, reached
    // through the recording tap.
    let aci_pods = (n / 3).max(1);
    let subscription = guid(&mut rng);
    aci_faults(
        &subscription,
        json!({"provisioningDelaySeconds": 1, "quota": {"eastus": {"cores": aci_pods, "groups": aci_pods}}}),
    )
    .await;
    let ecs = ecs_client();
    let cluster = unique_name("crash");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let tap = EcsTap::start().await;

    // ACI is cheaper, so it fills first up to a third of the burst; the rest goes to Fargate.
    // The ACI create limits (100 per 5 min) are raised as an operator with a quota increase
    // would, so the burst is not spread over minutes.
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
      quota: {{vcpu: {aci_pods}, pods: {aci_pods}}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-crash}}
      rateLimits:
        - {{operation: create, burst: 400, perSecond: 40}}
    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445}}
      quota: {{vcpu: {n}, pods: {n}}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
  rules:
    - name: everything
      match: {{}}
",
        region = peers.get("ECS_REGION"),
        subnet = peers.get("ECS_TEST_SUBNET"),
        sg = peers.get("ECS_TEST_SG"),
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let mut env = moto_env(&tap.url);
    env.extend(azure_env(peers.get("ACI_PRISM_URL")));
    env.push(("BURSTGATE_GC_MIN_AGE_SECONDS", gc_min_age.to_string()));
    let start = || Gateway::start_with_env(&node, &ns, dir.path(), "crashy", env.clone());

    let mut gw = start();
    node_ready(&client, &node).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let began = Instant::now();
    deployments
        .create(
            &PostParams::default(),
            &aks_deployment("burst", n as i32, &node),
        )
        .await
        .unwrap();
    let mut landings = Vec::new();
    for k in 1..=kills {
        tokio::time::sleep(rng.millis(500, 8000)).await;
        let at = began.elapsed().as_secs_f64();
        gw.kill();
        let l = landing(&pods, &subscription, &ecs, &cluster, &tap).await;
        println!(
            "crash safety: kill {k} at {at:.1}s: {} pods; {} placed and not created, {} created without a status, {} with a status",
            l.pods, l.annotated_not_created, l.created_no_status, l.with_status
        );
        landings.push(l);
        gw = start();
    }
    println!(
        "crash safety: kills that landed between a placement and its create: {}, between a create and its status: {} (of {kills})",
        landings
            .iter()
            .filter(|l| l.annotated_not_created > 0)
            .count(),
        landings.iter().filter(|l| l.created_no_status > 0).count(),
    );

    // Every pod placed, with an IP; then, at once, exactly one live workload per pod at the
    // peers and none of no pod.
    let settle = Duration::from_secs(420.max(n as u64 * 6 / 5));
    let list = gw
        .eventually(&format!("{n} pods placed with an IP"), settle, || async {
            let list = pods
                .list(&ListParams::default().labels("app=burst"))
                .await
                .ok()?
                .items;
            let placed = list
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
                .count();
            (list.len() == n && placed == n).then_some(list)
        })
        .await;
    let placed_after = began.elapsed().as_secs_f64();
    let (aci, fargate) = (
        aci_census(&subscription).await,
        fargate_census(&ecs, &cluster).await,
    );
    let mut by_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut not_one = Vec::new();
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
        let on_aci = aci.live.get(&uid).map(Vec::as_slice).unwrap_or_default();
        let on_fargate = fargate
            .live
            .get(&uid)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if on_aci.len() + on_fargate.len() != 1 {
            not_one.push(format!(
                "{} ({target}): {} live on ACI, {} on Fargate",
                p.name_any(),
                on_aci.len(),
                on_fargate.len()
            ));
        }
        let workloads = match target.as_str() {
            "aci-eastus" => on_aci,
            "fargate-use1" => on_fargate,
            _ => &[],
        };
        let Some(live) = workloads.first() else {
            lost.push(format!("{} ({target})", p.name_any()));
            continue;
        };
        // The pod says what its peer says: its workload's IP, and the phase of the workload's
        // state (a container group Running, with Ready; a task RUNNING, though moto leaves its
        // containers PENDING, or still PENDING/PROVISIONING).
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
    let strays: Vec<&String> = aci
        .live
        .keys()
        .chain(fargate.live.keys())
        .filter(|uid| !pod_uids.contains(*uid))
        .collect();
    let mut lives = Lifetimes::default();
    lives.add_aci(&subscription).await;
    lives.add_fargate(&ecs, &cluster, &tap).await;
    let doubled = lives.doubled();
    println!(
        "crash safety: {n} pods placed {placed_after:.1}s after the Deployment was created: {by_target:?}; live workloads ACI {} + Fargate {}; \
         workloads ever created {} (RunTasks {}, PUTs on an existing group {}, tasks the tap did not time {}), pods with more than one workload in their history {}; \
         ever doubled {}; not exactly one live workload {}; lost {}; untrue statuses {}; live workloads of no pod {}",
        aci.live_count(),
        fargate.live_count(),
        lives.ever(),
        tap.run_tasks(),
        lives.aci_puts_on_existing,
        lives.fargate_untimed,
        lives.moved_or_recreated(),
        doubled.len(),
        not_one.len(),
        lost.len(),
        untrue.len(),
        strays.len(),
    );
    lives.assert_never_two_at_once("crash safety, the burst");
    assert!(
        not_one.is_empty(),
        "pods without exactly one live workload: {not_one:#?}"
    );
    assert!(
        lost.is_empty(),
        "pods without a workload at their target: {lost:?}"
    );
    assert!(
        untrue.is_empty(),
        "pods whose status is not their peer's: {untrue:#?}"
    );
    assert!(strays.is_empty(), "live workloads of no pod: {strays:?}");
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
    // workload they left at the peers, once they are past GC's minimum age.
    gw.kill();
    deployments
        .delete("burst", &DeleteParams::background())
        .await
        .unwrap();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    eventually("every pod forced out", Duration::from_secs(300), || async {
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
        Duration::from_secs(gc_min_age + 300),
        || async {
            let left = aci_census(&subscription).await.live_count()
                + fargate_census(&ecs, &cluster).await.live_count();
            (left == 0).then_some(())
        },
    )
    .await;
    let mut lives = Lifetimes::default();
    lives.add_aci(&subscription).await;
    lives.add_fargate(&ecs, &cluster, &tap).await;
    println!(
        "crash safety: {orphans} orphans left by pods deleted while the gateway was down, all collected {:.1}s after it restarted (GC minimum age {gc_min_age}s); orphans after GC 0; \
         over the whole run: workloads ever created {}, ever doubled {}; {:.0}s in all",
        collecting.elapsed().as_secs_f64(),
        lives.ever(),
        lives.doubled().len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(orphans > 0, "the scenario left no orphan to collect");
    lives.assert_never_two_at_once("crash safety, the whole run");
}
