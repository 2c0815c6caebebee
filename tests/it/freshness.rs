//! True and fresh status, measured as a new user would: 50 pods on ACI (the emulator behind
//! Prism) whose containers exit at random moments 2-3 minutes after they start. ARM's list
//! carries no container states, so an exit is seen only by a GET of the group; the test prints
//! how long after each exit a watch of the pods delivered it (p50/p99/max) and the ARM reads per Running
//! pod-minute, and asserts what must hold whatever the timing: every pod ends Failed with the
//! container's exit code, and the status sync spends reads at the cadence's rate, not the
//! every-second rate of a naive poll.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::common::gateway::{aci_groups, aci_only};
use crate::common::peers;

const PODS: usize = 50;

fn exiting_pod(name: &str, node: &str, exit_after: f64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "fresh"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"type": "virtual-kubelet", "burstgate.io/test-node": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{
                "name": "app",
                "image": "mcr.microsoft.com/azuredocs/aci-helloworld",
                "ports": [{"containerPort": 80}],
                "env": [
                    {"name": "EMULATOR_EXIT_AFTER_SECONDS", "value": format!("{exit_after:.1}")},
                    {"name": "EMULATOR_EXIT_CODE", "value": "3"},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            }],
        },
    }))
    .unwrap()
}

fn seconds(t: &str) -> f64 {
    let t: Timestamp = t
        .parse()
        .unwrap_or_else(|e| panic!("a timestamp {t:?}: {e}"));
    t.as_nanosecond() as f64 / 1e9
}

fn now() -> f64 {
    Timestamp::now().as_nanosecond() as f64 / 1e9
}

