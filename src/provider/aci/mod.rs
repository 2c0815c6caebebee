//! Azure Container Instances over ARM REST (api-version 2026-05-01): one adapter per target
//! (subscription, resource group, region), every call through the target's `Layers`.
//!
//! - `settings`: the target ([`Settings`]), as the factory builds it from the policy;
//! - `translate` (with the request structs of `wire`): a pod and its resolved values -> a
//!   container group, refusing what ACI cannot run before any call (pure);
//! - `client`: the [`AciProvider`], idempotent create (GET, then PUT only when the group is new),
//!   delete, batched status, orphan listing by tags, logs, exec and attach, each a few steps
//!   over:
//!   - `arm`: the ARM wire, where every request goes through the `Layers` in one place;
//!   - `credentials`: the Azure credential chain, the transport (extra CA) and the bearer token;
//!   - `cache`: the status cache (one list per resource group plus a GET only for groups that
//!     need one);
//!   - `streams`: the exec and attach websockets; `logs`: the log text filter;
//! - `usage`: Azure Monitor's `CpuUsage`/`MemoryUsage` of a group -> its usage (pure), read
//!   through the kit's [`UsageCache`](crate::provider::kit::usage::UsageCache) at most once per
//!   `usage_refresh` per group, within a share of the read bucket;
//! - `status`: ACI's provisioning state and instance views -> workload statuses (pure);
//! - `retry`: which ARM/ACI errors are retried, move the pod to another target, or fail it.

mod arm;
mod cache;
mod client;
mod credentials;
mod dns;
mod kube_proxy;
mod logs;
// `retry`, `status` and `translate` are pub(crate) for `crate::fuzzing` (the fuzz targets) only.
pub(crate) mod retry;
mod settings;
pub(crate) mod status;
mod streams;
pub(crate) mod translate;
mod usage;
mod wire;

pub use client::AciProvider;
pub use credentials::{azure_transport, default_credential};
pub use dns::ClusterDns;
pub use kube_proxy::KubeProxy;
pub use retry::{AciError, ArmBudget};
pub use settings::{DEFAULT_ARM_ENDPOINT, Settings};
pub use status::Cadence;
