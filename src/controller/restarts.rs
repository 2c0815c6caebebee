//! Kubelet-like restarts of workloads whose provider does not restart containers itself (a
//! Fargate task stays stopped): which stops restart the pod ([`restarts`]) and the back-off
//! before the next run ([`Backoff`]: 10 s, doubling to 300 s, back to 10 s once a run lasted
//! 10 minutes), pure and on an injected clock.
//!
//! The back-off lives in the controller's memory, as the kubelet keeps it in its own: a gateway
//! restart starts it again at 10 s. The restart count does not: it is the provider's (a Fargate
//! task's `burstgate.io/restarts` tag), so it survives.

use std::time::{Duration, Instant};

use crate::controller::status::RestartPolicy;
use crate::provider::WorkloadPhase;

/// The first back-off (the kubelet's).
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off (the kubelet's).
pub const MAX: Duration = Duration::from_secs(300);
/// A run that lasted this long resets the back-off (the kubelet's).
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a workload that ended in `phase` is started again under `policy`: `Always` restarts
/// any stop, `OnFailure` a failure, `Never` none.
pub fn restarts(phase: &WorkloadPhase, policy: RestartPolicy) -> bool {
    match phase {
        WorkloadPhase::Succeeded => policy == RestartPolicy::Always,
        WorkloadPhase::Failed => policy != RestartPolicy::Never,
        _ => false,
    }
}

/// The back-off before restart number `step` + 1 of a crash streak: 10 s doubling, at most 300 s.
pub fn delay(step: u32) -> Duration {
    INITIAL
        .saturating_mul(1u32.checked_shl(step.min(16)).unwrap_or(u32::MAX))
        .min(MAX)
}

/// One pod's back-off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Restarts in the current crash streak.
    step: u32,
    /// When the current run was started by a restart (unknown for the first run).
    started: Option<Instant>,
    /// While waiting: when the next run may start, and how long the wait is.
    waiting: Option<(Instant, Duration)>,
}

/// Where a stopped workload stands in its back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The wait starts now (news: an Event), for this long.
    Started(Duration),
    /// Still waiting, for a wait of this length.
    Waiting(Duration),
    /// The wait is over: start the next run.
    Over,
}

impl Backoff {
    /// The current run was seen stopped at `now`: where its restart stands.
    pub fn stopped(&mut self, now: Instant) -> Wait {
        match self.waiting {
            Some((due, _)) if now >= due => Wait::Over,
            Some((_, delay)) => Wait::Waiting(delay),
            None => {
                let ran_long = self
                    .started
                    .is_some_and(|s| now.saturating_duration_since(s) >= RESET_AFTER);
                if ran_long {
                    self.step = 0;
                }
                let delay = delay(self.step);
                self.waiting = Some((now + delay, delay));
                Wait::Started(delay)
            }
        }
    }

    /// When the wait is over (the pod is due for a restart), while it waits.
    pub fn due_at(&self) -> Option<Instant> {
        self.waiting.map(|(due, _)| due)
    }

    /// The next run was started at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.step = self.step.saturating_add(1);
        self.started = Some(now);
        self.waiting = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_from_ten_seconds_and_stops_at_five_minutes() {
        let secs: Vec<u64> = (0..8).map(|s| delay(s).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn always_restarts_every_stop_on_failure_only_failures_and_never_none() {
        use RestartPolicy::*;
        let (ok, failed) = (WorkloadPhase::Succeeded, WorkloadPhase::Failed);
        assert!(restarts(&ok, Always) && restarts(&failed, Always));
        assert!(!restarts(&ok, OnFailure) && restarts(&failed, OnFailure));
        assert!(!restarts(&ok, Never) && !restarts(&failed, Never));
        assert!(!restarts(&WorkloadPhase::Running, Always));
    }

    #[test]
    fn a_crash_loop_waits_longer_each_time_and_only_once_per_stop_is_news() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.stopped(t0), Wait::Started(Duration::from_secs(10)));
        assert_eq!(
            b.stopped(t0 + Duration::from_secs(5)),
            Wait::Waiting(Duration::from_secs(10))
        );
        assert_eq!(b.due_at(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(b.stopped(t0 + Duration::from_secs(10)), Wait::Over);
        b.restarted(t0 + Duration::from_secs(11));
        assert_eq!(b.due_at(), None);
        // The second run crashes at once: 20 s.
        assert_eq!(
            b.stopped(t0 + Duration::from_secs(12)),
            Wait::Started(Duration::from_secs(20))
        );
    }

    #[test]
    fn a_run_of_ten_minutes_resets_the_back_off() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        for _ in 0..4 {
            let _ = b.stopped(t0);
            b.restarted(t0);
        }
        assert_eq!(
            b.clone().stopped(t0 + Duration::from_secs(60)),
            Wait::Started(Duration::from_secs(160))
        );
        assert_eq!(
            b.stopped(t0 + RESET_AFTER),
            Wait::Started(Duration::from_secs(10))
        );
    }
}
