//! Where one step of a pod's journey ends up, as one value: an [`Outcome`] carries the pod's new
//! status, its Event, what happens to its reservation and when to look again. The functions that
//! choose it ([`decided`], [`created`], [`observed`]) are pure; `pod.rs` applies an outcome in
//! one place (`PodController::apply`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::controller::events::{Event, EventReason};
use crate::controller::placement;
use crate::controller::status::{self, RestartPolicy, WaitReason};
use crate::policy::model::OnNoTarget;
use crate::policy::{Decision, Outcome as Decided, Policy, explain};
use crate::provider::{ProviderError, TargetRejection, WorkloadPhase, WorkloadStatus};

/// The words of a pod whose workload vanished at its provider.
const LOST: &str = "the workload was deleted at its provider outside burstgate";

/// What to do with a workload that may exist on a target the pod leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdraw {
    /// Nothing: the target never started it.
    No,
    /// Delete it, and decide again only once the target confirmed the delete: a workload may
    /// run there (a create whose outcome is unknown, or one the target took and cannot run).
    /// Until the target answers, the pod stays on it ([`Outcome::InDoubt`]): starting it
    /// elsewhere first could run two copies at once.
    First,
}

/// What an outcome does to the pod's reservation in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// The reservation stays (or there is none).
    Kept,
    /// The reservation is released.
    Released,
    /// The reservation is released and pending pods are decided again at once.
    ReleasedForOthers,
}

/// Where one reconcile (or one status read) of a pod ended up.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pod is over (Succeeded or Failed): its room goes back.
    Over,
    /// The pod uses features no provider of this gateway supports: it fails.
    Unsupported {
        /// The features, as admission names them.
        features: Vec<String>,
    },
    /// No valid policy is loaded: the pod waits.
    NoPolicy,
    /// The pod's spec cannot be read: it fails.
    InvalidPod {
        /// Why.
        error: String,
    },
    /// The pod's `burstgate.io/*` annotations cannot be read: it fails.
    InvalidAnnotation {
        /// The decision's one-line explanation.
        summary: String,
    },
    /// The engine placed the pod (and reserved its room): record the placement, then create.
    Placed {
        /// The target's name.
        target: String,
        /// The placement annotations to write before any provider call.
        annotations: BTreeMap<String, String>,
        /// The decision's one-line explanation.
        summary: String,
        /// The pod's features the target's provider runs it without (empty: none).
        without: Vec<String>,
    },
    /// No target can take the pod now: it waits, and is decided again later.
    Waiting {
        /// The decision's one-line explanation.
        summary: String,
        /// Whether the explanation is news (an Event only then).
        announce: bool,
    },
    /// No target can take the pod and its rule says fail.
    NoTarget {
        /// The decision's one-line explanation.
        summary: String,
    },
    /// The pod is placed and its workload exists: look again in a while.
    Tracked,
    /// A Secret or ConfigMap the pod references is missing: it waits, as at a kubelet.
    Unresolved {
        /// Why.
        error: String,
        /// Whether waiting a little may help (then 15 s, else 60 s).
        retryable: bool,
    },
    /// The target's adapter is being built for a policy that just arrived: try again in a second.
    AdapterPending,
    /// The workload was created (or already existed).
    Created {
        /// What the provider reports.
        workload: WorkloadStatus,
    },
    /// The create failed transiently: try again.
    Retry {
        /// When.
        after: Duration,
        /// What failed.
        error: ProviderError,
    },
    /// The pod's workload may exist on its target (a create whose outcome is unknown) and the
    /// target could not confirm that it is gone: the pod stays there, and is tried again.
    InDoubt {
        /// The target.
        target: String,
        /// Why the pod left it, and why the delete did not go through.
        why: String,
    },
    /// The target of a pod that already ran cannot be reached: the pod stays there.
    Unreachable {
        /// The target.
        target: String,
        /// What the target said.
        rejection: TargetRejection,
    },
    /// A target refused the pod: its room goes back, the target is excluded for the pod, and it
    /// is decided again.
    Rejected {
        /// The target (`?` when the annotations do not name one).
        target: String,
        /// Why, in words (it becomes the engine's exclusion reason).
        why: String,
        /// The kind of rejection, for logs (`TargetRejection::metric_label`, or `unusable` /
        /// `incomplete` when the gateway itself cannot use the target).
        kind: &'static str,
        /// What to do with a workload that may be left there.
        withdraw: Withdraw,
    },
    /// The provider refused the pod itself: its room goes back and it fails.
    ProviderFailed {
        /// The provider's own code, or `NotSupported`.
        reason: EventReason,
        /// The provider's words.
        message: String,
    },
    /// A status read of the pod's workload.
    Observed {
        /// What the provider reports.
        workload: WorkloadStatus,
    },
    /// The workload stopped, its provider does not restart it (a Fargate task) and the pod's
    /// `restartPolicy` does: the pod stays Running while it waits out its back-off, then the
    /// controller starts the workload again.
    BackOff {
        /// What the provider reports (the stopped run).
        workload: WorkloadStatus,
        /// The back-off.
        delay: Duration,
        /// Whether the wait starts now (an Event only then).
        announce: bool,
        /// The pod as the kubelet names it in its Events: `name_namespace(uid)`.
        pod: String,
    },
    /// The workload vanished at its provider.
    Lost {
        /// Whether it is created again (`restartPolicy: Always`); otherwise the pod fails.
        recreate: bool,
    },
}

