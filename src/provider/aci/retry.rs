//! ARM and ACI failures -> [`ProviderError`] (pure): what the caller should do about each one
//! (retry the call, try another target, fail the pod), plus the ARM rate-limit headers.
//!
//! The codes come from what ACI and ARM really answer:
//! - `429` (ARM throttling, `Retry-After` in seconds): [`ProviderError::Throttled`];
//! - `5xx`, `ContainerGroupTransitioning`,
//!   `AnotherOperationInProgress`, connection errors and timeouts: [`ProviderError::Transient`];
//! - quota and capacity: `ContainerGroupQuotaReached` ("container group quota 'StandardCores'
//!   exceeded in region ..."), any `*Quota*` code, `ServiceUnavailable` (which ACI sends with
//!   HTTP **409**: "The requested resource is not available in the location ... Please retry with
//!   a different resource request or in another location"), `InsufficientCapacity`,
//!   `SkuNotAvailable`, `LocationNotAvailableForResourceType`, unregistered subscriptions, missing
//!   resource groups and authorization failures: [`ProviderError::Target`] (the same pod may run
//!   elsewhere);
//! - everything else in 4xx, e.g. `InaccessibleImage`, `InvalidImageName`,
//!   `ContainerLimitGreaterThanContainerGroupTotalRequest`, `ResourceLimitsLessThanRequests`,
//!   `InvalidRequestContent`: [`ProviderError::Pod`] with ACI's message verbatim.

use std::time::Duration;

use serde::Deserialize;

use crate::provider::contract::{ProviderError, TargetRejection};

/// One failed ACI call, before classification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AciError {
    /// ARM or ACI answered with an error status. Retryable for 429, 5xx and the transient codes
    /// (`classify` decides).
    #[error("ARM answered HTTP {status} {code}: {message}")]
    Arm {
        /// HTTP status.
        status: u16,
        /// ARM/ACI error code (`InaccessibleImage`), or the HTTP reason when the body had none.
        code: String,
        /// ARM/ACI message, verbatim.
        message: String,
        /// `Retry-After` (or `x-ms-retry-after-ms`), when sent.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (connection refused or reset, DNS, TLS, timeout).
    /// Retryable.
    #[error("ARM request failed: {0}")]
    Transport(String),
    /// No token for ARM (Entra ID refused the credential, or it is misconfigured). Not retryable
    /// on this target: its circuit opens and pods go elsewhere.
    #[error("no ARM token: {0}")]
    Credential(String),
    /// A 2xx answer whose body is not what the spec says. Not retryable.
    #[error("unreadable ARM answer to {what}: {message}")]
    Decode {
        /// The operation (`ContainerGroups_Get`).
        what: &'static str,
        /// The parse error.
        message: String,
    },
    /// The exec websocket failed. Retryable.
    #[error("exec websocket: {0}")]
    Exec(String),
    /// The attach websocket failed. Retryable.
    #[error("attach websocket: {0}")]
    Attach(String),
}

impl AciError {
    /// The typed provider error, with its retry class.
    pub fn into_provider_error(self) -> ProviderError {
        match self {
            AciError::Arm {
                status,
                code,
                message,
                retry_after,
            } => classify(status, &code, &message, retry_after),
            AciError::Transport(message) => ProviderError::Transient {
                message: format!("ARM request failed: {message}"),
                retry_after: None,
            },
            AciError::Exec(message) => ProviderError::Transient {
                message: format!("exec websocket: {message}"),
                retry_after: None,
            },
            AciError::Attach(message) => ProviderError::Transient {
                message: format!("attach websocket: {message}"),
                retry_after: None,
            },
            AciError::Credential(message) => ProviderError::Target(TargetRejection::Auth {
                code: "AuthenticationFailed".into(),
                message,
            }),
            AciError::Decode { what, message } => ProviderError::cloud_target(
                "UnreadableResponse",
                format!("unreadable answer to {what}: {message}"),
            ),
        }
    }
}

impl From<AciError> for ProviderError {
    fn from(e: AciError) -> Self {
        e.into_provider_error()
    }
}

/// Codes that mean "the same call may succeed in a moment".
const TRANSIENT_CODES: &[&str] = &[
    "ContainerGroupTransitioning",
    "AnotherOperationInProgress",
    "OperationPreempted",
    "RetryableError",
    "InternalServerError",
    "GatewayTimeout",
    "ServerTimeout",
];

