//! The pod features an adapter may or may not run, found in a pod spec (pure). Adapters declare
//! the ones they run in their [`Capabilities`]; admission refuses a pod that no adapter of the
//! gateway can run, and the controller keeps the engine from choosing a target whose adapter
//! cannot run the pod (so it goes to one that can, and `explain` says why).

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, Policy, Target};

/// One pod feature that not every provider runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// `spec.hostNetwork`.
    HostNetwork,
    /// `spec.hostPID`.
    HostPid,
    /// `spec.hostIPC`.
    HostIpc,
    /// A container port with a `hostPort`.
    HostPort,
    /// A privileged container.
    Privileged,
    /// A `hostPath` volume.
    HostPathVolume,
    /// A `persistentVolumeClaim` volume.
    PersistentVolumeClaim,
    /// A liveness or readiness probe running a command.
    ExecProbe,
    /// A liveness or readiness probe over HTTP.
    HttpGetProbe,
    /// A liveness or readiness probe opening a TCP connection.
    TcpSocketProbe,
    /// A liveness or readiness probe over gRPC.
    GrpcProbe,
    /// A startup probe (any kind).
    StartupProbe,
    /// A probe on an init container.
    InitContainerProbe,
    /// A sidecar: an init container with `restartPolicy: Always`.
    Sidecar,
}

impl Feature {
    /// Every feature, in a stable order.
    pub const ALL: [Feature; 14] = [
        Feature::HostNetwork,
        Feature::HostPid,
        Feature::HostIpc,
        Feature::HostPort,
        Feature::Privileged,
        Feature::HostPathVolume,
        Feature::PersistentVolumeClaim,
        Feature::ExecProbe,
        Feature::HttpGetProbe,
        Feature::TcpSocketProbe,
        Feature::GrpcProbe,
        Feature::StartupProbe,
        Feature::InitContainerProbe,
        Feature::Sidecar,
    ];

    /// What runs on any real node but not on every cloud: every probe kind, startup probes,
    /// probes on init containers and sidecars (the host-level features are not among them).
    pub const PROBES_AND_SIDECARS: [Feature; 7] = [
        Feature::ExecProbe,
        Feature::HttpGetProbe,
        Feature::TcpSocketProbe,
        Feature::GrpcProbe,
        Feature::StartupProbe,
        Feature::InitContainerProbe,
        Feature::Sidecar,
    ];

    /// The feature as operators read it in a pod spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::HostNetwork => "hostNetwork",
            Feature::HostPid => "hostPID",
            Feature::HostIpc => "hostIPC",
            Feature::HostPort => "hostPort",
            Feature::Privileged => "privileged container",
            Feature::HostPathVolume => "hostPath volume",
            Feature::PersistentVolumeClaim => "persistentVolumeClaim volume",
            Feature::ExecProbe => "exec probe",
            Feature::HttpGetProbe => "httpGet probe",
            Feature::TcpSocketProbe => "tcpSocket probe",
            Feature::GrpcProbe => "gRPC probe",
            Feature::StartupProbe => "startup probe",
            Feature::InitContainerProbe => "probe on an init container",
            Feature::Sidecar => "sidecar (init container with restartPolicy Always)",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Where a pod uses a feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    /// The feature.
    pub feature: Feature,
    /// Where (`in container app`; a volume's name), empty for pod-level fields.
    pub at: String,
}

impl std::fmt::Display for Use {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(self.feature.as_str())
        } else {
            write!(f, "{} {}", self.feature.as_str(), self.at)
        }
    }
}

/// What an adapter can do: the pod features it runs, and the kubelet API operations it serves.
/// Declared as data by each adapter's `capabilities()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    runs: u32,
    /// Container logs.
    pub logs: bool,
    /// Exec into a container.
    pub exec: bool,
    /// Attach to a container's output.
    pub attach: bool,
}

impl Capabilities {
    /// Runs no optional feature and serves no operation.
    pub const NONE: Capabilities = Capabilities {
        runs: 0,
        logs: false,
        exec: false,
        attach: false,
    };

    /// These capabilities, also running `features`.
    pub const fn running(mut self, features: &[Feature]) -> Capabilities {
        let mut i = 0;
        while i < features.len() {
            self.runs |= 1 << (features[i] as u32);
            i += 1;
        }
        self
    }

    /// These capabilities, serving logs, exec and attach as given.
    pub const fn serving(mut self, logs: bool, exec: bool, attach: bool) -> Capabilities {
        self.logs = logs;
        self.exec = exec;
        self.attach = attach;
        self
    }

    /// Whether the adapter runs `feature`.
    pub fn runs(&self, feature: Feature) -> bool {
        self.runs & feature.bit() != 0
    }

