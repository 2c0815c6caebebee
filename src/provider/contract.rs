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
    /// When the earliest service-account token in `volumes` should be renewed (none: the pod
    /// mounts no token).
    pub renew_tokens_at: Option<std::time::SystemTime>,
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
    /// How its previous run ended (`Terminated`), when it restarted and the provider says.
    pub last_state: Option<ContainerState>,
}

/// Something the provider reports happened to a container (ACI's `Pulling`, `Pulled`,
/// `Started`, `Killing`, `BackOff`...), forwarded to the pod as an Event once per occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The container it is about.
    pub container: String,
    /// The provider's name for it (`Pulled`), the Event's reason.
    pub reason: String,
    /// Its text.
    pub message: String,
    /// A warning rather than a normal event.
    pub warning: bool,
    /// How many times the provider has seen it (it aggregates repeats).
    pub count: i32,
    /// RFC 3339 time of the last occurrence.
    pub last_seen: String,
}

/// The provider's view of a workload's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadPhase {
    /// Accepted, not all containers running yet (pulling, cold start).
    Pending,
    /// Running.
    Running,
    /// Stopped; every container exited 0.
    Succeeded,
    /// Stopped; a container exited non-zero, or the provider gave up.
    Failed,
    /// The target accepted the workload but cannot run it (a full cluster past its grace):
    /// the controller takes it back and the pod runs elsewhere, as after a create-time
    /// target rejection.
    Rejected(TargetRejection),
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
    /// Init containers, in pod spec order, when the provider reports them (else empty).
    pub init_containers: Vec<ContainerStatus>,
    /// The containers' events as the provider reports them (empty when it reports none).
    pub events: Vec<ProviderEvent>,
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

pub use crate::provider::kit::features::Capabilities;

/// What the caller should do about a failure. Decisions are made on the variants, never on
/// their words: the layers, the controller and the kubelet API match these, and the strings
/// they carry are only shown to people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Transient (5xx, reset, a busy resource): retry the same call later. Retryable.
    #[error("transient provider error: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// When the provider said to come back.
        retry_after: Option<Duration>,
    },
    /// The provider answered that it cannot serve now (HTTP 503 `ServiceUnavailable`): it
    /// refused the call and did nothing. Retryable, like `Transient`, but never in doubt.
    #[error("provider unavailable: {message}")]
    Unavailable {
        /// What the provider said.
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
    /// One attempt took longer than its time limit (the layers' per-attempt timeout): it may or
    /// may not have landed. Retryable.
    #[error("{api} timed out after {after:?}")]
    TimedOut {
        /// The cloud API called.
        api: &'static str,
        /// The time limit.
        after: Duration,
    },
    /// The target cannot take it (quota, capacity, region down, circuit open...): try another
    /// target. Not retryable on this target.
    #[error("target rejected the workload: {0}")]
    Target(TargetRejection),
    /// The pod itself is wrong for this provider (bad image, invalid spec) or the thing asked
    /// for is not there: fail the pod, or answer the kubelet API's client. Not retryable.
    #[error("{0}")]
    Pod(PodRejection),
    /// The provider cannot do this at all (HTTP 501 on the kubelet API). Not retryable.
    #[error("{provider} does not support {what}")]
    NotSupported {
        /// Provider name.
        provider: String,
        /// The operation.
        what: String,
    },
}