/// Codes that mean "this region has no room for it now; another target may".
const CAPACITY_CODES: &[&str] = &[
    "ServiceUnavailable",
    "InsufficientCapacity",
    "SkuNotAvailable",
    "LocationNotAvailableForResourceType",
    "DisallowedLocation",
    "SpotPriorityNotSupported",
];

/// Codes that mean "the gateway's identity or subscription cannot use this target"; 401 and 403
/// count too.
const AUTH_CODES: &[&str] = &[
    "NoRegisteredProviderFound",
    "MissingSubscriptionRegistration",
    "SubscriptionNotRegistered",
    "SubscriptionNotFound",
    "ReadOnlyDisabledSubscription",
    "ResourceGroupNotFound",
    "AuthorizationFailed",
    "LinkedAuthorizationFailed",
    "InvalidAuthenticationToken",
    "AuthenticationFailed",
    "ExpiredAuthenticationToken",
    "RequestDisallowedByPolicy",
];

fn is_one_of(codes: &[&str], code: &str) -> bool {
    codes.iter().any(|c| c.eq_ignore_ascii_case(code))
}

/// The target-level rejection for `code`, when it is one (codes containing `Quota` are quota).
fn target_rejection(status: u16, code: &str, message: &str) -> Option<TargetRejection> {
    let (code, message) = (code.to_string(), message.to_string());
    if code.to_ascii_lowercase().contains("quota") {
        Some(TargetRejection::Quota { code, message })
    } else if is_one_of(CAPACITY_CODES, &code) {
        Some(TargetRejection::Capacity { code, message })
    } else if is_one_of(AUTH_CODES, &code) || status == 401 || status == 403 {
        Some(TargetRejection::Auth { code, message })
    } else {
        None
    }
}

/// What the caller should do about an ARM error answer.
pub(crate) fn classify(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> ProviderError {
    let transient = || ProviderError::Transient {
        message: format!("HTTP {status} {code}: {message}"),
        retry_after,
    };
    if status == 429
        || code.eq_ignore_ascii_case("TooManyRequests")
        || code.eq_ignore_ascii_case("SubscriptionRequestsThrottled")
    {
        return ProviderError::Throttled {
            message: format!("HTTP {status} {code}: {message}"),
            retry_after,
        };
    }
    if TRANSIENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) {
        return transient();
    }
    if status >= 500 {
        // A 503 from ARM's front door is a blip that refused the call (nothing was done); ACI's
        // capacity answer is a 409 ServiceUnavailable.
        let refused = || ProviderError::Unavailable {
            message: format!("HTTP {status} {code}: {message}"),
            retry_after,
        };
        return match target_rejection(status, code, message) {
            Some(t) if !code.eq_ignore_ascii_case("ServiceUnavailable") => ProviderError::Target(t),
            _ if status == 503 => refused(),
            _ => transient(),
        };
    }
    if let Some(t) = target_rejection(status, code, message) {
        return ProviderError::Target(t);
    }
    if status == 404 {
        return ProviderError::not_found(format!("{code}: {message}"));
    }
    ProviderError::cloud_pod(code, message)
}

/// ARM's error body (`CloudError`).
#[derive(Debug, Default, Deserialize)]
struct CloudError {
    #[serde(default)]
    error: Option<CloudErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
struct CloudErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<CloudErrorBody>,
}

/// Generic wrapper codes whose first detail says what really went wrong.
const WRAPPER_CODES: &[&str] = &[
    "BadRequest",
    "DeploymentFailed",
    "Failed",
    "InvalidTemplateDeployment",
    "MultipleErrorsOccurred",
];

/// The ARM error of a non-2xx answer: code and message from the `CloudError` body (its first
/// detail when the top level is a generic wrapper), else the HTTP reason and the raw body.
pub(crate) fn arm_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> AciError {
    let parsed: CloudError = serde_json::from_slice(body).unwrap_or_default();
    let fallback_code = http_reason(status).to_string();
    let raw = String::from_utf8_lossy(body)
        .chars()
        .take(2000)
        .collect::<String>();
    let (code, message) = match parsed.error {
        Some(top) => {
            let generic = top
                .code
                .as_deref()
                .is_none_or(|c| WRAPPER_CODES.iter().any(|w| w.eq_ignore_ascii_case(c)));
            match top.details.into_iter().find(|d| d.code.is_some()) {
                Some(detail) if generic => (
                    detail.code.unwrap_or(fallback_code),
                    detail.message.unwrap_or_default(),
                ),
                _ => (
                    top.code.unwrap_or(fallback_code),
                    top.message.unwrap_or(raw),
                ),
            }
        }
        None => (fallback_code, raw),
    };
    AciError::Arm {
        status,
        code,
        message,
        retry_after,
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailableHttp",
        504 => "GatewayTimeout",
        _ => "HttpError",
    }
}

