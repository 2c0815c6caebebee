//! How often a Running workload's status is read: every adapter's floor (10 s on Fargate and
//! the simulator, 29.5 s on ACI), or slower once the target holds so many workloads that the
//! floor would spend more than [`READ_SHARE`] of its read bucket on status.
//!
//! At 100,000 Fargate tasks a 10 s cadence is 100 DescribeTasks a second, five times the
//! published 20/s: the bucket would queue every other read (logs, lists, orphan GC) behind the
//! status sync. Pure: the caller gives the count and the bucket's rate.

use std::time::Duration;

/// The share of a target's read bucket the status sync may spend (the rest is for lists,
/// logs, exec, usage and orphan GC).
pub const READ_SHARE: f64 = 0.5;

/// How long a Running workload goes unread when the target holds `workloads` of them, each
/// status read covering at most `per_read` workloads, its read bucket refilling
/// `reads_per_second` (`None`: no bucket): `floor`, or `ceil(workloads / per_read)` reads
/// spread over [`READ_SHARE`] of the bucket when that is longer.
pub fn status_interval(
    floor: Duration,
    reads_per_second: Option<f64>,
    per_read: usize,
    workloads: usize,
) -> Duration {
    let Some(rate) = reads_per_second.filter(|r| r.is_finite() && *r > 0.0) else {
        return floor;
    };
    let reads = workloads.div_ceil(per_read.max(1));
    let by_budget =
        Duration::try_from_secs_f64(reads as f64 / (rate * READ_SHARE)).unwrap_or(Duration::MAX);
    floor.max(by_budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn without_a_bucket_the_floor_serves_at_any_count() {
        assert_eq!(status_interval(TEN, None, 100, 1_000_000), TEN);
    }

    #[test]
    fn a_few_workloads_are_read_at_the_floor() {
        // 1,000 tasks: 10 DescribeTasks per 10 s, 1/s of a 20/s bucket.
        assert_eq!(status_interval(TEN, Some(20.0), 100, 1_000), TEN);
    }

    #[test]
    fn many_workloads_are_read_within_half_the_bucket() {
        // 100,000 tasks: 1,000 DescribeTasks at 10/s (half of 20/s) take 100 s.
        assert_eq!(
            status_interval(TEN, Some(20.0), 100, 100_000),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn a_partial_batch_costs_a_whole_read() {
        // 20,001 tasks are 201 reads, not 200.01.
        assert_eq!(
            status_interval(TEN, Some(20.0), 100, 20_001),
            Duration::from_millis(20_100)
        );
    }

    #[test]
    fn one_workload_per_read_spends_one_read_each() {
        // ACI: 25 reads/s, 12.5 for status, 1,000 groups: 80 s.
        assert_eq!(
            status_interval(Duration::from_millis(29_500), Some(25.0), 1, 1_000),
            Duration::from_secs(80)
        );
    }

    #[test]
    fn a_zero_or_broken_rate_is_no_bucket() {
        assert_eq!(status_interval(TEN, Some(0.0), 100, 1_000_000), TEN);
        assert_eq!(status_interval(TEN, Some(f64::NAN), 100, 1_000_000), TEN);
    }
}