/// Why a target refused a workload it could not take; the pod may run on another target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRejection {
    /// The target's circuit is open after repeated target-level failures: no request was sent.
    /// The outcome of earlier attempts is unknown.
    CircuitOpen {
        /// Target name.
        target: String,
    },
    /// The layers gave up retrying: throttled or unavailable past the retry deadline. An attempt
    /// may have landed, so the outcome is unknown.
    GaveUp {
        /// Why the attempts failed.
        cause: GaveUpCause,
        /// The cloud API called.
        api: &'static str,
        /// Target name.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last attempt's error, for people.
        last: String,
    },
    /// The target took the workload but has no room to run it (a full cluster).
    Unschedulable {
        /// The target's words.
        message: String,
    },
    /// A quota of the target is used up (`ContainerGroupQuotaReached`, a ResourceQuota).
    Quota {
        /// The cloud's code.
        code: String,
        /// The cloud's message.
        message: String,
    },
    /// The target's region has no capacity now (ACI's 409 `ServiceUnavailable`, Fargate
    /// `RESOURCE:*`).
    Capacity {
        /// The cloud's code.
        code: String,
        /// The cloud's message.
        message: String,
    },
    /// The gateway's identity is refused there (no token, forbidden, unregistered subscription).
    Auth {
        /// The cloud's code.
        code: String,
        /// The cloud's message.
        message: String,
    },
    /// A pod feature this target cannot run, which another target may (an httpGet probe on
    /// Fargate).
    Unsupported {
        /// The pod field (`spec.containers[app].readinessProbe.httpGet`).
        field: String,
        /// Why, and what would.
        reason: String,
    },
    /// The target is configured without something this pod needs (an execution role).
    Misconfigured {
        /// Target name.
        target: String,
        /// What is missing.
        reason: String,
    },
    /// Any other target-level answer of the cloud.
    Cloud {
        /// The cloud's code.
        code: String,
        /// The cloud's message.
        message: String,
    },
}

/// Why the layers stopped retrying a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUpCause {
    /// The provider throttled every attempt: none was carried out.
    Throttled,
    /// The provider refused every attempt (throttled, or answered that it is unavailable): none
    /// was carried out.
    Refused,
    /// The provider kept failing or not answering in time: an attempt may have been carried
    /// out.
    Unavailable,
}

impl TargetRejection {
    /// Whether the refused call may have been carried out anyway: an attempt failed or got no
    /// answer in time, so it may have landed (a create may have left a workload). Throttling of
    /// every attempt, an open circuit (no attempt was made) and the cloud's own refusals did
    /// nothing. (What an earlier call, or a gateway that died, did is the caller's to remember.)
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            TargetRejection::GaveUp {
                cause: GaveUpCause::Unavailable,
                ..
            }
        )
    }

    /// A short code for people and Events (`CircuitOpen`, the cloud's own code...).
    pub fn code(&self) -> &str {
        match self {
            TargetRejection::CircuitOpen { .. } => "CircuitOpen",
            TargetRejection::GaveUp {
                cause: GaveUpCause::Throttled,
                ..
            } => "Throttled",
            TargetRejection::GaveUp {
                cause: GaveUpCause::Unavailable | GaveUpCause::Refused,
                ..
            } => "Unavailable",
            TargetRejection::Unschedulable { .. } => "Unschedulable",
            TargetRejection::Unsupported { .. } => "Unsupported",
            TargetRejection::Misconfigured { .. } => "TargetMisconfigured",
            TargetRejection::Quota { code, .. }
            | TargetRejection::Capacity { code, .. }
            | TargetRejection::Auth { code, .. }
            | TargetRejection::Cloud { code, .. } => code,
        }
    }

    /// A label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TargetRejection::CircuitOpen { .. } => "circuit_open",
            TargetRejection::GaveUp {
                cause: GaveUpCause::Throttled,
                ..
            } => "gave_up_throttled",
            TargetRejection::GaveUp {
                cause: GaveUpCause::Unavailable | GaveUpCause::Refused,
                ..
            } => "gave_up_unavailable",
            TargetRejection::Unschedulable { .. } => "unschedulable",
            TargetRejection::Quota { .. } => "quota",
            TargetRejection::Capacity { .. } => "capacity",
            TargetRejection::Auth { .. } => "auth",
            TargetRejection::Unsupported { .. } => "unsupported",
            TargetRejection::Misconfigured { .. } => "misconfigured",
            TargetRejection::Cloud { .. } => "cloud",
        }
    }
}

