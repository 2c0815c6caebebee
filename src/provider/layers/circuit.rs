//! A circuit breaker per target: repeated target-level failures open it, the target is excluded
//! from decisions ("circuit open"), and after a cool-down one probe call decides whether it
//! closes again or stays open.
//!
//! Only target-level outcomes count (quota, capacity, region down, throttled past the deadline,
//! timeouts that exhausted their retries). A pod-level rejection (bad image) says nothing about
//! the target and never opens the circuit. Failures are counted in a row per operation (Create,
//! Status, Stop, Delete ...): a read that works says nothing about creates (ACI answers reads
//! while a region refuses every create with 409 `ServiceUnavailable`), and a stop that works says
//! nothing about the delete after it, so neither hides the other's failures.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call may go; its result closes or re-opens the circuit.
    HalfOpen,
}

impl State {
    /// The value of the `burstgate_circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }

    /// A label for logs and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive target-level failures (of one operation) that open the circuit.
    pub failures_to_open: u32,
    /// How long it stays open before a probe is allowed.
    pub cool_down: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failures_to_open: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// One breaker (pure: the caller owns the clock and the lock).
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: Settings,
    state: State,
    /// Target-level failures in a row, per operation.
    failures: BTreeMap<&'static str, u32>,
    opened_at: Option<Instant>,
    probing: bool,
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Go ahead as the half-open probe.
    Probe,
    /// Refused: the circuit is open (or a probe is already out).
    No,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: Settings) -> Breaker {
        Breaker {
            settings,
            state: State::Closed,
            failures: BTreeMap::new(),
            opened_at: None,
            probing: false,
        }
    }

    /// The current state, after moving Open to HalfOpen when the cool-down has passed.
    pub fn state(&mut self, now: Instant) -> State {
        if self.state == State::Open
            && self
                .opened_at
                .is_some_and(|t| now.duration_since(t) >= self.settings.cool_down)
        {
            self.state = State::HalfOpen;
            self.probing = false;
        }
        self.state
    }

    /// When an open circuit will let a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        (self.state == State::Open)
            .then(|| self.opened_at.map(|t| t + self.settings.cool_down))
            .flatten()
    }

    /// Whether a call may go now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state(now) {
            State::Closed => Admit::Yes,
            State::Open => Admit::No,
            State::HalfOpen if self.probing => Admit::No,
            State::HalfOpen => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// Records a call of `operation` that the target served (any answer that is not target-level
    /// trouble): it ends that operation's run of failures and closes a half-open circuit. A call
    /// that went before the circuit opened and succeeds while it is open changes nothing: only
    /// the probe decides. Returns the new state when it changed.
    pub fn success(&mut self, now: Instant, operation: &'static str) -> Option<State> {
        let before = self.state(now);
        self.failures.remove(operation);
        match before {
            State::Open => return None,
            State::HalfOpen => self.failures.clear(),
            State::Closed => {}
        }
        self.probing = false;
        self.state = State::Closed;
        self.opened_at = None;
        (before != State::Closed).then_some(State::Closed)
    }

    /// Records a target-level failure of a call of `operation`. Returns the new state when it
    /// changed.
    pub fn failure(&mut self, now: Instant, operation: &'static str) -> Option<State> {
        let before = self.state(now);
        let failures = self.failures.entry(operation).or_default();
        *failures = failures.saturating_add(1);
        let failures = *failures;
        self.probing = false;
        let open = before == State::HalfOpen || failures >= self.settings.failures_to_open;
        if open {
            self.state = State::Open;
            self.opened_at = Some(now);
        }
        (open && before != State::Open).then_some(State::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "Create";

    fn breaker() -> Breaker {
        Breaker::new(Settings {
            failures_to_open: 3,
            cool_down: Duration::from_secs(10),
        })
    }

    #[test]
    fn three_target_failures_in_a_row_open_the_circuit() {
        let (mut b, now) = (breaker(), Instant::now());
        assert_eq!(b.failure(now, C), None);
        assert_eq!(b.failure(now, C), None);
        assert_eq!(b.failure(now, C), Some(State::Open));
        assert_eq!(b.admit(now), Admit::No);
    }

    #[test]
    fn a_success_between_failures_keeps_the_circuit_closed() {
        let (mut b, now) = (breaker(), Instant::now());
        b.failure(now, C);
        b.failure(now, C);
        b.success(now, C);
        assert_eq!(b.failure(now, C), None);
        assert_eq!(b.admit(now), Admit::Yes);
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_others_wait() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now, C);
        });
        let later = now + Duration::from_secs(10);
        assert_eq!(b.state(later), State::HalfOpen);
        assert_eq!(b.admit(later), Admit::Probe);
        assert_eq!(b.admit(later), Admit::No);
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now, C);
        });
        let later = now + Duration::from_secs(11);
        b.admit(later);
        assert_eq!(b.success(later, C), Some(State::Closed));
        assert_eq!(b.admit(later), Admit::Yes);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_another_cool_down() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now, C);
        });
        let later = now + Duration::from_secs(11);
        b.admit(later);
        assert_eq!(b.failure(later, C), Some(State::Open));
        assert_eq!(b.reopens_at(), Some(later + Duration::from_secs(10)));
        assert_eq!(b.admit(later + Duration::from_secs(5)), Admit::No);
    }

    #[test]
    fn a_late_success_while_open_leaves_the_circuit_open_until_the_probe() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now, C);
        });
        assert_eq!(b.success(now, "Status"), None);
        assert_eq!(b.admit(now), Admit::No);
    }

    #[test]
    fn reads_that_work_do_not_hide_creates_that_keep_failing() {
        let (mut b, now) = (breaker(), Instant::now());
        for _ in 0..2 {
            assert_eq!(b.failure(now, C), None);
            assert_eq!(b.success(now, "Status"), None);
        }
        assert_eq!(b.failure(now, C), Some(State::Open));
    }
}
