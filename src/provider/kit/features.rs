//! The pod features an adapter may or may not run, found in a pod spec (pure). Adapters declare
//! the ones they run in their [`Capabilities`]; admission refuses a pod that no adapter of the
//! gateway can run, and the controller keeps the engine from choosing a target whose adapter
//! cannot run the pod (so it goes to one that can, and `explain` says why).

use k8s_openapi::api::core::v1::{Container, Pod, Probe, Volume};

use crate::policy::model::ProviderKind;
use crate::policy::{Exclusion, ExclusionReason, Policy, Target};
use crate::provider::kit::TranslateError;

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
    /// A sidecar: an init container with `restartPolicy: Always`, in a pod whose own
    /// `restartPolicy` is `Always`.
    Sidecar,
    /// A sidecar in a pod whose `restartPolicy` is `Never` or `OnFailure` (a Job's pod): the pod
    /// ends when its containers end, and the sidecar must then be stopped, not waited for.
    SidecarInEndingPod,
    /// The service-account token volume ServiceAccount admission adds to every pod
    /// (`kube-api-access-*`: a bound token, `ca.crt`, `namespace`), unless the pod sets
    /// `automountServiceAccountToken: false`.
    AutomaticToken,
    /// A `serviceAccountToken` projection the pod declares itself (an audience of its own, a
    /// path of its own): it asked for that token, so a target that cannot mount it refuses.
    ServiceAccountToken,
    /// A Linux capability added to a container other than `SYS_PTRACE`
    /// (`securityContext.capabilities.add`).
    AddedCapability,
    /// `SYS_PTRACE` added to a container's capabilities (the one Fargate allows).
    SysPtrace,
    /// A container's `workingDir`.
    WorkingDir,
    /// A container's `lifecycle` hooks (postStart, preStop).
    LifecycleHook,
    /// A volume mount with `subPath` or `subPathExpr`.
    SubPath,
    /// A container's `volumeDevices` (a raw block device).
    VolumeDevice,
    /// A container port with protocol SCTP.
    SctpPort,
    /// `spec.securityContext.sysctls`.
    Sysctls,
    /// `spec.hostAliases` (extra /etc/hosts entries).
    HostAliases,
    /// A liveness or readiness httpGet probe with a `host` of its own (not the pod's IP).
    HttpGetProbeHost,
    /// A port on an init container that runs to completion.
    InitContainerPort,
    /// An init container that runs to completion, declared after a sidecar (it expects the
    /// sidecar running).
    InitContainerAfterSidecar,
    /// A `secret` volume.
    SecretVolume,
    /// A `configMap` volume.
    ConfigMapVolume,
    /// A `projected` volume the pod declares (admission's token volume is
    /// [`Feature::AutomaticToken`]; a token-only projection [`Feature::ServiceAccountToken`]).
    ProjectedVolume,
    /// A `downwardAPI` volume.
    DownwardApiVolume,
    /// An `azureFile` volume.
    AzureFileVolume,
    /// A `gitRepo` volume.
    GitRepoVolume,
    /// An `emptyDir` with `medium: Memory` (a tmpfs).
    MemoryEmptyDir,
    /// A volume of any other kind (csi, nfs, ephemeral, iscsi, ...).
    OtherVolume,
    /// A container with `args` but no `command`, whose image ENTRYPOINT the pod does not name
    /// with the annotation [`ENTRYPOINT_ANNOTATION_PREFIX`]`<container>` (a provider that
    /// takes one whole command line needs it).
    ArgsWithoutEntrypoint,
}

/// Annotation prefix: `<prefix><container>` is the container image's ENTRYPOINT as a JSON array,
/// for a container with `args` but no `command` on a provider that takes one whole command line
/// (ACI).
pub const ENTRYPOINT_ANNOTATION_PREFIX: &str = "aci.burstgate.io/entrypoint.";