impl std::fmt::Display for TargetRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.code())?;
        match self {
            TargetRejection::CircuitOpen { target } => write!(
                f,
                "target {target} is failing: its circuit is open after repeated target-level errors"
            ),
            TargetRejection::GaveUp {
                api,
                target,
                attempts,
                elapsed,
                last,
                ..
            } => write!(
                f,
                "{api} on target {target} still failing after {attempts} attempts in {:.1}s: {last}",
                elapsed.as_secs_f64()
            ),
            TargetRejection::Unsupported { field, reason } => write!(f, "{field}: {reason}"),
            TargetRejection::Misconfigured { target, reason } => {
                write!(f, "target {target}: {reason}")
            }
            TargetRejection::Unschedulable { message }
            | TargetRejection::Quota { message, .. }
            | TargetRejection::Capacity { message, .. }
            | TargetRejection::Auth { message, .. }
            | TargetRejection::Cloud { message, .. } => f.write_str(message),
        }
    }
}

/// Why a provider refused a pod (or a request about one); no other target of the same kind would
/// take it either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRejection {
    /// A pod field the provider cannot honour at all (a hostPath volume on ACI).
    Unsupported {
        /// The pod field (`spec.volumes[1] (data).hostPath`).
        field: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A malformed pod (no containers, an unreadable quantity, an argument ACI cannot carry).
    Invalid {
        /// The pod field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A value the pod references was not resolved before the create.
    Unresolved {
        /// The pod field.
        field: String,
        /// What is missing.
        what: String,
    },
    /// The workload or container asked for is not there (kubelet API: 404).
    NotFound {
        /// What is missing.
        message: String,
    },
    /// The container is not running, so it cannot be exec'd or attached (kubelet API: 400).
    NotRunning {
        /// The provider's words.
        message: String,
    },
    /// The cloud refused the pod with its own code (`InaccessibleImage`, `InvalidParameter`).
    Cloud {
        /// The cloud's code.
        code: String,
        /// The cloud's message, shown on the pod as is.
        message: String,
    },
}

impl PodRejection {
    /// The pod status reason and Event reason for this rejection.
    pub fn reason(&self) -> &str {
        match self {
            PodRejection::Unsupported { .. } => "Unsupported",
            PodRejection::Invalid { .. } => "InvalidSpec",
            PodRejection::Unresolved { .. } => "Unresolved",
            PodRejection::NotFound { .. } => "NotFound",
            PodRejection::NotRunning { .. } => "ContainerNotRunning",
            PodRejection::Cloud { code, .. } => code,
        }
    }
}

impl std::fmt::Display for PodRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.reason())?;
        match self {
            PodRejection::Unsupported { field, reason }
            | PodRejection::Invalid { field, reason } => {
                write!(f, "{field}: {reason}")
            }
            PodRejection::Unresolved { field, what } => write!(
                f,
                "{field}: {what} was not resolved from the API server before the create"
            ),
            PodRejection::NotFound { message }
            | PodRejection::NotRunning { message }
            | PodRejection::Cloud { message, .. } => f.write_str(message),
        }
    }
}

impl ProviderError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Throttled { .. }
                | ProviderError::TimedOut { .. }
        )
    }

    /// Whether the failed call may have been carried out anyway (see
    /// [`TargetRejection::outcome_unknown`]): a timeout or a transient failure may come after
    /// the cloud acted.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ProviderError::Target(t) => t.outcome_unknown(),
            ProviderError::TimedOut { .. } | ProviderError::Transient { .. } => true,
            _ => false,
        }
    }

    /// When the provider asked the caller to come back, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. }
            | ProviderError::Unavailable { retry_after, .. }
            | ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProviderError::Transient { .. } => "transient",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::TimedOut { .. } => "timeout",
            ProviderError::Target(_) => "target",
            ProviderError::Pod(_) => "pod",
            ProviderError::NotSupported { .. } => "not_supported",
        }
    }

    /// A target-level rejection with the cloud's own code.
    pub fn cloud_target(code: impl Into<String>, message: impl Into<String>) -> ProviderError {
        ProviderError::Target(TargetRejection::Cloud {
            code: code.into(),
            message: message.into(),
        })
    }

    /// A pod-level rejection with the cloud's own code.
    pub fn cloud_pod(code: impl Into<String>, message: impl Into<String>) -> ProviderError {
        ProviderError::Pod(PodRejection::Cloud {
            code: code.into(),
            message: message.into(),
        })
    }

    /// The workload or container is not there.
    pub fn not_found(message: impl Into<String>) -> ProviderError {
        ProviderError::Pod(PodRejection::NotFound {
            message: message.into(),
        })
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
    /// The previous instance of the container (after a restart); a provider that keeps only
    /// the current one refuses with [`ProviderError::NotSupported`] ([`previous_not_kept`]).
    pub previous: bool,
}

