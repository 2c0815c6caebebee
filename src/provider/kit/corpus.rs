//! Test support: pods as a 1.30 cluster stores them (`tests/fixtures/pods/`: Deployment, Job and
//! StatefulSet pods, a native sidecar, probes of every kind, downward API and projected volumes,
//! `dnsPolicy: None`; admission's token volume on all but the one that opts out), and the check
//! every adapter's translation must pass on them: it succeeds exactly when the provider's
//! declared capabilities run every feature the pod uses, and otherwise refuses naming the first
//! feature it does not run.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use secrecy::{SecretBox, SecretString};

use crate::policy::model::ProviderKind;
use crate::policy::sizing::Size;
use crate::provider::contract::{EnvValue, EnvVar, Owner, Resolved, VolumeFile, WorkloadSpec};
use crate::provider::kit::{Feature, TranslateError, declared, pod_features};

/// The fixture pods, by file name.
const FIXTURES: [(&str, &str); 8] = [
    (
        "deployment-web",
        include_str!("../../../tests/fixtures/pods/deployment-web.json"),
    ),
    (
        "job-report",
        include_str!("../../../tests/fixtures/pods/job-report.json"),
    ),
    (
        "statefulset-db",
        include_str!("../../../tests/fixtures/pods/statefulset-db.json"),
    ),
    (
        "sidecar-mesh",
        include_str!("../../../tests/fixtures/pods/sidecar-mesh.json"),
    ),
    (
        "probes-every-kind",
        include_str!("../../../tests/fixtures/pods/probes-every-kind.json"),
    ),
    (
        "exec-probe-worker",
        include_str!("../../../tests/fixtures/pods/exec-probe-worker.json"),
    ),
    (
        "downward-and-projected",
        include_str!("../../../tests/fixtures/pods/downward-and-projected.json"),
    ),
    (
        "dns-none",
        include_str!("../../../tests/fixtures/pods/dns-none.json"),
    ),
];

/// Each fixture pod as a workload, with every reference resolved as the controller would
/// (Secret values wrapped).
pub(crate) fn workloads() -> Vec<(&'static str, WorkloadSpec)> {
    FIXTURES
        .iter()
        .map(|(name, json)| {
            let pod: Pod = serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, workload(pod))
        })
        .collect()
}

fn workload(pod: Pod) -> WorkloadSpec {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    WorkloadSpec {
        id: crate::provider::contract::workload_id(&uid),
        owner: Owner {
            cluster_id: "corpus".into(),
            node: "burstgate".into(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: uid,
        },
        target: "corpus".into(),
        region: "eastus".into(),
        size: Size {
            milli_cpu: 1000,
            memory_mib: 2048,
        },
        resolved: Arc::new(resolved(&pod)),
        pod,
    }
}

/// Values for every reference of `pod`: what `controller::resolve` hands an adapter.
fn resolved(pod: &Pod) -> Resolved {
    let mut out = Resolved::default();
    let spec = pod.spec.as_ref().expect("a fixture pod has a spec");
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let env = c
            .env
            .iter()
            .flatten()
            .map(|e| {
                let from = e.value_from.as_ref();
                let value = match from {
                    Some(f) if f.secret_key_ref.is_some() => {
                        EnvValue::Secret(SecretString::from(format!("s3cret-{}", e.name)))
                    }
                    Some(_) => EnvValue::Plain("1".into()),
                    None => EnvValue::Plain(e.value.clone().unwrap_or_default()),
                };
                EnvVar {
                    name: e.name.clone(),
                    value,
                }
            })
            .collect();
        out.env.insert(c.name.clone(), env);
    }
    for v in spec.volumes.iter().flatten() {
        let mut paths: Vec<String> = Vec::new();
        if let Some(p) = &v.projected {
            for s in p.sources.iter().flatten() {
                if let Some(t) = &s.service_account_token {
                    paths.push(t.path.clone());
                }
                let items = s
                    .secret
                    .as_ref()
                    .and_then(|x| x.items.clone())
                    .or_else(|| s.config_map.as_ref().and_then(|x| x.items.clone()));
                paths.extend(items.into_iter().flatten().map(|i| i.path));
                if let Some(d) = &s.downward_api {
                    paths.extend(d.items.iter().flatten().map(|i| i.path.clone()));
                }
            }
        } else if let Some(d) = &v.downward_api {
            paths.extend(d.items.iter().flatten().map(|i| i.path.clone()));
        } else if v.secret.is_some() || v.config_map.is_some() {
            paths.push("key".into());
        } else if v.azure_file.is_some() {
            paths.push("azurestorageaccountname".into());
            paths.push("azurestorageaccountkey".into());
        } else {
            continue;
        }
        let files = paths
            .into_iter()
            .map(|path| VolumeFile {
                content: SecretBox::new(Box::new(format!("content of {path}").into_bytes())),
                path,
            })
            .collect();
        out.volumes.insert(v.name.clone(), files);
    }
    out
}