impl Feature {
    /// Every feature, in a stable order.
    pub const ALL: [Feature; 38] = [
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
        Feature::SidecarInEndingPod,
        Feature::AutomaticToken,
        Feature::ServiceAccountToken,
        Feature::AddedCapability,
        Feature::SysPtrace,
        Feature::WorkingDir,
        Feature::LifecycleHook,
        Feature::SubPath,
        Feature::VolumeDevice,
        Feature::SctpPort,
        Feature::Sysctls,
        Feature::HostAliases,
        Feature::HttpGetProbeHost,
        Feature::InitContainerPort,
        Feature::InitContainerAfterSidecar,
        Feature::SecretVolume,
        Feature::ConfigMapVolume,
        Feature::ProjectedVolume,
        Feature::DownwardApiVolume,
        Feature::AzureFileVolume,
        Feature::GitRepoVolume,
        Feature::MemoryEmptyDir,
        Feature::OtherVolume,
        Feature::ArgsWithoutEntrypoint,
    ];

    /// What a shadow pod runs as the pod has it, beyond probes and sidecars: the container and
    /// pod fields a kubelet honours and the volume kinds a cluster target mounts.
    pub const KUBELET_FIELDS: [Feature; 16] = [
        Feature::AddedCapability,
        Feature::SysPtrace,
        Feature::WorkingDir,
        Feature::LifecycleHook,
        Feature::SubPath,
        Feature::SctpPort,
        Feature::Sysctls,
        Feature::HostAliases,
        Feature::HttpGetProbeHost,
        Feature::InitContainerPort,
        Feature::InitContainerAfterSidecar,
        Feature::SecretVolume,
        Feature::ConfigMapVolume,
        Feature::ProjectedVolume,
        Feature::DownwardApiVolume,
        Feature::ArgsWithoutEntrypoint,
    ];

    /// What runs on any real node but not on every cloud: every probe kind, startup probes,
    /// probes on init containers and sidecars (the host-level features are not among them).
    pub const PROBES_AND_SIDECARS: [Feature; 8] = [
        Feature::ExecProbe,
        Feature::HttpGetProbe,
        Feature::TcpSocketProbe,
        Feature::GrpcProbe,
        Feature::StartupProbe,
        Feature::InitContainerProbe,
        Feature::Sidecar,
        Feature::SidecarInEndingPod,
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
            Feature::SidecarInEndingPod => "sidecar in a pod with restartPolicy Never or OnFailure",
            Feature::AutomaticToken => "automatic service-account token",
            Feature::ServiceAccountToken => "service-account token volume",
            Feature::AddedCapability => "added Linux capability",
            Feature::SysPtrace => "added SYS_PTRACE capability",
            Feature::WorkingDir => "workingDir",
            Feature::LifecycleHook => "lifecycle hook",
            Feature::SubPath => "subPath mount",
            Feature::VolumeDevice => "volumeDevices block device",
            Feature::SctpPort => "SCTP port",
            Feature::Sysctls => "sysctls",
            Feature::HostAliases => "hostAliases",
            Feature::HttpGetProbeHost => "httpGet probe of another host",
            Feature::InitContainerPort => "port on an init container",
            Feature::InitContainerAfterSidecar => "init container declared after a sidecar",
            Feature::SecretVolume => "secret volume",
            Feature::ConfigMapVolume => "configMap volume",
            Feature::ProjectedVolume => "projected volume",
            Feature::DownwardApiVolume => "downwardAPI volume",
            Feature::AzureFileVolume => "azureFile volume",
            Feature::GitRepoVolume => "gitRepo volume",
            Feature::MemoryEmptyDir => "emptyDir in memory (medium Memory)",
            Feature::OtherVolume => "volume of another kind",
            Feature::ArgsWithoutEntrypoint => "args without command or entrypoint annotation",
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// The bit set of `features` (a const loop: `Capabilities` are built in consts).
const fn bits(features: &[Feature]) -> u64 {
    let (mut out, mut i) = (0, 0);
    while i < features.len() {
        out |= 1 << (features[i] as u32);
        i += 1;
    }
    out
}

/// Where a pod uses a feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    /// The feature.
    pub feature: Feature,
    /// Where (`in container app`; a volume's name), empty for pod-level fields.
    pub at: String,
    /// The pod field (`spec.containers[app].readinessProbe.httpGet`).
    pub field: String,
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
    runs: u64,
    ignores: u64,
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
        ignores: 0,
        logs: false,
        exec: false,
        attach: false,
    };

    /// These capabilities, also running `features`.
    pub const fn running(mut self, features: &[Feature]) -> Capabilities {
        self.runs |= bits(features);
        self
    }

