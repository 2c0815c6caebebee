//! What configures the simulated cloud: its knobs, set when the cloud is made
//! (`SimCloud::new`) and shared by every `sim` target (the policy's `sim` targets carry none).

use std::time::Duration;

/// The simulated cloud's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a workload waits (Pending, `ContainerCreating`) before its containers start.
    pub cold_start: Duration,
    /// How many workloads the cloud holds; a create beyond it is a target-level
    /// `CapacityExceeded`.
    pub capacity: usize,
}