/// What the engine's `decision` means for the pod with `pod_uid`, whose status message is now
/// `current_message`.
/// `without(target)`: the pod's features that target's provider runs it without.
pub fn decided(
    policy: &Policy,
    decision: &Decision,
    pod_uid: &str,
    current_message: Option<&str>,
    without: impl Fn(&str) -> Vec<String>,
) -> Outcome {
    let summary = explain::summary(policy, decision);
    match &decision.outcome {
        Decided::Placed(p) => {
            let target = policy.target(p.target).name.clone();
            Outcome::Placed {
                without: without(&target),
                annotations: placement::annotations(policy, p, pod_uid),
                target,
                summary,
            }
        }
        Decided::NoTarget(OnNoTarget::Pending) => Outcome::Waiting {
            announce: current_message != Some(summary.as_str()),
            summary,
        },
        Decided::NoTarget(OnNoTarget::Fail) => Outcome::NoTarget { summary },
        Decided::InvalidAnnotation { .. } => Outcome::InvalidAnnotation { summary },
    }
}

/// What a create on `target` that answered `result` means. `ran_before`: the pod's status already
/// mirrors a workload (see `pod::mirrors_a_workload`). `in_doubt`: a workload of the pod may
/// exist on the target although no create there was confirmed (this call or an earlier one may
/// have landed, see [`ProviderError::outcome_unknown`]).
pub fn created(
    target: &str,
    result: Result<WorkloadStatus, ProviderError>,
    ran_before: bool,
    in_doubt: bool,
) -> Outcome {
    match result {
        Ok(workload) => Outcome::Created { workload },
        Err(error) if error.is_retryable() => Outcome::Retry {
            after: error.retry_after().unwrap_or(Duration::from_secs(5)),
            error,
        },
        // A workload ran for this pod (its status came from one) before this process started:
        // it most likely still runs on the target, billed. Starting a second one elsewhere
        // would run the app twice; wait for the target to answer.
        Err(ProviderError::Target(rejection)) if ran_before => Outcome::Unreachable {
            target: target.to_string(),
            rejection,
        },
        Err(ProviderError::Target(rejection)) => Outcome::Rejected {
            target: target.to_string(),
            why: rejection.to_string(),
            kind: rejection.metric_label(),
            // This attempt, an earlier one or a gateway that died may have started the workload.
            withdraw: if in_doubt {
                Withdraw::First
            } else {
                Withdraw::No
            },
        },
        Err(error) => Outcome::ProviderFailed {
            reason: match &error {
                ProviderError::Pod(rejection) => {
                    EventReason::PodRejected(rejection.reason().into())
                }
                _ => EventReason::NotSupported,
            },
            message: error.to_string(),
        },
    }
}

