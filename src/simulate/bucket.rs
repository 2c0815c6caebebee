//! A token bucket on the virtual clock (GCRA): when may a request go, and book it.
//!
//! A request that finds the bucket empty is not refused: it waits for its token, as a
//! rate-limited client does, and requests are served in the order they ask. Booking is O(1): the
//! bucket keeps the theoretical arrival time of the next token and nothing else.

use crate::simulate::workload::{Micros, SECOND};

/// One bucket: `burst` requests at once, then one every `1 / per_second` seconds.
#[derive(Debug, Clone)]
pub struct VirtualBucket {
    /// Virtual time between two tokens.
    interval: Micros,
    /// `burst * interval`: how far ahead of time the bucket lets requests go.
    tolerance: Micros,
    /// Theoretical arrival time of the next request if the bucket were drained evenly.
    tat: Micros,
}

impl VirtualBucket {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64) -> VirtualBucket {
        let interval = ((SECOND as f64 / per_second.max(1e-9)).round() as Micros).max(1);
        VirtualBucket {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
            tat: 0,
        }
    }

    /// The earliest time at or after `now` a request may go.
    pub fn earliest(&self, now: Micros) -> Micros {
        now.max((self.tat + self.interval).saturating_sub(self.tolerance))
    }

    /// Books the token of a request going at `at` (at or after [`Self::earliest`]).
    pub fn take(&mut self, at: Micros) {
        self.tat = self.tat.max(at) + self.interval;
    }
}

/// Books one request through every bucket in `buckets` at the earliest time all allow, and says
/// when it goes and which bucket held it longest (`None` when it did not wait).
pub fn book(
    buckets: &mut [VirtualBucket],
    indices: &[usize],
    now: Micros,
) -> (Micros, Option<usize>) {
    let mut at = now;
    let mut binding = None;
    for &i in indices {
        let e = buckets[i].earliest(now);
        if e > at {
            at = e;
            binding = Some(i);
        }
    }
    for &i in indices {
        buckets[i].take(at);
    }
    (at, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_bucket_lets_its_burst_through_at_once_then_one_per_interval() {
        let mut b = VirtualBucket::new(3, 1.0);
        let times: Vec<Micros> = (0..5)
            .map(|_| {
                let at = b.earliest(0);
                b.take(at);
                at
            })
            .collect();
        assert_eq!(times, vec![0, 0, 0, SECOND, 2 * SECOND]);
    }

    #[test]
    fn an_idle_bucket_refills_up_to_its_burst_and_no_further() {
        let mut b = VirtualBucket::new(2, 1.0);
        for _ in 0..2 {
            let at = b.earliest(0);
            b.take(at);
        }
        let later = 100 * SECOND;
        let times: Vec<Micros> = (0..3)
            .map(|_| {
                let at = b.earliest(later);
                b.take(at);
                at
            })
            .collect();
        assert_eq!(times, vec![later, later, later + SECOND]);
    }

    #[test]
    fn a_create_through_several_buckets_waits_for_the_slowest_one() {
        // ACI: 100 per 5 minutes and 300 per hour; the 101st create waits 3 s for the first.
        let mut buckets = vec![
            VirtualBucket::new(100, 100.0 / 300.0),
            VirtualBucket::new(300, 300.0 / 3600.0),
        ];
        for _ in 0..100 {
            assert_eq!(book(&mut buckets, &[0, 1], 0), (0, None));
        }
        assert_eq!(book(&mut buckets, &[0, 1], 0), (3 * SECOND, Some(0)));
    }

    proptest! {
        /// In any window of `w` seconds a bucket never lets more than `burst + w * rate` requests go,
        /// no request goes before it asks, and requests go in the order they ask.
        #[test]
        fn a_create_waits_in_the_bucket_and_never_exceeds_it(
            burst in 1u32..50,
            per_second in 0.05f64..50.0,
            mut asks in proptest::collection::vec(0u64..600 * SECOND, 1..400),
        ) {
            asks.sort_unstable();
            let mut b = vec![VirtualBucket::new(burst, per_second)];
            let interval = b[0].interval;
            let mut went = Vec::with_capacity(asks.len());
            for &ask in &asks {
                let (at, _) = book(&mut b, &[0], ask);
                prop_assert!(at >= ask);
                went.push(at);
            }
            prop_assert!(went.windows(2).all(|w| w[0] <= w[1]));
            for (i, &start) in went.iter().enumerate() {
                for (j, &end) in went.iter().enumerate().skip(i) {
                    let allowed = u64::from(burst) + (end - start) / interval;
                    prop_assert!((j - i + 1) as u64 <= allowed, "{} requests in [{start}, {end}] > {allowed}", j - i + 1);
                }
            }
        }
    }
}
