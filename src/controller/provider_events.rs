//! The provider's container events (ACI's `Pulling`, `Pulled`, `Started`, `Killing`,
//! `BackOff`...) as pod Events, once per occurrence: each occurrence gets a name derived from the
//! pod, container, reason, count and time, so creating it again (the next status read, or a
//! restarted gateway) is refused by the apiserver as already there, and a set of the names sent
//! keeps the status loop from even trying.

use std::collections::HashSet;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use k8s_openapi::api::core::v1::Pod;

use crate::provider::ProviderEvent;

/// The controller these Events name as their reporter.
const REPORTING_CONTROLLER: &str = "burstgate.io/gateway";

/// The name of one occurrence of `ev` about `pod`: the pod's name and a hash of what makes the
/// occurrence (the pod UID, container, reason, count and time), as the kubelet names its Events.
pub fn name(pod: &Pod, ev: &ProviderEvent) -> String {
    // FNV-1a: stable across builds, so a restarted or upgraded gateway names it the same.
    let key = format!(
        "{}\0{}\0{}\0{}\0{}",
        pod.uid().unwrap_or_default(),
        ev.container,
        ev.reason,
        ev.count,
        ev.last_seen
    );
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let pod_name = pod.name_any();
    // Event names are DNS subdomains (253); a pod name is at most 253 itself.
    let keep = pod_name.len().min(253 - 17);
    format!("{}.{hash:016x}", &pod_name[..keep])
}

/// The Event for `ev` about `pod`, reported by node `node`.
pub fn event(pod: &Pod, ev: &ProviderEvent, node: &str) -> Event {
    let note = if ev.message.is_empty() {
        format!("container {}", ev.container)
    } else {
        format!("container {}: {}", ev.container, ev.message)
    };
    Event {
        metadata: ObjectMeta {
            name: Some(name(pod, ev)),
            namespace: pod.namespace(),
            ..Default::default()
        },
        event_time: Some(MicroTime(
            ev.last_seen
                .parse::<Timestamp>()
                .unwrap_or_else(|_| Timestamp::now()),
        )),
        action: Some("Burst".into()),
        reason: Some(ev.reason.clone()),
        note: Some(note.chars().take(1000).collect()),
        type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
        regarding: Some(pod.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

/// Publishes the occurrences in `events` not in `sent` yet, adding them to `sent`; an
/// occurrence the apiserver already has (409) counts as sent. Returns how many were created.
pub async fn forward(
    client: &kube::Client,
    pod: &Pod,
    events: &[ProviderEvent],
    node: &str,
    sent: &mut HashSet<String>,
) -> usize {
    let api: Api<Event> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let mut created = 0;
    for ev in events {
        let name = name(pod, ev);
        if sent.contains(&name) {
            continue;
        }
        match api
            .create(&PostParams::default(), &event(pod, ev, node))
            .await
        {
            Ok(_) => created += 1,
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), reason = %ev.reason, error = %e, "could not forward a provider event; the next status read tries again");
                continue;
            }
        }
        sent.insert(name);
    }
    created
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
        }))
        .unwrap()
    }

    fn pulled(count: i32, at: &str) -> ProviderEvent {
        ProviderEvent {
            container: "app".into(),
            reason: "Pulled".into(),
            message: "Successfully pulled image".into(),
            warning: false,
            count,
            last_seen: at.into(),
        }
    }

    #[test]
    fn an_occurrence_keeps_its_name_and_a_new_one_gets_another() {
        let first = pulled(1, "2026-12-06T07:00:00Z");
        assert_eq!(name(&pod(), &first), name(&pod(), &first.clone()));
        assert_ne!(
            name(&pod(), &first),
            name(&pod(), &pulled(2, "2026-12-06T07:05:00Z"))
        );
        assert!(name(&pod(), &first).starts_with("web-0."));
    }

    #[test]
    fn the_event_names_the_pod_container_and_reason_with_the_providers_time() {
        let e = event(&pod(), &pulled(1, "2026-12-06T07:00:00Z"), "vnode");
        assert_eq!(e.reason.as_deref(), Some("Pulled"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(
            e.note.as_deref(),
            Some("container app: Successfully pulled image")
        );
        assert_eq!(e.regarding.unwrap().name.as_deref(), Some("web-0"));
        assert_eq!(e.event_time.unwrap().0.to_string(), "2026-12-06T07:00:00Z");
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
    }
}