/// The refusal of a provider that keeps only the current instance of a container's logs.
pub fn previous_not_kept(provider: &str) -> ProviderError {
    ProviderError::NotSupported {
        provider: provider.into(),
        what: "logs of a previous container instance (only the current one is kept)".into(),
    }
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

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

impl Default for TerminalSize {
    /// 80x24, what a terminal is taken to be until the client says otherwise.
    fn default() -> Self {
        TerminalSize {
            width: 80,
            height: 24,
        }
    }
}

/// An exec as the client asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The client sends stdin.
    pub stdin: bool,
    /// A terminal of this size (its first size; resizes follow as [`ExecInput::Resize`]).
    pub tty: Option<TerminalSize>,
}

/// What the client sends to a running exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes for stdin.
    Stdin(Vec<u8>),
    /// stdin is closed (end of file).
    EndOfInput,
    /// The terminal changed size.
    Resize(TerminalSize),
}

/// What a running exec produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes of stdout (with a terminal, or from a provider that does not separate the two, all
    /// output).
    Stdout(Vec<u8>),
    /// Bytes of stderr.
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exited(ExitCode),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCode {
    /// Its exit code.
    Code(i32),
    /// The provider does not say (ACI's exec API reports none): why, for the client.
    Unreported {
        /// Why the code is unknown.
        why: String,
    },
}

/// A running exec: its input and its output, [`ExecEvent::Exited`] last. Dropping it ends the
/// session at the provider.
pub struct ExecSession {
    /// Input to the command; a provider that takes none drops the receiver.
    pub input: tokio::sync::mpsc::Sender<ExecInput>,
    /// Output, then the exit.
    pub output: futures::stream::BoxStream<'static, Result<ExecEvent, ProviderError>>,
}

impl ExecSession {
    /// The session of a command that already ran (a provider whose exec collects the output):
    /// takes no input, yields the output, then the exit code or why there is none.
    pub fn finished(output: ExecOutput, provider: &str) -> ExecSession {
        let (input, _) = tokio::sync::mpsc::channel(1);
        let exit = match output.exit_code {
            Some(code) => ExitCode::Code(code),
            None => ExitCode::Unreported {
                why: format!("{provider} reports no exit code for exec"),
            },
        };
        let events = [
            ExecEvent::Stdout(output.stdout.into_bytes()),
            ExecEvent::Stderr(output.stderr.into_bytes()),
            ExecEvent::Exited(exit),
        ]
        .into_iter()
        .filter(|e| !matches!(e, ExecEvent::Stdout(b) | ExecEvent::Stderr(b) if b.is_empty()))
        .map(Ok);
        ExecSession {
            input,
            output: futures::StreamExt::boxed(futures::stream::iter(events)),
        }
    }

    /// An attach session: the container's output on stdout, no input, no exit code (the
    /// stream ends when the container's output does).
    pub fn output_only(output: OutputStream) -> ExecSession {
        use futures::StreamExt;
        let (input, _) = tokio::sync::mpsc::channel(1);
        let events = output
            .map(|chunk| chunk.map(ExecEvent::Stdout))
            .chain(futures::stream::once(async {
                Ok(ExecEvent::Exited(ExitCode::Code(0)))
            }));
        ExecSession {
            input,
            output: events.boxed(),
        }
    }
}

