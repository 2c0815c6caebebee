//! The `Provider` trait every backend implements (sim now; ACI, Fargate, cluster next), and the
//! workload types that cross it.
//!
//! A workload is one pod run somewhere else. Its id derives from the pod UID, so a retried create
//! finds the workload it already made instead of making a second one. Errors say what the caller
//! should do: retry later, try another target, or fail the pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretBox, SecretString};

use k8s_openapi::api::core::v1::Pod;

use crate::policy::sizing::Size;

/// Who a workload belongs to; every provider tags its workloads with all of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The gateway's cluster id.
    pub cluster_id: String,
    /// The virtual node's name.
    pub node: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub pod_uid: String,
}

/// The workload name for a pod UID: `bg-` + the UID, the same on every retry.
pub fn workload_id(pod_uid: &str) -> String {
    format!("bg-{pod_uid}")
}

/// What to create.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Deterministic id ([`workload_id`]).
    pub id: String,
    /// Ownership tags.
    pub owner: Owner,
    /// Target name in the policy.
    pub target: String,
    /// Region.
    pub region: String,
    /// Size the engine reserved (already rounded to the provider's sizes).
    pub size: Size,
    /// The pod as the API server has it (containers, env, volumes...).
    pub pod: Pod,
    /// What the pod references from Secrets and ConfigMaps, read by the controller before the
    /// create. Adapters take env, files and registry credentials from here, never from the
    /// API server; secret values stay wrapped until the one request field meant for them.
    pub resolved: Arc<Resolved>,
}

/// An environment variable's value.
#[derive(Debug, Clone)]
pub enum EnvValue {
    /// A literal, or from a ConfigMap or the downward API: may appear in plain env.
    Plain(String),
    /// From a Secret: only ever sent as the provider's secret field (ACI `secureValue`, an ECS
    /// `secrets` reference to Secrets Manager). `Debug` prints `[REDACTED]`.
    Secret(SecretString),
}

/// One resolved environment variable.
#[derive(Debug, Clone)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: EnvValue,
}

/// One file of a resolved secret, configMap or projected volume.
#[derive(Debug)]
pub struct VolumeFile {
    /// Path inside the volume (the key, or the `items[].path`).
    pub path: String,
    /// Content; wrapped because it may come from a Secret.
    pub content: SecretBox<Vec<u8>>,
}

/// Credentials for one image registry (from the pod's `imagePullSecrets`).
#[derive(Debug, Clone)]
pub struct RegistryCredential {
    /// Registry host (`myregistry.azurecr.io`).
    pub server: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: SecretString,
}

/// Values a pod references, resolved from the API server.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Per container (init containers too) by name: its whole env, `env` and `envFrom`, in the
    /// order Kubernetes applies them.
    pub env: BTreeMap<String, Vec<EnvVar>>,
    /// Per secret, configMap or projected volume name: its files.
    pub volumes: BTreeMap<String, Vec<VolumeFile>>,
    /// From `imagePullSecrets` (`kubernetes.io/dockerconfigjson`).
    pub registry_credentials: Vec<RegistryCredential>,
}

/// A container's state as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started yet.
    Waiting {
        /// Short reason (`ContainerCreating`, `ImagePullBackOff`).
        reason: String,
        /// Detail.
        message: String,
    },
    /// Running since.
    Running {
        /// RFC 3339 start time.
        started_at: String,
    },
    /// Finished.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// Short reason (`Completed`, `Error`).
        reason: String,
        /// Detail.
        message: String,
        /// RFC 3339 start.
        started_at: String,
        /// RFC 3339 finish.
        finished_at: String,
    },
}

/// One container of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container name (as in the pod spec).
    pub name: String,
    /// State.
    pub state: ContainerState,
    /// Restarts so far.
    pub restart_count: i32,
    /// Passing its readiness check (or running, without one).
    pub ready: bool,
}

/// The provider's view of a workload's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadPhase {
    /// Accepted, not all containers running yet (pulling, cold start).
    Pending,
    /// Running.
    Running,
    /// Stopped; every container exited 0.
    Succeeded,
    /// Stopped; a container exited non-zero, or the provider gave up.
    Failed,
}

/// A workload's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadStatus {
    /// Workload id.
    pub id: String,
    /// Phase.
    pub phase: WorkloadPhase,
    /// IP reachable from the cluster, once it has one.
    pub ip: Option<String>,
    /// RFC 3339 time the provider accepted it.
    pub started_at: Option<String>,
    /// Containers, in pod spec order.
    pub containers: Vec<ContainerStatus>,
    /// A provider message (events, failure reason).
    pub message: Option<String>,
}

