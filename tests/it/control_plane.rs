//! A flaky control plane: the apiserver and etcd killed and restarted during a burst (a private
//! plane of the test's own, `common::control_plane`), and the leader cut off from the apiserver
//! for longer than its lease (`common::partition`). Nothing is duplicated or lost, the old
//! leader stops acting before the new one starts, and the node does not flap NotReady.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::control_plane::Plane;
use crate::common::fault_proxy::{FaultProxy, Flavor};
use crate::common::gateway::{
    Gateway, NodeCleanup, aci_eastus_policy, aci_faults, aci_groups, aks_deployment, azure_env,
    node_ready, subscription_id,
};
use crate::common::partition::Partition;
use crate::common::{
    create_namespace, grant_leader_election_to, kube_admin, kube_gateway, peers, unique_name,
};

/// A bare pod bound to `node` by name (the private plane has no scheduler), as AKS manifests
/// write it otherwise.
fn bound_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "burst"}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "app",
                "image": "mcr.microsoft.com/azuredocs/aci-helloworld",
                "ports": [{"containerPort": 80}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            }],
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
        },
    }))
    .unwrap()
}

/// The live groups of `subscription` by their pod-UID tag: (name, IP) of each.
async fn groups_by_pod(subscription: &str) -> BTreeMap<String, Vec<(String, Option<String>)>> {
    let mut by_pod: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for g in aci_groups(subscription).await {
        if g["provisioningState"] == "Deleting" {
            continue;
        }
        let uid = g["tags"]["burstgate.io-pod-uid"]
            .as_str()
            .unwrap_or("untagged")
            .to_string();
        by_pod.entry(uid).or_default().push((
            g["name"].as_str().unwrap_or_default().to_string(),
            g["ip"].as_str().map(str::to_string),
        ));
    }
    by_pod
}

/// `Some` once at least 3 pods labelled `app=burst` run: the burst is under way.
async fn under_way(pods: &Api<Pod>) -> Option<()> {
    let list = pods
        .list(&ListParams::default().labels("app=burst"))
        .await
        .ok()?
        .items;
    let running = list
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    (running >= 3).then_some(())
}

/// The pods labelled `app=burst` once there are at least `n`, every one Running with the IP of
/// its one group, and no group belongs to anything else; else what is not so yet.
async fn one_group_per_running_pod(
    pods: &Api<Pod>,
    subscription: &str,
    n: usize,
) -> Result<Vec<Pod>, String> {
    let list = pods
        .list(&ListParams::default().labels("app=burst"))
        .await
        .map_err(|e| format!("listing pods: {e}"))?
        .items;
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let waiting: Vec<String> = list
        .iter()
        .filter(|p| phase(p) != "Running")
        .map(|p| format!("{} {:?}", p.name_any(), phase(p)))
        .collect();
    if list.len() < n || !waiting.is_empty() {
        return Err(format!(
            "{} of {n} pods, not Running: {waiting:?}",
            list.len()
        ));
    }
    let groups = groups_by_pod(subscription).await;
    let uids: BTreeSet<String> = list.iter().filter_map(|p| p.uid()).collect();
    let tagged: BTreeSet<String> = groups.keys().cloned().collect();
    if tagged != uids {
        return Err(format!(
            "groups of no pod: {:?}; pods without a group: {:?}",
            tagged.difference(&uids).collect::<Vec<_>>(),
            uids.difference(&tagged).collect::<Vec<_>>()
        ));
    }
    for pod in &list {
        let of_pod = &groups[&pod.uid().unwrap()];
        assert_eq!(
            of_pod.len(),
            1,
            "pod {} has {} live groups: {of_pod:?}",
            pod.name_any(),
            of_pod.len()
        );
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if ip != of_pod[0].1 {
            return Err(format!(
                "{} has IP {ip:?}, its group {:?}",
                pod.name_any(),
                of_pod[0].1
            ));
        }
    }
    Ok(list)
}

