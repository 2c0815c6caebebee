//! What the fuzz targets share: the `WorkloadSpec` an adapter is handed for an arbitrary valid
//! pod ([`super::pod::ArbPod`]), the values the controller would resolve for it, and what the
//! layers make of a classified error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::PodView;
use crate::policy::model::ProviderKind;
use crate::policy::sizing;
use crate::provider::contract::{
    EnvValue, EnvVar, Owner, ProviderError, RegistryCredential, Resolved, SecretBox, SecretString,
    VolumeFile, WorkloadSpec, workload_id,
};
use crate::provider::layers::retry;

use crate::fuzzing::pod::{ArbPod, EnvSource, VolumeKind};

/// The spec the controller hands the adapter of `kind` for `arb`, sized as the engine sizes it;
/// `None` when the engine would not send the pod there (no view, or no size fits).
pub fn workload(arb: &ArbPod, kind: ProviderKind) -> Option<WorkloadSpec> {
    let pod = arb.pod();
    let view = PodView::from_pod(&pod).ok()?;
    let size = sizing::fit(kind, &view.resources).ok()?;
    let uid = arb.uid();
    Some(WorkloadSpec {
        id: workload_id(&uid),
        owner: Owner {
            cluster_id: "cluster".into(),
            node: "burstgate".into(),
            namespace: view.namespace.clone(),
            pod: view.name.clone(),
            pod_uid: uid,
        },
        target: "fuzz".into(),
        region: "eastus".into(),
        size,
        pod,
        resolved: Arc::new(resolved(arb)),
    })
}

/// What `controller/resolve.rs` would read for `arb`: every env entry and envFrom source, the
/// files of its secret, configMap and projected volumes, its registry credentials.
pub fn resolved(arb: &ArbPod) -> Resolved {
    let mut env = BTreeMap::new();
    for ((_, c), name) in arb.all_containers().zip(arb.container_names()) {
        let vars = c
            .env
            .iter()
            .map(|e| EnvVar {
                name: e.name.0.clone(),
                value: match &e.source {
                    EnvSource::Value(t) | EnvSource::ConfigMap(_, _, t) => {
                        EnvValue::Plain(t.0.clone())
                    }
                    EnvSource::Secret(_, _, t) => EnvValue::Secret(SecretString::from(t.0.clone())),
                    EnvSource::Field(_) => EnvValue::Plain("10.0.0.7".into()),
                },
            })
            .collect();
        env.insert(name, vars);
    }
    let volumes = arb
        .volumes()
        .filter_map(|v| {
            let files = match &v.kind {
                VolumeKind::Secret(_, files, _)
                | VolumeKind::ConfigMap(_, files)
                | VolumeKind::Projected(files) => files,
                _ => return None,
            };
            let files = files
                .iter()
                .take(3)
                .map(|(path, content)| VolumeFile {
                    path: path.0.clone(),
                    content: SecretBox::new(Box::new(content.clone())),
                })
                .collect();
            Some((v.name.0.clone(), files))
        })
        .collect();
    let registry_credentials = arb
        .pull_secrets
        .iter()
        .take(3)
        .map(|s| RegistryCredential {
            server: format!("{}.azurecr.io", s.0),
            username: s.0.clone(),
            password: SecretString::from(format!("pw-{}", s.0)),
        })
        .collect();
    Resolved {
        env,
        volumes,
        registry_credentials,
        renew_tokens_at: None,
    }
}

/// What a target's layers and the controller make of a classified error, as
/// `provider/layers/target.rs` does: the wait before each retry and whether it may start, the
/// retry class, the metric label and the message. Panics where they would.
pub fn through_layers(e: &ProviderError) {
    let settings = retry::Settings::default();
    for attempt in 1..=settings.max_attempts {
        let wait = retry::backoff(&settings, attempt, e.retry_after(), 0.5);
        let _ = retry::may_retry(&settings, attempt, Duration::from_secs(1), wait);
    }
    let _ = (e.is_retryable(), e.outcome_unknown(), e.metric_label());
    assert!(
        !e.to_string().is_empty(),
        "an error without a message: {e:?}"
    );
}
