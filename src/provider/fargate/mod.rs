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
//!   not supported (ECS Exec needs SSM).

mod client;
mod retry;
mod status;
mod translate;

pub use client::{DESCRIBE_BATCH, FargateProvider};
pub use retry::{classify_failure, classify_parts};
pub use status::workload_status;
pub use translate::{
    FAMILY_PREFIX, HEALTH_INTERVAL, HEALTH_RETRIES, HEALTH_START_PERIOD, HEALTH_TIMEOUT,
    LOG_STREAM_PREFIX, Settings, TAG_CLUSTER_ID, TAG_INIT_CONTAINERS, TAG_NAMESPACE, TAG_NODE,
    TAG_POD, TAG_POD_UID, TAG_READINESS, TAG_WORKLOAD, env_secret_name,
};
