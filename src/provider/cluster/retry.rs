//! Kubernetes API errors -> what the caller should do (pure): retry the call, try another target,
//! or fail the pod with the API server's message.
//!
//! - 429 (API priority and fairness, max-in-flight): `Throttled`; 5xx, 409 conflicts, 410,
//!   timeouts and connection errors: `Transient`; both after `details.retryAfterSeconds` when
//!   the API server gives it (the same value as its `Retry-After` header, which kube-rs does not
//!   expose);
//! - 401, 403 (RBAC, a namespace being terminated, `exceeded quota` of a ResourceQuota,
//!   LimitRange or Pod Security refusals) and a missing shadow namespace: the target cannot take
//!   the pod, try another;
//! - 400/413/422 (the API server rejects the object) and 404 of a named object: the pod's own
//!   problem, with the API server's message.

use std::time::Duration;

use kube::core::Status;

use crate::provider::contract::{ProviderError, TargetRejection};

/// A failed Kubernetes API call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Failure {
    /// 429: the API server sheds load. Retryable.
    #[error("the API server throttled the request: {message}")]
    Throttled {
        /// The API server's message.
        message: String,
        /// Its `retryAfterSeconds`.
        retry_after: Option<Duration>,
    },
    /// 5xx, 409, 410, 504: the API server or etcd failed this time. Retryable.
    #[error("the API server failed ({code} {reason}): {message}")]
    Unavailable {
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The API server's message.
        message: String,
        /// Its `retryAfterSeconds`.
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, reset, TLS, timeout). Retryable.
    #[error("cannot reach the API server: {0}")]
    Connection(String),
    /// A ResourceQuota of the shadow namespace is exhausted. Not retryable: try another target.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The shadow namespace does not exist or is being deleted. Not retryable: another target.
    #[error("{0}")]
    Namespace(String),
    /// The target refuses the gateway's identity or this pod (RBAC, Pod Security, LimitRange).
    /// Not retryable: another target.
    #[error("{0}")]
    Forbidden(String),
    /// The target's credentials are not accepted. Not retryable: another target.
    #[error("{0}")]
    Unauthorized(String),
    /// The API server rejects the object (400, 413, 422). Not retryable: the pod fails.
    #[error("{message}")]
    Invalid {
        /// The Status reason (`Invalid`, `BadRequest`).
        reason: String,
        /// The API server's message, naming the field.
        message: String,
    },
    /// A named object does not exist. Not retryable.
    #[error("{0}")]
    NotFound(String),
    /// Any other answer. Not retryable: another target.
    #[error("the API server answered {code} {reason}: {message}")]
    Other {
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The API server's message.
        message: String,
    },
}

fn retry_after(status: &Status) -> Option<Duration> {
    status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)))
}

/// Classifies an error Status the API server returned.
fn classify_status(s: &Status) -> Failure {
    let message = s.message.clone();
    let reason = s.reason.clone();
    let namespace_object = s.details.as_ref().is_some_and(|d| d.kind == "namespaces");
    match s.code {
        429 => Failure::Throttled {
            message,
            retry_after: retry_after(s),
        },
        500..=599 | 409 | 410 => Failure::Unavailable {
            code: s.code,
            reason,
            message,
            retry_after: retry_after(s),
        },
        403 if message.contains("exceeded quota") => Failure::QuotaExceeded(message),
        403 if message.contains("because it is being terminated") => Failure::Namespace(message),
        403 => Failure::Forbidden(message),
        401 => Failure::Unauthorized(message),
        404 if namespace_object => Failure::Namespace(message),
        404 => Failure::NotFound(message),
        400 | 413 | 422 => Failure::Invalid { reason, message },
        code => Failure::Other {
            code,
            reason,
            message,
        },
    }
}

/// Classifies any error of a kube-rs call.
fn classify(err: &kube::Error) -> Failure {
    match err {
        kube::Error::Api(status) => classify_status(status),
        kube::Error::Auth(e) => {
            Failure::Unauthorized(format!("the target's credentials failed: {e}"))
        }
        kube::Error::BuildRequest(e) => Failure::Invalid {
            reason: "BadRequest".into(),
            message: format!("cannot build the request: {e}"),
        },
        // Transport, TLS, timeouts, undecodable answers (a proxy's error page), broken streams.
        other => Failure::Connection(other.to_string()),
    }
}