/// Waits (at most `limit`) for [`one_group_per_running_pod`], failing with why not and `gw`'s log.
async fn all_placed_once(
    gw: &Gateway,
    pods: &Api<Pod>,
    subscription: &str,
    n: usize,
    limit: Duration,
) -> Vec<Pod> {
    let why = Mutex::new(String::new());
    let placed = tokio::time::timeout(limit, async {
        loop {
            match one_group_per_running_pod(pods, subscription, n).await {
                Ok(list) => return list,
                Err(not_yet) => *why.lock().unwrap() = not_yet,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    placed.unwrap_or_else(|_| {
        panic!(
            "after {limit:?}, not every pod Running with the IP of its one group: {}\ngateway log:\n{}",
            why.lock().unwrap(),
            gw.log_tail()
        )
    })
}

#[tokio::test]
async fn a_burst_goes_on_across_an_apiserver_and_etcd_restart_with_one_group_per_pod_and_none_lost()
{
    let mut plane = Plane::start().await;
    let admin = plane.admin().await;
    let ns = unique_name("flaky-plane");
    plane.namespace(&ns).await;
    grant_leader_election_to(&admin, &plane.gateway().await, &ns).await;
    let node = unique_name("vnode");
    let subscription = subscription_id();
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        aci_eastus_policy(&subscription, "flaky-plane"),
    )
    .unwrap();
    let mut gw = Gateway::start_via(
        &plane.kubeconfig("gateway"),
        &node,
        &ns,
        dir.path(),
        "solo",
        azure_env(peers().get("ACI_PRISM_URL")),
    );
    node_ready(&admin, &node).await;

    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    for i in 0..20 {
        pods.create(
            &PostParams::default(),
            &bound_pod(&format!("before-{i}"), &node),
        )
        .await
        .unwrap();
    }
    gw.eventually("the burst under way", Duration::from_secs(120), || {
        under_way(&pods)
    })
    .await;

    // The control plane goes down hard in the middle of the burst: the apiserver first, then
    // its store; both come back on the same data a few seconds later.
    plane.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(2)).await;
    plane.kill_etcd();
    tokio::time::sleep(Duration::from_secs(3)).await;
    plane.start_etcd().await;
    plane.start_apiserver().await;
    let admin = plane.admin().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    for i in 0..20 {
        pods.create(
            &PostParams::default(),
            &bound_pod(&format!("after-{i}"), &node),
        )
        .await
        .unwrap();
    }

    let placed = all_placed_once(&gw, &pods, &subscription, 40, Duration::from_secs(120)).await;
    assert_eq!(placed.len(), 40);
    assert!(gw.is_running(), "the gateway exited:\n{}", gw.log_tail());
    node_ready(&admin, &node).await;

    // Watches came back too: deleting every pod deletes every group.
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=burst"),
    )
    .await
    .unwrap();
    gw.eventually(
        "every group deleted with its pod",
        Duration::from_secs(120),
        || async { groups_by_pod(&subscription).await.is_empty().then_some(()) },
    )
    .await;
    println!(
        "flaky control plane: 40 pods across an apiserver and etcd restart, 40 groups, none doubled, none left"
    );
}

/// When `line` (the first line of `log` containing `what`) was logged.
fn logged_at(log: &str, what: &str) -> Option<SystemTime> {
    let line = log.lines().find(|l| l.contains(what))?;
    // The log file may carry ANSI colours; the timestamp is the first word either way.
    let plain: String = line
        .split("\u{1b}[")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('m').map_or("", |(_, rest)| rest)
            }
        })
        .collect();
    let stamp: Timestamp = plain.split_whitespace().next()?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(stamp.as_nanosecond()).ok()?))
}

