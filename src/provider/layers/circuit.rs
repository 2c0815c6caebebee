//! A circuit breaker per target: repeated target-level failures open it, the target is excluded
//! from decisions ("circuit open"), and after a cool-down one probe call decides whether it
//! closes again or stays open.
//!
//! Only target-level outcomes count (quota, capacity, region down, throttled past the deadline,
//! timeouts that exhausted their retries). A pod-level rejection (bad image) says nothing about
//! the target and never opens the circuit.

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
    /// Consecutive target-level failures that open the circuit.
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
    failures: u32,
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
            failures: 0,
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

    /// Records a call that the target served (any answer that is not target-level trouble).
    /// Returns the new state when it changed.
    pub fn success(&mut self, now: Instant) -> Option<State> {
        let before = self.state(now);
        self.failures = 0;
        self.probing = false;
        self.state = State::Closed;
        self.opened_at = None;
        (before != State::Closed).then_some(State::Closed)
    }

    /// Records a target-level failure. Returns the new state when it changed.
    pub fn failure(&mut self, now: Instant) -> Option<State> {
        let before = self.state(now);
        self.failures = self.failures.saturating_add(1);
        self.probing = false;
        let open = before == State::HalfOpen || self.failures >= self.settings.failures_to_open;
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

    fn breaker() -> Breaker {
        Breaker::new(Settings {
            failures_to_open: 3,
            cool_down: Duration::from_secs(10),
        })
    }

    #[test]
    fn three_target_failures_in_a_row_open_the_circuit() {
        let (mut b, now) = (breaker(), Instant::now());
        assert_eq!(b.failure(now), None);
        assert_eq!(b.failure(now), None);
        assert_eq!(b.failure(now), Some(State::Open));
        assert_eq!(b.admit(now), Admit::No);
    }

    #[test]
    fn a_success_between_failures_keeps_the_circuit_closed() {
        let (mut b, now) = (breaker(), Instant::now());
        b.failure(now);
        b.failure(now);
        b.success(now);
        assert_eq!(b.failure(now), None);
        assert_eq!(b.admit(now), Admit::Yes);
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_others_wait() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now);
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
            b.failure(now);
        });
        let later = now + Duration::from_secs(11);
        b.admit(later);
        assert_eq!(b.success(later), Some(State::Closed));
        assert_eq!(b.admit(later), Admit::Yes);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_another_cool_down() {
        let (mut b, now) = (breaker(), Instant::now());
        (0..3).for_each(|_| {
            b.failure(now);
        });
        let later = now + Duration::from_secs(11);
        b.admit(later);
        assert_eq!(b.failure(later), Some(State::Open));
        assert_eq!(b.reopens_at(), Some(later + Duration::from_secs(10)));
        assert_eq!(b.admit(later + Duration::from_secs(5)), Admit::No);
    }
}
