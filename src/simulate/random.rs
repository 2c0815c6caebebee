//! Seeded randomness that does not depend on event order: every draw is a pure function of the
//! seed, the pod and what is drawn, so a policy change never reshuffles the workload itself.

/// What a draw is for; separate streams for separate purposes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// Arrival time within the group's window.
    Arrival = 1,
    /// Run time.
    RunFor = 2,
    /// Cold start of one create attempt.
    ColdStart = 3,
}

/// SplitMix64's finaliser: a strong 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` for `(seed, stream, a, b)`.
pub(crate) fn unit(seed: u64, stream: Stream, a: u64, b: u64) -> f64 {
    let h = mix(mix(mix(seed ^ (stream as u64).wrapping_mul(0xA24B_AED4_963E_E407)) ^ a) ^ b);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inputs_always_draw_the_same_number() {
        assert_eq!(unit(7, Stream::RunFor, 3, 0), unit(7, Stream::RunFor, 3, 0));
        assert_ne!(unit(7, Stream::RunFor, 3, 0), unit(8, Stream::RunFor, 3, 0));
        assert_ne!(
            unit(7, Stream::RunFor, 3, 0),
            unit(7, Stream::ColdStart, 3, 0)
        );
    }

    #[test]
    fn draws_are_spread_over_the_unit_interval() {
        let draws: Vec<f64> = (0..10_000)
            .map(|i| unit(1, Stream::Arrival, i, 0))
            .collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let low = draws.iter().filter(|u| **u < 0.1).count();
        assert!((800..1200).contains(&low), "{low} draws below 0.1");
    }
}
