//! Providers: where pods run (ACI, Fargate, the cluster itself, the simulator) and the published
//! limits every adapter, and the simulator, must respect.

pub mod aci;
pub mod cluster;
pub mod contract;
pub mod factories;
pub mod fargate;
pub mod kit;
pub mod layers;
pub mod limits;
pub mod registry;
pub mod sim;

pub use contract::{
    Capabilities, ContainerState, ContainerStatus, ContainerUsage, ExecEvent, ExecInput,
    ExecOutput, ExecRequest, ExecSession, ExitCode, GaveUpCause, LogOptions, OwnedWorkload, Owner,
    PodRejection, PortConnection, Provider, ProviderError, ProviderEvent, TargetRejection,
    TerminalSize, WorkloadPhase, WorkloadSpec, WorkloadStatus, WorkloadUsage, usage_not_reported,
    workload_id,
};
pub use limits::{
    Bucket, Capacity, PublishedBucket, Scope, capacity, default_buckets, effective,
    effective_buckets, published,
};