    /// These capabilities, running pods that use `features` WITHOUT them (the feature is left
    /// out, and the pod's Events and `policy explain` say so).
    pub const fn ignoring(mut self, features: &[Feature]) -> Capabilities {
        self.ignores |= bits(features);
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

    /// Whether the adapter runs a pod using `feature` without it.
    pub fn ignores(&self, feature: Feature) -> bool {
        self.ignores & feature.bit() != 0
    }

    /// What either can do (admission asks whether ANY adapter runs a feature).
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities {
            runs: self.runs | other.runs,
            ignores: self.ignores | other.ignores,
            logs: self.logs || other.logs,
            exec: self.exec || other.exec,
            attach: self.attach || other.attach,
        }
    }

    /// The uses of `uses` this adapter cannot run (neither runs nor ignores), in order.
    pub fn missing<'a>(&self, uses: &'a [Use]) -> Vec<&'a Use> {
        uses.iter()
            .filter(|u| !self.runs(u.feature) && !self.ignores(u.feature))
            .collect()
    }

    /// The uses of `uses` this adapter leaves out, in order.
    pub fn ignored<'a>(&self, uses: &'a [Use]) -> Vec<&'a Use> {
        uses.iter().filter(|u| self.ignores(u.feature)).collect()
    }
}

/// The pod features each provider kind's adapter runs (its `capabilities()` starts from this),
/// so that tools without adapters (`policy explain`, `policy test`) judge pods the same way.
pub fn declared(kind: ProviderKind) -> Capabilities {
    use Feature::*;
    match kind {
        // ACI probes are exec or httpGet (of the container itself), liveness and readiness only.
        // Sidecars are containers of the group, started with the pod's after every init
        // container; a group with restartPolicy Never or OnFailure ends only when every
        // container has, so a sidecar would hold a Job's pod open. Tokens are files of a secret
        // volume, as are secret, configMap, projected and downwardAPI volumes. A container group
        // has no workingDir, hooks, subPath, block devices, SCTP, sysctls or hosts entries, adds
        // no capability, and gives init containers no ports. An emptyDir is always on disk.
        ProviderKind::Aci => Capabilities::NONE
            .running(&[
                ExecProbe,
                HttpGetProbe,
                Sidecar,
                AutomaticToken,
                ServiceAccountToken,
                SecretVolume,
                ConfigMapVolume,
                ProjectedVolume,
                DownwardApiVolume,
                AzureFileVolume,
                GitRepoVolume,
            ])
            .ignoring(&[MemoryEmptyDir]),
        // An ECS health check runs a command only. A task mounts no files: the automatic token
        // is left out (a pod that needs it says so with automountServiceAccountToken or an
        // explicit token volume, which keeps it off Fargate), other file volumes are refused.
        // Sidecars are non-essential containers started beside the pod's (dependsOn START),
        // stopped with the task when the pod's containers exit. Of the capabilities, Fargate
        // adds SYS_PTRACE only; a task definition has a workingDir but no lifecycle hooks,
        // sysctls or hosts entries (left out), and no subPath or tmpfs.
        ProviderKind::Fargate => Capabilities::NONE
            .running(&[
                ExecProbe,
                Sidecar,
                SidecarInEndingPod,
                SysPtrace,
                WorkingDir,
                ArgsWithoutEntrypoint,
                InitContainerPort,
                InitContainerAfterSidecar,
            ])
            .ignoring(&[AutomaticToken, LifecycleHook, Sysctls, HostAliases]),
        // A shadow pod is a pod, but never runs as the virtual pod's identity
        // (provider/cluster/translate.rs): the automatic token is left out, an explicit one
        // refused. Volumes that name things of the virtual pod's side (claims, host paths,
        // Azure shares, block devices) are refused.
        ProviderKind::Cluster => Capabilities::NONE
            .running(&Feature::PROBES_AND_SIDECARS)
            .running(&Feature::KUBELET_FIELDS)
            .running(&[MemoryEmptyDir])
            .ignoring(&[AutomaticToken]),
        // The simulated cloud models lifecycles, not probes, files or host access, and accepts
        // every field but the host-level ones.
        ProviderKind::Sim => Capabilities::NONE
            .running(&Feature::PROBES_AND_SIDECARS)
            .running(&Feature::KUBELET_FIELDS)
            .running(&[
                AutomaticToken,
                ServiceAccountToken,
                VolumeDevice,
                AzureFileVolume,
                GitRepoVolume,
                MemoryEmptyDir,
                OtherVolume,
            ]),
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

/// What `pod` would run without at each target of `policy` whose provider (capabilities from
/// `caps_of`) ignores a feature it uses: (target name, the uses in words), in target order.
pub fn ignored(
    policy: &Policy,
    pod: &Pod,
    caps_of: impl Fn(&Target) -> Option<Capabilities>,
) -> Vec<(String, Vec<String>)> {
    let uses = pod_features(pod);
    policy
        .targets
        .iter()
        .filter_map(|t| {
            let left_out = caps_of(t)?.ignored(&uses);
            (!left_out.is_empty()).then(|| {
                (
                    t.name.clone(),
                    left_out.iter().map(|u| u.to_string()).collect(),
                )
            })
        })
        .collect()
}

/// Every optional feature `pod` uses, in a stable order (pod-level fields, then containers in
/// spec order, then volumes).
pub fn pod_features(pod: &Pod) -> Vec<Use> {
    let mut out = Uses(Vec::new());
    let Some(spec) = &pod.spec else {
        return out.0;
    };
    for (on, feature, field) in [
        (spec.host_network, Feature::HostNetwork, "spec.hostNetwork"),
        (spec.host_pid, Feature::HostPid, "spec.hostPID"),
        (spec.host_ipc, Feature::HostIpc, "spec.hostIPC"),
    ] {
        if on == Some(true) {
            out.push(feature, String::new(), field.to_string());
        }
    }
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    if sysctls.is_some_and(|s| !s.is_empty()) {
        let field = "spec.securityContext.sysctls".to_string();
        out.push(Feature::Sysctls, String::new(), field);
    }
    if spec.host_aliases.as_ref().is_some_and(|h| !h.is_empty()) {
        let field = "spec.hostAliases".to_string();
        out.push(Feature::HostAliases, String::new(), field);
    }
    let mut after_sidecar = false;
    for c in spec.init_containers.iter().flatten() {
        let (at, base) = (
            format!("in init container {}", c.name),
            format!("spec.initContainers[{}]", c.name),
        );
        container_features(c, &at, &base, &mut out);
        entrypoint_feature(pod, c, &at, &base, &mut out);
        if c.restart_policy.as_deref() != Some("Always") {
            if after_sidecar {
                out.push(Feature::InitContainerAfterSidecar, at.clone(), base.clone());
            }
            if c.ports.as_ref().is_some_and(|p| !p.is_empty()) {
                let field = format!("{base}.ports");
                out.push(Feature::InitContainerPort, at.clone(), field);
            }
        }
        let probes = [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ];
        if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar is probed as the pod's containers are (its startup probe gates what
            // follows it), so its probes count as theirs.
            probe_features(c, &at, &base, &mut out);
            let feature = match spec.restart_policy.as_deref() {
                Some("Never" | "OnFailure") => Feature::SidecarInEndingPod,
                _ => Feature::Sidecar,
            };
            out.push(feature, at, format!("{base}.restartPolicy"));
            after_sidecar = true;
        } else if let Some((which, _)) = probes.iter().find(|(_, p)| p.is_some()) {
            out.push(Feature::InitContainerProbe, at, format!("{base}.{which}"));
        }
    }
    for c in &spec.containers {
        let (at, base) = (
            format!("in container {}", c.name),
            format!("spec.containers[{}]", c.name),
        );
        container_features(c, &at, &base, &mut out);
        entrypoint_feature(pod, c, &at, &base, &mut out);
        probe_features(c, &at, &base, &mut out);
    }
    for v in spec.volumes.iter().flatten() {
        let base = format!("spec.volumes[{}]", v.name);
        if v.host_path.is_some() {
            out.push(
                Feature::HostPathVolume,
                v.name.clone(),
                format!("{base}.hostPath"),
            );
        }
        if v.persistent_volume_claim.is_some() {
            out.push(
                Feature::PersistentVolumeClaim,
                v.name.clone(),
                format!("{base}.persistentVolumeClaim"),
            );
        }
        if let Some(i) = token_source(v) {
            let feature = if is_automatic_token(v) {
                Feature::AutomaticToken
            } else {
                Feature::ServiceAccountToken
            };
            let field = format!("{base}.projected.sources[{i}].serviceAccountToken");
            out.push(feature, v.name.clone(), field);
        }
        if let Some((feature, kind)) = volume_kind(v) {
            out.push(feature, v.name.clone(), format!("{base}.{kind}"));
        }
    }
    out.0
}

/// The optional feature `v`'s kind is, with the field naming the kind; `None` for kinds every
/// provider mounts (a disk emptyDir), kinds found above (hostPath, claims) and the token
/// volumes (admission's, or a projection of a token alone).
fn volume_kind(v: &Volume) -> Option<(Feature, String)> {
    let found = |feature: Feature, kind: &str| Some((feature, kind.to_string()));
    if let Some(dir) = &v.empty_dir {
        return (dir.medium.as_deref() == Some("Memory"))
            .then(|| (Feature::MemoryEmptyDir, "emptyDir.medium".to_string()));
    }
    if let Some(p) = &v.projected {
        let other_source = p
            .sources
            .iter()
            .flatten()
            .any(|s| s.service_account_token.is_none());
        return (!is_automatic_token(v) && (other_source || token_source(v).is_none()))
            .then(|| (Feature::ProjectedVolume, "projected".to_string()));
    }
    if v.host_path.is_some() || v.persistent_volume_claim.is_some() {
        None
    } else if v.secret.is_some() {
        found(Feature::SecretVolume, "secret")
    } else if v.config_map.is_some() {
        found(Feature::ConfigMapVolume, "configMap")
    } else if v.downward_api.is_some() {
        found(Feature::DownwardApiVolume, "downwardAPI")
    } else if v.azure_file.is_some() {
        found(Feature::AzureFileVolume, "azureFile")
    } else if v.git_repo.is_some() {
        found(Feature::GitRepoVolume, "gitRepo")
    } else {
        let json = serde_json::to_value(v).unwrap_or_default();
        let kind = json
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            .unwrap_or_else(|| "unknown".into());
        Some((Feature::OtherVolume, kind))
    }
}

/// The index of `v`'s projected `serviceAccountToken` source, if it has one.
fn token_source(v: &Volume) -> Option<usize> {
    v.projected
        .as_ref()?
        .sources
        .iter()
        .flatten()
        .position(|s| s.service_account_token.is_some())
}

/// Whether `v` is the token volume ServiceAccount admission adds (`kube-api-access-<suffix>`,
/// a token projection), not one the pod declared.
pub fn is_automatic_token(v: &Volume) -> bool {
    v.name.starts_with("kube-api-access-") && token_source(v).is_some()
}

/// The uses found so far; a feature used twice at the same place counts once.
struct Uses(Vec<Use>);

impl Uses {
    fn push(&mut self, feature: Feature, at: String, field: String) {
        if !self.0.iter().any(|u| u.feature == feature && u.at == at) {
            self.0.push(Use { feature, at, field });
        }
    }
}

/// `args` without `command` and without the pod naming the image's ENTRYPOINT.
fn entrypoint_feature(pod: &Pod, c: &Container, at: &str, base: &str, out: &mut Uses) {
    let empty = |v: &Option<Vec<String>>| v.as_ref().is_none_or(|v| v.is_empty());
    let key = format!("{ENTRYPOINT_ANNOTATION_PREFIX}{}", c.name);
    let named = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(&key));
    if empty(&c.command) && !empty(&c.args) && !named {
        let field = format!("{base}.args");
        out.push(Feature::ArgsWithoutEntrypoint, at.to_string(), field);
    }
}

