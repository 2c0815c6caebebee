//! What can go wrong on the kubelet API, and the HTTP status each failure answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::provider::{PodRejection, ProviderError};

/// A failed kubelet API request, or a kubelet API that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that do not authenticate (401). Not retryable.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but the SubjectAccessReview denied it (403). Not retryable.
    #[error(
        "Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}]){reason}"
    )]
    Forbidden {
        /// Who asked.
        user: String,
        /// The API verb of the request.
        verb: String,
        /// `proxy`, `log`, `stats` or `metrics`.
        subresource: String,
        /// The authorizer's reason, `: ...`, or empty.
        reason: String,
    },
    /// A TokenReview or SubjectAccessReview could not be made (503). Retryable: the request is
    /// refused, never allowed, while the apiserver cannot be asked.
    #[error("cannot {what}: {source}")]
    Review {
        /// `review the bearer token` / `review the access`.
        what: &'static str,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The request cannot be expressed (a bad query parameter, an unknown method) (400).
    /// Not retryable.
    #[error("{0}")]
    BadRequest(String),
    /// No such pod or container on this node (404). Not retryable.
    #[error("{0}")]
    NotFound(String),
    /// A kubelet endpoint burstgate does not implement (`/portForward`) (501).
    /// Not retryable.
    #[error("{0}")]
    NotImplemented(String),
    /// The pod has no workload to talk to yet, or its target left the policy (503). Retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The pod could not be read from the apiserver (503). Retryable.
    #[error("reading pod {pod}: {source}")]
    Api {
        /// `namespace/name`.
        pod: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The pod's provider failed or cannot do it; `NotSupported` answers 501.
    #[error("{source}{context}")]
    Provider {
        /// What the provider said.
        #[source]
        source: ProviderError,
        /// Which pod and target, for the message.
        context: String,
    },
    /// The serving certificate, its key or the client CA cannot be used. Not retryable: fix the
    /// file named in the message.
    #[error("kubelet API TLS: {0}")]
    Tls(String),
    /// The port cannot be bound. Not retryable.
    #[error("kubelet API cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The kubelet API's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A provider failure about `pod` on `target`.
    pub fn provider(source: ProviderError, pod: &str, target: &str) -> Error {
        Error::Provider {
            source,
            context: format!(" (pod {pod} runs on target {target})"),
        }
    }

    /// The HTTP status this failure answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Error::Review { .. } | Error::Unavailable(_) | Error::Api { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Provider { source, .. } => match source {
                ProviderError::NotSupported { .. } => StatusCode::NOT_IMPLEMENTED,
                ProviderError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                ProviderError::Transient { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Target(_) => StatusCode::SERVICE_UNAVAILABLE,
                ProviderError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
                ProviderError::Pod(PodRejection::NotFound { .. }) => StatusCode::NOT_FOUND,
                ProviderError::Pod(PodRejection::NotRunning { .. }) => StatusCode::BAD_REQUEST,
                ProviderError::Pod(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Tls(_) | Error::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Review { .. } | Error::Unavailable(_) | Error::Api { .. } => true,
            Error::Provider { source, .. } => {
                source.is_retryable() || matches!(source, ProviderError::Target(_))
            }
            _ => false,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Error::Provider { source, .. } => source.retry_after(),
            _ => None,
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "kubelet API request failed");
        }
        let mut response = (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            format!("{self}\n"),
        )
            .into_response();
        if let Some(after) = retry_after {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_that_cannot_do_it_answers_501_naming_the_provider_and_the_pod() {
        let err = Error::provider(
            ProviderError::NotSupported {
                provider: "aci".into(),
                what: "exec".into(),
            },
            "team/web",
            "aci-east",
        );
        assert_eq!(err.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            err.to_string(),
            "aci does not support exec (pod team/web runs on target aci-east)"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn throttling_is_retryable_and_a_missing_workload_is_404() {
        let throttled = Error::provider(
            ProviderError::Transient {
                message: "429".into(),
                retry_after: None,
            },
            "a/b",
            "t",
        );
        assert_eq!(
            (throttled.status(), throttled.is_retryable()),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        let gone = Error::provider(ProviderError::not_found("gone"), "a/b", "t");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_throttled_provider_answers_429_with_its_retry_after() {
        let err = Error::provider(
            ProviderError::Throttled {
                message: "slow down".into(),
                retry_after: Some(std::time::Duration::from_millis(2500)),
            },
            "a/b",
            "t",
        );
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "3");
    }

    #[test]
    fn a_denial_reads_like_the_kubelets() {
        let err = Error::Forbidden {
            user: "jane".into(),
            verb: "get".into(),
            subresource: "proxy".into(),
            reason: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "Forbidden (user=jane, verb=get, resource=nodes, subresource(s)=[proxy])"
        );
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
    }
}
