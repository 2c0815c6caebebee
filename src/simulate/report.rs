//! What a simulation found: per-target placements, cost, time to running, throttling, refusals
//! and rejections, pods left pending or failed, and the timeline behind the chart.
//!
//! The report holds only what the inputs determine (no wall-clock time), so the same policy,
//! workload and seed always give a byte-identical `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::policy::checked::Target;
use crate::policy::engine::{ExclusionReason, Rejection};
use crate::simulate::chart;
use crate::simulate::error::{Error, Result};
use crate::simulate::replay::{Sim, TargetStats};
use crate::simulate::workload::{Micros, SECOND, human};

/// Short names of why the engine turned a target down, as counted in reports.
pub const CATEGORIES: [&str; 12] = [
    "not-allowed",
    "annotation",
    "latency",
    "size",
    "gpu",
    "cost",
    "quota",
    "budget",
    "outage",
    "provider",
    "cannot-run",
    "unusable",
];

/// Categories that only say a rule does not consider the target; left out of the printed table.
const SCOPING: [&str; 2] = ["not-allowed", "annotation"];

/// The category (index into [`CATEGORIES`]) of a rejection.
pub fn category(r: &Rejection) -> usize {
    match r {
        Rejection::NotAllowed(_) => 0,
        Rejection::ProviderNotInAnnotation | Rejection::RegionNotInAnnotation => 1,
        Rejection::Latency { .. } => 2,
        Rejection::Size(_) | Rejection::PodTooLarge { .. } => 3,
        Rejection::NoGpu | Rejection::GpuSkuMissing(_) => 4,
        Rejection::CostTooHigh { .. } => 5,
        Rejection::Quota { .. } => 6,
        Rejection::Budget { .. } => 7,
        Rejection::Excluded(ExclusionReason::CircuitOpen) => 8,
        Rejection::Excluded(ExclusionReason::RejectedByProvider(_)) => 9,
        Rejection::Excluded(ExclusionReason::CannotRun(_)) => 10,
        Rejection::Excluded(ExclusionReason::Unusable(_)) => 11,
    }
}

/// The result of one simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// Hash of the policy files.
    pub policy_hash: String,
    /// Seed of the run.
    pub seed: u64,
    /// Virtual time simulated, seconds.
    pub duration_seconds: f64,
    /// Where every pod ended up.
    pub pods: PodCounts,
    /// One entry per policy target, in policy order.
    pub targets: Vec<TargetReport>,
    /// Everything together.
    pub totals: Totals,
    /// Pods still without a target at the end, per group.
    pub pending: Vec<Leftover>,
    /// Pods that failed, per group.
    pub failed: Vec<Leftover>,
    /// Pods running per target (and pending, starting) over time.
    pub timeline: Timeline,
    /// Problems with the inputs that did not stop the run.
    pub warnings: Vec<String>,
}

/// Where every pod of the workload ended up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Pods in the workload.
    pub total: u64,
    /// Pods that arrived within the horizon.
    pub arrived: u64,
    /// Pods whose create a provider accepted.
    pub placed: u64,
    /// Pods that ran to completion.
    pub completed: u64,
    /// Pods starting or running at the end.
    pub running_at_end: u64,
    /// Pods decided but whose create still waited in a rate limiter at the end.
    pub waiting_for_create_at_end: u64,
    /// Pods no target could take at the end.
    pub pending_at_end: u64,
    /// Pods failed by their rule or an invalid annotation.
    pub failed: u64,
}

/// What happened on one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    /// Target name.
    pub name: String,
    /// Provider kind.
    pub provider: String,
    /// Region.
    pub region: String,
    /// Spot capacity.
    pub spot: bool,
    /// Pods whose create this target accepted.
    pub placed: u64,
    /// Of those, chosen from a rule's fallback list.
    pub via_fallback: u64,
    /// Pods that ran to completion here.
    pub completed: u64,
    /// Pods starting or running here at the end.
    pub running_at_end: u64,
    /// Pods whose create still waited in this target's rate limits at the end.
    pub waiting_for_create_at_end: u64,
    /// Most pods running here at once.
    pub peak_running: u64,
    /// Billed vCPU-hours (provider-rounded size, minimum billed time honoured).
    pub vcpu_hours: f64,
    /// Billed GiB-hours.
    pub memory_gib_hours: f64,
    /// Cost in USD, from the policy's prices, honouring `pricing.minimumSeconds`.
    pub cost_usd: f64,
    /// From arrival to Running, over pods that got there.
    pub time_to_running: Option<Percentiles>,
    /// Requests that waited in a rate limit.
    pub throttled: Throttled,
    /// Creates the provider refused (regional capacity, outage), by reason.
    pub refused: BTreeMap<String, u64>,
    /// Times the engine turned this target down, by category (retries included).
    pub rejections: BTreeMap<String, u64>,
}

