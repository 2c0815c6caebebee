//! The engine's view of a pod: identity, labels, annotations and its effective resource request.
//!
//! The effective request is computed as Kubernetes computes it for scheduling: per resource, the
//! larger of (sum of app containers + sidecars) and (largest init container + sidecars started
//! before it); a container's limit stands in where its request is absent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The annotation naming the GPU SKU a pod needs (e.g. `V100`); any GPU target fits without it.
pub const GPU_SKU_ANNOTATION: &str = "burstgate.io/gpu-sku";
/// The extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Errors turning a Kubernetes Pod into a [`PodView`]. Never retryable: the pod spec is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PodError {
    /// A resource quantity that Kubernetes would also reject.
    #[error("container {container}: {resource} quantity {value:?} is not a valid quantity")]
    BadQuantity {
        /// Container name.
        container: String,
        /// Resource name (`cpu`, `memory`, `nvidia.com/gpu`).
        resource: String,
        /// The offending text.
        value: String,
    },
    /// The pod has no namespace or name (a manifest not yet defaulted).
    #[error("pod has no {0}")]
    MissingField(&'static str),
}

/// What a pod asks for, in integer units so that accounting never drifts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: u64,
    /// Memory in MiB (rounded up).
    pub memory_mib: u64,
    /// Whole GPUs (`nvidia.com/gpu`).
    pub gpus: u32,
}

impl Resources {
    /// CPU in vCPU.
    pub fn vcpu(&self) -> f64 {
        self.milli_cpu as f64 / 1000.0
    }
    /// Memory in GiB.
    pub fn memory_gib(&self) -> f64 {
        self.memory_mib as f64 / 1024.0
    }
}

/// The engine's input pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (may be empty for manifests not yet created).
    pub uid: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations (including the tightening `burstgate.io/*` ones).
    pub annotations: BTreeMap<String, String>,
    /// Effective request.
    pub resources: Resources,
    /// The GPU SKU asked for with `burstgate.io/gpu-sku`, if any.
    pub gpu_sku: Option<String>,
}

impl PodView {
    /// Builds the view of a Kubernetes Pod; a manifest without namespace is put in `default`.
    pub fn from_pod(pod: &Pod) -> Result<Self, PodError> {
        let meta = &pod.metadata;
        let name = meta
            .name
            .clone()
            .or_else(|| meta.generate_name.clone())
            .ok_or(PodError::MissingField("metadata.name"))?;
        let annotations: BTreeMap<String, String> = meta.annotations.clone().unwrap_or_default();
        let resources = match &pod.spec {
            Some(spec) => effective_request(
                &spec.containers,
                spec.init_containers.as_deref().unwrap_or(&[]),
            )?,
            None => Resources::default(),
        };
        Ok(PodView {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            gpu_sku: annotations.get(GPU_SKU_ANNOTATION).cloned(),
            annotations,
            resources,
        })
    }
}

/// The effective request of a pod made of `containers` and `init_containers`.
pub fn effective_request(
    containers: &[Container],
    init_containers: &[Container],
) -> Result<Resources, PodError> {
    let mut app = Resources::default();
    for c in containers {
        app = add(app, container_request(c)?);
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in init_containers {
        let r = container_request(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, r);
        } else {
            init_peak = max(init_peak, add(sidecars, r));
        }
    }
    Ok(max(add(app, sidecars), init_peak))
}

/// Saturating: Kubernetes takes quantities far beyond any machine (`9e18` CPUs), which count as
/// the largest request rather than wrap around to a small one (found by fuzzing).
fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_cpu: a.milli_cpu.saturating_add(b.milli_cpu),
        memory_mib: a.memory_mib.saturating_add(b.memory_mib),
        gpus: a.gpus.saturating_add(b.gpus),
    }
}

fn max(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_cpu: a.milli_cpu.max(b.milli_cpu),
        memory_mib: a.memory_mib.max(b.memory_mib),
        gpus: a.gpus.max(b.gpus),
    }
}

fn container_request(c: &Container) -> Result<Resources, PodError> {
    let res = c.resources.as_ref();
    let pick = |name: &str| -> Option<&Quantity> {
        res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
            .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
    };
    let parse = |name: &str| -> Result<f64, PodError> {
        match pick(name) {
            None => Ok(0.0),
            Some(q) => parse_quantity(&q.0).ok_or_else(|| PodError::BadQuantity {
                container: c.name.clone(),
                resource: name.to_string(),
                value: q.0.clone(),
            }),
        }
    };
    // GPUs are limits-only in Kubernetes; requests, when present, must equal limits.
    let gpus = parse(GPU_RESOURCE)?;
    Ok(Resources {
        milli_cpu: (parse("cpu")? * 1000.0 - 1e-9).ceil().max(0.0) as u64,
        memory_mib: (parse("memory")? / (1024.0 * 1024.0) - 1e-9)
            .ceil()
            .max(0.0) as u64,
        gpus: gpus.ceil().max(0.0) as u32,
    })
}

/// Parses a Kubernetes quantity (`500m`, `1.5`, `2Gi`, `1e3`, `128M`) into a plain number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|n| (n, *f)))
        .or_else(|| s.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((s, 1.0));
    if number.is_empty()
        || !number
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '+')
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(
        name: &str,
        cpu: Option<&str>,
        mem: Option<&str>,
        limit_cpu: Option<&str>,
    ) -> Container {
        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_string(), Quantity(c.into()));
        }
        if let Some(m) = mem {
            requests.insert("memory".to_string(), Quantity(m.into()));
        }
        if let Some(c) = limit_cpu {
            limits.insert("cpu".to_string(), Quantity(c.into()));
        }
        Container {
            name: name.into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(requests),
                limits: Some(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("128M"), Some(128e6));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1073741824.0));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn effective_request_is_the_larger_of_app_sum_and_biggest_init_container() {
        let app = [
            container("a", Some("500m"), Some("256Mi"), None),
            container("b", Some("250m"), Some("256Mi"), None),
        ];
        let init = [container("init", Some("2"), Some("128Mi"), None)];
        let r = effective_request(&app, &init).unwrap();
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory_mib, 512);
    }

    #[test]
    fn requests_too_large_to_count_add_up_to_the_largest_request_not_a_small_one() {
        let huge = Some("1e30");
        let app = [
            container("a", huge, huge, None),
            container("b", huge, huge, None),
        ];
        let r = effective_request(&app, &[]).unwrap();
        assert_eq!((r.milli_cpu, r.memory_mib), (u64::MAX, u64::MAX));
    }

    #[test]
    fn limits_stand_in_for_absent_requests() {
        let app = [container("a", None, Some("1Gi"), Some("1500m"))];
        let r = effective_request(&app, &[]).unwrap();
        assert_eq!(r.milli_cpu, 1500);
        assert_eq!(r.memory_mib, 1024);
    }

    #[test]
    fn sidecar_init_containers_add_to_the_app_sum() {
        let app = [container("a", Some("1"), Some("1Gi"), None)];
        let mut sidecar = container("proxy", Some("250m"), Some("128Mi"), None);
        sidecar.restart_policy = Some("Always".into());
        let r = effective_request(&app, &[sidecar]).unwrap();
        assert_eq!(r.milli_cpu, 1250);
        assert_eq!(r.memory_mib, 1152);
    }

    #[test]
    fn a_bad_quantity_names_the_container_and_resource() {
        let app = [container("web", Some("lots"), None, None)];
        let err = effective_request(&app, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container web: cpu quantity \"lots\" is not a valid quantity"
        );
    }
}
