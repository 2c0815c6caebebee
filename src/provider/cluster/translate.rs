//! Virtual pod + resolved values -> the shadow pod and its Secrets (pure).
//!
//! The shadow pod is the virtual pod's spec minus everything that pins it to the virtual node or
//! to the virtual pod's namespace:
//! - `nodeName`, the virtual-node `nodeSelector` entries (`type: virtual-kubelet`,
//!   `kubernetes.io/role: agent`, `kubernetes.io/hostname: <virtual node>`; the deprecated
//!   `beta.kubernetes.io/os` becomes `kubernetes.io/os`), the same keys in required/preferred
//!   node affinity, and the virtual-kubelet tolerations (`virtual-kubelet.io/*`, `azure.com/aci`);
//! - pod (anti-)affinity and topology spread constraints: they select pods by the virtual pod's
//!   labels, which the shadow pod does not carry;
//! - `priorityClassName`/`priority`/`preemptionPolicy`, `overhead`, `readinessGates`,
//!   `subdomain`, ephemeral containers: they name objects of the virtual pod's cluster;
//! - the service account: the shadow pod never runs as the virtual pod's identity. It gets the
//!   shadow namespace's default account with `automountServiceAccountToken: false`, and the
//!   automatic token volume admission added (`kube-api-access-*`) is dropped (declared as
//!   ignored: the placement Event says so). A token for the shadow namespace would be another
//!   identity, possibly in another cluster, with permissions the pod's owner never asked for; a
//!   pod that declares a `serviceAccountToken` projection of its own is refused by the kit, and
//!   goes to a target that mounts it (ACI).
//!
//! Env and files come from [`Resolved`], never from the API server: literal and ConfigMap env
//! values stay plain env; Secret env values and every file of a secret, configMap or projected
//! volume go into ONE Opaque Secret named like the workload, referenced with `secretKeyRef` and a
//! `secret` volume with explicit `items`. Downward-API env about where the pod runs
//! (`status.podIP`, `status.podIPs`, `status.hostIP`, `spec.nodeName`, resource fields) keeps its
//! `fieldRef`, so the shadow pod's kubelet fills in the true values. Registry credentials become
//! a `kubernetes.io/dockerconfigjson` Secret `<id>-registry`.
//!
//! Refused before any call, from the features the cluster does not declare (`kit::declared`,
//! worded by `why_not`): hostNetwork/PID/IPC, privileged containers, hostPorts, block devices,
//! volumes other than emptyDir, secret, configMap, projected and downwardAPI (hostPath and
//! PersistentVolumeClaims live on the virtual pod's side; azureFile, gitRepo and the rest are
//! not mounted): `Elsewhere` when another provider runs the feature, else `Unsupported`.
//! `PodRejection::Unresolved`: the pod references a Secret or ConfigMap the
//! controller did not resolve.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Affinity, EmptyDirVolumeSource, EnvVar as KEnvVar, EnvVarSource, KeyToPath,
    LocalObjectReference, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    Secret, SecretKeySelector, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secrecy::ExposeSecret;

use crate::policy::model::ProviderKind;
use crate::provider::contract::{EnvValue, EnvVar, Resolved, VolumeFile, WorkloadSpec};
use crate::provider::kit::features::is_automatic_token;
use crate::provider::kit::ownership::{
    MANAGED_BY, MANAGED_BY_VALUE, OwnerKeys, Values, WORKLOAD, label_value,
};
use crate::provider::kit::{Feature, TranslateError, pod_spec, refusal, unsupported};

/// Annotation: the policy target that placed the pod here.
const TARGET: &str = "burstgate.io/target";

/// Where Kubernetes mounts the automatic service account token.
const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Annotations copied from the virtual pod: they configure the container runtime's confinement.
const COPIED_ANNOTATION_PREFIXES: &[&str] = &[
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
];
/// Downward-API env fields that describe where the pod runs: the shadow pod's kubelet knows them.
const RUNTIME_FIELDS: &[&str] = &[
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
    "spec.nodeName",
];
/// Volume kinds a shadow pod can have.
const SUPPORTED_VOLUMES: &[&str] = &[
    "emptyDir",
    "secret",
    "configMap",
    "projected",
    "downwardAPI",
];

/// What one create sends: the shadow pod and the Secrets it references. `Debug` names the
/// Secrets, never their data.
#[derive(Clone)]
pub(crate) struct Shadow {
    /// The shadow pod.
    pub(crate) pod: Pod,
    /// Secret env values and volume files (`<id>`), when the pod has any.
    pub(crate) secret: Option<Secret>,
    /// Registry credentials (`<id>-registry`), when the pod has any.
    pub(crate) registry_secret: Option<Secret>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: &Option<Secret>| s.as_ref().and_then(|s| s.metadata.name.clone());
        f.debug_struct("Shadow")
            .field("pod", &self.pod)
            .field("secret", &name(&self.secret))
            .field("registry_secret", &name(&self.registry_secret))
            .finish()
    }
}