    /// What either can do (admission asks whether ANY adapter runs a feature).
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities {
            runs: self.runs | other.runs,
            logs: self.logs || other.logs,
            exec: self.exec || other.exec,
            attach: self.attach || other.attach,
        }
    }

    /// The uses of `uses` this adapter cannot run, in order.
    pub fn missing<'a>(&self, uses: &'a [Use]) -> Vec<&'a Use> {
        uses.iter().filter(|u| !self.runs(u.feature)).collect()
    }
}

/// The pod features each provider kind's adapter runs (its `capabilities()` starts from this),
/// so that tools without adapters (`policy explain`, `policy test`) judge pods the same way.
pub fn declared(kind: ProviderKind) -> Capabilities {
    use Feature::*;
    match kind {
        // ACI probes are exec or httpGet, liveness and readiness only; no sidecars.
        ProviderKind::Aci => Capabilities::NONE.running(&[ExecProbe, HttpGetProbe]),
        // An ECS health check runs a command only.
        ProviderKind::Fargate => Capabilities::NONE.running(&[ExecProbe]),
        // A shadow pod is a pod; the simulated cloud models lifecycles, not probes, and accepts
        // every probe kind.
        ProviderKind::Cluster | ProviderKind::Sim => {
            Capabilities::NONE.running(&Feature::PROBES_AND_SIDECARS)
        }
    }
}

/// Exclusions for the engine: the targets whose adapter (capabilities from `caps_of`; `None`
/// for a target without one) cannot run a feature `pod` uses, each with the uses it cannot run.
pub fn exclusions(
    policy: &Policy,
    pod: &Pod,
    caps_of: impl Fn(&Target) -> Option<Capabilities>,
) -> Vec<Exclusion> {
    let uses = pod_features(pod);
    if uses.is_empty() {
        return Vec::new();
    }
    policy
        .targets
        .iter()
        .filter_map(|t| {
            let missing = caps_of(t)?.missing(&uses);
            (!missing.is_empty()).then(|| Exclusion {
                target: t.id,
                reason: ExclusionReason::CannotRun(missing.iter().map(|u| u.to_string()).collect()),
            })
        })
        .collect()
}

/// Every optional feature `pod` uses, in a stable order (pod-level fields, then containers in
/// spec order, then volumes).
pub fn pod_features(pod: &Pod) -> Vec<Use> {
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else { return out };
    let pod_level = |on: Option<bool>, feature| (on == Some(true)).then_some(feature);
    for feature in [
        pod_level(spec.host_network, Feature::HostNetwork),
        pod_level(spec.host_pid, Feature::HostPid),
        pod_level(spec.host_ipc, Feature::HostIpc),
    ]
    .into_iter()
    .flatten()
    {
        out.push(Use {
            feature,
            at: String::new(),
        });
    }
    for c in spec.init_containers.iter().flatten() {
        let at = format!("in init container {}", c.name);
        container_features(c, &at, &mut out);
        if c.restart_policy.as_deref() == Some("Always") {
            out.push(Use {
                feature: Feature::Sidecar,
                at: at.clone(),
            });
        } else if [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
            .iter()
            .any(|p| p.is_some())
        {
            out.push(Use {
                feature: Feature::InitContainerProbe,
                at,
            });
        }
    }
    for c in &spec.containers {
        let at = format!("in container {}", c.name);
        container_features(c, &at, &mut out);
        for p in [&c.liveness_probe, &c.readiness_probe]
            .into_iter()
            .flatten()
        {
            if let Some(feature) = probe_kind(p) {
                out.push(Use {
                    feature,
                    at: at.clone(),
                });
            }
        }
        if c.startup_probe.is_some() {
            out.push(Use {
                feature: Feature::StartupProbe,
                at: at.clone(),
            });
        }
    }
    for v in spec.volumes.iter().flatten() {
        let at = v.name.clone();
        if v.host_path.is_some() {
            out.push(Use {
                feature: Feature::HostPathVolume,
                at: at.clone(),
            });
        }
        if v.persistent_volume_claim.is_some() {
            out.push(Use {
                feature: Feature::PersistentVolumeClaim,
                at,
            });
        }
    }
    out.dedup();
    out
}

fn container_features(c: &Container, at: &str, out: &mut Vec<Use>) {
    if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
        out.push(Use {
            feature: Feature::Privileged,
            at: at.to_string(),
        });
    }
    if c.ports
        .iter()
        .flatten()
        .any(|p| p.host_port.is_some_and(|h| h != 0))
    {
        out.push(Use {
            feature: Feature::HostPort,
            at: at.to_string(),
        });
    }
}

fn probe_kind(p: &Probe) -> Option<Feature> {
    if p.exec.is_some() {
        Some(Feature::ExecProbe)
    } else if p.http_get.is_some() {
        Some(Feature::HttpGetProbe)
    } else if p.tcp_socket.is_some() {
        Some(Feature::TcpSocketProbe)
    } else if p.grpc.is_some() {
        Some(Feature::GrpcProbe)
    } else {
        None
    }
}