/// A container's output as it comes, from [`Provider::attach`]: chunks of bytes (stdout and
/// stderr interleaved, as the provider sends them) until the stream ends with the attach
/// session (the container stopped, or the provider closed it).
pub type OutputStream = futures::stream::BoxStream<'static, Result<Vec<u8>, ProviderError>>;

/// One container's CPU and memory usage, as the provider sampled it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// Container name (as in the pod spec).
    pub name: String,
    /// CPU in use, in cores (averaged over the provider's sampling window).
    pub cpu_cores: f64,
    /// Cumulative CPU, in core-seconds, since the gateway's first sample of it (integrated from
    /// the sampled rates by [`UsageCache`](crate::provider::kit::usage::UsageCache); adapters
    /// leave it 0).
    pub cpu_core_seconds: f64,
    /// Memory working set, in bytes.
    pub memory_bytes: u64,
}

/// A workload's usage: one sample per container, taken at `sampled_at`, averaged over `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadUsage {
    /// When the provider took the sample (the end of its window, at the latest the read).
    pub sampled_at: chrono::DateTime<chrono::Utc>,
    /// The window the CPU figure is averaged over (ACI: Azure Monitor's one-minute grain).
    pub window: Duration,
    /// The containers the provider reported, in its order.
    pub containers: Vec<ContainerUsage>,
}

/// The refusal of a provider that reports no CPU or memory usage, saying why.
pub fn usage_not_reported(provider: &str, why: &str) -> ProviderError {
    ProviderError::NotSupported {
        provider: provider.into(),
        what: format!("CPU and memory usage ({why})"),
    }
}

/// Bytes both ways between a client and a port of a workload.
pub trait PortStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> PortStream for T {}

/// A connection to a port of a workload (`kubectl port-forward`): its bytes, and what the provider
/// reports when it cannot (or can no longer) forward it.
pub struct PortConnection {
    /// The connection; shutting down its write half ends the client's direction.
    pub stream: Box<dyn PortStream>,
    /// Resolves with the provider's error message when forwarding failed, or `None` when the
    /// connection ended without one.
    pub error: futures::future::BoxFuture<'static, Option<String>>,
}

