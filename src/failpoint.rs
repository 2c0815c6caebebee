//! Named fail points: the process aborts right after a named step of a pod's journey when the
//! environment variable `BURSTGATE_FAIL_AFTER` names it, so crash-safety tests can kill the
//! gateway exactly there (`tests/it/fail_points.rs`). Unset, a fail point costs one load.

use std::sync::OnceLock;

/// The environment variable naming the fail point to abort at.
pub const ENV: &str = "BURSTGATE_FAIL_AFTER";

/// A step after which the process can be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// The engine decided (and reserved) a target; nothing is written yet.
    Decided,
    /// The placement annotations were written; no provider call yet.
    Annotated,
    /// The provider accepted the create; the pod's status does not show it yet.
    ProviderAccepted,
    /// A pod's status was patched.
    StatusPatched,
    /// The provider accepted a delete; the pod object is not removed yet.
    DeleteCalled,
    /// Orphan GC listed a target's workloads; nothing collected yet.
    GcListed,
}

impl FailPoint {
    /// Every fail point, in the order of a pod's journey.
    pub const ALL: [FailPoint; 6] = [
        FailPoint::Decided,
        FailPoint::Annotated,
        FailPoint::ProviderAccepted,
        FailPoint::StatusPatched,
        FailPoint::DeleteCalled,
        FailPoint::GcListed,
    ];

    /// Its name in `BURSTGATE_FAIL_AFTER`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailPoint::Decided => "decided",
            FailPoint::Annotated => "annotated",
            FailPoint::ProviderAccepted => "provider-accepted",
            FailPoint::StatusPatched => "status-patched",
            FailPoint::DeleteCalled => "delete-called",
            FailPoint::GcListed => "gc-listed",
        }
    }

    /// The fail point named `name`.
    pub fn parse(name: &str) -> Option<FailPoint> {
        FailPoint::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

static ARMED: OnceLock<Option<FailPoint>> = OnceLock::new();

/// Reads `BURSTGATE_FAIL_AFTER` once, at start; an unknown name is an error naming the known
/// ones (a typo must not silently test nothing).
pub fn arm_from_env() -> Result<Option<FailPoint>, String> {
    let armed = match std::env::var(ENV) {
        Err(_) => None,
        Ok(name) => Some(FailPoint::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = FailPoint::ALL.iter().map(|p| p.as_str()).collect();
            format!(
                "{ENV}={name:?} names no fail point (known: {})",
                known.join(", ")
            )
        })?),
    };
    let _ = ARMED.set(armed);
    if let Some(point) = armed {
        tracing::warn!(
            fail_point = point.as_str(),
            "fail point armed: the process aborts after this step"
        );
    }
    Ok(armed)
}

/// Aborts the process (no shutdown path runs, as with SIGKILL) when `point` is armed.
pub fn after(point: FailPoint) {
    if ARMED.get().copied().flatten() == Some(point) {
        eprintln!("burstgate: fail point {} reached: aborting", point.as_str());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fail_point_is_found_by_its_name() {
        for p in FailPoint::ALL {
            assert_eq!(FailPoint::parse(p.as_str()), Some(p));
        }
        assert_eq!(FailPoint::parse("decide"), None);
    }

    #[test]
    fn an_unarmed_fail_point_lets_the_process_go_on() {
        after(FailPoint::Decided);
    }
}
