//! burstgate: one virtual Kubernetes node, and a policy engine that decides where each pod bursts.
//!
//! A pod's journey: `policy::load` reads the operators' files into a checked `Policy`;
//! `policy::pod` turns a Kubernetes Pod into the engine's view; `policy::engine::decide` filters,
//! scores and chooses a target; `policy::ledger` reserves quota and budget for it;
//! `policy::explain` says why. `simulate` replays a workload through the same engine and ledger
//! on a virtual clock.

pub mod config;
pub mod controller;
pub mod failpoint;
/// Reachable only with the `fuzzing` feature, for the fuzz targets in `fuzz/`, and in the
/// crate's own tests (the short fuzz run).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub mod kubelet;
pub mod metrics;
pub mod policy;
pub mod provider;
pub mod simulate;
