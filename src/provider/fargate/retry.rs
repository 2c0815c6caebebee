//! AWS errors (ECS, Secrets Manager, CloudWatch Logs) and RunTask `failures` -> what the caller
//! should do: retry the call, try another target, or fail the pod with AWS's own message.
//!
//! Throttling (`ThrottlingException`, HTTP 429) is `Throttled`; other retryable failures (5xx,
//! timeouts, connection errors) are `Transient`. The classification is pure ([`classify_parts`],
//! [`classify_failure`]); [`classify`] only pulls status, code, message and `Retry-After` out of
//! the SDK's error. Retrying itself is the target's `Layers`' job, never this adapter's.

use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

use crate::provider::contract::{PodRejection, ProviderError, TargetRejection};

/// Error codes that mean "slow down": retryable.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
];

/// Error codes of a failing service: retryable.
const SERVER_CODES: &[&str] = &[
    "ServerException",
    "InternalFailure",
    "InternalServiceError",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Error codes that say this target (account, region, cluster, its roles) cannot take the
/// workload, whatever the pod: another target may. Besides these, every [`AUTH_CODES`] code.
const TARGET_CODES: &[&str] = &[
    "LimitExceededException",
    "ClusterNotFoundException",
    "UnsupportedFeatureException",
    "EncryptionFailure",
    "DecryptionFailure",
];

/// Message fragments (lower case) of capacity, quota and target configuration problems, which
/// ECS reports as `ClientException`s or RunTask failures.
const TARGET_MESSAGES: &[&str] = &[
    "capacity is unavailable",
    "resource:eni",
    "resource:cpu",
    "resource:memory",
    "resource:gpu",
    "limit exceeded",
    "reached the limit",
    "quota",
    "no container instances",
    "unable to assume",
    "not authorized to perform",
    "cluster not found",
];

/// Classifies an SDK error of any AWS service client (`api` names the call for the message).
pub(crate) fn classify<E>(api: &str, err: &SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let raw = ctx.raw();
            let retry_after = raw.headers().get("retry-after");
            classify_parts(
                api,
                Some(raw.status().as_u16()),
                err.code(),
                err.message(),
                retry_after,
                Utc::now(),
            )
        }
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            classify_parts(
                api,
                Some(status),
                None,
                Some(&format!(
                    "unreadable response: {}",
                    DisplayErrorContext(err)
                )),
                None,
                Utc::now(),
            )
        }
        SdkError::ConstructionFailure(_) => ProviderError::cloud_pod(
            "InvalidRequest",
            format!(
                "{api}: the request could not be built: {}",
                DisplayErrorContext(err)
            ),
        ),
        // Timeouts, connection failures and anything newer: the call may succeed later.
        _ => ProviderError::Transient {
            message: format!("{api}: {}", DisplayErrorContext(err)),
            retry_after: None,
        },
    }
}