/// A workload found when listing what this gateway owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedWorkload {
    /// Workload id.
    pub id: String,
    /// Its ownership tags.
    pub owner: Owner,
    /// Seconds since it was created.
    pub age: Duration,
    /// Only leftovers of it remain (a stopped Fargate task's Secrets Manager secrets): nothing
    /// runs, so it does not count as created, but GC still deletes it.
    pub leftover: bool,
}

/// What a provider can do beyond create/delete/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Container logs.
    pub logs: bool,
    /// Exec into a container.
    pub exec: bool,
    /// hostPath volumes.
    pub host_path: bool,
    /// PersistentVolumeClaim volumes.
    pub persistent_volumes: bool,
    /// Privileged containers.
    pub privileged: bool,
}

/// What the caller should do about a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Transient (throttled, 5xx, timeout): retry the same call later. Retryable.
    #[error("transient provider error: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// When the provider said to come back.
        retry_after: Option<Duration>,
    },
    /// The provider throttled the call (HTTP 429, `ThrottlingException`): retry later, no sooner
    /// than `retry_after` when given. Retryable. Counted apart from other transient errors.
    #[error("throttled by the provider: {message}")]
    Throttled {
        /// What the provider said.
        message: String,
        /// When the provider said to come back (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The target cannot take it (quota, capacity, region down): try another target. Not
    /// retryable on this target.
    #[error("target rejected the workload: {message}")]
    Target {
        /// The provider's code (`QuotaExceeded`, `ServiceUnavailable`...).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The pod itself is wrong for this provider (bad image, invalid spec): fail the pod. Not
    /// retryable.
    #[error("{code}: {message}")]
    Pod {
        /// The provider's code (`InaccessibleImage`...).
        code: String,
        /// The provider's message, shown on the pod as is.
        message: String,
    },
    /// The provider cannot do this at all (HTTP 501 on the kubelet API). Not retryable.
    #[error("{provider} does not support {what}")]
    NotSupported {
        /// Provider name.
        provider: String,
        /// The operation.
        what: String,
    },
}

impl ProviderError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient { .. } | ProviderError::Throttled { .. }
        )
    }

    /// When the provider asked the caller to come back, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. }
            | ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProviderError::Transient { .. } => "transient",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Target { .. } => "target",
            ProviderError::Pod { .. } => "pod",
            ProviderError::NotSupported { .. } => "not_supported",
        }
    }
}

/// Options of a log read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<u64>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

/// What a non-interactive exec produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code, when the provider reports one.
    pub exit_code: Option<i32>,
}

/// A container's output as it comes, from [`Provider::attach`]: chunks of bytes (stdout and
/// stderr interleaved, as the provider sends them) until the stream ends with the attach
/// session (the container stopped, or the provider closed it).
pub type OutputStream = futures::stream::BoxStream<'static, Result<Vec<u8>, ProviderError>>;

/// A backend that runs workloads.
///
/// ```
/// # use burstgate::provider::{Provider, workload_id};
/// # async fn demo(p: &dyn Provider) {
/// // Status is read in batches, never one GET per pod.
/// let ids = vec![workload_id("0b5c..."), workload_id("9f1e...")];
/// let statuses = p.status(&ids).await;
/// # }
/// ```
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name (`sim`, `aci`, `fargate`, `cluster`).
    fn name(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates the workload, idempotently: creating an id that exists returns its status.
    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError>;

    /// Deletes the workload; deleting one that is gone is not an error.
    async fn delete(&self, id: &str) -> Result<(), ProviderError>;

    /// Statuses of many workloads in one round trip; a missing id is absent from the map.
    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError>;

    /// Every workload tagged with this cluster id and node.
    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError>;

    /// A container's logs.
    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        let _ = (id, container, opts);
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "logs".into(),
        })
    }

    /// Runs `command` in a container (the kubelet API's `/exec`; interactive streams come with
    /// it). Providers that cannot exec answer `NotSupported`, which the kubelet API turns into 501.
    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        let _ = (id, container, command);
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "exec".into(),
        })
    }

    /// Attaches to a running container's output (the kubelet API's `/attach`): output only,
    /// no stdin and no terminal. The session is opened before this returns, so a provider that
    /// cannot attach (`NotSupported`, HTTP 501) or a container that is not running fails here,
    /// not in the stream.
    async fn attach(&self, id: &str, container: &str) -> Result<OutputStream, ProviderError> {
        let _ = (id, container);
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "attach".into(),
        })
    }
}
