//! The Kubernetes Events the gateway publishes, as values: an [`EventReason`] per kind of news
//! (pods, the node, the policy, target circuits) and the [`Event`] that carries one with its note.
//! Whether an Event is `Normal` or `Warning` follows from its reason, so no call site picks it.

use kube::runtime::events::EventType;

/// Why an Event is published: its `reason`, as `kubectl describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventReason {
    /// A pod was placed on a target (the note is the decision's one-line explanation). Normal.
    Placed,
    /// A pod was placed on a target that runs it without a feature it uses (the automatic
    /// service-account token on Fargate); the note names what is left out.
    PlacedWithout,
    /// No target can take a pod now (it waits) or ever (it fails).
    NoTarget,
    /// A pod uses a feature no provider of this gateway supports.
    Unsupported,
    /// A pod's spec cannot be read (an unparsable quantity).
    InvalidPod,
    /// A pod's `burstgate.io/*` annotations cannot be read.
    InvalidAnnotation,
    /// A target refused a pod; it is decided again without that target.
    ProviderRejected,
    /// The target of a pod that already ran cannot confirm its workload; the pod stays there.
    TargetUnreachable,
    /// A pod's workload may exist on its target (its create's outcome is unknown) and the target
    /// cannot confirm it is gone; the pod stays there rather than run twice.
    WorkloadInDoubt,
    /// A pod's workload was deleted at its provider behind the gateway's back.
    WorkloadLost,
    /// A pod's workload stopped and waits out its back-off before it is started again (as a
    /// kubelet says it).
    BackOff,
    /// A pod's service-account tokens were renewed by updating its workload, which restarted
    /// its containers (ACI cannot update a running group's files in place). Normal.
    TokenRenewed,
    /// Renewing a pod's service-account tokens failed; it is tried again after a back-off (one
    /// Event per streak of failures).
    TokenRenewalFailed,
    /// A Secret or ConfigMap the pod references is missing (as a kubelet says it).
    CreateContainerConfigError,
    /// A provider refused the pod itself, under its own code ([`PodRejection::reason`]:
    /// `InaccessibleImage`, `InvalidSpec`...).
    ///
    /// [`PodRejection::reason`]: crate::provider::PodRejection::reason
    PodRejected(String),
    /// The provider cannot do what the pod asks at all.
    NotSupported,
    /// The node became Ready. Normal.
    NodeReady,
    /// The node is not Ready: no valid policy has loaded.
    NoPolicy,
    /// The node is not Ready: no target of the policy can take pods.
    NoUsableTarget,
    /// A target's circuit opened; it is excluded from decisions.
    CircuitOpen,
    /// A target's circuit lets a probe through; it is offered again. Normal.
    CircuitProbing,
    /// A new policy serves. Normal.
    PolicyLoaded,
    /// Policy files were rejected; the last good policy keeps serving.
    PolicyInvalid,
}

impl EventReason {
    /// The reason as Kubernetes shows it.
    pub fn as_str(&self) -> &str {
        match self {
            EventReason::Placed => "Placed",
            EventReason::PlacedWithout => "PlacedWithout",
            EventReason::NoTarget => "NoTarget",
            EventReason::Unsupported => "Unsupported",
            EventReason::InvalidPod => "InvalidPod",
            EventReason::InvalidAnnotation => "InvalidAnnotation",
            EventReason::ProviderRejected => "ProviderRejected",
            EventReason::TargetUnreachable => "TargetUnreachable",
            EventReason::WorkloadInDoubt => "WorkloadInDoubt",
            EventReason::WorkloadLost => "WorkloadLost",
            EventReason::BackOff => "BackOff",
            EventReason::TokenRenewed => "TokenRenewed",
            EventReason::TokenRenewalFailed => "TokenRenewalFailed",
            EventReason::CreateContainerConfigError => "CreateContainerConfigError",
            EventReason::PodRejected(code) => code,
            EventReason::NotSupported => "NotSupported",
            EventReason::NodeReady => "NodeReady",
            EventReason::NoPolicy => "NoPolicy",
            EventReason::NoUsableTarget => "NoUsableTarget",
            EventReason::CircuitOpen => "CircuitOpen",
            EventReason::CircuitProbing => "CircuitProbing",
            EventReason::PolicyLoaded => "PolicyLoaded",
            EventReason::PolicyInvalid => "PolicyInvalid",
        }
    }

    /// `Normal` for good news, `Warning` for everything someone may have to act on.
    pub fn type_(&self) -> EventType {
        match self {
            EventReason::Placed
            | EventReason::TokenRenewed
            | EventReason::NodeReady
            | EventReason::CircuitProbing
            | EventReason::PolicyLoaded => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Event to publish: its reason and its note (a sentence for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Why.
    pub reason: EventReason,
    /// What happened, in words; cut to what an Event holds when published.
    pub note: String,
}

impl Event {
    /// An Event with `reason` and `note`.
    pub fn new(reason: EventReason, note: impl Into<String>) -> Event {
        Event {
            reason,
            note: note.into(),
        }
    }

    /// `Normal` or `Warning`, by its reason.
    pub fn type_(&self) -> EventType {
        self.reason.type_()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_good_news_is_a_normal_event() {
        for normal in [
            EventReason::Placed,
            EventReason::NodeReady,
            EventReason::CircuitProbing,
            EventReason::PolicyLoaded,
        ] {
            assert_eq!(normal.type_(), EventType::Normal, "{normal}");
        }
        for warning in [
            EventReason::NoTarget,
            EventReason::ProviderRejected,
            EventReason::PodRejected("InaccessibleImage".into()),
            EventReason::CircuitOpen,
            EventReason::PolicyInvalid,
        ] {
            assert_eq!(warning.type_(), EventType::Warning, "{warning}");
        }
    }

    #[test]
    fn a_provider_rejection_is_published_under_the_providers_own_code() {
        assert_eq!(
            EventReason::PodRejected("InaccessibleImage".into()).as_str(),
            "InaccessibleImage"
        );
    }
}