/// The delay a throttled or accepted answer asks for: `x-ms-retry-after-ms` / `retry-after-ms`
/// (milliseconds) win over `Retry-After` (seconds, or an HTTP date, which ARM does not send and
/// which is ignored). `header` looks a header up by lower-case name.
pub(crate) fn retry_after<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Duration> {
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = header(name).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What ARM says is left of the subscription's request budget
/// (`x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`, or the `-global-` variants of
/// ARM's newer throttling), from one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmBudget {
    /// Reads left.
    pub reads: Option<u32>,
    /// Writes left (PUT, POST: creates and exec).
    pub writes: Option<u32>,
    /// Deletes left.
    pub deletes: Option<u32>,
}

/// Below this many remaining requests of a kind, the budget is "low": about one second of ARM's
/// refill (25 reads/s, 10 writes or deletes/s).
pub(crate) const LOW_READS: u32 = 25;
/// See [`LOW_READS`].
pub(crate) const LOW_WRITES: u32 = 10;

impl ArmBudget {
    /// Reads the rate-limit headers of one answer. `header` looks a header up by lower-case name.
    pub(crate) fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> ArmBudget {
        let get = |kind: &str| {
            [
                format!("x-ms-ratelimit-remaining-subscription-{kind}"),
                format!("x-ms-ratelimit-remaining-subscription-global-{kind}"),
            ]
            .iter()
            .filter_map(|name| header(name).and_then(|v| v.trim().parse::<u32>().ok()))
            .min()
        };
        ArmBudget {
            reads: get("reads"),
            writes: get("writes"),
            deletes: get("deletes"),
        }
    }

