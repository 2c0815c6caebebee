//! The simulated cloud's failures, and what each means to the caller (retry, next target, fail).

use std::time::Duration;

use crate::provider::contract::ProviderError;

/// A failure of the simulated cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFault {
    /// Too many requests: retryable after the delay.
    Throttled(Duration),
    /// No room for another workload: target-level, try another target.
    CapacityExceeded {
        /// Workloads running.
        running: usize,
        /// The simulated region's limit.
        limit: usize,
    },
    /// The image cannot be pulled: pod-level, fail the pod with this message.
    InaccessibleImage {
        /// The image.
        image: String,
        /// The container group.
        group: String,
    },
    /// The pod cannot be expressed for this cloud: pod-level.
    InvalidSpec(String),
}

impl SimFault {
    /// The typed provider error, with its retry class.
    pub fn into_error(self) -> ProviderError {
        match self {
            SimFault::Throttled(after) => ProviderError::Throttled {
                message: "simulated throttling (429)".into(),
                retry_after: Some(after),
            },
            SimFault::CapacityExceeded { running, limit } => {
                ProviderError::Target(crate::provider::TargetRejection::Capacity {
                    code: "CapacityExceeded".into(),
                    message: format!(
                        "the simulated region runs {running} of {limit} container groups"
                    ),
                })
            }
            SimFault::InaccessibleImage { image, group } => ProviderError::cloud_pod(
                "InaccessibleImage",
                format!(
                    "The image '{image}' in container group '{group}' is not accessible. Please check the image and registry credential."
                ),
            ),
            SimFault::InvalidSpec(message) => ProviderError::cloud_pod("InvalidSpec", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_is_retryable() {
        assert!(
            SimFault::Throttled(Duration::from_secs(1))
                .into_error()
                .is_retryable()
        );
        assert!(
            !SimFault::CapacityExceeded {
                running: 1,
                limit: 1
            }
            .into_error()
            .is_retryable()
        );
        assert!(
            !SimFault::InvalidSpec("x".into())
                .into_error()
                .is_retryable()
        );
    }
}
