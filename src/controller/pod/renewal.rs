//! Service-account token renewal where a provider cannot update a running workload's files in
//! place (ACI): when a pod's earliest token is due (as a kubelet would renew it:
//! `identity::renew_at`), its references are resolved again (fresh TokenRequests) and the
//! provider updates the workload with them (`Provider::renew_files`: ACI PUTs the container
//! group again, which restarts its containers), with a Normal Event `TokenRenewed` saying so.
//!
//! When a pod is due is kept on the pod, in the annotation [`RENEW_AT`], so a gateway that
//! restarts still renews on time. Only tokens due within [`HORIZON`] of their workload's create
//! are tracked: the kubelet renews every token at most 24 h after it was issued, so what falls
//! beyond is the admission volume's token that 1.20+ apiservers extend to a year (renewed after
//! about a year by a kubelet), and pods without an explicit token projection get no extra write.
//!
//! A renewal that fails is tried again after a back-off ([`Retries`]: 30 s, doubling to 4 min,
//! so a token renewed at 80% of an hour still gets five more tries before it expires), with one
//! `TokenRenewalFailed` Warning per streak of failures: a provider that refuses updates is not
//! asked again at every status read, and the log gets one line per streak, not one per read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

use super::{Error, Outcome, PodController};
use crate::controller::events::{Event, EventReason};
use crate::provider::{Provider, ProviderError, WorkloadPhase, WorkloadSpec, WorkloadStatus};

/// Annotation: when the pod's service-account tokens are due for renewal (RFC 3339). Setting it
/// to a past time renews them at the next status read.
pub const RENEW_AT: &str = "burstgate.io/tokens-renew-at";

/// Tokens due later than this after their workload's create or renewal are not tracked.
const HORIZON: Duration = Duration::from_secs(48 * 3600);

/// The first wait after a failed renewal (a status read of a running ACI group comes every 30 s).
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait between two renewal attempts.
const RETRY_MAX: Duration = Duration::from_secs(240);

/// The wait after the `failures`-th failed renewal in a row: 30 s, doubling, at most 4 min.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// Per pod UID, the streak of failed renewals and when the next attempt may come (in memory: a
/// gateway that restarts tries at once, as it would anyway for a token due).
#[derive(Default)]
pub(super) struct Retries(Mutex<HashMap<String, (u32, Instant)>>);

impl Retries {
    /// Whether the pod with `uid` is still waiting out the back-off of a failed renewal.
    fn waiting(&self, uid: &str, now: Instant) -> bool {
        let retries = self.0.lock().expect("renewal retries lock");
        retries.get(uid).is_some_and(|(_, next)| now < *next)
    }

    /// Records a failed renewal of `uid` at `now`: how many failed in a row, and the wait.
    fn failed(&self, uid: &str, now: Instant) -> (u32, Duration) {
        let mut retries = self.0.lock().expect("renewal retries lock");
        let entry = retries.entry(uid.to_string()).or_insert((0, now));
        entry.0 += 1;
        let wait = retry_delay(entry.0);
        entry.1 = now + wait;
        (entry.0, wait)
    }

    /// Ends the streak of `uid` (renewed, or the pod is gone).
    pub(super) fn forget(&self, uid: &str) {
        self.0.lock().expect("renewal retries lock").remove(uid);
    }
}

