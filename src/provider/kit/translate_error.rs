//! Why a pod cannot become a provider's workload, shared by every adapter's `translate.rs`, and
//! how each case becomes a [`ProviderError`]: refused for this provider (the pod fails), or
//! refused by this target only (the pod goes to another target).

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::provider::{PodRejection, ProviderError, TargetRejection};

/// Why a pod cannot become a workload of one provider. Never retryable: the pod (or the target's
/// configuration) must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field the provider cannot honour, and no target of this gateway would: the pod fails.
    #[error("{field}: {reason}")]
    Unsupported {
        /// The pod field (`spec.volumes[1] (data).hostPath`).
        field: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A pod feature this provider cannot honour but another can (an httpGet probe, which ACI
    /// runs and Fargate does not): this target refuses the pod, which goes to another target.
    #[error("{field}: {reason}")]
    Elsewhere {
        /// The pod field (`spec.containers[app].livenessProbe.httpGet`).
        field: String,
        /// Why this provider cannot do it.
        reason: String,
    },
    /// A field whose value is wrong (no containers, an unreadable quantity).
    #[error("{field}: {reason}")]
    Invalid {
        /// The pod field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The controller did not resolve a value the pod references.
    #[error("{field}: {what} was not resolved from the API server before the create")]
    Unresolved {
        /// The pod field.
        field: String,
        /// What is missing.
        what: String,
    },
    /// The target lacks what this pod needs (an execution role for secrets or logs): another
    /// target may have it.
    #[error("target {target}: {reason}")]
    Target {
        /// Target name.
        target: String,
        /// What is missing.
        reason: String,
    },
}

impl From<TranslateError> for ProviderError {
    fn from(e: TranslateError) -> ProviderError {
        match e {
            TranslateError::Unsupported { field, reason } => {
                ProviderError::Pod(PodRejection::Unsupported { field, reason })
            }
            TranslateError::Invalid { field, reason } => {
                ProviderError::Pod(PodRejection::Invalid { field, reason })
            }
            TranslateError::Unresolved { field, what } => {
                ProviderError::Pod(PodRejection::Unresolved { field, what })
            }
            TranslateError::Elsewhere { field, reason } => {
                ProviderError::Target(TargetRejection::Unsupported { field, reason })
            }
            TranslateError::Target { target, reason } => {
                ProviderError::Target(TargetRejection::Misconfigured { target, reason })
            }
        }
    }
}

/// A field the provider cannot honour.
pub fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A field whose value is wrong.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The pod's spec, refused as invalid when there is none or it has no containers: the first
/// check of every translator.
pub fn pod_spec(pod: &Pod) -> Result<&PodSpec, TranslateError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "the pod has no spec"))?;
    if spec.containers.is_empty() {
        return Err(invalid("spec.containers", "the pod has no containers"));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_another_provider_runs_is_a_target_rejection_and_a_bad_field_a_pod_rejection() {
        let elsewhere = TranslateError::Elsewhere {
            field: "spec.containers[app].readinessProbe.httpGet".into(),
            reason: "no".into(),
        };
        assert!(matches!(
            ProviderError::from(elsewhere),
            ProviderError::Target(TargetRejection::Unsupported { .. })
        ));
        assert!(matches!(
            ProviderError::from(unsupported("spec.hostNetwork", "no")),
            ProviderError::Pod(PodRejection::Unsupported { .. })
        ));
        assert!(matches!(
            ProviderError::from(invalid("spec.containers", "none")),
            ProviderError::Pod(PodRejection::Invalid { .. })
        ));
    }

    #[test]
    fn the_message_names_the_field_and_the_reason() {
        let e = ProviderError::from(unsupported("spec.hostPID", "no host namespaces"));
        assert_eq!(
            e.to_string(),
            "Unsupported: spec.hostPID: no host namespaces"
        );
    }

    #[test]
    fn a_pod_without_a_spec_or_containers_is_invalid() {
        let field = |pod: &Pod| match pod_spec(pod) {
            Err(TranslateError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&Pod::default()), "spec");
        let empty = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert_eq!(field(&empty), "spec.containers");
    }
}
