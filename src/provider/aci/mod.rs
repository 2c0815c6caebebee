//! Azure Container Instances over ARM REST (api-version 2026-05-01): one adapter per target
//! (subscription, resource group, region), every call through the target's `Layers`.
//!
//! - [`translate`] turns a pod and its resolved values into a container group, refusing what ACI
//!   cannot run before any call;
//! - [`client`] holds the [`Provider`](crate::provider::Provider): idempotent create (GET, then
//!   PUT only when the group is new), delete, batched status (one list per resource group plus a
//!   GET only for groups that need one, see [`status`]), orphan listing by tags, logs and exec;
//! - [`status`] maps ACI's provisioning state and instance views to workload statuses;
//! - [`retry`] says which ARM/ACI errors are retried, move the pod to another target, or fail it.

pub mod client;
pub mod retry;
pub mod status;
pub mod translate;

pub use client::{
    API_VERSION, AciProvider, CredentialSource, DEFAULT_ARM_ENDPOINT, Settings, azure_transport,
    credential_source, default_credential,
};
pub use retry::{AciError, ArmBudget};
pub use status::Cadence;
pub use translate::{
    ENTRYPOINT_ANNOTATION_PREFIX, TAG_CLUSTER_ID, TAG_CREATED, TAG_NAMESPACE, TAG_NODE, TAG_POD,
    TAG_POD_UID,
};