/// Runs `translate` (an adapter's, `kind`'s) on every fixture and checks it against `kind`'s
/// declared capabilities; returns how many pods translated.
pub(crate) fn check<T>(
    kind: ProviderKind,
    translate: impl Fn(&WorkloadSpec) -> Result<T, TranslateError>,
) -> usize {
    let caps = declared(kind);
    let mut translated = 0;
    for (name, w) in workloads() {
        let uses = pod_features(&w.pod);
        let missing = caps.missing(&uses);
        match (translate(&w), missing.first()) {
            (Ok(_), None) => translated += 1,
            (Ok(_), Some(u)) => panic!("{kind}: {name} translated though {kind} does not run {u}"),
            (Err(e), None) => panic!("{kind}: {name} uses nothing {kind} lacks, yet: {e:?}"),
            (Err(e), Some(u)) => {
                let field = match &e {
                    TranslateError::Unsupported { field, .. }
                    | TranslateError::Elsewhere { field, .. } => field.clone(),
                    other => panic!("{kind}: {name} refused for {u} with {other:?}"),
                };
                assert_eq!(field, u.field, "{kind}: {name}");
            }
        }
    }
    translated
}

/// One pod per feature of the pod spec that a translator used to refuse in its own words (host
/// namespaces, probe kinds and tokens have theirs above): each uses that feature alone, but an
/// httpGet probe of another host is an httpGet probe too, and an init container after a sidecar
/// comes with the sidecar.
pub(crate) fn feature_pods() -> Vec<(Feature, Pod)> {
    let pod = |spec: serde_json::Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "feature-pod"},
            "spec": spec
        }))
        .unwrap()
    };
    let app = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"name": "app", "image": "i"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let with = |feature, spec: serde_json::Value| (feature, pod(spec));
    let container = |feature, extra| with(feature, serde_json::json!({"containers": [app(extra)]}));
    let volume = |feature, v: serde_json::Value| {
        let mut v = v;
        v["name"] = "data".into();
        with(
            feature,
            serde_json::json!({"containers": [app(serde_json::json!({}))], "volumes": [v]}),
        )
    };
    vec![
        container(
            Feature::AddedCapability,
            serde_json::json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
        ),
        container(
            Feature::SysPtrace,
            serde_json::json!({"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}),
        ),
        container(
            Feature::WorkingDir,
            serde_json::json!({"workingDir": "/srv"}),
        ),
        container(
            Feature::ArgsWithoutEntrypoint,
            serde_json::json!({"args": ["--port", "8080"]}),
        ),
        container(
            Feature::LifecycleHook,
            serde_json::json!({"lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}),
        ),
        container(
            Feature::SubPath,
            serde_json::json!({"volumeMounts": [{"name": "cfg", "mountPath": "/c", "subPath": "a"}]}),
        ),
        container(
            Feature::VolumeDevice,
            serde_json::json!({"volumeDevices": [{"name": "blk", "devicePath": "/dev/xvda"}]}),
        ),
        container(
            Feature::SctpPort,
            serde_json::json!({"ports": [{"containerPort": 9, "protocol": "SCTP"}]}),
        ),
        container(
            Feature::HttpGetProbeHost,
            serde_json::json!({"readinessProbe": {"httpGet": {"port": 80, "host": "example.com"}}}),
        ),
        with(
            Feature::Sysctls,
            serde_json::json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]},
                "containers": [app(serde_json::json!({}))]}),
        ),
        with(
            Feature::HostAliases,
            serde_json::json!({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
                "containers": [app(serde_json::json!({}))]}),
        ),
        with(
            Feature::InitContainerPort,
            serde_json::json!({"initContainers": [{"name": "init", "image": "i",
                "ports": [{"containerPort": 8080}]}],
                "containers": [app(serde_json::json!({}))]}),
        ),
        with(
            Feature::InitContainerAfterSidecar,
            serde_json::json!({"initContainers": [
                {"name": "proxy", "image": "i", "restartPolicy": "Always"},
                {"name": "late", "image": "i"}],
                "containers": [app(serde_json::json!({}))]}),
        ),
        volume(
            Feature::SecretVolume,
            serde_json::json!({"secret": {"secretName": "s"}}),
        ),
        volume(
            Feature::ConfigMapVolume,
            serde_json::json!({"configMap": {"name": "c"}}),
        ),
        volume(
            Feature::ProjectedVolume,
            serde_json::json!({"projected": {"sources": [{"configMap": {"name": "c"}}]}}),
        ),
        volume(
            Feature::DownwardApiVolume,
            serde_json::json!({"downwardAPI": {"items": [{"path": "labels",
                "fieldRef": {"fieldPath": "metadata.labels"}}]}}),
        ),
        volume(
            Feature::AzureFileVolume,
            serde_json::json!({"azureFile": {"secretName": "s", "shareName": "share"}}),
        ),
        volume(
            Feature::GitRepoVolume,
            serde_json::json!({"gitRepo": {"repository": "https://example.com/r.git"}}),
        ),
        volume(
            Feature::MemoryEmptyDir,
            serde_json::json!({"emptyDir": {"medium": "Memory"}}),
        ),
        volume(
            Feature::OtherVolume,
            serde_json::json!({"csi": {"driver": "secrets-store.csi.k8s.io"}}),
        ),
    ]
}

