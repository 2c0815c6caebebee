//! When to try a retryable call again: exponential backoff with jitter, never sooner than the
//! provider's `Retry-After`, and never past the call's deadline (pure).
//!
//! Past the deadline the caller stops retrying and treats the target as unable to serve now,
//! so the pod falls back to another target instead of waiting behind a throttled one.

use std::time::Duration;

/// Retry settings of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Backoff before the second attempt.
    pub first_backoff: Duration,
    /// Largest backoff between attempts.
    pub max_backoff: Duration,
    /// Attempts at most, the first included.
    pub max_attempts: u32,
    /// No attempt starts later than this after the first.
    pub deadline: Duration,
    /// One attempt's time limit; an attempt over it is a transient failure.
    pub call_timeout: Duration,
}

impl Default for Settings {
    /// Fall back within 30 s: 20 s of retries at most, 10 s per attempt.
    fn default() -> Self {
        Settings {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_attempts: 8,
            deadline: Duration::from_secs(20),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 1), given the provider's
/// `retry_after` and a `jitter` in `[0, 1)`: "equal jitter" exponential backoff (half fixed,
/// half random), raised to `retry_after` when the provider asked for longer.
pub fn backoff(
    settings: &Settings,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = settings
        .first_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(settings.max_backoff);
    let wait = base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
    match retry_after {
        // Saturating, here and below: a reply may say `Retry-After: 18446744073709551615`.
        Some(after) if after > wait => after.saturating_add(wait.mul_f64(0.1)),
        _ => wait,
    }
}

/// Whether another attempt may start `wait` from now, `elapsed` after the first one.
pub fn may_retry(settings: &Settings, attempt: u32, elapsed: Duration, wait: Duration) -> bool {
    attempt < settings.max_attempts && elapsed.saturating_add(wait) <= settings.deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap() {
        let s = Settings::default();
        let no_jitter: Vec<_> = (1..=7).map(|a| backoff(&s, a, None, 0.0)).collect();
        assert_eq!(no_jitter[0], Duration::from_millis(100));
        assert_eq!(no_jitter[1], Duration::from_millis(200));
        assert_eq!(no_jitter[2], Duration::from_millis(400));
        assert_eq!(no_jitter[6], Duration::from_millis(2500));
    }

    #[test]
    fn jitter_stays_within_the_exponential_step() {
        let s = Settings::default();
        for j in [0.0, 0.3, 0.999] {
            let w = backoff(&s, 3, None, j);
            assert!(
                w >= Duration::from_millis(400) && w < Duration::from_millis(800),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_retry_after_longer_than_the_backoff_is_honoured() {
        let s = Settings::default();
        assert!(backoff(&s, 1, Some(Duration::from_secs(3)), 0.5) >= Duration::from_secs(3));
    }

    #[test]
    fn a_retry_after_too_long_to_add_to_is_past_the_deadline_not_an_overflow() {
        let s = Settings::default();
        let longest = Duration::MAX - Duration::from_millis(1);
        assert_eq!(backoff(&s, 3, Some(longest), 0.5), Duration::MAX);
        let wait = backoff(&s, 3, Some(Duration::from_secs(u64::MAX)), 0.5);
        assert!(!may_retry(&s, 3, Duration::from_secs(1), wait));
    }

    #[test]
    fn no_retry_starts_past_the_deadline_or_the_attempt_limit() {
        let s = Settings::default();
        assert!(may_retry(
            &s,
            1,
            Duration::from_secs(1),
            Duration::from_secs(1)
        ));
        assert!(!may_retry(
            &s,
            1,
            Duration::from_secs(19),
            Duration::from_secs(2)
        ));
        assert!(!may_retry(&s, 8, Duration::ZERO, Duration::ZERO));
    }
}