/// The name of the registry-credentials Secret of workload `id`.
fn registry_secret_name(id: &str) -> String {
    format!("{id}-registry")
}

fn is_valid_secret_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k != "."
        && k != ".."
}

/// Translates the virtual pod into its shadow pod in `namespace`, refusing what a cluster target
/// cannot run.
pub(crate) fn translate(spec: &WorkloadSpec, namespace: &str) -> Result<Shadow, TranslateError> {
    let virtual_spec = pod_spec(&spec.pod)?;
    refusal(&spec.pod, ProviderKind::Cluster, |feature| {
        why_not(feature, spec)
    })?;
    let mut secret_data: BTreeMap<String, ByteString> = BTreeMap::new();
    let (volumes, dropped) = translate_volumes(spec, virtual_spec, &mut secret_data)?;

    let mut pod_spec = virtual_spec.clone();
    for (i, c) in pod_spec.init_containers.iter_mut().flatten().enumerate() {
        translate_container(
            c,
            &format!("spec.initContainers[{i}]"),
            &spec.id,
            &spec.resolved,
            &dropped,
            &mut secret_data,
        )?;
    }
    for (i, c) in pod_spec.containers.iter_mut().enumerate() {
        translate_container(
            c,
            &format!("spec.containers[{i}]"),
            &spec.id,
            &spec.resolved,
            &dropped,
            &mut secret_data,
        )?;
    }
    pod_spec.volumes = (!volumes.is_empty()).then_some(volumes);
    detach(&mut pod_spec, spec);

    let (labels, annotations) = metadata(spec);
    let (secret, registry_secret) =
        secrets(spec, namespace, labels.clone(), &annotations, secret_data);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(spec.id.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    };
    Ok(Shadow {
        pod,
        secret,
        registry_secret,
    })
}

/// Takes out of the shadow pod's spec what pins it to the virtual node, what names objects of
/// the virtual pod's cluster, and the virtual pod's identity (see the module doc).
fn detach(pod_spec: &mut PodSpec, spec: &WorkloadSpec) {
    let node = &spec.owner.node;
    pod_spec.node_name = None;
    pod_spec.node_selector = node_selector(pod_spec.node_selector.as_ref(), node);
    pod_spec.affinity = pod_spec.affinity.as_ref().and_then(|a| affinity(a, node));
    pod_spec.tolerations = pod_spec.tolerations.as_ref().map(|ts| {
        ts.iter()
            .filter(|t| {
                !t.key
                    .as_deref()
                    .is_some_and(|k| k.starts_with("virtual-kubelet.io/") || k == "azure.com/aci")
            })
            .cloned()
            .collect()
    });
    pod_spec.topology_spread_constraints = None;
    pod_spec.priority_class_name = None;
    pod_spec.priority = None;
    pod_spec.preemption_policy = None;
    pod_spec.overhead = None;
    pod_spec.readiness_gates = None;
    pod_spec.subdomain = None;
    pod_spec.set_hostname_as_fqdn = None;
    pod_spec.ephemeral_containers = None;
    #[allow(deprecated)]
    {
        pod_spec.service_account = None;
    }
    pod_spec.service_account_name = None;
    pod_spec.automount_service_account_token = Some(false);
    pod_spec.enable_service_links = Some(false);
    if pod_spec.hostname.is_none() {
        pod_spec.hostname = default_hostname(&spec.owner.pod);
    }
    pod_spec.image_pull_secrets = (!spec.resolved.registry_credentials.is_empty()).then(|| {
        vec![LocalObjectReference {
            name: registry_secret_name(&spec.id),
        }]
    });
}

/// The shadow pod's labels (`managed-by` and the owner, label-safe) and annotations (the owner
/// in full, the target, and the runtime confinement annotations of the virtual pod).
fn metadata(spec: &WorkloadSpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let keys = OwnerKeys::KUBERNETES;
    let mut labels: BTreeMap<String, String> = keys.pairs(&spec.owner, Values::LabelSafe).into();
    labels.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    let mut annotations: BTreeMap<String, String> = keys.pairs(&spec.owner, Values::AsIs).into();
    annotations.insert(TARGET.into(), spec.target.clone());
    for (k, v) in spec.pod.metadata.annotations.iter().flatten() {
        if COPIED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    (labels, annotations)
}

/// The workload Secret (`secret_data`, when there is any) and the registry Secret (when the pod
/// has registry credentials): the pod's labels plus the workload's, its `burstgate.io/`
/// annotations plus the workload id.
fn secrets(
    spec: &WorkloadSpec,
    namespace: &str,
    mut labels: BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    secret_data: BTreeMap<String, ByteString>,
) -> (Option<Secret>, Option<Secret>) {
    labels.insert(WORKLOAD.into(), label_value(&spec.id));
    let mut annotations: BTreeMap<String, String> = pod_annotations
        .iter()
        .filter(|(k, _)| k.starts_with("burstgate.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(WORKLOAD.into(), spec.id.clone());
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..Default::default()
    };
    let secret = (!secret_data.is_empty()).then(|| Secret {
        metadata: meta(spec.id.clone()),
        type_: Some("Opaque".into()),
        data: Some(secret_data),
        ..Default::default()
    });
    let registry_secret = (!spec.resolved.registry_credentials.is_empty()).then(|| Secret {
        metadata: meta(registry_secret_name(&spec.id)),
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(docker_config_json(&spec.resolved)),
        )])),
        ..Default::default()
    });
    (secret, registry_secret)
}