/// What one status read of a pod placed on `target` means: `workload` is what the provider
/// reported, `None` when it no longer knows the workload.
pub fn observed(
    target: &str,
    workload: Option<&WorkloadStatus>,
    restart: RestartPolicy,
) -> Outcome {
    match workload {
        // The target took the workload but cannot run it (a full cluster): take it back and
        // burst elsewhere, like a create-time target rejection.
        Some(ws) if let WorkloadPhase::Rejected(rejection) = &ws.phase => Outcome::Rejected {
            target: target.to_string(),
            why: rejection.to_string(),
            kind: rejection.metric_label(),
            withdraw: Withdraw::First,
        },
        Some(ws) => Outcome::Observed {
            workload: ws.clone(),
        },
        None => Outcome::Lost {
            recreate: restart == RestartPolicy::Always,
        },
    }
}

impl Outcome {
    /// The pod's status after this outcome; `None` leaves it as it is.
    pub fn status(&self, pod: &Pod, host_ip: &str, now: &Time) -> Option<PodStatus> {
        let failed =
            |reason: &str, message: &str| status::failed(pod, reason, message, host_ip, now);
        let waiting = |reason: WaitReason, message: &str| {
            status::waiting(pod, reason.as_str(), message, host_ip, now)
        };
        match self {
            Outcome::NoPolicy => Some(waiting(
                WaitReason::NoPolicy,
                "no valid burst policy is loaded",
            )),
            Outcome::Waiting { summary, .. } => Some(waiting(WaitReason::BurstPending, summary)),
            // A workload just created and still starting is first written by the status read
            // that follows (2 s later): one that started by then is written Running at once, one
            // status write instead of two, on the writes that bound a burst's placement rate.
            Outcome::Created { workload }
                if workload.phase == WorkloadPhase::Pending && !status::node_wrote(pod) =>
            {
                None
            }
            Outcome::Created { workload } | Outcome::Observed { workload } => {
                Some(status::from_workload(pod, workload, host_ip, now))
            }
            Outcome::BackOff {
                workload, delay, ..
            } => Some(status::backing_off(pod, workload, *delay, host_ip, now)),
            Outcome::Lost { recreate: true } => None,
            _ => {
                let event = self.event()?;
                (self.fails()).then(|| failed(event.reason.as_str(), &event.note))
            }
        }
    }

    /// Whether the pod fails: its status says why with the reason and words of its Event.
    fn fails(&self) -> bool {
        matches!(
            self,
            Outcome::Unsupported { .. }
                | Outcome::InvalidPod { .. }
                | Outcome::InvalidAnnotation { .. }
                | Outcome::NoTarget { .. }
                | Outcome::ProviderFailed { .. }
                | Outcome::Lost { recreate: false }
        )
    }

