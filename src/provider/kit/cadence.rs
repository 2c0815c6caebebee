//! How often a Running workload's status is read: every adapter's floor (10 s on Fargate and
//! the simulator, 29.5 s on ACI), or slower once the target holds so many workloads that the
//! floor would spend more than [`READ_SHARE`] of its read bucket on status; and how often orphan
//! GC lists a target: every minute, or slower once its listing would spend more than
//! [`LISTING_SHARE`].
//!
//! At 100,000 Fargate tasks a 10 s cadence is 100 DescribeTasks a second, five times the
//! published 20/s: the bucket would queue every other read (logs, lists, orphan GC) behind the
//! status sync. Pure: the caller gives the count and the bucket's rate.

use std::time::Duration;

/// The share of a target's read bucket the status sync may spend (the rest is for lists,
/// logs, exec, usage and orphan GC).
pub const READ_SHARE: f64 = 0.5;

/// The share of a target's read bucket orphan GC's listings may spend: at 100,000 Fargate tasks
/// a listing is 1,000 ListTasks and 1,000 DescribeTasks, 100 s of ECS's whole 20/s; once a
/// minute it would leave the status sync nothing.
pub const LISTING_SHARE: f64 = 0.1;

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
    within_share(
        floor,
        reads_per_second,
        workloads.div_ceil(per_read.max(1)),
        READ_SHARE,
    )
}

/// How long orphan GC waits before it lists a target again whose last listing took `reads`
/// reads of a bucket refilling `reads_per_second` (`None`: no bucket): `floor`, or as long as
/// those reads take at [`LISTING_SHARE`] of the bucket when that is longer.
pub fn listing_interval(floor: Duration, reads_per_second: Option<f64>, reads: usize) -> Duration {
    within_share(floor, reads_per_second, reads, LISTING_SHARE)
}

/// `floor`, or the time `reads` take at `share` of a bucket refilling `reads_per_second`.
fn within_share(
    floor: Duration,
    reads_per_second: Option<f64>,
    reads: usize,
    share: f64,
) -> Duration {
    let Some(rate) = reads_per_second.filter(|r| r.is_finite() && *r > 0.0) else {
        return floor;
    };
    let by_budget =
        Duration::try_from_secs_f64(reads as f64 / (rate * share)).unwrap_or(Duration::MAX);
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
    fn a_small_listing_is_made_every_minute() {
        // 5,000 tasks: 50 ListTasks + 50 DescribeTasks, 50 s at 2/s (a tenth of 20/s).
        let minute = Duration::from_secs(60);
        assert_eq!(listing_interval(minute, Some(20.0), 100), minute);
    }

    #[test]
    fn a_large_listing_waits_until_it_fits_a_tenth_of_the_bucket() {
        // 100,000 tasks: 2,000 reads at 2/s take 1,000 s.
        assert_eq!(
            listing_interval(Duration::from_secs(60), Some(20.0), 2_000),
            Duration::from_secs(1_000)
        );
        // Without a bucket nothing bounds it but the floor.
        assert_eq!(
            listing_interval(Duration::from_secs(60), None, 2_000),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_zero_or_broken_rate_is_no_bucket() {
        assert_eq!(status_interval(TEN, Some(0.0), 100, 1_000_000), TEN);
        assert_eq!(status_interval(TEN, Some(f64::NAN), 100, 1_000_000), TEN);
    }
}
