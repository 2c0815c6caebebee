//! The controllers of a running gateway: the virtual node, the pod lifecycle, orphan GC, leader
//! election and policy reload, all sharing one [`context::Gateway`]; the kubelet API sees it only
//! through [`workloads::Workloads`].

pub mod admission;
pub mod cached_pod;
pub mod context;
pub mod downward;
pub mod environment;
pub mod events;
pub mod gc;
pub mod identity;
pub mod leader;
pub mod listing;
pub mod node;
pub mod outcome;
pub mod placement;
pub mod pod;
pub mod pod_cache;
pub mod provider_events;
pub mod recorder;
pub mod reload;
pub mod resolve;
pub mod restarts;
pub mod shared_reads;
pub mod status;
pub mod workloads;