    /// The Event this outcome deserves on the pod.
    pub fn event(&self) -> Option<Event> {
        let (reason, note) = match self {
            Outcome::Unsupported { features } => (
                EventReason::Unsupported,
                format!(
                    "no provider of this gateway supports: {}",
                    features.join(", ")
                ),
            ),
            Outcome::InvalidPod { error } => (EventReason::InvalidPod, error.clone()),
            Outcome::InvalidAnnotation { summary } => {
                (EventReason::InvalidAnnotation, summary.clone())
            }
            Outcome::Placed {
                summary, without, ..
            } if without.is_empty() => (EventReason::Placed, summary.clone()),
            Outcome::Placed {
                summary,
                without,
                target,
                ..
            } => (
                EventReason::PlacedWithout,
                format!(
                    "{summary}; {target} runs it without: {} (docs/providers.md, pod features)",
                    without.join(", ")
                ),
            ),
            Outcome::Waiting {
                summary,
                announce: true,
            }
            | Outcome::NoTarget { summary } => (EventReason::NoTarget, summary.clone()),
            Outcome::Unresolved { error, .. } => {
                (EventReason::CreateContainerConfigError, error.clone())
            }
            Outcome::InDoubt { target, why } => (
                EventReason::WorkloadInDoubt,
                format!(
                    "target {target} may have started the pod's workload and cannot confirm it is gone ({why}); keeping the pod there until it answers, so it never runs twice"
                ),
            ),
            Outcome::Unreachable { target, rejection } => (
                EventReason::TargetUnreachable,
                format!(
                    "target {target} cannot confirm the pod's workload ({rejection}); keeping the pod there until it answers"
                ),
            ),
            Outcome::Rejected { target, why, .. } => (
                EventReason::ProviderRejected,
                format!("target {target} rejected the pod ({why}); deciding again without it"),
            ),
            Outcome::ProviderFailed { reason, message } => (reason.clone(), message.clone()),
            Outcome::Lost { recreate: true } => (
                EventReason::WorkloadLost,
                format!("{LOST}; creating it again"),
            ),
            Outcome::Lost { recreate: false } => (EventReason::WorkloadLost, LOST.to_string()),
            Outcome::BackOff {
                workload,
                announce: true,
                pod,
                ..
            } => (
                EventReason::BackOff,
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    workload
                        .containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    pod
                ),
            ),
            Outcome::Over
            | Outcome::NoPolicy
            | Outcome::Waiting {
                announce: false, ..
            }
            | Outcome::Tracked
            | Outcome::AdapterPending
            | Outcome::Created { .. }
            | Outcome::Retry { .. }
            | Outcome::Observed { .. }
            | Outcome::BackOff {
                announce: false, ..
            } => return None,
        };
        Some(Event::new(reason, note))
    }

    /// What happens to the pod's reservation.
    pub fn room(&self) -> Room {
        match self {
            Outcome::Over
            | Outcome::Rejected { .. }
            | Outcome::ProviderFailed { .. }
            | Outcome::Lost { recreate: false } => Room::Released,
            Outcome::Observed { workload }
                if matches!(
                    workload.phase,
                    WorkloadPhase::Succeeded | WorkloadPhase::Failed
                ) =>
            {
                Room::ReleasedForOthers
            }
            _ => Room::Kept,
        }
    }

    /// The placement annotations to write (`Placed`) or clear (`Rejected`), as a merge patch.
    pub fn annotations(&self) -> Option<serde_json::Value> {
        match self {
            Outcome::Placed { annotations, .. } => Some(serde_json::json!(annotations)),
            Outcome::Rejected { .. } => Some(serde_json::Value::Object(
                placement::ALL
                    .iter()
                    .map(|k| (k.to_string(), serde_json::Value::Null))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// Whether pending pods are decided again once this outcome is recorded (the pod itself, when
    /// a target refused it: its cleared annotations trigger that too).
    pub fn redecides(&self) -> bool {
        matches!(self, Outcome::Rejected { .. })
    }

    /// Says in the log what happened to `pod`, where an operator wants to know.
    pub fn log(&self, pod: &Pod) {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match self {
            Outcome::Placed { target, .. } => {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
                tracing::info!(pod = %name, %namespace, %target, "placed");
            }
            Outcome::Retry { error, .. } => {
                tracing::info!(pod = %name, %error, "create throttled; retrying");
            }
            Outcome::InDoubt { target, why } => {
                tracing::warn!(pod = %name, %target, %why, "the pod's workload may exist on its target, which cannot confirm it is gone; keeping the pod there");
            }
            Outcome::Unreachable { target, rejection } => {
                tracing::warn!(pod = %name, %target, %rejection, kind = rejection.metric_label(), "the target of a pod that already ran cannot be reached; keeping the pod there");
            }
            Outcome::Rejected {
                target, why, kind, ..
            } => {
                tracing::info!(pod = %name, %target, kind, %why, "the target rejected the pod; deciding again without it");
            }
            _ => {}
        }
    }

    /// When to reconcile the pod again; `None` waits for a change of the pod.
    pub fn requeue_after(&self) -> Option<Duration> {
        let secs = match self {
            Outcome::NoPolicy => 10,
            Outcome::Waiting { .. } => 60,
            Outcome::Tracked | Outcome::Created { .. } | Outcome::BackOff { .. } => 300,
            Outcome::Unresolved { retryable, .. } => {
                if *retryable {
                    15
                } else {
                    60
                }
            }
            Outcome::AdapterPending => 1,
            Outcome::Retry { after, .. } => return Some(*after),
            Outcome::Unreachable { .. } => 30,
            Outcome::InDoubt { .. } => 10,
            _ => return None,
        };
        Some(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Ledger, PodView, load_files};
    use crate::provider::{ContainerState, ContainerStatus, GaveUpCause, PodRejection};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "nginx",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
        }))
        .unwrap()
    }

    fn policy(no_target: &str, vcpu: u32) -> Policy {
        let yaml = format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {{name: sim-a, provider: sim, region: r, pricing: {{vcpuHour: 0.04}}, quota: {{vcpu: {vcpu}}}}}\n  rules:\n    - {{name: all, match: {{}}, onNoTarget: {no_target}}}\n"
        );
        load_files(&[("p.yaml".into(), yaml)]).unwrap()
    }

    fn decide(policy: &Policy, current_message: Option<&str>) -> Outcome {
        let view = PodView::from_pod(&pod()).unwrap();
        let decision = Ledger::default().place(policy, &view, &[]);
        decided(policy, &decision, "u1", current_message, |_| Vec::new())
    }

    fn workload(phase: WorkloadPhase) -> WorkloadStatus {
        WorkloadStatus {
            id: "bg-u1".into(),
            phase,
            ip: None,
            started_at: None,
            containers: vec![ContainerStatus {
                name: "app".into(),
                state: ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
                restart_count: 0,
                ready: false,
                last_state: None,
            }],
            init_containers: Vec::new(),
            events: Vec::new(),
            message: None,
        }
    }

    fn gave_up() -> TargetRejection {
        TargetRejection::GaveUp {
            cause: GaveUpCause::Unavailable,
            api: "RunTask",
            target: "fargate".into(),
            attempts: 3,
            elapsed: Duration::from_secs(20),
            last: "503".into(),
        }
    }

    fn quota() -> TargetRejection {
        TargetRejection::Quota {
            code: "ContainerGroupQuotaReached".into(),
            message: "full".into(),
        }
    }

    fn now() -> Time {
        Time("2026-11-27T05:00:00Z".parse().unwrap())
    }

    #[test]
    fn a_back_off_keeps_the_room_announces_itself_once_and_keeps_the_pod_running() {
        let backing_off = |announce| Outcome::BackOff {
            workload: workload(WorkloadPhase::Succeeded),
            delay: Duration::from_secs(10),
            announce,
            pod: "p_d(u1)".into(),
        };
        let first = backing_off(true);
        let event = first.event().unwrap();
        assert_eq!(event.reason, EventReason::BackOff);
        assert_eq!(
            event.note,
            "Back-off restarting failed container app in pod p_d(u1)"
        );
        assert_eq!(event.type_(), kube::runtime::events::EventType::Warning);
        assert_eq!(backing_off(false).event(), None);
        assert_eq!(first.room(), Room::Kept);
        let status = first.status(&pod(), "h", &now()).unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_placed_pod_records_its_target_and_announces_it() {
        let outcome = decide(&policy("pending", 10), None);
        let Outcome::Placed {
            target,
            annotations,
            ..
        } = &outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(target, "sim-a");
        assert_eq!(annotations[placement::RESOURCE_ID], "bg-u1");
        assert_eq!(outcome.event().map(|e| e.reason), Some(EventReason::Placed));
        assert_eq!(outcome.status(&pod(), "h", &now()), None);
        assert_eq!(outcome.room(), Room::Kept);
        assert_eq!(outcome.requeue_after(), None);
    }

    #[test]
    fn a_pod_placed_where_a_feature_is_left_out_gets_a_warning_naming_it() {
        let policy = policy("pending", 10);
        let view = PodView::from_pod(&pod()).unwrap();
        let decision = Ledger::default().place(&policy, &view, &[]);
        let outcome = decided(&policy, &decision, "u1", None, |target| {
            vec![format!(
                "automatic service-account token kube-api-access-x on {target}"
            )]
        });
        let event = outcome.event().unwrap();
        assert_eq!(event.reason, EventReason::PlacedWithout);
        assert!(
            event
                .note
                .ends_with("sim-a runs it without: automatic service-account token kube-api-access-x on sim-a (docs/providers.md, pod features)"),
            "{}",
            event.note
        );
    }

    #[test]
    fn a_pod_without_a_target_waits_and_announces_only_a_new_explanation() {
        let first = decide(&policy("pending", 0), None);
        let Outcome::Waiting { summary, announce } = &first else {
            panic!("{first:?}")
        };
        assert!(announce);
        assert_eq!(first.event().map(|e| e.reason), Some(EventReason::NoTarget));
        let status = first.status(&pod(), "h", &now()).unwrap();
        assert_eq!(
            (status.phase.as_deref(), status.reason.as_deref()),
            (Some("Pending"), Some(WaitReason::BurstPending.as_str()))
        );
        assert_eq!(first.requeue_after(), Some(Duration::from_secs(60)));

        let again = decide(&policy("pending", 0), Some(summary));
        assert_eq!(
            again,
            Outcome::Waiting {
                summary: summary.clone(),
                announce: false
            }
        );
        assert_eq!(again.event(), None);
    }

    #[test]
    fn a_pod_whose_rule_says_fail_fails_with_no_target() {
        let outcome = decide(&policy("fail", 0), None);
        assert!(matches!(outcome, Outcome::NoTarget { .. }), "{outcome:?}");
        let status = outcome.status(&pod(), "h", &now()).unwrap();
        assert_eq!(
            (status.phase.as_deref(), status.reason.as_deref()),
            (Some("Failed"), Some("NoTarget"))
        );
        assert_eq!(status.message, outcome.event().map(|e| e.note));
    }

    #[test]
    fn a_pod_refused_as_unsupported_fails_and_says_which_features() {
        let outcome = Outcome::Unsupported {
            features: vec!["hostNetwork".into(), "privileged".into()],
        };
        let event = outcome.event().unwrap();
        assert_eq!(event.reason, EventReason::Unsupported);
        assert_eq!(
            event.note,
            "no provider of this gateway supports: hostNetwork, privileged"
        );
        let status = outcome.status(&pod(), "h", &now()).unwrap();
        assert_eq!(
            (status.phase.as_deref(), status.reason.as_deref()),
            (Some("Failed"), Some("Unsupported"))
        );
        assert_eq!(outcome.requeue_after(), None);
    }

    #[test]
    fn without_a_policy_a_pod_waits_quietly_and_asks_again_in_ten_seconds() {
        let outcome = Outcome::NoPolicy;
        assert_eq!(outcome.event(), None);
        let status = outcome.status(&pod(), "h", &now()).unwrap();
        assert_eq!(status.reason.as_deref(), Some("NoPolicy"));
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_created_workload_is_mirrored_and_checked_again_in_five_minutes() {
        let outcome = created("sim-a", Ok(workload(WorkloadPhase::Running)), false, false);
        assert!(matches!(outcome, Outcome::Created { .. }));
        assert_eq!(outcome.event(), None);
        assert_eq!(
            outcome.status(&pod(), "h", &now()).and_then(|s| s.phase),
            Some("Running".into())
        );
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_workload_still_starting_is_first_written_by_the_read_that_follows_its_create() {
        let starting = created("sim-a", Ok(workload(WorkloadPhase::Pending)), false, false);
        assert_eq!(starting.status(&pod(), "h", &now()), None);
        // A pod that shows a status of ours (waiting for a target, or its workload created again)
        // is written at once.
        let mut shown = pod();
        shown.status = Some(status::from_workload(
            &shown,
            &workload(WorkloadPhase::Running),
            "h",
            &now(),
        ));
        assert_eq!(
            starting.status(&shown, "h", &now()).and_then(|s| s.phase),
            Some("Pending".into())
        );
    }

    #[test]
    fn a_throttled_create_is_retried_no_sooner_than_the_provider_asked() {
        let throttled = ProviderError::Throttled {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        let outcome = created("aci", Err(throttled), false, false);
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(7)));
        let transient = ProviderError::Transient {
            message: "503".into(),
            retry_after: None,
        };
        let outcome = created("aci", Err(transient), true, false);
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(5)));
        assert_eq!((outcome.event(), outcome.room()), (None, Room::Kept));
    }

    #[test]
    fn a_target_rejection_releases_the_room_clears_the_placement_and_decides_again() {
        let outcome = created("aci", Err(ProviderError::Target(quota())), false, false);
        assert!(
            matches!(&outcome, Outcome::Rejected { withdraw: Withdraw::No, target, kind: "quota", .. } if target == "aci"),
            "{outcome:?}"
        );
        assert_eq!(outcome.room(), Room::Released);
        assert!(outcome.redecides());
        let cleared = outcome.annotations().unwrap();
        for key in placement::ALL {
            assert_eq!(cleared[key], serde_json::Value::Null, "{key}");
        }
        let event = outcome.event().unwrap();
        assert_eq!(event.reason, EventReason::ProviderRejected);
        assert!(event.note.starts_with("target aci rejected the pod ("));
        assert!(event.note.ends_with("); deciding again without it"));
        assert_eq!(outcome.status(&pod(), "h", &now()), None);
        assert_eq!(outcome.requeue_after(), None);
    }

    #[test]
    fn a_rejection_when_a_workload_may_exist_withdraws_it_before_deciding_again() {
        for rejection in [
            gave_up(),
            TargetRejection::CircuitOpen {
                target: "fargate".into(),
            },
            quota(),
        ] {
            let outcome = created(
                "fargate",
                Err(ProviderError::Target(rejection)),
                false,
                true,
            );
            assert!(
                matches!(
                    outcome,
                    Outcome::Rejected {
                        withdraw: Withdraw::First,
                        ..
                    }
                ),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_rejection_when_no_workload_can_exist_decides_again_at_once() {
        let open = TargetRejection::CircuitOpen {
            target: "fargate".into(),
        };
        let outcome = created("fargate", Err(ProviderError::Target(open)), false, false);
        assert!(
            matches!(
                outcome,
                Outcome::Rejected {
                    withdraw: Withdraw::No,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_pod_in_doubt_stays_on_its_target_says_why_and_is_tried_again_in_ten_seconds() {
        let outcome = Outcome::InDoubt {
            target: "aci".into(),
            why: "Unavailable".into(),
        };
        let event = outcome.event().unwrap();
        assert_eq!(event.reason, EventReason::WorkloadInDoubt);
        assert!(
            event
                .note
                .starts_with("target aci may have started the pod's workload")
        );
        assert_eq!(outcome.room(), Room::Kept);
        assert_eq!(outcome.annotations(), None, "the placement stays");
        assert!(!outcome.redecides());
        assert_eq!(outcome.status(&pod(), "h", &now()), None);
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn an_unreachable_target_keeps_a_pod_that_already_ran_and_looks_again_in_thirty_seconds() {
        let outcome = created(
            "fargate",
            Err(ProviderError::Target(gave_up())),
            true,
            false,
        );
        assert!(
            matches!(outcome, Outcome::Unreachable { .. }),
            "{outcome:?}"
        );
        let event = outcome.event().unwrap();
        assert_eq!(event.reason, EventReason::TargetUnreachable);
        assert!(
            event
                .note
                .ends_with("keeping the pod there until it answers")
        );
        assert_eq!(outcome.room(), Room::Kept);
        assert_eq!(outcome.annotations(), None);
        assert_eq!(outcome.requeue_after(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_pod_level_rejection_fails_the_pod_under_the_providers_own_code() {
        let error = ProviderError::Pod(PodRejection::Cloud {
            code: "InaccessibleImage".into(),
            message: "cannot pull nginx:nope".into(),
        });
        let outcome = created("aci", Err(error.clone()), false, false);
        let event = outcome.event().unwrap();
        assert_eq!(
            event,
            Event::new(
                EventReason::PodRejected("InaccessibleImage".into()),
                error.to_string()
            )
        );
        let status = outcome.status(&pod(), "h", &now()).unwrap();
        assert_eq!(
            (status.phase.as_deref(), status.reason.as_deref()),
            (Some("Failed"), Some("InaccessibleImage"))
        );
        assert_eq!(status.message, Some(error.to_string()));
        assert_eq!(outcome.room(), Room::Released);
    }

    #[test]
    fn a_provider_that_cannot_do_it_at_all_fails_the_pod_as_not_supported() {
        let error = ProviderError::NotSupported {
            provider: "sim".into(),
            what: "create".into(),
        };
        let outcome = created("sim-a", Err(error), false, false);
        assert_eq!(
            outcome.event().map(|e| e.reason),
            Some(EventReason::NotSupported)
        );
    }

    #[test]
    fn a_workload_the_target_cannot_run_is_taken_back_before_deciding_again() {
        let full = WorkloadPhase::Rejected(TargetRejection::Unschedulable {
            message: "0/3 nodes are available".into(),
        });
        let outcome = observed("cluster", Some(&workload(full)), RestartPolicy::Never);
        assert!(matches!(
            outcome,
            Outcome::Rejected {
                withdraw: Withdraw::First,
                ..
            }
        ));
        assert_eq!(outcome.room(), Room::Released);
    }

    #[test]
    fn a_finished_workload_gives_its_room_to_pending_pods_at_once() {
        for (phase, room) in [
            (WorkloadPhase::Running, Room::Kept),
            (WorkloadPhase::Succeeded, Room::ReleasedForOthers),
            (WorkloadPhase::Failed, Room::ReleasedForOthers),
        ] {
            let outcome = observed(
                "sim-a",
                Some(&workload(phase.clone())),
                RestartPolicy::Always,
            );
            assert_eq!(outcome.room(), room, "{phase:?}");
            assert_eq!(outcome.event(), None);
            assert!(outcome.status(&pod(), "h", &now()).is_some());
        }
    }

    #[test]
    fn a_lost_workload_is_created_again_when_the_pod_restarts_always() {
        let outcome = observed("sim-a", None, RestartPolicy::Always);
        assert_eq!(outcome, Outcome::Lost { recreate: true });
        assert_eq!(
            outcome.event(),
            Some(Event::new(
                EventReason::WorkloadLost,
                "the workload was deleted at its provider outside burstgate; creating it again"
            ))
        );
        assert_eq!(outcome.status(&pod(), "h", &now()), None);
        assert_eq!(outcome.room(), Room::Kept);
    }

    #[test]
    fn a_lost_workload_fails_a_pod_that_does_not_restart_always() {
        for restart in [RestartPolicy::OnFailure, RestartPolicy::Never] {
            let outcome = observed("sim-a", None, restart);
            assert_eq!(outcome, Outcome::Lost { recreate: false });
            let status = outcome.status(&pod(), "h", &now()).unwrap();
            assert_eq!(
                (status.phase.as_deref(), status.reason.as_deref()),
                (Some("Failed"), Some("WorkloadLost"))
            );
            assert_eq!(
                status.message.as_deref(),
                Some("the workload was deleted at its provider outside burstgate")
            );
            assert_eq!(outcome.room(), Room::Released);
        }
    }

    #[test]
    fn a_missing_reference_waits_longer_when_it_cannot_fix_itself() {
        let retryable = Outcome::Unresolved {
            error: "secret s not found".into(),
            retryable: true,
        };
        assert_eq!(retryable.requeue_after(), Some(Duration::from_secs(15)));
        let permanent = Outcome::Unresolved {
            error: "key k not in secret s".into(),
            retryable: false,
        };
        assert_eq!(permanent.requeue_after(), Some(Duration::from_secs(60)));
        assert_eq!(
            permanent.event().map(|e| e.reason),
            Some(EventReason::CreateContainerConfigError)
        );
        assert_eq!(permanent.status(&pod(), "h", &now()), None);
    }

    #[test]
    fn a_pod_that_is_over_gives_its_room_back_and_waits_for_nothing() {
        assert_eq!(Outcome::Over.room(), Room::Released);
        assert_eq!(Outcome::Over.requeue_after(), None);
        assert_eq!(Outcome::Over.event(), None);
    }
}
