//! What configures the simulated cloud: its knobs, set when the cloud is made
//! (`SimCloud::new`) and shared by every `sim` target (the policy's `sim` targets carry none).

use std::time::Duration;

use crate::policy::model::RateLimitSpec;

/// The simulated cloud's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How long a workload waits (Pending, `ContainerCreating`) before its containers start.
    pub cold_start: Duration,
    /// How many workloads the cloud holds; a create beyond it is a target-level
    /// `CapacityExceeded`.
    pub capacity: usize,
    /// The buckets the cloud's API enforces (none: it never throttles). A call past one is
    /// answered as throttled, with the wait until the bucket has a token again.
    pub rate_limits: Vec<RateLimitSpec>,
}
