//! The real kube-apiserver as burstgate's pod controller sees it: a kube-rs watcher on
//! `spec.nodeName=<node>` gets a pod's creation, its status change and its deletion, and nothing
//! of pods on other nodes.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::common;

fn pod_on(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "burstgate.io/test": "watch" } },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "app", "image": "nginx:1.27" }],
        },
    }))
    .expect("a valid Pod")
}

/// The next watcher event for which `select` returns `Some`, within 30 s.
async fn next_event<S, T>(
    events: &mut S,
    what: &str,
    mut select: impl FnMut(Event<Pod>) -> Option<T>,
) -> T
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events
                .next()
                .await
                .expect("the watch stream ended")
                .expect("a watch error");
            if let Some(found) = select(event) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no watch event within 30 s: {what}"))
}

#[tokio::test]
async fn a_node_name_watch_sees_a_pod_created_its_status_changed_and_deleted() {
    let client = common::kube_admin().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let node = common::unique_name("watch-node");
    let other_node = format!("{node}-other");
    let name = common::unique_name("watched");
    let stranger = common::unique_name("stranger");

    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    next_event(&mut events, "the initial list", |e| {
        matches!(e, Event::InitDone).then_some(())
    })
    .await;

    // A pod bound elsewhere first: the field selector must keep it out of this watch.
    pods.create(&PostParams::default(), &pod_on(&stranger, &other_node))
        .await
        .expect("create the stranger pod");
    pods.create(&PostParams::default(), &pod_on(&name, &node))
        .await
        .expect("create the watched pod");
    let created = next_event(&mut events, "the watched pod's creation", |e| match e {
        Event::Apply(pod) => Some(pod),
        _ => None,
    })
    .await;
    assert_eq!(
        created.metadata.name.as_deref(),
        Some(name.as_str()),
        "the first pod seen is ours, not the stranger"
    );
    assert_eq!(
        created.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str())
    );

    // A status change as a virtual kubelet makes it: server-side apply of /status.
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Running",
            "podIP": "10.244.7.9",
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    });
    pods.patch_status(
        &name,
        &PatchParams::apply("burstgate-test").force(),
        &Patch::Apply(&status),
    )
    .await
    .expect("apply the pod's status");
    let running = next_event(&mut events, "the status change", |e| match e {
        Event::Apply(pod)
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") =>
        {
            Some(pod)
        }
        Event::Apply(pod) if pod.metadata.name.as_deref() != Some(name.as_str()) => {
            panic!("the watch leaked {:?} from another node", pod.metadata.name)
        }
        _ => None,
    })
    .await;
    assert_eq!(
        running.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.244.7.9")
    );

    // Without a kubelet, only a delete with grace period 0 removes a bound pod at once.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(&name, &now)
        .await
        .expect("delete the watched pod");
    let deleted = next_event(&mut events, "the deletion", |e| match e {
        Event::Delete(pod) => Some(pod),
        Event::Apply(pod) if pod.metadata.name.as_deref() != Some(name.as_str()) => {
            panic!("the watch leaked {:?} from another node", pod.metadata.name)
        }
        _ => None,
    })
    .await;
    assert_eq!(deleted.metadata.name.as_deref(), Some(name.as_str()));

    pods.delete(&stranger, &now)
        .await
        .expect("delete the stranger pod");
    assert!(
        pods.get_opt(&name)
            .await
            .expect("get the watched pod")
            .is_none(),
        "the pod is gone"
    );
}