/// Why a shadow pod cannot have `feature`, in the cluster's terms (the kit's [`refusal`] asks).
fn why_not(feature: Feature, spec: &WorkloadSpec) -> Option<String> {
    Some(match feature {
        Feature::HostNetwork | Feature::HostPid | Feature::HostIpc => {
            "a shadow pod cannot share the namespaces of the virtual node's host".into()
        }
        Feature::HostPort => {
            "a shadow pod runs on another node: a host port there would not be the virtual node's"
                .into()
        }
        Feature::Privileged => "privileged containers do not run on cluster targets".into(),
        Feature::HostPathVolume => unsupported_volume_reason("hostPath", spec),
        Feature::PersistentVolumeClaim => unsupported_volume_reason("persistentVolumeClaim", spec),
        Feature::AzureFileVolume => unsupported_volume_reason("azureFile", spec),
        Feature::GitRepoVolume => unsupported_volume_reason("gitRepo", spec),
        Feature::OtherVolume => format!(
            "cluster targets mount {} volumes only",
            SUPPORTED_VOLUMES.join(", ")
        ),
        Feature::VolumeDevice => {
            "a block device comes from a claim, and claims live on the virtual pod's side".into()
        }
        Feature::ServiceAccountToken => {
            "a shadow pod never runs as the virtual pod's service account".into()
        }
        _ => return None,
    })
}

/// `spec.volumes` of the shadow pod, and the names of the virtual pod's volumes it drops.
fn translate_volumes(
    spec: &WorkloadSpec,
    virtual_spec: &PodSpec,
    secret_data: &mut BTreeMap<String, ByteString>,
) -> Result<(Vec<Volume>, BTreeSet<String>), TranslateError> {
    // The automatic token is declared as ignored (kit::declared): the placement Event says it
    // is left out. So is a legacy token Secret mounted where Kubernetes mounts the token.
    let at_token_path: BTreeSet<&str> = virtual_spec
        .init_containers
        .iter()
        .flatten()
        .chain(&virtual_spec.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .filter(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_PATH)
        .map(|m| m.name.as_str())
        .collect();
    let token_volumes: BTreeSet<String> = virtual_spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| is_automatic_token(v) || at_token_path.contains(v.name.as_str()))
        .map(|v| v.name.clone())
        .collect();
    let mut volumes = Vec::new();
    for v in virtual_spec.volumes.iter().flatten() {
        if token_volumes.contains(&v.name) {
            continue;
        }
        let field = format!("spec.volumes[{}]", v.name);
        let kind = volume_kind(v);
        if !SUPPORTED_VOLUMES.contains(&kind.as_str()) {
            return Err(unsupported(
                format!("{field}.{kind}"),
                unsupported_volume_reason(&kind, spec),
            ));
        }
        let default_mode = match kind.as_str() {
            "secret" => v.secret.as_ref().and_then(|s| s.default_mode),
            "configMap" => v.config_map.as_ref().and_then(|s| s.default_mode),
            // A token projection of the pod's own is refused first (kit::refusal).
            "projected" => v.projected.as_ref().and_then(|p| p.default_mode),
            _ => {
                volumes.push(v.clone());
                continue;
            }
        };
        let files =
            spec.resolved
                .volumes
                .get(&v.name)
                .ok_or_else(|| TranslateError::Unresolved {
                    field: format!("{field}.{kind}"),
                    what: format!("the files of volume {}", v.name),
                })?;
        volumes.push(files_volume(
            &v.name,
            files,
            default_mode,
            &spec.id,
            secret_data,
        ));
    }
    Ok((volumes, token_volumes))
}

/// Why a shadow pod cannot have a volume of `kind`.
fn unsupported_volume_reason(kind: &str, spec: &WorkloadSpec) -> String {
    match kind {
        "hostPath" => {
            "a shadow pod runs on another node, it cannot see the virtual node's host paths".into()
        }
        "persistentVolumeClaim" => format!(
            "claims are namespaced: the claim lives in namespace {}, the shadow pod runs in namespace {} (possibly in another cluster)",
            spec.owner.namespace,
            spec.pod
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(&spec.owner.namespace)
        ),
        other => format!(
            "{other} volumes are not supported on cluster targets (supported: {})",
            SUPPORTED_VOLUMES.join(", ")
        ),
    }
}