/// The probes of a container that is probed while it runs (an app container, a sidecar).
fn probe_features(c: &Container, at: &str, base: &str, out: &mut Uses) {
    for (which, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ] {
        if let Some((feature, kind)) = p.as_ref().and_then(probe_kind) {
            out.push(feature, at.to_string(), format!("{base}.{which}.{kind}"));
        }
        let host = p.as_ref().and_then(|p| p.http_get.as_ref()?.host.as_ref());
        if host.is_some_and(|h| !h.is_empty()) {
            let field = format!("{base}.{which}.httpGet.host");
            out.push(Feature::HttpGetProbeHost, at.to_string(), field);
        }
    }
    if c.startup_probe.is_some() {
        out.push(
            Feature::StartupProbe,
            at.to_string(),
            format!("{base}.startupProbe"),
        );
    }
}

fn container_features(c: &Container, at: &str, base: &str, out: &mut Uses) {
    if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
        out.push(
            Feature::Privileged,
            at.to_string(),
            format!("{base}.securityContext.privileged"),
        );
    }
    if c.ports
        .iter()
        .flatten()
        .any(|p| p.host_port.is_some_and(|h| h != 0))
    {
        out.push(
            Feature::HostPort,
            at.to_string(),
            format!("{base}.ports[].hostPort"),
        );
    }
    let added = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref()?.add.as_ref());
    let field = format!("{base}.securityContext.capabilities.add");
    for cap in added.into_iter().flatten() {
        let feature = match cap.as_str() {
            "SYS_PTRACE" => Feature::SysPtrace,
            _ => Feature::AddedCapability,
        };
        out.push(feature, at.to_string(), field.clone());
    }
    if c.working_dir.as_ref().is_some_and(|d| !d.is_empty()) {
        let field = format!("{base}.workingDir");
        out.push(Feature::WorkingDir, at.to_string(), field);
    }
    if c.lifecycle.is_some() {
        let field = format!("{base}.lifecycle");
        out.push(Feature::LifecycleHook, at.to_string(), field);
    }
    for m in c.volume_mounts.iter().flatten() {
        let sub = |s: &Option<String>| s.as_ref().is_some_and(|s| !s.is_empty());
        if sub(&m.sub_path) || sub(&m.sub_path_expr) {
            let field = format!("{base}.volumeMounts[{}].subPath", m.name);
            out.push(Feature::SubPath, at.to_string(), field);
        }
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        let field = format!("{base}.volumeDevices");
        out.push(Feature::VolumeDevice, at.to_string(), field);
    }
    for p in c.ports.iter().flatten() {
        if p.protocol.as_deref() == Some("SCTP") {
            let field = format!("{base}.ports[{}].protocol", p.container_port);
            out.push(Feature::SctpPort, at.to_string(), field);
        }
    }
}

