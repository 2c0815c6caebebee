//! AWS ECS Fargate: one target (account, region, cluster) runs each pod as one Fargate task.
//!
//! - task definitions are named by a hash of their content (`bg-<hash>`), looked up before they
//!   are registered, shared by identical pods and deregistered when no task of the cluster uses
//!   them any more;
//! - RunTask carries `clientToken` = workload id, and create first looks for a task started by
//!   the workload (`startedBy`), so a retried create never starts a second task;
//! - secret env goes to Secrets Manager and reaches containers as `secrets` references, never
//!   as `environment`; image pull secrets become `repositoryCredentials`; `list_owned` also
//!   finds workloads that only have secrets left, so orphan GC deletes them;
//! - exec liveness / readiness probes become the container's `healthCheck` (clamped to ECS's
//!   ranges) and its `healthStatus` decides readiness; other probes send the pod elsewhere;
//! - status reads DescribeTasks in batches of 100; STOPPED is Succeeded only when every
//!   essential container exited 0;
//! - logs come from CloudWatch Logs (awslogs driver) when the target has a log group; exec is
//!   not supported (ECS Exec needs enableExecuteCommand and the SSM agent: the refusal says so).
//!
//! Ownership tags are the kit's
//! [`OwnerKeys::AWS_TAGS`](crate::provider::kit::ownership::OwnerKeys::AWS_TAGS) plus
//! `burstgate.io/workload`; `settings.rs` is the target, `client.rs` the wire and the
//! `Provider`; `translate.rs`, `status.rs` and `retry.rs` are pure.

mod client;
// `retry`, `status` and `translate` are pub(crate) for `crate::fuzzing` (the fuzz targets) only.
pub(crate) mod retry;
mod settings;
pub(crate) mod status;
pub(crate) mod translate;

pub use client::FargateProvider;
pub use settings::Settings;
pub use translate::{LOG_STREAM_PREFIX, env_secret_name};