impl From<Failure> for ProviderError {
    fn from(f: Failure) -> ProviderError {
        let message = f.to_string();
        match f {
            Failure::Throttled { retry_after, .. } => ProviderError::Throttled {
                message,
                retry_after,
            },
            Failure::Unavailable { retry_after, .. } => ProviderError::Transient {
                message,
                retry_after,
            },
            Failure::Connection(_) => ProviderError::Transient {
                message,
                retry_after: None,
            },
            Failure::QuotaExceeded(_) => ProviderError::Target(TargetRejection::Quota {
                code: "QuotaExceeded".into(),
                message,
            }),
            Failure::Namespace(_) => ProviderError::cloud_target("NamespaceUnavailable", message),
            Failure::Forbidden(_) => ProviderError::Target(TargetRejection::Auth {
                code: "Forbidden".into(),
                message,
            }),
            Failure::Unauthorized(_) => ProviderError::Target(TargetRejection::Auth {
                code: "Unauthorized".into(),
                message,
            }),
            Failure::Other { reason, code, .. } => ProviderError::cloud_target(
                if reason.is_empty() {
                    format!("HTTP{code}")
                } else {
                    reason
                },
                message,
            ),
            Failure::Invalid { reason, .. } => ProviderError::cloud_pod(
                if reason.is_empty() {
                    "Invalid".into()
                } else {
                    reason
                },
                message,
            ),
            Failure::NotFound(_) => ProviderError::not_found(message),
        }
    }
}

/// The provider error for a kube-rs error.
pub(crate) fn provider_error(err: &kube::Error) -> ProviderError {
    classify(err).into()
}

/// Whether the API server answered that the object is not there (404): gone is fine for a
/// delete.
pub(crate) fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;

    fn status(code: u16, reason: &str, message: &str) -> Status {
        Status::failure(message, reason).with_code(code)
    }

    fn details(name: &str, kind: &str, retry_after_seconds: u32) -> StatusDetails {
        StatusDetails {
            name: name.into(),
            group: String::new(),
            kind: kind.into(),
            uid: String::new(),
            causes: vec![],
            retry_after_seconds,
        }
    }

    fn error(s: Status) -> ProviderError {
        provider_error(&kube::Error::Api(s.boxed()))
    }

    #[test]
    fn throttling_is_retryable_after_the_seconds_the_api_server_asks_for() {
        let s = status(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(details("", "", 3));
        let err = error(s);
        assert!(err.is_retryable());
        assert!(
            matches!(err, ProviderError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
    }

    #[test]
    fn server_errors_conflicts_and_connection_failures_are_retryable() {
        for code in [500, 503, 504, 409] {
            assert!(
                error(status(
                    code,
                    "InternalError",
                    "etcdserver: request timed out"
                ))
                .is_retryable(),
                "{code}"
            );
        }
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert!(provider_error(&refused).is_retryable());
    }

    #[test]
    fn an_exceeded_resource_quota_is_a_target_problem() {
        let err = error(status(
            403,
            "Forbidden",
            "pods \"bg-1\" is forbidden: exceeded quota: shadow, requested: pods=1, used: pods=0, limited: pods=0",
        ));
        assert!(
            matches!(&err, ProviderError::Target(TargetRejection::Quota { code, message }) if code == "QuotaExceeded" && message.contains("limited: pods=0")),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_or_terminating_shadow_namespace_is_a_target_problem() {
        let missing = status(404, "NotFound", "namespaces \"burstgate-shadow\" not found")
            .with_details(details("burstgate-shadow", "namespaces", 0));
        assert!(
            matches!(error(missing), ProviderError::Target(TargetRejection::Cloud { code, .. }) if code == "NamespaceUnavailable")
        );
        let terminating = status(
            403,
            "Forbidden",
            "unable to create new content in namespace x because it is being terminated",
        );
        assert!(
            matches!(error(terminating), ProviderError::Target(TargetRejection::Cloud { code, .. }) if code == "NamespaceUnavailable")
        );
    }

    #[test]
    fn rbac_refusals_are_target_problems() {
        let err = error(status(
            403,
            "Forbidden",
            "pods is forbidden: User \"burstgate\" cannot create resource \"pods\"",
        ));
        assert!(matches!(
            err,
            ProviderError::Target(TargetRejection::Auth { .. })
        ));
    }

    #[test]
    fn an_invalid_pod_fails_with_the_api_servers_message() {
        let message = "Pod \"bg-1\" is invalid: spec.containers[0].image: Required value";
        let err = error(status(422, "Invalid", message));
        assert_eq!(err, ProviderError::cloud_pod("Invalid", message));
        assert!(!err.is_retryable());
    }
}