/// The wall-clock time of `at`, from one moment known on both clocks.
fn wall_clock(at: Instant, (anchor, anchor_wall): (Instant, SystemTime)) -> SystemTime {
    if at >= anchor {
        anchor_wall + (at - anchor)
    } else {
        anchor_wall - (anchor - at)
    }
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get("burstgate-leader")
        .await
        .ok()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_acting_before_the_standby_leads_and_nothing_doubles()
 {
    let client = kube_admin().await;
    let ns = unique_name("partition");
    create_namespace(&client, &ns).await;
    grant_leader_election_to(&client, &kube_gateway().await, &ns).await;
    let node = unique_name("vnode");
    let _cleanup = NodeCleanup(node.clone());
    let subscription = subscription_id();
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    let dir = tempfile::tempdir().unwrap();

    // Replica a reaches the apiserver through a route the test can cut, and ARM through a
    // recording proxy (so its calls are told from b's).
    let apiserver = peers().get("KUBE_APISERVER_URL");
    let route = Partition::start(apiserver.trim_start_matches("https://")).await;
    let kubeconfig = dir.path().join("a.kubeconfig");
    let shared = std::fs::read_to_string(peers().path("KUBECONFIG_GATEWAY")).unwrap();
    std::fs::write(
        &kubeconfig,
        shared.replace(apiserver, &format!("https://{}", route.addr)),
    )
    .unwrap();
    let arm_of_a = FaultProxy::start_as(peers().get("ACI_PRISM_URL"), Flavor::Arm).await;
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::write(
        policy_dir.join("policy.yaml"),
        aci_eastus_policy(&subscription, "partition"),
    )
    .unwrap();
    let mut a = Gateway::start_via(
        &kubeconfig,
        &node,
        &ns,
        &policy_dir,
        "replica-a",
        azure_env(&arm_of_a.url),
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let first = a
        .eventually("replica-a leads", Duration::from_secs(60), || {
            lease_holder(&leases)
        })
        .await;
    assert_eq!(first, "replica-a");
    let b = Gateway::start_with_env(
        &node,
        &ns,
        &policy_dir,
        "replica-b",
        azure_env(peers().get("ACI_PRISM_URL")),
    );
    node_ready(&client, &node).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("burst", 10, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    a.eventually(
        "the burst under way on replica-a",
        Duration::from_secs(120),
        || under_way(&pods),
    )
    .await;

    // Watch the node's Ready condition from here on.
    let not_ready = Arc::new(Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (nodes, node, not_ready) = (
            Api::<Node>::all(client.clone()),
            node.clone(),
            not_ready.clone(),
        );
        tokio::spawn(async move {
            loop {
                if let Ok(n) = nodes.get(&node).await {
                    let ready = n
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.type_ == "Ready");
                    if let Some(c) = ready.filter(|c| c.status != "True") {
                        not_ready
                            .lock()
                            .unwrap()
                            .push(format!("{}: {:?}", c.status, c.message));
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The partition: replica-a keeps running, and keeps reaching ARM, but not the apiserver.
    let (cut_at, cut_wall) = (Instant::now(), SystemTime::now());
    route.cut();
    deployments
        .patch(
            "burst",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 25}})),
        )
        .await
        .unwrap();
    let holder = b
        .eventually(
            "replica-b takes the Lease",
            Duration::from_secs(60),
            || async { lease_holder(&leases).await.filter(|h| h == "replica-b") },
        )
        .await;
    assert_eq!(holder, "replica-b");
    let placed = all_placed_once(&b, &pods, &subscription, 25, Duration::from_secs(180)).await;
    assert_eq!(placed.len(), 25);

    // The old leader stopped acting before the new one began: its last ARM call came before
    // replica-b logged its leadership, and it stood down (or, its controllers stuck, exited).
    let b_leads =
        logged_at(&b.log(), "became the leader").expect("replica-b logged its leadership");
    let last_of_a = arm_of_a
        .last_arrival()
        .expect("replica-a called ARM while leading");
    let last_of_a_wall = wall_clock(last_of_a, (cut_at, cut_wall));
    assert!(
        last_of_a_wall < b_leads,
        "replica-a called ARM at {:?}, after replica-b began leading at {:?}",
        last_of_a_wall,
        b_leads
    );
    let a_log = a.log();
    let how = match logged_at(&a_log, "lost the leadership; controllers stopped") {
        Some(stood_down) => {
            assert!(
                stood_down < b_leads,
                "replica-a stood down at {stood_down:?}, after replica-b led at {b_leads:?}"
            );
            "stood down"
        }
        None => {
            assert!(
                !a.is_running() && a_log.contains("did not stop within"),
                "replica-a neither stood down nor exited fenced:\n{}",
                a.log_tail()
            );
            "exited, fenced"
        }
    };

    // Healed, replica-a (if still running) stays a standby; the node never went NotReady.
    route.heal();
    if a.is_running() {
        a.eventually(
            "replica-a standing by behind replica-b",
            Duration::from_secs(60),
            || async {
                a.log()
                    .lines()
                    .any(|l| l.contains("standing by") && l.contains("replica-b"))
                    .then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("replica-b"));
    watcher.abort();
    let flaps = not_ready.lock().unwrap().clone();
    assert!(
        flaps.is_empty(),
        "the node was not Ready during the failover: {flaps:?}"
    );

    deployments
        .delete("burst", &DeleteParams::foreground())
        .await
        .unwrap();
    b.eventually(
        "every group deleted with its pod",
        Duration::from_secs(120),
        || async { groups_by_pod(&subscription).await.is_empty().then_some(()) },
    )
    .await;
    println!(
        "partition: replica-a cut off {:?} before replica-b led; its last ARM call {:?} before; replica-a {how}; 25 pods, one group each",
        b_leads.duration_since(cut_wall).unwrap_or_default(),
        b_leads.duration_since(last_of_a_wall).unwrap_or_default(),
    );
}