/// How often a Running workload's status is read while its target's read bucket allows it.
pub const RUNNING_POLL: Duration = Duration::from_secs(10);

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

    /// How often the controller asks for the status of a Running workload: [`RUNNING_POLL`],
    /// longer once the target holds so many workloads that reading each that often would spend
    /// more than half its read bucket ([`status_interval`](crate::provider::kit::cadence::status_interval):
    /// Fargate, the simulator), or zero when the provider caches statuses and decides itself
    /// when to read the cloud (ACI: at every status tick, its cache spending reads at its own
    /// cadence).
    fn running_poll(&self) -> Duration {
        RUNNING_POLL
    }

    /// How long orphan GC waits, after a [`list_owned`](Provider::list_owned), before it lists
    /// this target again: `floor`, or longer once the reads that listing took would spend more
    /// than a tenth of the target's read bucket at `floor`
    /// ([`listing_interval`](crate::provider::kit::cadence::listing_interval): Fargate, ACI,
    /// whose listings are a read per page). The default, for a listing of one read, is `floor`.
    fn listing_interval(&self, floor: Duration) -> Duration {
        floor
    }

    /// Creates the workload, idempotently: creating an id that exists returns its status.
    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError>;

    /// Deletes the workload; deleting one that is gone is not an error.
    async fn delete(&self, id: &str) -> Result<(), ProviderError>;

    /// Stops the workload's containers on the way to its delete, for a pod deleted with a grace
    /// period of `grace` (> 0): the caller gives it at most `grace`, then deletes the workload
    /// whatever the answer. The default does nothing: the delete stops the workload (Fargate's
    /// StopTask gives each container its `stopTimeout`, the pod's grace period).
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), ProviderError> {
        let _ = (id, grace);
        Ok(())
    }

    /// Whether the provider restarts a workload's exited containers itself, as the pod's
    /// `restartPolicy` says (ACI's container group, a cluster's kubelet: the default). When it
    /// does not (a Fargate task stays stopped), a stopped workload whose pod restarts is started
    /// again by the controller with [`Provider::restart`], after a kubelet-like back-off.
    fn restarts_containers(&self) -> bool {
        true
    }

    /// Starts workload `spec.id` again after it stopped on its own, as a restart of the same pod
    /// (its containers' `restartCount` one higher, their `lastState` the stopped run's):
    /// never while a run of it is still alive, and idempotently (a run an earlier call already
    /// started is answered). Only called when [`Provider::restarts_containers`] is false.
    async fn restart(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let _ = spec;
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "restarting a stopped workload (it restarts containers itself)".into(),
        })
    }

    /// Gives the running workload `spec.id` the files of `spec` anew (its service-account
    /// tokens, renewed before they expire), for a provider that cannot update a running
    /// workload's files in place: ACI updates the container group, which restarts its
    /// containers. The default refuses ([`ProviderError::NotSupported`]): the provider renews
    /// nothing (the cluster's kubelet renews its own pods' tokens; Fargate mounts no token).
    async fn renew_files(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let _ = spec;
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "renewing a running workload's files".into(),
        })
    }

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

    /// Starts `request` in a container as a session (the kubelet API's `/exec` over WebSocket
    /// or SPDY). The default runs a non-interactive command through [`Provider::exec`]; stdin or
    /// a terminal need a provider that streams (`NotSupported` otherwise, saying so).
    async fn exec_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        if request.stdin || request.tty.is_some() {
            return Err(ProviderError::NotSupported {
                provider: self.name().into(),
                what: "exec with stdin or a terminal (-i/-t)".into(),
            });
        }
        let output = self.exec(id, container, &request.command).await?;
        Ok(ExecSession::finished(output, self.name()))
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

    /// Attaches to a running container as a session (the kubelet API's `/attach`): its output,
    /// and with `request.stdin` / `request.tty` its stdin and terminal (`request.command` is
    /// unused). The default attaches to the output through [`Provider::attach`] and refuses
    /// stdin and a terminal, naming the provider: its attach streams output only.
    async fn attach_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        if request.stdin || request.tty.is_some() {
            return Err(ProviderError::NotSupported {
                provider: self.name().into(),
                what: "attach with stdin or a terminal (-i/-t): its attach streams the container's output only".into(),
            });
        }
        Ok(ExecSession::output_only(self.attach(id, container).await?))
    }

    /// The refusal of `what` (`exec`, `attach`, `port-forward`) by a provider whose
    /// [`Capabilities`] say it cannot: by default `NotSupported` naming it; a provider overrides
    /// it to say what would make it work.
    fn refusal(&self, what: &str) -> ProviderError {
        ProviderError::NotSupported {
            provider: self.name().into(),
            what: what.into(),
        }
    }

    /// Whether [`Provider::port_forward`] can work at all (the kubelet API answers 501 before
    /// any upgrade otherwise). `false` by default.
    fn forwards_ports(&self) -> bool {
        false
    }

    /// Connects to `port` of the workload (the kubelet API's `/portForward`). The default
    /// refuses: the provider's workloads cannot be reached that way.
    async fn port_forward(&self, id: &str, port: u16) -> Result<PortConnection, ProviderError> {
        let _ = (id, port);
        Err(ProviderError::NotSupported {
            provider: self.name().into(),
            what: "port-forward: its workloads run at a cloud provider that forwards no ports"
                .into(),
        })
    }

    /// CPU and memory usage of workloads (the kubelet API's `/stats/summary` and
    /// `/metrics/resource`, which `kubectl top` reads through metrics-server): the last sample of
    /// each id the provider has one for, absent when it has none yet. A provider caches samples
    /// and reads its cloud at most once per freshness period per workload. A provider that
    /// reports no usage answers [`usage_not_reported`] (the default): its pods carry no usage
    /// fields, never zeros.
    async fn usage(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadUsage>, ProviderError> {
        let _ = ids;
        Err(usage_not_reported(
            self.name(),
            "this provider does not report any",
        ))
    }
}