/// A secret, configMap or projected volume as the workload Secret's items (`file.<volume>.<n>`
/// in `secret_data`); no files (an optional source that does not exist) is an empty directory.
fn files_volume(
    name: &str,
    files: &[VolumeFile],
    default_mode: Option<i32>,
    id: &str,
    secret_data: &mut BTreeMap<String, ByteString>,
) -> Volume {
    if files.is_empty() {
        // An optional Secret or ConfigMap that does not exist: an empty directory, as on a
        // kubelet. (A secret volume without items would project every key of the Secret.)
        return Volume {
            name: name.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
    }
    let mut items = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let key = format!("file.{name}.{i}");
        secret_data.insert(key.clone(), ByteString(f.content.expose_secret().clone()));
        items.push(KeyToPath {
            key,
            path: f.path.clone(),
            ..Default::default()
        });
    }
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(id.to_string()),
            items: Some(items),
            default_mode,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The volume's source field name (`hostPath`, `emptyDir`...).
fn volume_kind(v: &Volume) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(map)) => map
            .keys()
            .find(|k| k.as_str() != "name")
            .cloned()
            .unwrap_or_else(|| "emptyDir".into()),
        _ => "unknown".into(),
    }
}

fn translate_container(
    c: &mut k8s_openapi::api::core::v1::Container,
    field: &str,
    id: &str,
    resolved: &Resolved,
    dropped_volumes: &BTreeSet<String>,
    secret_data: &mut BTreeMap<String, ByteString>,
) -> Result<(), TranslateError> {
    let field = format!("{field}({})", c.name);
    // Privileged containers and host ports are refused before, by the kit's `refusal`.
    if let Some(mounts) = c.volume_mounts.as_mut() {
        mounts.retain(|m| !dropped_volumes.contains(&m.name));
    }
    let original = c.env.clone().unwrap_or_default();
    let env = match resolved.env.get(&c.name) {
        Some(vars) => resolved_env(&c.name, vars, &original, id, secret_data),
        None => {
            let needs = original.iter().find(|e| {
                e.value_from
                    .as_ref()
                    .is_some_and(|f| f.secret_key_ref.is_some() || f.config_map_key_ref.is_some())
            });
            if let Some(e) = needs {
                return Err(TranslateError::Unresolved {
                    field: format!("{field}.env[{}]", e.name),
                    what: "its Secret or ConfigMap value".into(),
                });
            }
            if c.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(TranslateError::Unresolved {
                    field: format!("{field}.envFrom"),
                    what: "the Secrets and ConfigMaps it names".into(),
                });
            }
            original
        }
    };
    c.env = (!env.is_empty()).then_some(env);
    c.env_from = None;
    Ok(())
}

fn resolved_env(
    container: &str,
    vars: &[EnvVar],
    original: &[KEnvVar],
    id: &str,
    secret_data: &mut BTreeMap<String, ByteString>,
) -> Vec<KEnvVar> {
    vars.iter()
        .map(|v| {
            // The last definition in the pod wins, as in Kubernetes.
            let runtime_ref = original
                .iter()
                .rev()
                .find(|o| o.name == v.name)
                .and_then(|o| o.value_from.as_ref())
                .filter(|f| {
                    f.resource_field_ref.is_some()
                        || f.field_ref
                            .as_ref()
                            .is_some_and(|r| RUNTIME_FIELDS.contains(&r.field_path.as_str()))
                });
            if let Some(source) = runtime_ref {
                return KEnvVar {
                    name: v.name.clone(),
                    value: None,
                    value_from: Some(source.clone()),
                };
            }
            match &v.value {
                EnvValue::Plain(value) => KEnvVar {
                    name: v.name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                },
                EnvValue::Secret(value) => {
                    let wanted = format!("env.{container}.{}", v.name);
                    let key = if is_valid_secret_key(&wanted) {
                        wanted
                    } else {
                        format!("env.{container}.{}", label_value(&v.name))
                    };
                    secret_data.insert(
                        key.clone(),
                        ByteString(value.expose_secret().as_bytes().to_vec()),
                    );
                    KEnvVar {
                        name: v.name.clone(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: id.to_string(),
                                key,
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                    }
                }
            }
        })
        .collect()
}

/// The hostname a kubelet gives a pod without `spec.hostname`: its name, when it is a DNS label.
fn default_hostname(pod: &str) -> Option<String> {
    let name: String = pod.chars().take(63).collect();
    let name = name.trim_end_matches(['-', '.']);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    valid.then(|| name.to_string())
}

/// Whether a node-selector requirement pins the pod to the virtual node.
fn pins_virtual_node(key: &str, values: &[String], node: &str) -> bool {
    match key {
        "type" => values.iter().any(|v| v == "virtual-kubelet"),
        "kubernetes.io/role" => values.iter().any(|v| v == "agent"),
        "kubernetes.io/hostname" | "metadata.name" => values.iter().any(|v| v == node),
        _ => false,
    }
}

fn node_selector(
    selector: Option<&BTreeMap<String, String>>,
    node: &str,
) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in selector.into_iter().flatten() {
        if pins_virtual_node(k, std::slice::from_ref(v), node) {
            continue;
        }
        let key = if k == "beta.kubernetes.io/os" {
            "kubernetes.io/os".to_string()
        } else {
            k.clone()
        };
        out.insert(key, v.clone());
    }
    (!out.is_empty()).then_some(out)
}