fn terminated_exit_code(p: &Pod) -> Option<i32> {
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    Some(
        statuses
            .first()?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .exit_code,
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test]
async fn exits_on_aci_reach_their_pods_at_the_read_cadence_within_two_arm_reads_per_running_pod_minute()
 {
    let s = aci_only("fresh", "fresh").await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    // Spread exits over a minute so they fall at every phase of the read cadence.
    let mut rng = crate::crash_safety::Rng(0x5eed_f00d);
    for i in 0..PODS {
        let exit_after = 120.0 + (rng.next() % 600) as f64 / 10.0;
        pods.create(
            &PostParams::default(),
            &exiting_pod(&format!("fresh-{i}"), &s.node, exit_after),
        )
        .await
        .unwrap();
    }
    let all = ListParams::default().labels("app=fresh");
    let running_since =
        s.gw.eventually("every pod Running", Duration::from_secs(120), || async {
            let list = pods.list(&all).await.ok()?.items;
            let running = list
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (running == PODS).then(now)
        })
        .await;

    // Watch every pod until its exit shows, noting when the watch delivered it, as
    // `kubectl get -w` would show it (the test's clock is the emulator's; a list every 250 ms
    // added up to a quarter second and the list's own time to each figure).
    let mut seen: BTreeMap<String, (f64, i32)> = BTreeMap::new();
    let watch =
        watcher(pods.clone(), watcher::Config::default().labels("app=fresh")).applied_objects();
    let mut watch = std::pin::pin!(watch);
    let waited = tokio::time::timeout(Duration::from_secs(300), async {
        while seen.len() < PODS {
            let Some(event) = watch.next().await else {
                break;
            };
            let p = event.expect("the pods' watch");
            if let Some(code) = terminated_exit_code(&p) {
                seen.entry(p.uid().unwrap()).or_insert((now(), code));
            }
        }
    })
    .await;
    assert!(
        waited.is_ok() && seen.len() == PODS,
        "after 5 min only {} of {PODS} exits shown; gateway log:\n{}",
        seen.len(),
        s.gw.log_tail()
    );

    // When each container really exited, by the group's own account.
    let mut delays = Vec::new();
    let mut first_exit = f64::MAX;
    for g in aci_groups(&s.subscription).await {
        let uid = g["tags"]["burstgate.io-pod-uid"]
            .as_str()
            .unwrap()
            .to_string();
        let state = &g["containers"][0]["currentState"];
        assert_eq!(state["state"], "Terminated", "{g:#}");
        let exited = seconds(state["finishTime"].as_str().unwrap());
        first_exit = first_exit.min(exited);
        let (shown, code) = seen[&uid];
        assert_eq!(code, 3, "the pod shows the container's exit code");
        delays.push(shown - exited);
    }
    assert_eq!(delays.len(), PODS);
    delays.sort_by(f64::total_cmp);

    // ARM reads while every pod ran and none had exited.
    let requests: serde_json::Value = reqwest::get(format!(
        "{}/_emulator/requests?subscriptionId={}",
        peers().get("ACI_EMULATOR_URL"),
        s.subscription
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (from, to) = (running_since + 5.0, first_exit);
    let reads = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/containerGroups"))
        })
        .filter(|r| (from..to).contains(&seconds(r["time"].as_str().unwrap())))
        .count();
    let pod_minutes = PODS as f64 * (to - from) / 60.0;
    let per_pod_minute = reads as f64 / pod_minutes;
    println!(
        "freshness: {PODS} exits on ACI shown after p50 {:.1} s, p99 {:.1} s, max {:.1} s; \
         {reads} ARM reads in {:.0} s of {PODS} Running pods = {per_pod_minute:.2} per Running pod-minute",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[PODS - 1],
        to - from
    );
    assert!(
        delays[0] >= -1.0,
        "an exit shown before it happened: {delays:?}"
    );
    // The cadence's 2 per minute, with slack for a window that cuts a round of reads in two;
    // a poll of every group every second would be 60.
    assert!(
        per_pod_minute <= 3.0,
        "{per_pod_minute:.2} ARM reads per Running pod-minute"
    );
    assert!(
        pods.list(&all).await.unwrap().items.iter().all(|p| p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            == Some("Failed")),
        "every pod Failed with its container"
    );
}

/// The reasons of the Events about pod `name`, as `kubectl describe` lists them.
async fn event_reasons(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// GETs of the group of `uid` the emulator answered since `since` (seconds since the epoch).
async fn group_reads_since(subscription: &str, uid: &str, since: f64) -> usize {
    let requests: serde_json::Value = reqwest::get(format!(
        "{}/_emulator/requests?subscriptionId={subscription}",
        peers().get("ACI_EMULATOR_URL")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/bg-{uid}")))
        })
        .filter(|r| seconds(r["time"].as_str().unwrap()) > since)
        .count()
}

#[tokio::test]
async fn acis_container_events_reach_the_pod_once_each_also_across_a_gateway_restart() {
    let mut s = aci_only("provider-events", "provider-events").await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    let pod = pods
        .create(
            &PostParams::default(),
            &exiting_pod("events-0", &s.node, 3600.0),
        )
        .await
        .unwrap();
    let uid = pod.uid().unwrap();
    let (client, ns) = (s.client.clone(), s.ns.clone());
    let wanted = ["Pulling", "Pulled", "Started"];
    s.gw.eventually(
        "the container's Pulling, Pulled and Started on the pod",
        Duration::from_secs(90),
        || async {
            let reasons = event_reasons(&client, &ns, "events-0").await;
            wanted
                .iter()
                .all(|w| reasons.iter().any(|r| r == w))
                .then_some(())
        },
    )
    .await;

    // A new gateway reads the group afresh (its cache is empty) and sees the same events.
    s.gw.kill_now();
    let restarted = now();
    let dir = s.guards.1.path().to_path_buf();
    s.gw = crate::common::gateway::Gateway::start_with_env(
        &s.node,
        &s.ns,
        &dir,
        "solo",
        crate::common::gateway::azure_env(peers().get("ACI_PRISM_URL")),
    );
    let subscription = s.subscription.clone();
    s.gw.eventually(
        "the restarted gateway reading the group",
        Duration::from_secs(90),
        || async { (group_reads_since(&subscription, &uid, restarted).await > 0).then_some(()) },
    )
    .await;
    // What it made of that read (a create refused as already there, or a duplicate) is in the
    // apiserver a moment later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reasons = event_reasons(&client, &ns, "events-0").await;
    for w in wanted {
        assert_eq!(
            reasons.iter().filter(|r| *r == w).count(),
            1,
            "{w} forwarded once: {reasons:?}"
        );
    }
}