/// Time-to-running percentiles, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Median.
    pub p50_seconds: f64,
    /// 99th percentile.
    pub p99_seconds: f64,
    /// Longest.
    pub max_seconds: f64,
}

/// Requests that waited in a rate limit on one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttled {
    /// Creates that waited.
    pub creates: u64,
    /// Deletes that waited.
    pub deletes: u64,
    /// Longest wait, seconds.
    pub longest_wait_seconds: f64,
    /// Which bucket held each waiting request longest.
    pub by_bucket: BTreeMap<String, u64>,
}

/// Sums over all targets, and the engine's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Billed vCPU-hours.
    pub vcpu_hours: f64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Creates that waited in a rate limit.
    pub throttled_creates: u64,
    /// Creates a provider refused.
    pub refused: u64,
    /// Decisions the engine made (first decisions, retries, fallbacks after refusals).
    pub decisions: u64,
    /// Retry sweeps over pending pods.
    pub retry_sweeps: u64,
}

/// Pods of one group left pending or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leftover {
    /// Workload group.
    pub group: String,
    /// Namespace of its pods.
    pub namespace: String,
    /// How many.
    pub pods: u64,
    /// Why (the engine's one-line explanation).
    pub reason: String,
}

/// Counts sampled every `stepSeconds` from 0 to the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// Virtual seconds between samples.
    pub step_seconds: f64,
    /// One series per target (pods running), then `pending` and `starting`.
    pub series: Vec<Series>,
}

/// One line of the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// Target name, `pending` or `starting`.
    pub name: String,
    /// `running`, `pending` (no target) or `starting` (waiting for a create slot or cold-starting).
    pub kind: String,
    /// One value per sample.
    pub values: Vec<u32>,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn seconds(v: Micros) -> f64 {
    round(v as f64 / SECOND as f64, 3)
}