fn requirements(
    rs: &Option<Vec<NodeSelectorRequirement>>,
    node: &str,
) -> Option<Vec<NodeSelectorRequirement>> {
    let kept: Vec<_> = rs
        .iter()
        .flatten()
        .filter(|r| {
            !(r.operator == "In"
                && pins_virtual_node(&r.key, r.values.as_deref().unwrap_or_default(), node))
        })
        .cloned()
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// A term without the virtual-node requirements; `None` when nothing is left (an empty term
/// would match no node at all).
fn term(t: &NodeSelectorTerm, node: &str) -> Option<NodeSelectorTerm> {
    let out = NodeSelectorTerm {
        match_expressions: requirements(&t.match_expressions, node),
        match_fields: requirements(&t.match_fields, node),
    };
    (out.match_expressions.is_some() || out.match_fields.is_some()).then_some(out)
}

fn affinity(a: &Affinity, node: &str) -> Option<Affinity> {
    let node_affinity = a.node_affinity.as_ref().and_then(|na| {
        let required = na
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .and_then(|r| {
                let terms: Vec<_> = r
                    .node_selector_terms
                    .iter()
                    .filter_map(|t| term(t, node))
                    .collect();
                (!terms.is_empty()).then_some(k8s_openapi::api::core::v1::NodeSelector {
                    node_selector_terms: terms,
                })
            });
        let preferred: Vec<_> = na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .filter_map(|p| {
                term(&p.preference, node).map(|t| {
                    k8s_openapi::api::core::v1::PreferredSchedulingTerm {
                        preference: t,
                        weight: p.weight,
                    }
                })
            })
            .collect();
        let out = NodeAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: (!preferred.is_empty())
                .then_some(preferred),
        };
        (out.required_during_scheduling_ignored_during_execution
            .is_some()
            || out
                .preferred_during_scheduling_ignored_during_execution
                .is_some())
        .then_some(out)
    });
    node_affinity.map(|na| Affinity {
        node_affinity: Some(na),
        ..Default::default()
    })
}