/// The refusal every translator applies first: a pod sharing a namespace of the virtual node's
/// host (`hostNetwork`, `hostPID`, `hostIPC`) runs on no provider. Returns the field and `why`
/// for the adapter's words.
pub fn host_namespace_refusal(pod: &Pod) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    [
        (spec.host_network, "spec.hostNetwork"),
        (spec.host_pid, "spec.hostPID"),
        (spec.host_ipc, "spec.hostIPC"),
    ]
    .into_iter()
    .find(|(on, _)| *on == Some(true))
    .map(|(_, field)| field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn a_pod_names_each_optional_feature_it_uses_and_where() {
        let p = pod(serde_json::json!({
            "hostNetwork": true,
            "initContainers": [{"name": "proxy", "image": "i", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "i",
                "readinessProbe": {"httpGet": {"port": 8080}},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "startupProbe": {"exec": {"command": ["true"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}]}],
            "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}]
        }));
        let words: Vec<String> = pod_features(&p).iter().map(Use::to_string).collect();
        assert_eq!(
            words,
            [
                "hostNetwork",
                "sidecar (init container with restartPolicy Always) in init container proxy",
                "hostPort in container app",
                "tcpSocket probe in container app",
                "httpGet probe in container app",
                "startup probe in container app",
                "hostPath volume logs",
            ]
        );
    }

    #[test]
    fn a_plain_pod_uses_no_optional_feature() {
        let p = pod(serde_json::json!({"containers": [{"name": "app", "image": "i"}]}));
        assert!(pod_features(&p).is_empty());
        assert_eq!(host_namespace_refusal(&p), None);
    }

    #[test]
    fn capabilities_report_only_the_uses_they_do_not_run() {
        let caps = Capabilities::NONE.running(&[Feature::ExecProbe, Feature::HttpGetProbe]);
        let p = pod(
            serde_json::json!({"containers": [{"name": "app", "image": "i",
            "readinessProbe": {"httpGet": {"port": 80}},
            "livenessProbe": {"grpc": {"port": 81}}}]}),
        );
        let uses = pod_features(&p);
        let missing: Vec<Feature> = caps.missing(&uses).iter().map(|u| u.feature).collect();
        assert_eq!(missing, [Feature::GrpcProbe]);
        let all = caps.union(Capabilities::NONE.running(&[Feature::GrpcProbe]));
        assert!(all.missing(&uses).is_empty());
    }

    #[test]
    fn every_feature_has_its_own_bit() {
        let all = Capabilities::NONE.running(&Feature::ALL);
        for f in Feature::ALL {
            assert!(all.runs(f), "{f:?}");
            assert!(!Capabilities::NONE.running(&[]).runs(f));
        }
        let bits: std::collections::BTreeSet<u32> = Feature::ALL.iter().map(|f| f.bit()).collect();
        assert_eq!(bits.len(), Feature::ALL.len());
    }

    #[test]
    fn only_the_targets_whose_provider_cannot_run_the_pod_are_excluded() {
        let policy = crate::policy::load::load_files(&[(
            "p.yaml".into(),
            r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: fargate, provider: fargate, region: us-east-1}
    - {name: aci, provider: aci, region: eastus}
    - {name: local, provider: cluster, region: local}
"#
            .into(),
        )])
        .unwrap();
        let p = pod(
            serde_json::json!({"containers": [{"name": "app", "image": "i",
            "readinessProbe": {"tcpSocket": {"port": 80}}}]}),
        );
        let excluded: Vec<(String, ExclusionReason)> =
            exclusions(&policy, &p, |t| Some(declared(t.provider)))
                .into_iter()
                .map(|e| (policy.target(e.target).name.clone(), e.reason))
                .collect();
        let cannot = ExclusionReason::CannotRun(vec!["tcpSocket probe in container app".into()]);
        assert_eq!(
            excluded,
            [("fargate".into(), cannot.clone()), ("aci".into(), cannot)]
        );
        let plain = pod(serde_json::json!({"containers": [{"name": "app", "image": "i"}]}));
        assert!(exclusions(&policy, &plain, |t| Some(declared(t.provider))).is_empty());
    }

    #[test]
    fn the_provider_feature_table_in_the_docs_says_what_each_provider_declares() {
        let doc = include_str!("../../../docs/providers.md");
        let kinds = [
            ProviderKind::Aci,
            ProviderKind::Fargate,
            ProviderKind::Cluster,
            ProviderKind::Sim,
        ];
        let mut rows = 0;
        for feature in Feature::ALL {
            let prefix = format!("| {} |", feature.as_str());
            let row = doc
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("docs/providers.md has no row for {feature:?}"));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            for (kind, cell) in kinds.iter().zip(&cells[1..]) {
                let runs = declared(*kind).runs(feature);
                assert_eq!(
                    *cell == "yes",
                    runs,
                    "{feature:?} on {kind:?}: the doc says {cell}"
                );
            }
            rows += 1;
        }
        assert_eq!(rows, Feature::ALL.len());
    }
}