/// The [`RENEW_AT`] value for tokens due at `renew_at`, seen at `now`; none when there is no
/// token or it is due beyond [`HORIZON`].
fn annotation(renew_at: Option<SystemTime>, now: SystemTime) -> Option<String> {
    renew_at
        .filter(|at| at.duration_since(now).map_or(true, |d| d <= HORIZON))
        .map(|at| DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Whether the tokens of `pod`, whose `workload` is running, are due at `now`.
pub(super) fn due(pod: &Pod, workload: &WorkloadStatus, now: SystemTime) -> bool {
    workload.phase == WorkloadPhase::Running
        && renew_at(pod.annotations()).is_some_and(|at| at <= now)
}

/// When the tokens of a pod with `annotations` are due, if it has any to renew.
pub fn renew_at(annotations: &std::collections::BTreeMap<String, String>) -> Option<SystemTime> {
    annotations
        .get(RENEW_AT)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(SystemTime::from)
}

impl PodController {
    /// Records on `pod` when the tokens of its workload, just created from `spec`, are due.
    pub(super) async fn note_renewal(&self, pod: &Pod, spec: &WorkloadSpec) {
        let Some(at) = annotation(spec.resolved.renew_tokens_at, SystemTime::now()) else {
            return;
        };
        if let Err(e) = self
            .patch_annotations(pod, json!({ RENEW_AT: at }), false)
            .await
        {
            tracing::warn!(pod = %pod.name_any(), error = %e, "could not record when the pod's service-account tokens are due; they will not be renewed");
        }
    }

    /// Renews the tokens of `pod` (due, its `workload` running) at `provider`, then records when
    /// the new ones are due; the status read's outcome stands. A renewal that fails is tried
    /// again after its back-off ([`Retries`]); a provider that renews nothing is not asked again.
    pub(super) async fn renew_tokens(
        &self,
        pod: &Pod,
        provider: &dyn Provider,
        workload: WorkloadStatus,
    ) -> Result<Outcome, Error> {
        let observed = Outcome::Observed { workload };
        let uid = pod.uid().unwrap_or_default();
        // The annotation written by a renewal a moment ago may not have reached the pod cache.
        if self.renewed.recent(&uid) || self.renewal_retries.waiting(&uid, Instant::now()) {
            return Ok(observed);
        }
        let spec = match self.prepare(pod).await? {
            Ok((spec, _)) => spec,
            // Not resolvable now (the service account is being re-created): the next read retries.
            Err(_) => return Ok(observed),
        };
        let next = match provider.renew_files(&spec).await {
            Ok(_) => {
                self.renewal_retries.forget(&uid);
                self.renewed.insert(uid);
                let note = format!(
                    "service-account tokens renewed before they expire; {} cannot update a running workload's files in place, so the workload was updated and its containers restarted",
                    provider.name()
                );
                self.publish(pod, Event::new(EventReason::TokenRenewed, note))
                    .await;
                annotation(spec.resolved.renew_tokens_at, SystemTime::now())
            }
            Err(ProviderError::NotSupported { .. }) => None,
            Err(e) => {
                let (failures, wait) = self.renewal_retries.failed(&uid, Instant::now());
                tracing::debug!(pod = %pod.name_any(), error = %e, failures, ?wait, "token renewal failed");
                if failures == 1 {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "token renewal failed; tried again after a back-off");
                    let note = format!(
                        "renewing the service-account tokens at {} failed ({e}); tried again in {} s, doubling to {} s, until it succeeds; the workload keeps its current tokens, which stop authenticating when they expire",
                        provider.name(),
                        wait.as_secs(),
                        RETRY_MAX.as_secs()
                    );
                    self.publish(pod, Event::new(EventReason::TokenRenewalFailed, note))
                        .await;
                }
                return Ok(observed);
            }
        };
        self.patch_annotations(pod, json!({ RENEW_AT: next }), false)
            .await?;
        Ok(observed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(renew_at: Option<&str>) -> Pod {
        let mut p = Pod::default();
        if let Some(at) = renew_at {
            p.annotations_mut().insert(RENEW_AT.into(), at.into());
        }
        p
    }

    fn workload(phase: WorkloadPhase) -> WorkloadStatus {
        WorkloadStatus {
            id: "bg-1".into(),
            phase,
            ip: None,
            started_at: None,
            containers: Vec::new(),
            init_containers: Vec::new(),
            events: Vec::new(),
            message: None,
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    #[test]
    fn failed_renewals_wait_30_s_doubling_to_4_minutes() {
        let waits: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 240, 240, 240]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn a_pod_waits_out_its_renewal_back_off_and_a_success_ends_the_streak() {
        let retries = Retries::default();
        let t0 = Instant::now();
        assert!(!retries.waiting("uid", t0), "no failure, no wait");
        assert_eq!(retries.failed("uid", t0), (1, Duration::from_secs(30)));
        assert!(retries.waiting("uid", t0 + Duration::from_secs(29)));
        assert!(!retries.waiting("uid", t0 + Duration::from_secs(30)));
        assert!(!retries.waiting("other", t0), "per pod");
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(retries.failed("uid", t1), (2, Duration::from_secs(60)));
        retries.forget("uid");
        assert!(!retries.waiting("uid", t1));
        assert_eq!(
            retries.failed("uid", t1),
            (1, Duration::from_secs(30)),
            "a new streak"
        );
    }

    #[test]
    fn a_running_pod_is_due_once_its_renewal_time_has_come_and_not_before() {
        let now = at("2026-12-06T10:00:00Z");
        let running = workload(WorkloadPhase::Running);
        assert!(due(&pod(Some("2026-12-06T10:00:00Z")), &running, now));
        assert!(due(&pod(Some("2026-12-06T09:00:00Z")), &running, now));
        assert!(!due(&pod(Some("2026-12-06T10:00:01Z")), &running, now));
        assert!(!due(&pod(None), &running, now));
        assert!(!due(&pod(Some("soon")), &running, now));
        // A workload that is not running has no files to renew.
        let pending = workload(WorkloadPhase::Pending);
        assert!(!due(&pod(Some("2026-12-06T09:00:00Z")), &pending, now));
    }

    #[test]
    fn only_tokens_due_within_two_days_are_tracked() {
        let now = at("2026-12-06T10:00:00Z");
        // A 600 s token is due at 80% of its life.
        assert_eq!(
            annotation(Some(now + Duration::from_secs(480)), now).as_deref(),
            Some("2026-12-06T10:08:00Z")
        );
        assert!(annotation(Some(now + HORIZON), now).is_some());
        // The admission volume's token, extended to a year by the apiserver: a kubelet renews
        // it after about a year, and no annotation is written for it.
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(annotation(Some(now + year), now), None);
        assert_eq!(annotation(None, now), None);
        // Already due (the pod waited): tracked, renewed at the next read.
        assert!(annotation(Some(now - Duration::from_secs(1)), now).is_some());
    }
}