/// `.dockerconfigjson` for the registry credentials.
fn docker_config_json(resolved: &Resolved) -> Vec<u8> {
    use base64::Engine as _;
    let auths: serde_json::Map<String, serde_json::Value> = resolved
        .registry_credentials
        .iter()
        .map(|c| {
            let password = c.password.expose_secret();
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", c.username));
            (
                c.server.clone(),
                serde_json::json!({ "username": c.username, "password": password, "auth": auth }),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "auths": auths })).expect("JSON of strings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sizing::Size;
    use crate::provider::ProviderError;
    use crate::provider::contract::{Owner, RegistryCredential, VolumeFile};
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, EnvVar as KEnv, HostPathVolumeSource, ObjectFieldSelector,
        PersistentVolumeClaimVolumeSource, SecretVolumeSource as SVS, SecurityContext, Toleration,
        VolumeMount,
    };
    use secrecy::{SecretBox, SecretString};
    use std::sync::Arc;

    #[test]
    fn every_pod_of_the_corpus_translates_unless_it_uses_a_feature_a_shadow_pod_does_not_run() {
        let translated =
            crate::provider::kit::corpus::check(ProviderKind::Cluster, |w| translate(w, "shadow"));
        assert!(translated >= 5, "{translated}");
    }

    #[test]
    fn every_field_feature_the_cluster_lacks_is_refused_naming_it_and_the_others_translate() {
        let translated = crate::provider::kit::corpus::check_features(ProviderKind::Cluster, |w| {
            translate(w, "shadow")
        });
        let refused: Vec<Feature> = crate::provider::kit::corpus::feature_pods()
            .into_iter()
            .map(|(f, _)| f)
            .filter(|f| !translated.contains(f))
            .collect();
        assert_eq!(
            refused,
            [
                Feature::VolumeDevice,
                Feature::AzureFileVolume,
                Feature::GitRepoVolume,
                Feature::OtherVolume,
            ]
        );
    }

    const NODE_NAME: &str = "burstgate";

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("nginx:1.27".into()),
            ..Default::default()
        }
    }

    fn virtual_pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn workload(pod: Pod, resolved: Resolved) -> WorkloadSpec {
        WorkloadSpec {
            id: "bg-u-1".into(),
            owner: Owner {
                cluster_id: "prod-eu".into(),
                node: NODE_NAME.into(),
                namespace: "shop".into(),
                pod: "web-1".into(),
                pod_uid: "u-1".into(),
            },
            target: "onprem".into(),
            region: "local".into(),
            size: Size::default(),
            pod,
            resolved: Arc::new(resolved),
        }
    }

    fn pinned_spec() -> PodSpec {
        PodSpec {
            node_name: Some(NODE_NAME.into()),
            node_selector: Some(BTreeMap::from([
                ("type".to_string(), "virtual-kubelet".to_string()),
                ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
                ("disk".to_string(), "ssd".to_string()),
            ])),
            tolerations: Some(vec![
                Toleration {
                    key: Some("virtual-kubelet.io/provider".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                },
                Toleration {
                    key: Some("azure.com/aci".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                },
                Toleration {
                    key: Some("dedicated".into()),
                    value: Some("batch".into()),
                    ..Default::default()
                },
            ]),
            service_account_name: Some("shop-api".into()),
            priority_class_name: Some("high".into()),
            priority: Some(1000),
            containers: vec![container("app")],
            ..Default::default()
        }
    }

    fn unsupported_field(err: TranslateError) -> String {
        match err {
            TranslateError::Unsupported { field, .. } => field,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn the_shadow_pod_loses_what_pins_it_to_the_virtual_node_and_keeps_the_rest() {
        let shadow = translate(
            &workload(virtual_pod(pinned_spec()), Resolved::default()),
            "burstgate-shadow",
        )
        .unwrap();
        let spec = shadow.pod.spec.unwrap();
        assert_eq!(spec.node_name, None);
        assert_eq!(
            spec.node_selector.unwrap(),
            BTreeMap::from([
                ("disk".to_string(), "ssd".to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string())
            ])
        );
        let keys: Vec<_> = spec
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| t.key.unwrap())
            .collect();
        assert_eq!(keys, vec!["dedicated"]);
        assert_eq!((spec.priority_class_name, spec.priority), (None, None));
        assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.27"));
        assert_eq!(
            shadow.pod.metadata.namespace.as_deref(),
            Some("burstgate-shadow")
        );
        assert_eq!(shadow.pod.metadata.name.as_deref(), Some("bg-u-1"));
    }

    #[test]
    fn the_shadow_pod_never_runs_as_the_virtual_pods_service_account() {
        let mut spec = pinned_spec();
        spec.volumes = Some(vec![Volume {
            name: "shop-api-token-x7k2p".into(),
            secret: Some(SVS::default()),
            ..Default::default()
        }]);
        spec.containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "shop-api-token-x7k2p".into(),
            mount_path: SERVICE_ACCOUNT_PATH.into(),
            ..Default::default()
        }]);
        let shadow = translate(&workload(virtual_pod(spec), Resolved::default()), "ns").unwrap();
        let spec = shadow.pod.spec.unwrap();
        assert_eq!(
            (
                spec.service_account_name,
                spec.automount_service_account_token
            ),
            (None, Some(false))
        );
        assert_eq!(spec.volumes, None, "the token volume is dropped");
        assert_eq!(
            spec.containers[0].volume_mounts,
            Some(vec![]),
            "and so is its mount"
        );
    }

    #[test]
    fn ownership_labels_are_valid_label_values_and_annotations_keep_the_full_values() {
        let long_name = format!("{}.with.dots", "a".repeat(80));
        let mut w = workload(virtual_pod(pinned_spec()), Resolved::default());
        w.owner.pod = long_name.clone();
        w.owner.cluster_id = "prod/eu west".into();
        let shadow = translate(&w, "ns").unwrap();
        let labels = shadow.pod.metadata.labels.unwrap();
        for (k, v) in &labels {
            assert_eq!(
                &label_value(v),
                v,
                "label {k}={v} is not a valid label value"
            );
        }
        assert_eq!(labels["burstgate.io/managed-by"], "burstgate");
        assert_eq!(labels["burstgate.io/pod-uid"], "u-1");
        assert_eq!(labels["burstgate.io/pod-namespace"], "shop");
        assert_ne!(labels["burstgate.io/pod-name"], long_name);
        let annotations = shadow.pod.metadata.annotations.unwrap();
        assert_eq!(annotations["burstgate.io/pod-name"], long_name);
        assert_eq!(annotations["burstgate.io/cluster-id"], "prod/eu west");
        assert_eq!(annotations["burstgate.io/node"], NODE_NAME);
        assert_eq!(annotations["burstgate.io/target"], "onprem");
        assert_eq!(
            OwnerKeys::KUBERNETES.read(|k| annotations.get(k).map(String::as_str)),
            Some(w.owner)
        );
    }

    #[test]
    fn debug_output_of_a_shadow_never_shows_secret_data() {
        let resolved = Resolved {
            env: BTreeMap::from([(
                "app".to_string(),
                vec![EnvVar {
                    name: "K".into(),
                    value: EnvValue::Secret(SecretString::from("hunter2")),
                }],
            )]),
            ..Default::default()
        };
        let shadow = translate(&workload(virtual_pod(pinned_spec()), resolved), "ns").unwrap();
        let printed = format!("{shadow:?}");
        assert!(
            printed.contains("bg-u-1")
                && !printed.contains("hunter2")
                && !printed.contains("104, 117"),
            "{printed}"
        );
    }

    #[test]
    fn a_secret_env_value_goes_into_the_workload_secret_and_is_referenced_never_inlined() {
        let resolved = Resolved {
            env: BTreeMap::from([(
                "app".to_string(),
                vec![
                    EnvVar {
                        name: "MODE".into(),
                        value: EnvValue::Plain("fast".into()),
                    },
                    EnvVar {
                        name: "DB_PASSWORD".into(),
                        value: EnvValue::Secret(SecretString::from("hunter2")),
                    },
                ],
            )]),
            ..Default::default()
        };
        let shadow = translate(&workload(virtual_pod(pinned_spec()), resolved), "ns").unwrap();
        let env = shadow.pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert_eq!(env[0].value.as_deref(), Some("fast"));
        let reference = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                reference.name.as_str(),
                reference.key.as_str(),
                env[1].value.as_deref()
            ),
            ("bg-u-1", "env.app.DB_PASSWORD", None)
        );
        let pod_json = serde_json::to_string(&shadow.pod).unwrap();
        assert!(
            !pod_json.contains("hunter2"),
            "the secret value must not appear in the pod: {pod_json}"
        );
        let secret = shadow.secret.unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("bg-u-1"));
        assert_eq!(secret.data.unwrap()["env.app.DB_PASSWORD"].0, b"hunter2");
    }

    #[test]
    fn downward_api_env_about_where_the_pod_runs_keeps_its_field_ref() {
        let mut spec = pinned_spec();
        let field = |path: &str| {
            Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..Default::default()
            })
        };
        spec.containers[0].env = Some(vec![
            KEnv {
                name: "POD_IP".into(),
                value: None,
                value_from: field("status.podIP"),
            },
            KEnv {
                name: "POD_NAME".into(),
                value: None,
                value_from: field("metadata.name"),
            },
        ]);
        let resolved = Resolved {
            env: BTreeMap::from([(
                "app".to_string(),
                vec![
                    EnvVar {
                        name: "POD_IP".into(),
                        value: EnvValue::Plain("10.0.0.9".into()),
                    },
                    EnvVar {
                        name: "POD_NAME".into(),
                        value: EnvValue::Plain("web-1".into()),
                    },
                ],
            )]),
            ..Default::default()
        };
        let shadow = translate(&workload(virtual_pod(spec), resolved), "ns").unwrap();
        let env = shadow.pod.spec.unwrap().containers[0].env.clone().unwrap();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.podIP"
        );
        assert_eq!(
            env[1].value.as_deref(),
            Some("web-1"),
            "the virtual pod's name, not the shadow pod's"
        );
    }

    #[test]
    fn secret_and_config_map_volume_files_become_items_of_the_workload_secret() {
        let mut spec = pinned_spec();
        spec.volumes = Some(vec![
            Volume {
                name: "config".into(),
                secret: Some(SVS {
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "cache".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "missing-optional".into(),
                secret: Some(SVS::default()),
                ..Default::default()
            },
        ]);
        let resolved = Resolved {
            volumes: BTreeMap::from([
                (
                    "config".to_string(),
                    vec![VolumeFile {
                        path: "conf/app.yaml".into(),
                        content: SecretBox::new(Box::new(b"key: s3cr3t".to_vec())),
                    }],
                ),
                ("missing-optional".to_string(), vec![]),
            ]),
            ..Default::default()
        };
        let shadow = translate(&workload(virtual_pod(spec), resolved), "ns").unwrap();
        let volumes = shadow.pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        let config = volumes[0].secret.as_ref().unwrap();
        assert_eq!(
            (config.secret_name.as_deref(), config.default_mode),
            (Some("bg-u-1"), Some(0o400))
        );
        assert_eq!(config.items.as_ref().unwrap()[0].path, "conf/app.yaml");
        assert!(volumes[1].empty_dir.is_some());
        assert!(
            volumes[2].empty_dir.is_some(),
            "an empty optional volume must not project the whole Secret"
        );
        assert!(
            !serde_json::to_string(&shadow.pod)
                .unwrap()
                .contains("s3cr3t")
        );
        assert_eq!(
            shadow.secret.unwrap().data.unwrap()["file.config.0"].0,
            b"key: s3cr3t"
        );
    }

    #[test]
    fn a_host_path_volume_is_refused_before_any_call() {
        let mut spec = pinned_spec();
        spec.volumes = Some(vec![Volume {
            name: "logs".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/var/log".into(),
                type_: None,
            }),
            ..Default::default()
        }]);
        let err = translate(&workload(virtual_pod(spec), Resolved::default()), "ns").unwrap_err();
        assert_eq!(
            unsupported_field(err.clone()),
            "spec.volumes[logs].hostPath"
        );
        assert!(matches!(
            ProviderError::from(err),
            ProviderError::Pod(crate::provider::PodRejection::Unsupported { .. })
        ));
    }

    #[test]
    fn a_persistent_volume_claim_is_refused_naming_the_namespaces() {
        let mut spec = pinned_spec();
        spec.volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "db".into(),
                read_only: None,
            }),
            ..Default::default()
        }]);
        let err = translate(&workload(virtual_pod(spec), Resolved::default()), "ns").unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.volumes[data].persistentVolumeClaim"),
            "{err}"
        );
        assert!(err.to_string().contains("namespace shop"), "{err}");
    }

    #[test]
    fn privileged_containers_host_ports_and_host_network_are_unsupported() {
        let mut privileged = pinned_spec();
        privileged.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let mut host_port = pinned_spec();
        host_port.containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..Default::default()
        }]);
        let mut host_network = pinned_spec();
        host_network.host_network = Some(true);
        for (spec, field) in [
            (
                privileged,
                "spec.containers[app].securityContext.privileged",
            ),
            (host_port, "spec.containers[app].ports[].hostPort"),
            (host_network, "spec.hostNetwork"),
        ] {
            assert_eq!(
                unsupported_field(
                    translate(&workload(virtual_pod(spec), Resolved::default()), "ns").unwrap_err()
                ),
                field
            );
        }
    }

    #[test]
    fn a_secret_reference_the_controller_did_not_resolve_is_refused() {
        let mut spec = pinned_spec();
        spec.containers[0].env = Some(vec![KEnv {
            name: "TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }]);
        let err = translate(&workload(virtual_pod(spec), Resolved::default()), "ns").unwrap_err();
        assert!(
            matches!(&err, TranslateError::Unresolved { field, .. } if field == "spec.containers[0](app).env[TOKEN]"),
            "{err:?}"
        );
    }

    #[test]
    fn registry_credentials_become_a_docker_config_json_secret_the_pod_pulls_with() {
        let resolved = Resolved {
            registry_credentials: vec![RegistryCredential {
                server: "r.example".into(),
                username: "u".into(),
                password: SecretString::from("p@ss"),
            }],
            ..Default::default()
        };
        let shadow = translate(&workload(virtual_pod(pinned_spec()), resolved), "ns").unwrap();
        assert_eq!(
            shadow.pod.spec.unwrap().image_pull_secrets.unwrap()[0].name,
            "bg-u-1-registry"
        );
        let secret = shadow.registry_secret.unwrap();
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let config: serde_json::Value =
            serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
        assert_eq!(config["auths"]["r.example"]["auth"], "dTpwQHNz");
        assert!(
            shadow.secret.is_none(),
            "no env or files: no workload Secret"
        );
    }

    #[test]
    fn node_affinity_to_the_virtual_node_is_dropped_and_other_terms_are_kept() {
        let req = |key: &str, value: &str| NodeSelectorRequirement {
            key: key.into(),
            operator: "In".into(),
            values: Some(vec![value.into()]),
        };
        let mut spec = pinned_spec();
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: vec![
                            NodeSelectorTerm {
                                match_expressions: Some(vec![req("type", "virtual-kubelet")]),
                                match_fields: None,
                            },
                            NodeSelectorTerm {
                                match_expressions: Some(vec![
                                    req("type", "virtual-kubelet"),
                                    req("zone", "a"),
                                ]),
                                match_fields: None,
                            },
                        ],
                    },
                ),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            pod_anti_affinity: Some(Default::default()),
            ..Default::default()
        });
        let affinity = translate(&workload(virtual_pod(spec), Resolved::default()), "ns")
            .unwrap()
            .pod
            .spec
            .unwrap()
            .affinity
            .unwrap();
        let terms = affinity
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(
            terms,
            vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("zone", "a")]),
                match_fields: None
            }]
        );
        assert!(affinity.pod_anti_affinity.is_none());
    }

    #[test]
    fn the_hostname_stays_the_virtual_pods_name() {
        let shadow = translate(
            &workload(virtual_pod(pinned_spec()), Resolved::default()),
            "ns",
        )
        .unwrap();
        assert_eq!(shadow.pod.spec.unwrap().hostname.as_deref(), Some("web-1"));
        assert_eq!(default_hostname("a.b"), None);
    }
}