const US_PER_HOUR: u128 = 3_600_000_000;

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Micros], p: f64) -> Micros {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn build(sim: &Sim<'_>) -> Report {
    let policy = sim.policy;
    let targets = policy
        .targets
        .iter()
        .zip(&sim.stats)
        .map(|(t, s)| target_report(t, s))
        .collect();
    let pending = pending(sim);
    let failed = failed(sim);
    let mut pods = pod_counts(sim);
    pods.pending_at_end = pending.iter().map(|l| l.pods).sum();
    pods.failed = failed.iter().map(|f| f.pods).sum();
    Report {
        workload: sim.workload.name.clone(),
        policy_hash: policy.hash.clone(),
        seed: sim.seed,
        duration_seconds: seconds(sim.workload.duration),
        pods,
        targets,
        totals: totals(sim),
        pending,
        failed,
        timeline: Timeline {
            step_seconds: seconds(sim.step),
            series: series(sim),
        },
        warnings: sim.warnings.clone(),
    }
}

/// One target's counters, in report units.
fn target_report(t: &Target, s: &TargetStats) -> TargetReport {
    let mut ttr = s.time_to_running.clone();
    ttr.sort_unstable();
    let time_to_running = (!ttr.is_empty()).then(|| Percentiles {
        p50_seconds: seconds(percentile(&ttr, 0.50)),
        p99_seconds: seconds(percentile(&ttr, 0.99)),
        max_seconds: seconds(*ttr.last().unwrap_or(&0)),
    });
    TargetReport {
        name: t.name.clone(),
        provider: t.provider.to_string(),
        region: t.region.clone(),
        spot: t.spot,
        placed: s.placed,
        via_fallback: s.via_fallback,
        completed: s.completed,
        running_at_end: s.running_at_end,
        waiting_for_create_at_end: s.waiting_for_create_at_end,
        peak_running: s.peak_running,
        vcpu_hours: vcpu_hours(s.milli_cpu_us),
        memory_gib_hours: round(s.memory_mib_us as f64 / 1024.0 / US_PER_HOUR as f64, 4),
        cost_usd: usd(s.cost_us / US_PER_HOUR),
        time_to_running,
        throttled: Throttled {
            creates: s.throttled_creates,
            deletes: s.throttled_deletes,
            longest_wait_seconds: seconds(s.longest_wait),
            by_bucket: s.held_by.clone(),
        },
        refused: s.refused.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        rejections: CATEGORIES
            .iter()
            .zip(s.rejections)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
    }
}

/// Millicore-microseconds as vCPU-hours.
fn vcpu_hours(milli_cpu_us: u128) -> f64 {
    round(milli_cpu_us as f64 / 1000.0 / US_PER_HOUR as f64, 4)
}

/// Micro-USD as USD.
fn usd(micros: u128) -> f64 {
    round(micros as f64 / 1e6, 6)
}

/// Sums over all targets (cost and vCPU summed exactly, rounded once), and the engine's work.
fn totals(sim: &Sim<'_>) -> Totals {
    let stats = &sim.stats;
    Totals {
        vcpu_hours: vcpu_hours(stats.iter().map(|s| s.milli_cpu_us).sum()),
        cost_usd: usd(stats.iter().map(|s| s.cost_us / US_PER_HOUR).sum()),
        throttled_creates: stats.iter().map(|s| s.throttled_creates).sum(),
        refused: stats.iter().flat_map(|s| s.refused.values()).sum(),
        decisions: sim.decisions,
        retry_sweeps: sim.sweeps,
    }
}

/// Where the pods ended up, summed over targets; pending and failed are filled in by the caller.
fn pod_counts(sim: &Sim<'_>) -> PodCounts {
    let sum = |f: fn(&TargetStats) -> u64| -> u64 { sim.stats.iter().map(f).sum() };
    PodCounts {
        total: sim.pods.len() as u64,
        arrived: sim.arrived,
        placed: sum(|s| s.placed),
        completed: sum(|s| s.completed),
        running_at_end: sum(|s| s.running_at_end),
        waiting_for_create_at_end: sum(|s| s.waiting_for_create_at_end),
        ..PodCounts::default()
    }
}

/// Pods still waiting, per group, with the reason of the group's oldest waiting pod.
fn pending(sim: &Sim<'_>) -> Vec<Leftover> {
    let mut pending: BTreeMap<u32, Leftover> = BTreeMap::new();
    for (head, waiting) in sim.waiting_classes() {
        let group = sim.pods[head as usize].group;
        let entry = pending.entry(group).or_insert_with(|| Leftover {
            group: sim.workload.groups[group as usize].name.clone(),
            namespace: sim.workload.groups[group as usize].pod.namespace.clone(),
            pods: 0,
            reason: sim.pending_reason(head),
        });
        entry.pods += waiting as u64;
    }
    pending.into_values().collect()
}

/// Pods that failed, per group, with the first reason.
fn failed(sim: &Sim<'_>) -> Vec<Leftover> {
    sim.failures
        .iter()
        .enumerate()
        .filter(|(_, f)| f.pods > 0)
        .map(|(g, f)| Leftover {
            group: sim.workload.groups[g].name.clone(),
            namespace: sim.workload.groups[g].pod.namespace.clone(),
            pods: f.pods,
            reason: f.reason.clone().unwrap_or_default(),
        })
        .collect()
}

/// The timeline's lines: pods running per target, then `pending` and `starting`.
fn series(sim: &Sim<'_>) -> Vec<Series> {
    let mut series: Vec<Series> = sim
        .policy
        .targets
        .iter()
        .map(|t| Series {
            name: t.name.clone(),
            kind: "running".into(),
            values: Vec::with_capacity(sim.samples.len()),
        })
        .collect();
    for kind in ["pending", "starting"] {
        series.push(Series {
            name: kind.into(),
            kind: kind.into(),
            values: Vec::new(),
        });
    }
    for row in &sim.samples {
        for (s, v) in series.iter_mut().zip(row) {
            s.values.push(*v);
        }
    }
    series
}

fn human_seconds(s: f64) -> String {
    human((s * SECOND as f64).round() as Micros)
}

fn counts(map: &BTreeMap<String, u64>, skip: &[&str]) -> String {
    let mut items: Vec<(&String, &u64)> = map
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = items.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

impl Report {
    /// The report for a terminal: a table per target, then throttling, refusals, and the pods
    /// left pending or failed with their reasons.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "simulated {} of workload {:?} ({} pods) under policy {}, seed {}\n",
            human_seconds(self.duration_seconds),
            self.workload,
            self.pods.total,
            self.policy_hash,
            self.seed
        );
        let w = self
            .targets
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        self.write_targets(&mut out, w);
        self.write_throttled(&mut out, w);
        self.write_refused(&mut out, w);
        self.write_pods(&mut out);
        for warning in &self.warnings {
            let _ = writeln!(out, "\nwarning: {warning}");
        }
        out
    }

    /// One row per target, a total row, and what the columns mean; names padded to `w`.
    fn write_targets(&self, out: &mut String, w: usize) {
        let _ = writeln!(
            out,
            "{:<w$}  {:>6}  {:>6}  {:>9}  {:>10}  {:>7}  {:>7}  {:>9}  {:>7}  REJECTED BY ENGINE",
            "TARGET",
            "PLACED",
            "FALLBK",
            "VCPU-H",
            "COST $",
            "P50 RUN",
            "P99 RUN",
            "THROTTLED",
            "REFUSED"
        );
        for t in &self.targets {
            let (p50, p99) = t
                .time_to_running
                .map_or(("-".to_string(), "-".to_string()), |q| {
                    (human_seconds(q.p50_seconds), human_seconds(q.p99_seconds))
                });
            let _ = writeln!(
                out,
                "{:<w$}  {:>6}  {:>6}  {:>9.2}  {:>10.2}  {:>7}  {:>7}  {:>9}  {:>7}  {}",
                t.name,
                t.placed,
                t.via_fallback,
                t.vcpu_hours,
                t.cost_usd,
                p50,
                p99,
                t.throttled.creates,
                t.refused.values().sum::<u64>(),
                counts(&t.rejections, &SCOPING)
            );
        }
        let _ = writeln!(
            out,
            "{:<w$}  {:>6}  {:>6}  {:>9.2}  {:>10.2}  {:>7}  {:>7}  {:>9}  {:>7}",
            "TOTAL",
            self.pods.placed,
            self.targets.iter().map(|t| t.via_fallback).sum::<u64>(),
            self.totals.vcpu_hours,
            self.totals.cost_usd,
            "",
            "",
            self.totals.throttled_creates,
            self.totals.refused
        );
        let _ = writeln!(
            out,
            "\nP50/P99 RUN: arrival to Running. REJECTED BY ENGINE: times the engine turned the target down for a pod\n\
             its rule allows there, retries included. Cost honours each target's pricing.minimumSeconds."
        );
    }

    /// Targets whose requests waited in a rate limit, and which bucket held them; nothing if none.
    fn write_throttled(&self, out: &mut String, w: usize) {
        let throttled: Vec<&TargetReport> = self
            .targets
            .iter()
            .filter(|t| t.throttled.creates + t.throttled.deletes > 0)
            .collect();
        if throttled.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nthrottled requests (waited in a rate limit):");
        for t in throttled {
            let _ = writeln!(
                out,
                "  {:<w$}  {} creates, {} deletes, longest wait {}; held by {}",
                t.name,
                t.throttled.creates,
                t.throttled.deletes,
                human_seconds(t.throttled.longest_wait_seconds),
                counts(&t.throttled.by_bucket, &[])
            );
        }
    }

    /// Targets whose provider refused creates, by reason; nothing if none.
    fn write_refused(&self, out: &mut String, w: usize) {
        let refused: Vec<&TargetReport> = self
            .targets
            .iter()
            .filter(|t| !t.refused.is_empty())
            .collect();
        if refused.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\ncreates refused by the provider (the pod fell back to another target or waited):"
        );
        for t in refused {
            let _ = writeln!(out, "  {:<w$}  {}", t.name, counts(&t.refused, &[]));
        }
    }

    /// Where the pods ended up, then the groups left pending or failed with their reasons.
    fn write_pods(&self, out: &mut String) {
        let p = &self.pods;
        let _ = writeln!(
            out,
            "\npods: {} arrived; {} placed ({} completed, {} running at the end); {} waiting for a create slot; {} pending; {} failed",
            p.arrived,
            p.placed,
            p.completed,
            p.running_at_end,
            p.waiting_for_create_at_end,
            p.pending_at_end,
            p.failed
        );
        if p.arrived < p.total {
            let _ = writeln!(
                out,
                "  {} pods had not arrived by the end",
                p.total - p.arrived
            );
        }
        for (title, list) in [
            ("pending at the end", &self.pending),
            ("failed", &self.failed),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for l in list {
                let _ = writeln!(
                    out,
                    "  {} ({}): {} pods\n    {}",
                    l.group, l.namespace, l.pods, l.reason
                );
            }
        }
    }

    /// The report as pretty JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a report always serialises");
        s.push('\n');
        s
    }

    /// Creates `out` and writes `report.json` and `running.svg` into it.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        })?;
        let svg = chart::svg(self)?;
        for (name, body) in [("report.json", self.to_json()), ("running.svg", svg)] {
            let path = out.join(name);
            std::fs::write(&path, body).map_err(|source| Error::Write { path, source })?;
        }
        Ok(())
    }
}