/// Runs `translate` (an adapter's, `kind`'s) on every [`feature_pods`] pod: it refuses naming
/// the first feature `kind` does not declare (for this target only when another provider runs
/// it), and otherwise translates. Returns the features whose pods translated.
pub(crate) fn check_features<T>(
    kind: ProviderKind,
    translate: impl Fn(&WorkloadSpec) -> Result<T, TranslateError>,
) -> Vec<Feature> {
    let caps = declared(kind);
    let mut translated = Vec::new();
    for (feature, pod) in feature_pods() {
        let uses = pod_features(&pod);
        let missing = caps.missing(&uses);
        let w = workload(pod);
        match (translate(&w), missing.first()) {
            (Ok(_), None) => translated.push(feature),
            (Ok(_), Some(u)) => panic!("{kind}: the {feature:?} pod translated without {u}"),
            (Err(e), None) => {
                panic!("{kind}: the {feature:?} pod uses nothing {kind} lacks: {e:?}")
            }
            (Err(e), Some(u)) => {
                let others = [
                    ProviderKind::Aci,
                    ProviderKind::Fargate,
                    ProviderKind::Cluster,
                ]
                .into_iter()
                .any(|k| k != kind && declared(k).runs(u.feature));
                match &e {
                    TranslateError::Elsewhere { field, reason } if others => {
                        assert_eq!(field, &u.field, "{kind}: {feature:?}");
                        assert!(reason.ends_with(" can"), "{kind}: {feature:?}: {reason}");
                    }
                    TranslateError::Unsupported { field, reason } if !others => {
                        assert_eq!(field, &u.field, "{kind}: {feature:?}");
                        assert!(reason.contains(u.feature.as_str()), "{kind}: {reason}");
                    }
                    other => panic!("{kind}: the {feature:?} pod refused with {other:?}"),
                }
            }
        }
    }
    translated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_is_a_pod_a_current_cluster_makes() {
        for (name, w) in workloads() {
            let spec = w.pod.spec.as_ref().unwrap();
            assert!(spec.dns_policy.is_some(), "{name}: defaulted dnsPolicy");
            assert_eq!(spec.enable_service_links, Some(true), "{name}");
            let has_token = spec
                .volumes
                .iter()
                .flatten()
                .any(crate::provider::kit::features::is_automatic_token);
            assert_eq!(
                has_token,
                spec.automount_service_account_token != Some(false),
                "{name}: admission's token volume unless the pod opts out"
            );
        }
    }
}
