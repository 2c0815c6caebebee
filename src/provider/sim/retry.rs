//! The simulated cloud's failures, and what each means to the caller (next target, fail the
//! pod, or, for a throttled call, retry after the wait).

use crate::provider::contract::ProviderError;

/// A failure of the simulated cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SimFault {
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
    /// One of the cloud's API buckets is empty (a 429): retryable after `wait`.
    Throttled {
        /// The bucket's operation, burst and rate, as `create 100 + 20/s`.
        bucket: String,
        /// Until it has a token again.
        wait: std::time::Duration,
    },
}

impl SimFault {
    /// The typed provider error, with its retry class.
    pub(crate) fn into_error(self) -> ProviderError {
        match self {
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
            SimFault::Throttled { bucket, wait } => ProviderError::Throttled {
                message: format!(
                    "429 TooManyRequests: the simulated cloud's {bucket} bucket is empty"
                ),
                retry_after: Some(wait),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::TargetRejection;

    #[test]
    fn a_full_cloud_sends_the_pod_to_another_target_and_a_bad_pod_fails_and_neither_is_retried() {
        let full = SimFault::CapacityExceeded {
            running: 1,
            limit: 1,
        }
        .into_error();
        assert!(
            matches!(&full, ProviderError::Target(TargetRejection::Capacity { code, .. }) if code == "CapacityExceeded"),
            "{full:?}"
        );
        let image = SimFault::InaccessibleImage {
            image: "invalid.example/app".into(),
            group: "bg-1".into(),
        }
        .into_error();
        let spec = SimFault::InvalidSpec("x".into()).into_error();
        for pod_level in [&image, &spec] {
            assert!(matches!(pod_level, ProviderError::Pod(_)), "{pod_level:?}");
        }
        assert!([full, image, spec].iter().all(|e| !e.is_retryable()));
    }

    #[test]
    fn an_empty_bucket_is_a_throttled_call_retried_after_its_wait() {
        let e = SimFault::Throttled {
            bucket: "create 100 + 20/s".into(),
            wait: std::time::Duration::from_millis(50),
        }
        .into_error();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_millis(50)));
        assert!(e.to_string().contains("create 100 + 20/s"), "{e}");
    }
}