/// Classifies a service's answer from its HTTP status, error code, message and `Retry-After`
/// header (seconds or an HTTP date, read against `now`).
fn classify_parts(
    api: &str,
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> ProviderError {
    let code = code.unwrap_or_default();
    let message = message.unwrap_or_default();
    let status_text = status
        .map(|s| format!("HTTP {s}"))
        .unwrap_or_else(|| "no status".into());
    if THROTTLING_CODES.contains(&code) || status == Some(429) {
        return ProviderError::Throttled {
            message: format!("{api} throttled ({status_text} {code}): {message}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        };
    }
    if AUTH_CODES.contains(&code) || TARGET_CODES.contains(&code) || is_target_message(message) {
        let code = if code.is_empty() {
            "TargetUnavailable"
        } else {
            code
        };
        return ProviderError::Target(target_rejection(code, message));
    }
    if status == Some(503) || code.starts_with("ServiceUnavailable") {
        // AWS answered that the service cannot serve now: the call was refused, not carried out.
        return ProviderError::Unavailable {
            message: format!("{api} refused at AWS ({status_text} {code}): {message}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        };
    }
    if SERVER_CODES.contains(&code) || status.is_some_and(|s| s >= 500) {
        return ProviderError::Transient {
            message: format!("{api} failed at AWS ({status_text} {code}): {message}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        };
    }
    if !code.is_empty() || status.is_some_and(|s| (400..500).contains(&s)) {
        // ClientException, InvalidParameterException...: the request, i.e. the pod, is wrong;
        // AWS's message goes to the pod as it is.
        let code = if code.is_empty() {
            format!("HTTP{}", status.unwrap_or_default())
        } else {
            code.into()
        };
        if is_not_found_message(message) {
            return ProviderError::not_found(format!("{code}: {message}"));
        }
        return ProviderError::cloud_pod(code, message);
    }
    ProviderError::Transient {
        message: format!("{api}: unexpected answer ({status_text}): {message}"),
        retry_after: None,
    }
}

/// Classifies one entry of RunTask's `failures` list (a task that was not started although the
/// call succeeded).
pub(crate) fn classify_failure(
    reason: Option<&str>,
    detail: Option<&str>,
    arn: Option<&str>,
) -> ProviderError {
    let reason = reason.unwrap_or("unknown reason");
    let mut message = reason.to_string();
    if let Some(detail) = detail.filter(|d| !d.is_empty()) {
        message = format!("{message}: {detail}");
    }
    if let Some(arn) = arn.filter(|a| !a.is_empty()) {
        message = format!("{message} ({arn})");
    }
    let upper = reason.to_ascii_uppercase();
    if is_target_message(&message)
        || upper.starts_with("AGENT")
        || upper.starts_with("ATTRIBUTE")
        || upper == "MISSING"
    {
        let code = if upper.starts_with("RESOURCE:") {
            reason.to_string()
        } else {
            "CapacityUnavailable".to_string()
        };
        return ProviderError::Target(target_rejection(&code, &message));
    }
    ProviderError::cloud_pod("RunTaskFailure", message)
}

/// Which kind of target-level problem an ECS answer is, from its code and words.
fn target_rejection(code: &str, message: &str) -> TargetRejection {
    let lower = message.to_ascii_lowercase();
    let (code, message) = (code.to_string(), message.to_string());
    if AUTH_CODES.contains(&code.as_str())
        || ["unable to assume", "not authorized to perform"]
            .iter()
            .any(|m| lower.contains(m))
    {
        TargetRejection::Auth { code, message }
    } else if code == "LimitExceededException"
        || ["limit exceeded", "reached the limit", "quota"]
            .iter()
            .any(|m| lower.contains(m))
    {
        TargetRejection::Quota { code, message }
    } else if code.starts_with("RESOURCE:")
        || code == "CapacityUnavailable"
        || lower.contains("capacity is unavailable")
    {
        TargetRejection::Capacity { code, message }
    } else {
        TargetRejection::Cloud { code, message }
    }
}

/// Error codes that say the gateway's identity cannot use the target: target-level too.
const AUTH_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "OptInRequired",
    "BlockedException",
];

/// ECS answers "not found" as a `ClientException` or `InvalidParameterException` whose words say
/// so ("The referenced task was not found."); this is the one place that reads them.
fn is_not_found_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("could not find") || m.contains("does not exist")
}

/// Whether RunTask refused a task definition that a sweep deregistered (ECS says so only in its
/// words: "TaskDefinition is inactive"); the adapter registers it again.
pub(crate) fn is_inactive_definition(err: &ProviderError) -> bool {
    matches!(err, ProviderError::Pod(PodRejection::Cloud { message, .. })
        if message.to_ascii_lowercase().contains("inactive"))
}

fn is_target_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    TARGET_MESSAGES.iter().any(|m| lower.contains(m))
}

/// `Retry-After`: delay seconds, or an HTTP date (a date in the past means now).
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_ecs_cannot_find_is_not_found_and_an_invalid_identifier_is_the_pods_error() {
        assert!(matches!(
            parts(
                400,
                "InvalidParameterException",
                "The referenced task was not found."
            ),
            ProviderError::Pod(PodRejection::NotFound { .. })
        ));
        assert!(matches!(
            parts(400, "InvalidParameterException", "Invalid identifier"),
            ProviderError::Pod(PodRejection::Cloud { .. })
        ));
    }

    fn parts(status: u16, code: &str, message: &str) -> ProviderError {
        classify_parts(
            "RunTask",
            Some(status),
            Some(code),
            Some(message),
            None,
            DateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn throttling_is_retryable_and_keeps_the_retry_after_seconds() {
        let err = classify_parts(
            "RunTask",
            Some(400),
            Some("ThrottlingException"),
            Some("Rate exceeded"),
            Some("3"),
            DateTime::UNIX_EPOCH,
        );
        assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert!(err.is_retryable());
    }

    #[test]
    fn a_429_without_a_code_is_throttling() {
        let err = classify_parts(
            "DescribeTasks",
            Some(429),
            None,
            None,
            None,
            DateTime::UNIX_EPOCH,
        );
        assert!(
            matches!(
                err,
                ProviderError::Throttled {
                    retry_after: None,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_retry_after_http_date_becomes_the_delay_until_then() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn server_errors_and_moto_500s_are_transient() {
        assert!(parts(500, "ServerException", "Service unavailable").is_retryable());
        assert!(
            classify_parts(
                "StopTask",
                Some(500),
                None,
                None,
                None,
                DateTime::UNIX_EPOCH
            )
            .is_retryable()
        );
        assert!(parts(503, "", "").is_retryable());
        // An answered 503 refused the call: retryable, and nothing is in doubt.
        let refused = parts(503, "ServiceUnavailableException", "Service Unavailable");
        assert!(
            matches!(refused, ProviderError::Unavailable { .. }),
            "{refused:?}"
        );
        assert!(refused.is_retryable() && !refused.outcome_unknown());
        assert!(parts(500, "ServerException", "boom").outcome_unknown());
    }

    #[test]
    fn missing_capacity_sends_the_pod_to_another_target() {
        let err = parts(
            400,
            "ClientException",
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        );
        assert!(
            matches!(&err, ProviderError::Target(TargetRejection::Capacity { code, .. }) if code == "ClientException"),
            "{err:?}"
        );
    }

    #[test]
    fn access_denied_and_limits_are_target_problems() {
        assert!(matches!(
            parts(400, "AccessDeniedException", "User is not authorized"),
            ProviderError::Target(TargetRejection::Auth { .. })
        ));
        assert!(matches!(
            parts(400, "LimitExceededException", "too many"),
            ProviderError::Target(TargetRejection::Quota { .. })
        ));
        assert!(matches!(
            parts(400, "ClusterNotFoundException", "Cluster not found."),
            ProviderError::Target(TargetRejection::Cloud { .. })
        ));
    }

    #[test]
    fn a_bad_task_definition_fails_the_pod_with_the_aws_message_verbatim() {
        let msg = "Invalid 'cpu' setting for task.";
        assert_eq!(
            parts(400, "ClientException", msg),
            ProviderError::cloud_pod("ClientException", msg)
        );
        let img = "Container.image should not be null or empty.";
        assert_eq!(
            parts(400, "InvalidParameterException", img),
            ProviderError::cloud_pod("InvalidParameterException", img)
        );
    }

    #[test]
    fn run_task_failures_about_eni_or_capacity_are_target_problems() {
        let eni = classify_failure(
            Some("RESOURCE:ENI"),
            None,
            Some("arn:aws:ecs:us-east-1:1:container-instance/x"),
        );
        assert!(
            matches!(&eni, ProviderError::Target(TargetRejection::Capacity { code, .. }) if code == "RESOURCE:ENI"),
            "{eni:?}"
        );
        let capacity = classify_failure(
            Some("Capacity is unavailable at this time. Please try again later."),
            None,
            None,
        );
        assert!(matches!(
            capacity,
            ProviderError::Target(TargetRejection::Capacity { .. })
        ));
    }

    #[test]
    fn other_run_task_failures_fail_the_pod_with_reason_and_detail() {
        let err = classify_failure(
            Some("Invalid image"),
            Some("repository does not exist"),
            None,
        );
        assert_eq!(
            err,
            ProviderError::cloud_pod("RunTaskFailure", "Invalid image: repository does not exist")
        );
    }
}
