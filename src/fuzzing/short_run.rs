//! The short fuzz run of the test suite, so that every CI run fuzzes: each target of
//! [`targets::ALL`] runs on its seeds (`fuzz/seeds/<target>/`, plus the example policies for
//! `policy_load`) and on mutations of them made by a seeded generator: byte flips, inserts,
//! cuts, splices, duplicated ranges and boundary numbers. It is not coverage-guided; the long,
//! coverage-guided run is `scripts/fuzz.sh` (docs/fuzzing.md), and an input either finds is
//! replayed by both. `BURSTGATE_FUZZ_SHORT_RUNS` sets the inputs per target (default 5,000),
//! `BURSTGATE_FUZZ_SEED` the generator's seed (default: from the clock, printed).

use std::path::{Path, PathBuf};

use super::targets;

/// Inputs per target unless `BURSTGATE_FUZZ_SHORT_RUNS` says otherwise.
const DEFAULT_RUNS: u64 = 5_000;

/// Numbers that break parsers: zero, negatives, and values past every integer width.
const BOUNDARY_NUMBERS: [&[u8]; 8] = [
    b"0",
    b"-1",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"1e309",
    b"NaN",
    b"-9223372036854775809",
];

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The seeds of `target`: its files under `fuzz/seeds/`, the example policies for the policy
/// loader; always at least one (empty) input.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("fuzz/seeds").join(target)];
    if target == "policy_load" {
        dirs.push(root.join("policies"));
    }
    let mut seeds: Vec<Vec<u8>> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    seeds.sort();
    seeds.push(Vec::new());
    seeds
}

/// One mutation of a seed (or, sometimes, fresh random bytes, which typed targets build from).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    let at = |rng: &mut Rng, input: &Vec<u8>| rng.below(input.len() + 1);
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 => {
                let len = rng.below(4096);
                input = rng.bytes(len);
            }
            1 => {
                for _ in 0..=rng.below(8) {
                    if !input.is_empty() {
                        let i = rng.below(input.len());
                        input[i] = rng.next() as u8;
                    }
                }
            }
            2 => {
                let (i, len) = (at(rng, &input), 1 + rng.below(16));
                let extra = rng.bytes(len);
                input.splice(i..i, extra);
            }
            3 => {
                let i = at(rng, &input);
                let j = (i + 1 + rng.below(64)).min(input.len());
                input.drain(i..j.max(i));
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let (i, j) = (at(rng, &input), rng.below(other.len() + 1));
                input.truncate(i);
                input.extend_from_slice(&other[j..]);
            }
            5 => {
                let i = at(rng, &input);
                let j = (i + rng.below(64)).min(input.len());
                let copy = input[i..j].to_vec();
                let k = at(rng, &input);
                input.splice(k..k, copy);
            }
            _ => {
                let number = BOUNDARY_NUMBERS[rng.below(BOUNDARY_NUMBERS.len())];
                match input.iter().position(u8::is_ascii_digit) {
                    Some(i) => {
                        let end = input[i..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(input.len(), |n| i + n);
                        input.splice(i..end, number.iter().copied());
                    }
                    None => input.extend_from_slice(number),
                }
            }
        }
    }
    input
}

/// Where a failing input is kept, for `cargo fuzz run <target> <file>` to replay.
fn keep(target: &str, input: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "burstgate-fuzz-{target}-{:016x}",
        input
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b))
                .wrapping_mul(0x100_0000_01b3))
    ));
    std::fs::write(&path, input).expect("the temp dir is writable");
    path
}

/// Runs `target` on its seeds and its share of mutations; panics naming the kept input.
fn run(target: &str) {
    let (_, body) = targets::ALL
        .into_iter()
        .find(|(name, _)| *name == target)
        .expect("a target of targets::ALL");
    let runs = std::env::var("BURSTGATE_FUZZ_SHORT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let seed = std::env::var("BURSTGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    let seeds = seeds(target);
    let mut rng = Rng(seed);
    let started = std::time::Instant::now();
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..runs).map(|_| mutate(&mut rng, &seeds)));
    let mut executed = 0_u64;
    for input in inputs {
        if let Err(panic) = std::panic::catch_unwind(|| body(&input)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "fuzz target {target} failed on input {} (BURSTGATE_FUZZ_SEED={seed}, input {executed}): {why}\n\
                 replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none {target} {})",
                keep(target, &input).display(),
                keep(target, &input).display()
            );
        }
        executed += 1;
    }
    println!(
        "fuzz short run: {target}: {executed} inputs ({} seeds) in {:.1?}, 0 failures; BURSTGATE_FUZZ_SEED={seed}",
        seeds.len(),
        started.elapsed()
    );
}

#[test]
fn the_policy_loader_survives_a_short_fuzz_run() {
    run("policy_load");
}

#[test]
fn cel_expressions_survive_a_short_fuzz_run() {
    run("cel_expression");
}

#[test]
fn the_engine_view_of_pods_survives_a_short_fuzz_run() {
    run("pod_view");
}

#[test]
fn every_adapters_translation_survives_a_short_fuzz_run() {
    run("translate");
}

#[test]
fn arm_replies_survive_a_short_fuzz_run() {
    run("aci_reply");
}

#[test]
fn ecs_replies_survive_a_short_fuzz_run() {
    run("ecs_reply");
}

#[test]
fn apiserver_replies_survive_a_short_fuzz_run() {
    run("kube_reply");
}

#[test]
fn the_mutator_is_deterministic_for_a_seed_and_keeps_inputs_bounded() {
    let seeds = vec![b"Retry-After: 5\n\n{}".to_vec(), Vec::new()];
    let (mut a, mut b) = (Rng(7), Rng(7));
    for _ in 0..1000 {
        let (x, y) = (mutate(&mut a, &seeds), mutate(&mut b, &seeds));
        assert_eq!(x, y);
        assert!(x.len() < 4096 * 8, "{}", x.len());
    }
}