fn probe_kind(p: &Probe) -> Option<(Feature, &'static str)> {
    if p.exec.is_some() {
        Some((Feature::ExecProbe, "exec"))
    } else if p.http_get.is_some() {
        Some((Feature::HttpGetProbe, "httpGet"))
    } else if p.tcp_socket.is_some() {
        Some((Feature::TcpSocketProbe, "tcpSocket"))
    } else if p.grpc.is_some() {
        Some((Feature::GrpcProbe, "grpc"))
    } else {
        None
    }
}

/// The refusal every translator applies first, from the same declarations admission and the
/// engine use: the first feature `pod` uses that `kind` does not run. When no provider kind runs
/// it (host namespaces, privileged, hostPath...), the pod fails (`Unsupported`); when another
/// kind does (an httpGet probe on Fargate), this target refuses and the pod goes on
/// (`Elsewhere`).
///
/// `why` words the refusal as the adapter knows it (`None`: a plain statement).
pub fn refusal(
    pod: &Pod,
    kind: ProviderKind,
    why: impl Fn(Feature) -> Option<String>,
) -> Result<(), TranslateError> {
    let caps = declared(kind);
    let Some(u) = pod_features(pod)
        .into_iter()
        .find(|u| !caps.runs(u.feature) && !caps.ignores(u.feature))
    else {
        return Ok(());
    };
    // The simulator is not a place a real pod runs: it is never named as the alternative.
    let others: Vec<&str> = [
        ProviderKind::Aci,
        ProviderKind::Fargate,
        ProviderKind::Cluster,
    ]
    .into_iter()
    .filter(|k| *k != kind && declared(*k).runs(u.feature))
    .map(ProviderKind::as_str)
    .collect();
    let why =
        why(u.feature).unwrap_or_else(|| format!("{kind} cannot run a {}", u.feature.as_str()));
    Err(if others.is_empty() {
        TranslateError::Unsupported {
            field: u.field,
            reason: format!(
                "{why}; no provider of burstgate runs a {}",
                u.feature.as_str()
            ),
        }
    } else {
        TranslateError::Elsewhere {
            field: u.field,
            reason: format!("{why}; {} can", others.join(", ")),
        }
    })
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
    fn a_sidecar_is_probed_as_a_container_and_in_a_pod_that_ends_is_a_feature_of_its_own() {
        let sidecar = serde_json::json!({"name": "proxy", "image": "i", "restartPolicy": "Always",
            "startupProbe": {"tcpSocket": {"port": 15021}}});
        let words = |restart: Option<&str>| -> Vec<String> {
            let mut spec = serde_json::json!({"initContainers": [sidecar.clone()],
                "containers": [{"name": "app", "image": "i"}]});
            if let Some(r) = restart {
                spec["restartPolicy"] = r.into();
            }
            pod_features(&pod(spec))
                .iter()
                .map(Use::to_string)
                .collect()
        };
        let always = [
            "startup probe in init container proxy",
            "sidecar (init container with restartPolicy Always) in init container proxy",
        ];
        assert_eq!(words(None), always);
        assert_eq!(words(Some("Always")), always);
        for ending in ["Never", "OnFailure"] {
            assert_eq!(
                words(Some(ending)),
                [
                    "startup probe in init container proxy",
                    "sidecar in a pod with restartPolicy Never or OnFailure in init container proxy",
                ]
            );
        }
        let aci = declared(ProviderKind::Aci);
        assert!(aci.runs(Feature::Sidecar) && !aci.runs(Feature::SidecarInEndingPod));
    }

    #[test]
    fn a_plain_pod_uses_no_optional_feature() {
        let p = pod(serde_json::json!({"containers": [{"name": "app", "image": "i"}]}));
        assert!(pod_features(&p).is_empty());
        assert_eq!(refusal(&p, ProviderKind::Fargate, |_| None), Ok(()));
    }

    #[test]
    fn a_feature_no_provider_runs_fails_the_pod_and_one_another_runs_refuses_this_target_only() {
        let host = pod(
            serde_json::json!({"hostPID": true, "containers": [{"name": "app", "image": "i"}]}),
        );
        assert_eq!(
            refusal(&host, ProviderKind::Cluster, |_| None),
            Err(TranslateError::Unsupported {
                field: "spec.hostPID".into(),
                reason: "cluster cannot run a hostPID; no provider of burstgate runs a hostPID"
                    .into(),
            })
        );
        let http = pod(
            serde_json::json!({"containers": [{"name": "app", "image": "i",
            "readinessProbe": {"httpGet": {"port": 80}}}]}),
        );
        assert_eq!(
            refusal(&http, ProviderKind::Fargate, |f| Some(format!(
                "no {}",
                f.as_str()
            ))),
            Err(TranslateError::Elsewhere {
                field: "spec.containers[app].readinessProbe.httpGet".into(),
                reason: "no httpGet probe; aci, cluster can".into(),
            })
        );
        assert_eq!(refusal(&http, ProviderKind::Aci, |_| None), Ok(()));
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
        let bits: std::collections::BTreeSet<u64> = Feature::ALL.iter().map(|f| f.bit()).collect();
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
        // A Job's pod with a sidecar: only ACI is left out, naming that combination.
        let job = pod(serde_json::json!({"restartPolicy": "Never",
            "initContainers": [{"name": "proxy", "image": "i", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "i"}]}));
        let excluded: Vec<(String, ExclusionReason)> =
            exclusions(&policy, &job, |t| Some(declared(t.provider)))
                .into_iter()
                .map(|e| (policy.target(e.target).name.clone(), e.reason))
                .collect();
        assert_eq!(
            excluded,
            [(
                "aci".into(),
                ExclusionReason::CannotRun(vec![
                    "sidecar in a pod with restartPolicy Never or OnFailure in init container proxy"
                        .into()
                ])
            )]
        );
    }

    use crate::provider::kit::corpus::feature_pods as one_pod_per_field_feature;

    #[test]
    fn each_field_feature_is_found_in_a_pod_that_uses_it_and_nothing_else_is() {
        for (feature, p) in one_pod_per_field_feature() {
            let found: Vec<Feature> = pod_features(&p).iter().map(|u| u.feature).collect();
            // An httpGet probe of another host is an httpGet probe first; an init container
            // after a sidecar needs the sidecar.
            let expected = match feature {
                Feature::HttpGetProbeHost => vec![Feature::HttpGetProbe, feature],
                Feature::InitContainerAfterSidecar => vec![Feature::Sidecar, feature],
                _ => vec![feature],
            };
            assert_eq!(found, expected, "{feature:?}");
        }
    }

    /// The targets of a policy with one target per provider kind.
    fn one_target_per_provider() -> Policy {
        crate::policy::load::load_files(&[(
            "p.yaml".into(),
            r#"
apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: aci, provider: aci, region: eastus}
    - {name: fargate, provider: fargate, region: us-east-1}
    - {name: local, provider: cluster, region: local}
    - {name: sim, provider: sim, region: sim}
"#
            .into(),
        )])
        .unwrap()
    }

    #[test]
    fn a_pod_with_a_field_feature_is_excluded_from_exactly_the_targets_that_cannot_run_it() {
        let policy = one_target_per_provider();
        for (feature, p) in one_pod_per_field_feature() {
            let words = pod_features(&p).last().unwrap().to_string();
            let excluded: Vec<(ProviderKind, ExclusionReason)> =
                exclusions(&policy, &p, |t| Some(declared(t.provider)))
                    .into_iter()
                    .map(|e| (policy.target(e.target).provider, e.reason))
                    .collect();
            let cannot: Vec<ProviderKind> = policy
                .targets
                .iter()
                .map(|t| t.provider)
                .filter(|k| !declared(*k).runs(feature) && !declared(*k).ignores(feature))
                .collect();
            assert_eq!(
                excluded.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                cannot,
                "{feature:?}"
            );
            for (kind, reason) in &excluded {
                let ExclusionReason::CannotRun(what) = reason else {
                    panic!("{feature:?} on {kind}: {reason:?}");
                };
                assert!(what.contains(&words), "{feature:?} on {kind}: {what:?}");
            }
            assert!(
                cannot.len() < policy.targets.len(),
                "{feature:?}: some target runs it"
            );
            assert!(
                cannot.contains(&ProviderKind::Aci) || cannot.contains(&ProviderKind::Fargate),
                "{feature:?}: a translator refused it in its own words"
            );
        }
    }

    #[test]
    fn every_field_feature_a_provider_lacks_is_refused_by_its_translation_naming_it() {
        // The translators run `refusal` before anything else: per provider that lacks the
        // feature, it names the field and says whether another provider runs it (the pod goes
        // there) or none does (the pod fails).
        let real = [
            ProviderKind::Aci,
            ProviderKind::Fargate,
            ProviderKind::Cluster,
        ];
        for (feature, p) in one_pod_per_field_feature() {
            let uses = pod_features(&p);
            for kind in real {
                let got = refusal(&p, kind, |_| None);
                let Some(first) = declared(kind).missing(&uses).first().copied() else {
                    assert_eq!(got, Ok(()), "{feature:?} on {kind}");
                    continue;
                };
                let elsewhere = real
                    .iter()
                    .any(|k| *k != kind && declared(*k).runs(first.feature));
                let (field, reason) = match got {
                    Err(TranslateError::Elsewhere { field, reason }) if elsewhere => {
                        (field, reason)
                    }
                    Err(TranslateError::Unsupported { field, reason }) if !elsewhere => {
                        (field, reason)
                    }
                    other => panic!("{feature:?} on {kind}: {other:?}"),
                };
                assert_eq!(field, first.field, "{feature:?} on {kind}");
                assert!(reason.contains(first.feature.as_str()), "{reason}");
            }
        }
    }

    #[test]
    fn admissions_token_volume_is_not_a_projected_volume_of_the_pods_own() {
        let p = pod(
            serde_json::json!({"containers": [{"name": "app", "image": "i"}],
            "volumes": [
                {"name": "kube-api-access-x1", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt"}}]}},
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": "vault"}}]}},
                {"name": "both", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": "x"}},
                    {"configMap": {"name": "c"}}]}}
            ]}),
        );
        let found: Vec<(Feature, String)> = pod_features(&p)
            .into_iter()
            .map(|u| (u.feature, u.at))
            .collect();
        assert_eq!(
            found,
            [
                (Feature::AutomaticToken, "kube-api-access-x1".into()),
                (Feature::ServiceAccountToken, "vault".into()),
                (Feature::ServiceAccountToken, "both".into()),
                (Feature::ProjectedVolume, "both".into()),
            ]
        );
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
                let caps = declared(*kind);
                let said = (*cell == "yes", *cell == "ignored");
                assert_eq!(
                    said,
                    (caps.runs(feature), caps.ignores(feature)),
                    "{feature:?} on {kind:?}: the doc says {cell}"
                );
            }
            rows += 1;
        }
        assert_eq!(rows, Feature::ALL.len());
    }
}