    /// A sentence naming the budgets that are low, or `None` when none is.
    ///
    /// How the `Layers` could use it (today the adapter logs it and keeps the last value, see
    /// `AciProvider::arm_budget`): ARM's buckets are shared by every client of the subscription
    /// and principal, so our own token buckets (limits.rs) only model our share. When ARM reports
    /// fewer remaining writes than our bucket holds, the layer should lower its bucket to ARM's
    /// number (never raise it), so that creates wait for tokens instead of drawing 429s that cost
    /// a round trip and feed the circuit breaker; at zero, it can pause the class until the
    /// refill ARM implies (remaining / rate) rather than probing.
    pub fn low(&self) -> Option<String> {
        let mut low = Vec::new();
        if let Some(r) = self.reads.filter(|r| *r < LOW_READS) {
            low.push(format!("{r} reads"));
        }
        if let Some(w) = self.writes.filter(|w| *w < LOW_WRITES) {
            low.push(format!("{w} writes"));
        }
        if let Some(d) = self.deletes.filter(|d| *d < LOW_WRITES) {
            low.push(format!("{d} deletes"));
        }
        (!low.is_empty()).then(|| {
            format!("ARM subscription budget is low: {} left; slow this subscription's calls before ARM answers 429", low.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::PodRejection;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn a_429_is_throttling_and_keeps_its_retry_after() {
        let after = retry_after(headers(&[("retry-after", "17")]));
        let e = arm_error(
            429,
            br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
            after,
        )
        .into_provider_error();
        assert_eq!(
            e,
            ProviderError::Throttled {
                message: "HTTP 429 TooManyRequests: slow down".into(),
                retry_after: Some(Duration::from_secs(17))
            }
        );
    }

    #[test]
    fn milliseconds_retry_headers_win_over_seconds() {
        let after = retry_after(headers(&[
            ("retry-after", "3"),
            ("x-ms-retry-after-ms", "1500"),
        ]));
        assert_eq!(after, Some(Duration::from_millis(1500)));
        assert_eq!(
            retry_after(headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
            None
        );
    }

    #[test]
    fn server_errors_and_transitions_are_transient() {
        assert!(classify(500, "InternalServerError", "boom", None).is_retryable());
        assert!(classify(503, "ServiceUnavailable", "front door", None).is_retryable());
        assert!(classify(409, "ContainerGroupTransitioning", "busy", None).is_retryable());
        assert!(
            AciError::Transport("connection refused".into())
                .into_provider_error()
                .is_retryable()
        );
    }

    #[test]
    fn quota_and_capacity_answers_send_the_pod_to_another_target() {
        let quota = arm_error(
            409,
            br#"{"error":{"code":"ContainerGroupQuotaReached","message":"Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota 'StandardCores' exceeded in region 'eastus'. Limit: '10', Usage: '10' Requested: '1'."}}"#,
            None,
        )
        .into_provider_error();
        assert!(
            matches!(&quota, ProviderError::Target(TargetRejection::Quota { code, message }) if code == "ContainerGroupQuotaReached" && message.contains("StandardCores")),
            "{quota:?}"
        );
        let capacity = classify(
            409,
            "ServiceUnavailable",
            "The requested resource is not available in the location 'westus' at this moment.",
            None,
        );
        assert!(
            matches!(
                capacity,
                ProviderError::Target(TargetRejection::Capacity { .. })
            ),
            "{capacity:?}"
        );
        assert!(matches!(
            classify(400, "StandardCoresQuotaExceeded", "x", None),
            ProviderError::Target(TargetRejection::Quota { .. })
        ));
        assert!(matches!(
            classify(403, "AuthorizationFailed", "x", None),
            ProviderError::Target(TargetRejection::Auth { .. })
        ));
        assert!(matches!(
            classify(404, "ResourceGroupNotFound", "x", None),
            ProviderError::Target(TargetRejection::Auth { .. })
        ));
    }

    #[test]
    fn an_inaccessible_image_fails_the_pod_with_acis_message_verbatim() {
        let msg = "The image 'invalid.example/app:1' in container group 'bg-1' is not accessible. Please check the image and registry credential.";
        let body =
            serde_json::json!({"error": {"code": "InaccessibleImage", "message": msg}}).to_string();
        let e = arm_error(400, body.as_bytes(), None).into_provider_error();
        assert_eq!(e, ProviderError::cloud_pod("InaccessibleImage", msg));
    }

    #[test]
    fn a_generic_wrapper_code_is_replaced_by_its_first_detail() {
        let body = br#"{"error":{"code":"BadRequest","message":"see details","details":[{"code":"ContainerLimitGreaterThanContainerGroupTotalRequest","message":"The 'Cpu' limit '2' in container 'app' is greater than the total request '0.5'"}]}}"#;
        let e = arm_error(400, body, None).into_provider_error();
        assert!(
            matches!(&e, ProviderError::Pod(PodRejection::Cloud { code, .. }) if code == "ContainerLimitGreaterThanContainerGroupTotalRequest"),
            "{e:?}"
        );
    }

    #[test]
    fn a_body_that_is_not_a_cloud_error_keeps_the_http_reason_and_the_raw_text() {
        let e = arm_error(502, b"<html>bad gateway</html>", None);
        assert_eq!(
            e,
            AciError::Arm {
                status: 502,
                code: "BadGateway".into(),
                message: "<html>bad gateway</html>".into(),
                retry_after: None
            }
        );
        assert!(e.into_provider_error().is_retryable());
    }

    #[test]
    fn the_remaining_arm_budget_is_read_from_headers_and_flagged_when_low() {
        let b = ArmBudget::from_headers(headers(&[
            ("x-ms-ratelimit-remaining-subscription-reads", "11999"),
            ("x-ms-ratelimit-remaining-subscription-writes", "7"),
        ]));
        assert_eq!(
            b,
            ArmBudget {
                reads: Some(11999),
                writes: Some(7),
                deletes: None
            }
        );
        let hint = b.low().expect("writes are low");
        assert!(
            hint.contains("7 writes") && !hint.contains("reads"),
            "{hint}"
        );
        assert_eq!(
            ArmBudget {
                reads: Some(100),
                writes: Some(100),
                deletes: Some(100)
            }
            .low(),
            None
        );
    }

    #[test]
    fn the_global_budget_header_counts_when_it_is_lower() {
        let b = ArmBudget::from_headers(headers(&[
            ("x-ms-ratelimit-remaining-subscription-reads", "200"),
            ("x-ms-ratelimit-remaining-subscription-global-reads", "3"),
        ]));
        assert_eq!(b.reads, Some(3));
    }
}
