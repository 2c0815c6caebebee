//! The replay: pods arrive, the engine decides and the ledger reserves, creates wait in the
//! provider's buckets, pods cold-start, run, finish and give their room back, on a virtual clock.
//!
//! One event queue orders everything by virtual time. Pods no target can take wait in a queue per
//! class (pods of one group are identical to the engine); a class is retried only when something
//! it was rejected for changes: a release on a target or budget that turned it down, an outage
//! ending, regional capacity freed. Retries are coalesced to one sweep per [`RETRY_INTERVAL`] and
//! a sweep stops after [`MAX_SWEEP_FAILURES`] consecutive non-placements (the rest are kept for
//! the next sweep, so nobody starves). The cost is O(events + placements), not O(pending²).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::policy::engine::{
    self, BudgetSet, Decision, Exclusion, ExclusionReason, Outcome, Rejection, Verdict,
};
use crate::policy::model::OnNoTarget;
use crate::policy::sizing::Size;
use crate::policy::{Ledger, Policy, TargetId, explain};
use crate::simulate::cloud::{Cloud, REFUSED_OUTAGE};
use crate::simulate::random::{Stream, unit};
use crate::simulate::report::{self, Report};
use crate::simulate::workload::{Arrival, Micros, SECOND, Workload};

/// Pending pods are retried at most once per this much virtual time, as a controller requeues.
pub const RETRY_INTERVAL: Micros = SECOND;
/// A retry sweep stops after this many pods in a row found no target; the rest wait for the next.
pub const MAX_SWEEP_FAILURES: usize = 64;
/// Points in the timeline (and the chart).
pub const SAMPLES: u64 = 720;

/// Replays `workload` under `policy`; the same inputs and `seed` give the same report.
/// Outages naming a target the policy lacks are skipped with a warning in the report
/// (`run_file` refuses them instead).
pub fn run(policy: &Policy, workload: &Workload, seed: u64, progress: bool) -> Report {
    Sim::new(policy, workload, seed, progress).run()
}

/// Reads the workload at `path`, checks it against `policy`, and replays it.
pub fn run_file(
    policy: &Policy,
    workload: &std::path::Path,
    seed: u64,
    progress: bool,
) -> crate::simulate::Result<Report> {
    let w = Workload::read(workload)?;
    w.check_against(policy)?;
    Ok(run(policy, &w, seed, progress))
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not arrived yet.
    Future,
    /// No target can take it; waiting in its class queue.
    Pending,
    /// Placed; its create waits in the target's queue for the provider's rate limits.
    Creating,
    /// Create accepted; cold-starting.
    Starting,
    /// Running.
    Running,
    /// Finished.
    Done,
    /// Failed (the rule says fail, or an invalid annotation).
    Failed,
}

/// Where a placed pod is, and what it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub target: TargetId,
    pub size: Size,
    pub hourly_micros: u64,
    pub budgets: BudgetSet,
    pub via_fallback: bool,
}

pub(crate) struct SimPod {
    pub view: crate::policy::PodView,
    pub group: u32,
    pub class: u32,
    pub arrive: Micros,
    pub run_for: Micros,
    pub state: State,
    pub attempt: u32,
    pub held: Option<Held>,
    pub billed_from: Micros,
    /// When the current create was asked for.
    pub asked_at: Micros,
    /// The bucket that last held the current create back.
    pub held_by: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    OutageStart(u16),
    OutageEnd(u16),
    Finish(u32),
    Deleted(u32),
    Pump(u16),
    Running(u32, u32),
    Sweep,
    Arrive(u32),
}

impl Ev {
    /// Order of events at the same instant: health, then releases, then creates, then retries of
    /// waiting pods, then newcomers (older pods first).
    fn priority(self) -> u8 {
        match self {
            Ev::OutageStart(_) | Ev::OutageEnd(_) => 0,
            Ev::Finish(_) | Ev::Deleted(_) => 1,
            Ev::Pump(_) | Ev::Running(..) => 2,
            Ev::Sweep => 3,
            Ev::Arrive(_) => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassState {
    /// No pod waiting.
    Idle,
    /// Pods waiting; nothing they were rejected for has changed.
    Blocked,
    /// Pods waiting; something changed, a sweep will retry them.
    Woken,
}

struct Class {
    queue: BTreeSet<u32>,
    state: ClassState,
    epoch: u32,
}

/// What a decision depends on that can change: targets (quota, outage, provider capacity) and
/// budgets that turned the pod down.
#[derive(Debug, Default)]
struct Deps {
    targets: Vec<TargetId>,
    budgets: Vec<usize>,
}

enum Attempt {
    Placed,
    Pending(Deps),
    Failed,
}

/// Counters per target, turned into a [`report::TargetReport`] at the end.
#[derive(Debug, Default, Clone)]
pub(crate) struct TargetStats {
    pub placed: u64,
    pub via_fallback: u64,
    pub completed: u64,
    pub running: u64,
    pub starting: u64,
    pub peak_running: u64,
    pub running_at_end: u64,
    pub waiting_for_create_at_end: u64,
    /// Sum of millicores x billed microseconds.
    pub milli_cpu_us: u128,
    /// Sum of MiB x billed microseconds.
    pub memory_mib_us: u128,
    /// Sum of micro-USD per hour x billed microseconds.
    pub cost_us: u128,
    pub time_to_running: Vec<Micros>,
    pub throttled_creates: u64,
    pub throttled_deletes: u64,
    pub longest_wait: Micros,
    pub held_by: BTreeMap<String, u64>,
    pub refused: BTreeMap<&'static str, u64>,
    pub rejections: [u64; report::CATEGORIES.len()],
}

/// Per group: failures with the first reason, for the report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Failures {
    pub pods: u64,
    pub reason: Option<String>,
}

pub(crate) struct Sim<'a> {
    pub policy: &'a Policy,
    pub workload: &'a Workload,
    pub seed: u64,
    ledger: Ledger,
    cloud: Cloud,
    pub pods: Vec<SimPod>,
    classes: Vec<Class>,
    queue: BinaryHeap<Reverse<(Micros, u8, u64, Ev)>>,
    next_seq: u64,
    pub now: Micros,
    outages: Vec<Exclusion>,
    outage_ids: Vec<TargetId>,
    /// Per target: creates waiting for the rate limits, first asked first served.
    creates: Vec<VecDeque<u32>>,
    /// Per target: when a pump of its create queue is scheduled.
    pump_at: Vec<Option<Micros>>,
    target_waiters: Vec<Vec<(u32, u32)>>,
    budget_waiters: Vec<Vec<(u32, u32)>>,
    woken: BTreeSet<(u32, u32)>,
    sweep_scheduled: bool,
    last_sweep: Option<Micros>,
    pub stats: Vec<TargetStats>,
    pub failures: Vec<Failures>,
    pub arrived: u64,
    pub pending: u64,
    pub decisions: u64,
    pub sweeps: u64,
    pub warnings: Vec<String>,
    pub step: Micros,
    pub samples: Vec<Vec<u32>>,
    next_sample: Micros,
    progress: ProgressBar,
}

/// Every pod of the workload, in arrival order (pod index = arrival order, so queues ordered by
/// index are first come, first served), with its arrival and run time drawn from `seed`. Pods of
/// a group share a class unless the rules read pod names (`name_dependent`).
fn sim_pods(workload: &Workload, seed: u64, name_dependent: bool) -> Vec<SimPod> {
    let mut pods = Vec::with_capacity(workload.pod_count() as usize);
    let mut seq_in_group = 0u64;
    for (g, group) in workload.groups.iter().enumerate() {
        for i in 0..u64::from(group.count) {
            let key = seq_in_group + i;
            let offset = match group.arrival {
                Arrival::Even => {
                    (u128::from(group.over) * u128::from(i) / u128::from(group.count)) as Micros
                }
                Arrival::Random => {
                    (group.over as f64 * unit(seed, Stream::Arrival, key, 0)) as Micros
                }
            };
            let run_for = group.run_for.at(unit(seed, Stream::RunFor, key, 0));
            let mut view = group.pod.clone();
            view.name = format!("{}-{i}", group.name);
            pods.push(SimPod {
                view,
                group: g as u32,
                class: g as u32,
                arrive: group.start + offset,
                run_for,
                state: State::Future,
                attempt: 0,
                held: None,
                billed_from: 0,
                asked_at: 0,
                held_by: None,
            });
        }
        seq_in_group += u64::from(group.count);
    }
    pods.sort_by_key(|p| p.arrive);
    for (i, p) in pods.iter_mut().enumerate() {
        p.view.uid = format!("sim-{i:07}");
        if name_dependent {
            p.class = i as u32;
        }
    }
    pods
}

/// A progress bar over virtual seconds on stderr, or a hidden one.
fn progress_bar(duration: Micros, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(duration / SECOND), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("simulating {bar:40.cyan/blue} {pos}/{len} virtual s  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl<'a> Sim<'a> {
    fn new(policy: &'a Policy, workload: &'a Workload, seed: u64, progress: bool) -> Sim<'a> {
        // A CEL rule reading the pod's name could tell pods of one group apart; then every pod
        // is its own class (correct, only slower).
        let name_dependent = policy.rules.iter().any(|r| {
            r.matcher
                .expression
                .as_ref()
                .is_some_and(|e| reads_pod_name(e.source()))
        });
        let pods = sim_pods(workload, seed, name_dependent);
        let class_count = if name_dependent {
            pods.len()
        } else {
            workload.groups.len()
        };
        let targets = policy.targets.len();
        let step = (workload.duration / SAMPLES).max(SECOND);
        let mut sim = Sim {
            policy,
            workload,
            seed,
            ledger: Ledger::new(policy),
            cloud: Cloud::new(policy, &workload.providers),
            pods,
            classes: (0..class_count)
                .map(|_| Class {
                    queue: BTreeSet::new(),
                    state: ClassState::Idle,
                    epoch: 0,
                })
                .collect(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            now: 0,
            outages: Vec::new(),
            outage_ids: Vec::new(),
            creates: vec![VecDeque::new(); targets],
            pump_at: vec![None; targets],
            target_waiters: vec![Vec::new(); targets],
            budget_waiters: vec![Vec::new(); policy.budgets.len()],
            woken: BTreeSet::new(),
            sweep_scheduled: false,
            last_sweep: None,
            stats: vec![TargetStats::default(); targets],
            failures: vec![Failures::default(); workload.groups.len()],
            arrived: 0,
            pending: 0,
            decisions: 0,
            sweeps: 0,
            warnings: Vec::new(),
            step,
            samples: Vec::with_capacity((workload.duration / step + 1) as usize),
            next_sample: 0,
            progress: progress_bar(workload.duration, progress),
        };
        sim.schedule_workload();
        sim
    }

    /// Queues every pod's arrival and every outage's start and end; an outage naming a target
    /// the policy lacks becomes a warning.
    fn schedule_workload(&mut self) {
        for i in 0..self.pods.len() {
            let at = self.pods[i].arrive;
            self.push(at, Ev::Arrive(i as u32));
        }
        for o in &self.workload.outages {
            match self.policy.target_by_name(&o.target) {
                Some(t) => {
                    self.push(o.at, Ev::OutageStart(t.id.0));
                    self.push(o.at + o.down, Ev::OutageEnd(t.id.0));
                }
                None => self.warnings.push(format!(
                    "outage at {}: unknown target {:?} skipped",
                    crate::simulate::workload::human(o.at),
                    o.target
                )),
            }
        }
    }

    fn push(&mut self, at: Micros, ev: Ev) {
        self.next_seq += 1;
        self.queue
            .push(Reverse((at, ev.priority(), self.next_seq, ev)));
    }

    fn run(mut self) -> Report {
        let horizon = self.workload.duration;
        let mut handled = 0u64;
        while let Some(Reverse((at, _, _, ev))) = self.queue.pop() {
            if at > horizon {
                break;
            }
            while self.next_sample <= at {
                self.sample();
            }
            self.now = at;
            self.handle(ev);
            handled += 1;
            if handled % 1024 == 0 {
                self.progress.set_position(self.now / SECOND);
                self.progress.set_message(format!(
                    "{} arrived, {} pending",
                    self.arrived, self.pending
                ));
            }
        }
        while self.next_sample <= horizon {
            self.sample();
        }
        self.now = horizon;
        self.progress.finish_and_clear();
        self.settle_at_horizon();
        report::build(&self)
    }

    fn sample(&mut self) {
        let mut row: Vec<u32> = self.stats.iter().map(|s| s.running as u32).collect();
        row.push(self.pending as u32);
        row.push(
            self.stats.iter().map(|s| s.starting as u32).sum::<u32>()
                + self.creates.iter().map(|c| c.len() as u32).sum::<u32>(),
        );
        self.samples.push(row);
        self.next_sample += self.step;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(i) => self.arrive(i),
            Ev::Pump(t) => self.pump(TargetId(t)),
            Ev::Running(i, attempt) => self.running(i, attempt),
            Ev::Finish(i) => self.finish(i),
            Ev::Deleted(i) => self.deleted(i),
            Ev::Sweep => self.sweep(),
            Ev::OutageStart(t) => self.outage(TargetId(t), true),
            Ev::OutageEnd(t) => self.outage(TargetId(t), false),
        }
    }

    fn arrive(&mut self, i: u32) {
        self.arrived += 1;
        let c = self.pods[i as usize].class as usize;
        if !self.classes[c].queue.is_empty() {
            // Identical pods are already waiting and nothing they need has changed: queue behind them.
            self.enqueue(i, None);
            return;
        }
        match self.try_place(i) {
            Attempt::Pending(deps) => self.enqueue(i, Some(deps)),
            Attempt::Placed | Attempt::Failed => {}
        }
    }

    /// Decides for pod `i` with the current outages excluded; a provider refusing the chosen
    /// target (regional capacity) excludes it too and the pod is decided again, as the gateway
    /// falls back after a target-level rejection.
    fn try_place(&mut self, i: u32) -> Attempt {
        let mut excluded = self.outages.clone();
        loop {
            let pod = &self.pods[i as usize];
            let decision = self.ledger.place(self.policy, &pod.view, &excluded);
            self.decisions += 1;
            self.count_rejections(&decision);
            match decision.outcome {
                Outcome::Placed(p) => {
                    if let Some((key, why)) = self.cloud.refusal(p.target, p.size) {
                        self.ledger.release(&self.pods[i as usize].view.uid);
                        *self.stats[p.target.index()].refused.entry(key).or_default() += 1;
                        excluded.push(Exclusion {
                            target: p.target,
                            reason: ExclusionReason::RejectedByProvider(why),
                        });
                        continue;
                    }
                    let held = Held {
                        target: p.target,
                        size: p.size,
                        hourly_micros: p.hourly_micros,
                        budgets: p.budgets,
                        via_fallback: p.via_fallback,
                    };
                    self.create(i, held);
                    return Attempt::Placed;
                }
                Outcome::NoTarget(OnNoTarget::Pending) => return Attempt::Pending(deps(&decision)),
                Outcome::NoTarget(OnNoTarget::Fail) | Outcome::InvalidAnnotation { .. } => {
                    let reason = explain::summary(self.policy, &decision);
                    self.fail(i, reason);
                    return Attempt::Failed;
                }
            }
        }
    }

    fn count_rejections(&mut self, d: &Decision) {
        for v in &d.verdicts {
            if let Verdict::Rejected(r) = &v.verdict {
                self.stats[v.target.index()].rejections[report::category(r)] += 1;
            }
        }
    }

    fn fail(&mut self, i: u32, reason: String) {
        let pod = &mut self.pods[i as usize];
        pod.state = State::Failed;
        let f = &mut self.failures[pod.group as usize];
        f.pods += 1;
        f.reason.get_or_insert(reason);
    }

    /// Asks for the create: it queues behind earlier creates to the same target and goes when
    /// every bucket it passes has a token; it holds its regional capacity meanwhile.
    fn create(&mut self, i: u32, held: Held) {
        let pod = &mut self.pods[i as usize];
        pod.attempt += 1;
        pod.state = State::Creating;
        pod.held = Some(held);
        pod.asked_at = self.now;
        pod.held_by = None;
        self.cloud.hold(held.target, held.size);
        self.creates[held.target.index()].push_back(i);
        self.pump(held.target);
    }

    /// Lets the creates queued for target `t` go while the buckets allow, then schedules the next
    /// pump for when they might.
    fn pump(&mut self, t: TargetId) {
        if self.pump_at[t.index()] == Some(self.now) {
            self.pump_at[t.index()] = None;
        }
        while let Some(&i) = self.creates[t.index()].front() {
            let group = self.pods[i as usize].group;
            match self.cloud.try_create(t, group, self.now) {
                Ok(()) => {
                    self.creates[t.index()].pop_front();
                    self.admit(i);
                }
                Err(wait) => {
                    self.pods[i as usize].held_by = wait.held_by.or(self.pods[i as usize].held_by);
                    if self.pump_at[t.index()].is_none_or(|at| at > wait.at || at < self.now) {
                        self.pump_at[t.index()] = Some(wait.at);
                        self.push(wait.at, Ev::Pump(t.0));
                    }
                    return;
                }
            }
        }
    }

    /// The provider accepted the create: the pod cold-starts, billing starts.
    fn admit(&mut self, i: u32) {
        let pod = &self.pods[i as usize];
        let Some(held) = pod.held else { return };
        let (waited, held_by, attempt) = (self.now - pod.asked_at, pod.held_by, pod.attempt);
        let cold = self.cloud.cold_start(held.target).at(unit(
            self.seed,
            Stream::ColdStart,
            u64::from(i),
            u64::from(attempt),
        ));
        let pod = &mut self.pods[i as usize];
        pod.state = State::Starting;
        pod.billed_from = self.now;
        let s = &mut self.stats[held.target.index()];
        if waited > 0 {
            s.throttled_creates += 1;
            s.longest_wait = s.longest_wait.max(waited);
            if let Some(b) = held_by {
                *s.held_by
                    .entry(self.cloud.bucket_name(b).to_string())
                    .or_default() += 1;
            }
        }
        s.placed += 1;
        s.starting += 1;
        if held.via_fallback {
            s.via_fallback += 1;
        }
        self.push(self.now + cold, Ev::Running(i, attempt));
    }

    /// The target went down under a create in flight: the provider refuses it, the pod's room is
    /// given back and it is decided again (the outage excludes that target).
    fn refuse_in_flight(&mut self, i: u32) {
        let pod = &mut self.pods[i as usize];
        let Some(held) = pod.held.take() else { return };
        pod.state = State::Pending;
        self.ledger.release(&self.pods[i as usize].view.uid);
        *self.stats[held.target.index()]
            .refused
            .entry(REFUSED_OUTAGE)
            .or_default() += 1;
        let sharing = self.cloud.free(held.target, held.size).to_vec();
        self.wake_budgets(held.budgets);
        for t in sharing {
            self.wake_target(t);
        }
        match self.try_place(i) {
            Attempt::Pending(deps) => self.enqueue(i, Some(deps)),
            Attempt::Placed | Attempt::Failed => {}
        }
    }

    fn running(&mut self, i: u32, attempt: u32) {
        let pod = &mut self.pods[i as usize];
        if pod.attempt != attempt || pod.state != State::Starting {
            return;
        }
        let Some(held) = pod.held else { return };
        pod.state = State::Running;
        let (waited, run_for) = (self.now - pod.arrive, pod.run_for);
        let s = &mut self.stats[held.target.index()];
        s.starting -= 1;
        s.running += 1;
        s.peak_running = s.peak_running.max(s.running);
        s.time_to_running.push(waited);
        self.push(self.now + run_for, Ev::Finish(i));
    }

    fn finish(&mut self, i: u32) {
        let Some(held) = self.pods[i as usize].held else {
            return;
        };
        if self.pods[i as usize].state != State::Running {
            return;
        }
        self.pods[i as usize].state = State::Done;
        self.bill(i, self.now);
        let s = &mut self.stats[held.target.index()];
        s.running -= 1;
        s.completed += 1;
        self.ledger.release(&self.pods[i as usize].view.uid);
        let booking = self.cloud.book_delete(held.target, self.now);
        if booking.at > self.now {
            let s = &mut self.stats[held.target.index()];
            s.throttled_deletes += 1;
            s.longest_wait = s.longest_wait.max(booking.at - self.now);
            if let Some(b) = booking.held_by {
                *s.held_by
                    .entry(self.cloud.bucket_name(b).to_string())
                    .or_default() += 1;
            }
            self.push(booking.at, Ev::Deleted(i));
        } else {
            self.deleted(i);
        }
        self.wake_target(held.target);
        self.wake_budgets(held.budgets);
    }

    /// The provider deleted the workload: its regional capacity is free again.
    fn deleted(&mut self, i: u32) {
        let Some(held) = self.pods[i as usize].held else {
            return;
        };
        let sharing = self.cloud.free(held.target, held.size).to_vec();
        for t in sharing {
            self.wake_target(t);
        }
    }

    /// Adds what pod `i` cost from its accepted create to `end`, at least the target's minimum.
    fn bill(&mut self, i: u32, end: Micros) {
        let pod = &self.pods[i as usize];
        let Some(held) = pod.held else { return };
        let t = self.policy.target(held.target);
        let billed = end
            .saturating_sub(pod.billed_from)
            .max(u64::from(t.pricing.minimum_seconds) * SECOND);
        let s = &mut self.stats[held.target.index()];
        s.milli_cpu_us += u128::from(held.size.milli_cpu) * u128::from(billed);
        s.memory_mib_us += u128::from(held.size.memory_mib) * u128::from(billed);
        s.cost_us += u128::from(held.hourly_micros) * u128::from(billed);
    }

    fn outage(&mut self, t: TargetId, down: bool) {
        if down {
            if !self.outage_ids.contains(&t) {
                self.outage_ids.push(t);
            }
        } else {
            self.outage_ids.retain(|x| *x != t);
        }
        self.outage_ids.sort();
        self.outages = self
            .outage_ids
            .iter()
            .map(|&target| Exclusion {
                target,
                reason: ExclusionReason::CircuitOpen,
            })
            .collect();
        if down {
            // The circuit opens: creates queued for that target fail fast and fall back.
            let in_flight: Vec<u32> = self.creates[t.index()].drain(..).collect();
            for i in in_flight {
                self.refuse_in_flight(i);
            }
        } else {
            self.wake_target(t);
        }
    }

    /// Puts pod `i` in its class queue; `deps` (from a decision just made) re-blocks the class.
    fn enqueue(&mut self, i: u32, deps: Option<Deps>) {
        let c = self.pods[i as usize].class as usize;
        self.pods[i as usize].state = State::Pending;
        self.pending += 1;
        let class = &mut self.classes[c];
        let old_head = class.queue.first().copied();
        class.queue.insert(i);
        let new_head = class.queue.first().copied();
        match (class.state, deps) {
            (ClassState::Woken, _) => {
                if old_head != new_head
                    && let (Some(o), Some(n)) = (old_head, new_head)
                {
                    self.woken.remove(&(o, c as u32));
                    self.woken.insert((n, c as u32));
                }
            }
            (_, Some(deps)) => self.block(c, deps),
            (ClassState::Blocked, None) => {}
            (ClassState::Idle, None) => {
                // Not decided yet: let the next sweep decide it.
                class.state = ClassState::Woken;
                if let Some(n) = new_head {
                    self.woken.insert((n, c as u32));
                }
                self.schedule_sweep();
            }
        }
    }

    fn block(&mut self, c: usize, deps: Deps) {
        let class = &mut self.classes[c];
        class.epoch += 1;
        class.state = ClassState::Blocked;
        let entry = (c as u32, class.epoch);
        let classes = &self.classes;
        let live = |w: &(u32, u32)| {
            classes[w.0 as usize].state == ClassState::Blocked && classes[w.0 as usize].epoch == w.1
        };
        for t in deps.targets {
            let list = &mut self.target_waiters[t.index()];
            list.push(entry);
            if list.len() > 64 + 4 * classes.len() {
                list.retain(live);
            }
        }
        for b in deps.budgets {
            let list = &mut self.budget_waiters[b];
            list.push(entry);
            if list.len() > 64 + 4 * classes.len() {
                list.retain(live);
            }
        }
    }

    fn wake(&mut self, waiters: Vec<(u32, u32)>) {
        for (c, epoch) in waiters {
            let class = &mut self.classes[c as usize];
            if class.state == ClassState::Blocked
                && class.epoch == epoch
                && let Some(&head) = class.queue.first()
            {
                class.state = ClassState::Woken;
                self.woken.insert((head, c));
            }
        }
        if !self.woken.is_empty() {
            self.schedule_sweep();
        }
    }

    fn wake_target(&mut self, t: TargetId) {
        let waiters = std::mem::take(&mut self.target_waiters[t.index()]);
        self.wake(waiters);
    }

    fn wake_budgets(&mut self, budgets: BudgetSet) {
        for b in 0..self.budget_waiters.len() {
            if budgets.contains(b) {
                let waiters = std::mem::take(&mut self.budget_waiters[b]);
                self.wake(waiters);
            }
        }
    }

    fn schedule_sweep(&mut self) {
        if self.sweep_scheduled {
            return;
        }
        self.sweep_scheduled = true;
        let at = self
            .last_sweep
            .map_or(self.now, |last| self.now.max(last + RETRY_INTERVAL));
        self.push(at, Ev::Sweep);
    }

    /// Retries woken classes, oldest waiting pod first.
    fn sweep(&mut self) {
        self.sweep_scheduled = false;
        self.last_sweep = Some(self.now);
        self.sweeps += 1;
        let mut failures = 0;
        while let Some((head, c)) = self.woken.pop_first() {
            match self.try_place(head) {
                Attempt::Placed | Attempt::Failed => {
                    self.pending -= 1;
                    let class = &mut self.classes[c as usize];
                    class.queue.remove(&head);
                    match class.queue.first() {
                        Some(&next) => {
                            self.woken.insert((next, c));
                        }
                        None => class.state = ClassState::Idle,
                    }
                    failures = 0;
                }
                Attempt::Pending(deps) => {
                    self.block(c as usize, deps);
                    failures += 1;
                    if failures >= MAX_SWEEP_FAILURES {
                        break;
                    }
                }
            }
        }
        if !self.woken.is_empty() {
            self.schedule_sweep();
        }
    }

    /// Bills pods still running at the horizon and counts what is left where.
    fn settle_at_horizon(&mut self) {
        for i in 0..self.pods.len() {
            let pod = &self.pods[i];
            let Some(held) = pod.held else { continue };
            match pod.state {
                State::Starting | State::Running => {
                    self.bill(i as u32, self.now);
                    self.stats[held.target.index()].running_at_end += 1;
                }
                State::Creating => self.stats[held.target.index()].waiting_for_create_at_end += 1,
                _ => {}
            }
        }
    }

    /// Why pending pod `i` still has no target, decided against the final state without
    /// reserving anything.
    pub(crate) fn pending_reason(&self, i: u32) -> String {
        let mut excluded = self.outages.clone();
        let pod = &self.pods[i as usize].view;
        loop {
            let d = engine::decide(self.policy, pod, &self.ledger, &excluded);
            match &d.outcome {
                Outcome::Placed(p) => match self.cloud.refusal(p.target, p.size) {
                    Some((_, why)) => excluded.push(Exclusion {
                        target: p.target,
                        reason: ExclusionReason::RejectedByProvider(why),
                    }),
                    None => {
                        return format!(
                            "{} has room again; the next retry places it",
                            self.policy.target(p.target).name
                        );
                    }
                },
                _ => return explain::summary(self.policy, &d),
            }
        }
    }

    /// Classes with waiting pods: (oldest pod, pods waiting).
    pub(crate) fn waiting_classes(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.classes
            .iter()
            .filter_map(|c| c.queue.first().map(|&head| (head, c.queue.len())))
    }
}

/// Does a CEL expression read `pod.name` (or `pod["name"]`)? `pod.namespace` does not count.
fn reads_pod_name(source: &str) -> bool {
    source.match_indices("name").any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + 4..].chars().next();
        matches!(before, Some('.' | '"' | '\''))
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The targets and budgets whose change could let this pod in.
fn deps(d: &Decision) -> Deps {
    let mut deps = Deps::default();
    for v in &d.verdicts {
        match &v.verdict {
            Verdict::Rejected(Rejection::Quota { .. })
            | Verdict::Rejected(Rejection::Excluded(_)) => deps.targets.push(v.target),
            Verdict::Rejected(Rejection::Budget { budget, .. })
                if !deps.budgets.contains(budget) =>
            {
                deps.budgets.push(*budget)
            }
            _ => {}
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    fn policy(targets_and_rules: &str) -> Policy {
        let text = format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n{targets_and_rules}"
        );
        load_files(&[("p.yaml".into(), text)]).unwrap_or_else(|e| panic!("test policy: {e}"))
    }

    fn workload(spec: &str) -> Workload {
        let text = format!("apiVersion: burstgate.io/v1alpha1\nkind: Workload\nspec:\n{spec}");
        Workload::parse("w.yaml", &text).unwrap_or_else(|e| panic!("test workload: {e}"))
    }

    /// A flow-style pod template.
    fn pod(namespace: &str, cpu: &str) -> String {
        format!(
            "{{metadata: {{namespace: {namespace}}}, spec: {{containers: [{{name: app, image: app, resources: {{requests: {{cpu: {cpu}, memory: 512Mi}}}}}}]}}}}"
        )
    }

    fn target<'r>(r: &'r Report, name: &str) -> &'r report::TargetReport {
        r.targets.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn throttling_shows_up_for_an_aci_heavy_burst() {
        let p = policy(
            "  targets:\n    - {name: aci, provider: aci, region: eastus, pricing: {vcpuHour: 0.0405}, quota: {pods: 10000}}\n",
        );
        let w = workload(&format!(
            "  duration: 1h\n  groups:\n    - {{name: burst, count: 400, over: 10s, runFor: 1m, pod: {}}}\n  providers: {{aci: {{capacity: {{pods: 10000, vcpu: 10000}}}}}}\n",
            pod("web", "100m")
        ));
        let r = run(&p, &w, 1, false);
        let aci = target(&r, "aci");
        // 100 creates go at once, then one every 3 s: 300 of 400 wait, the last about 15 minutes.
        assert_eq!(aci.placed, 400);
        assert!(aci.throttled.creates >= 290, "{:?}", aci.throttled);
        assert!(
            aci.throttled
                .by_bucket
                .contains_key("ACI creates per 5 minutes"),
            "{:?}",
            aci.throttled
        );
        assert!(
            aci.throttled.longest_wait_seconds >= 14.0 * 60.0,
            "{:?}",
            aci.throttled
        );
        assert!(aci.time_to_running.unwrap().p99_seconds > 14.0 * 60.0);
        assert!(
            r.table().contains("held by ACI creates per 5 minutes"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn pods_pend_when_quota_is_full_and_are_placed_when_earlier_pods_finish() {
        let p = policy(
            "  targets:\n    - {name: sim, provider: sim, region: lab, quota: {pods: 10}}\n",
        );
        let w = workload(&format!(
            "  duration: 30m\n  groups:\n    - {{name: jobs, count: 30, runFor: 5m, pod: {}}}\n  providers: {{sim: {{coldStart: 0s}}}}\n",
            pod("batch", "1")
        ));
        let r = run(&p, &w, 1, false);
        let sim = target(&r, "sim");
        assert_eq!((sim.placed, sim.completed, sim.peak_running), (30, 30, 10));
        assert_eq!(r.pods.pending_at_end, 0);
        assert!(sim.rejections["quota"] > 0);
        // Three waves of ten: the last wave waited for two earlier ones.
        let ttr = sim.time_to_running.unwrap();
        assert!((600.0..=602.0).contains(&ttr.p99_seconds), "{ttr:?}");
        let pending = r
            .timeline
            .series
            .iter()
            .find(|s| s.name == "pending")
            .unwrap();
        assert_eq!(pending.values[0], 0);
        assert_eq!(pending.values[1], 20);
        assert_eq!(*pending.values.last().unwrap(), 0);
    }

    #[test]
    fn pods_left_pending_at_the_end_are_reported_with_the_engines_reason() {
        let p =
            policy("  targets:\n    - {name: sim, provider: sim, region: lab, quota: {vcpu: 4}}\n");
        let w = workload(&format!(
            "  duration: 10m\n  groups:\n    - {{name: jobs, count: 10, runFor: 1h, pod: {}}}\n",
            pod("batch", "1")
        ));
        let r = run(&p, &w, 1, false);
        assert_eq!(r.pods.pending_at_end, 6);
        assert_eq!(r.pending.len(), 1);
        assert_eq!(
            (r.pending[0].group.as_str(), r.pending[0].pods),
            ("jobs", 6)
        );
        assert!(
            r.pending[0].reason.contains("quota: 0 of 4 vCPU left"),
            "{}",
            r.pending[0].reason
        );
        assert!(r.table().contains("jobs (batch): 6 pods"), "{}", r.table());
    }

    #[test]
    fn a_rule_that_fails_pods_reports_them_failed_with_the_reason() {
        let p = policy(
            "  targets:\n    - {name: sim, provider: sim, region: lab, quota: {vcpu: 2}}\n  rules:\n    - {name: strict, match: {}, onNoTarget: fail}\n",
        );
        let w = workload(&format!(
            "  duration: 10m\n  groups:\n    - {{name: jobs, count: 5, runFor: 1h, pod: {}}}\n",
            pod("batch", "1")
        ));
        let r = run(&p, &w, 1, false);
        assert_eq!(
            (r.pods.placed, r.pods.failed, r.pods.pending_at_end),
            (2, 3, 0)
        );
        assert!(
            r.failed[0]
                .reason
                .starts_with("failed: no eligible target under rule strict"),
            "{}",
            r.failed[0].reason
        );
    }

    const TWO_SIMS: &str = "  targets:
    - {name: primary, provider: sim, region: lab, pricing: {vcpuHour: 0.01}}
    - {name: backup, provider: sim, region: lab, pricing: {vcpuHour: 0.05}}
";

    #[test]
    fn an_outage_event_makes_pods_fall_back() {
        let p = policy(TWO_SIMS);
        let w = workload(&format!(
            "  duration: 30m\n  groups:\n    - {{name: web, count: 200, over: 20m, runFor: 1m, pod: {}}}\n  events:\n    - {{at: 5m, target: primary, down: 10m}}\n",
            pod("web", "250m")
        ));
        let r = run(&p, &w, 1, false);
        let (primary, backup) = (target(&r, "primary"), target(&r, "backup"));
        // Arrivals every 6 s: those in [5m, 15m) go to the backup.
        assert_eq!(backup.placed, 100, "{backup:?}");
        assert_eq!(primary.placed, 100);
        assert_eq!(primary.rejections["outage"], 100);
        assert_eq!(r.pods.pending_at_end, 0);
    }

    #[test]
    fn creates_queued_for_a_target_that_goes_down_fall_back_at_once() {
        // The primary takes one create per 10 s, so creates queue; the outage fails them over.
        let p = policy(&TWO_SIMS.replace(
            "pricing: {vcpuHour: 0.01}}",
            "pricing: {vcpuHour: 0.01}, rateLimits: [{operation: create, burst: 1, perSecond: 0.1}]}",
        ));
        let w = workload(&format!(
            "  duration: 30m\n  groups:\n    - {{name: web, count: 30, runFor: 1m, pod: {}}}\n  events:\n    - {{at: 60s, target: primary, down: 10m}}\n",
            pod("web", "250m")
        ));
        let r = run(&p, &w, 1, false);
        let (primary, backup) = (target(&r, "primary"), target(&r, "backup"));
        assert_eq!(
            primary.placed, 6,
            "creates at 0, 10, .., 50 s went before the outage"
        );
        assert_eq!(primary.refused["outage"], 24);
        assert_eq!(backup.placed, 24);
        assert!(backup.time_to_running.unwrap().max_seconds <= 66.0);
    }

    #[test]
    fn a_provider_refusing_beyond_its_published_capacity_makes_pods_fall_back() {
        // The policy allows 300 pods on ACI eastus; ACI itself runs 100 container groups per region.
        let p = policy(
            "  targets:
    - {name: aci, provider: aci, region: eastus, pricing: {vcpuHour: 0.0405}, quota: {pods: 300, vcpu: 300}}
    - {name: fargate, provider: fargate, region: us-east-1, pricing: {vcpuHour: 0.05}}
",
        );
        let w = workload(&format!(
            "  duration: 1h\n  groups:\n    - {{name: jobs, count: 150, runFor: 2h, pod: {}}}\n",
            pod("batch", "250m")
        ));
        let r = run(&p, &w, 1, false);
        let (aci, fargate) = (target(&r, "aci"), target(&r, "fargate"));
        assert_eq!(aci.placed, 100);
        assert_eq!(aci.refused["capacity: container groups"], 50);
        assert_eq!(fargate.placed, 50);
        assert!(
            r.table().contains("capacity: container groups 50"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn cost_honours_minimum_seconds() {
        let targets = "  targets:\n    - {name: sim, provider: sim, region: lab, pricing: {vcpuHour: 3.6, minimumSeconds: 60}}\n";
        let w = workload(&format!(
            "  duration: 10m\n  groups:\n    - {{name: short, count: 10, runFor: 10s, pod: {}}}\n  providers: {{sim: {{coldStart: 0s}}}}\n",
            pod("batch", "1")
        ));
        let r = run(&policy(targets), &w, 1, false);
        let sim = target(&r, "sim");
        // Ten pods of 1 vCPU billed 60 s each at $3.60 per vCPU-hour: $0.60, not $0.10.
        assert_eq!(sim.cost_usd, 0.6);
        assert_eq!(sim.vcpu_hours, 0.1667);
        let r = run(
            &policy(&targets.replace(", minimumSeconds: 60", "")),
            &w,
            1,
            false,
        );
        assert_eq!(target(&r, "sim").cost_usd, 0.1);
    }

    #[test]
    fn pods_still_running_at_the_end_are_billed_up_to_the_horizon() {
        let p = policy(
            "  targets:\n    - {name: sim, provider: sim, region: lab, pricing: {vcpuHour: 1.0}}\n",
        );
        let w = workload(&format!(
            "  duration: 30m\n  groups:\n    - {{name: long, count: 2, runFor: 2h, pod: {}}}\n  providers: {{sim: {{coldStart: 0s}}}}\n",
            pod("batch", "1")
        ));
        let r = run(&p, &w, 1, false);
        assert_eq!(
            (target(&r, "sim").running_at_end, target(&r, "sim").cost_usd),
            (2, 1.0)
        );
    }

    #[test]
    fn a_waiting_group_does_not_hold_up_pods_of_another_group() {
        let p =
            policy("  targets:\n    - {name: sim, provider: sim, region: lab, quota: {vcpu: 4}}\n");
        let w = workload(&format!(
            "  duration: 1h\n  groups:\n    - {{name: big, count: 20, runFor: 10m, pod: {}}}\n    - {{name: small, count: 10, start: 1m, over: 1m, runFor: 10s, pod: {}}}\n  providers: {{sim: {{coldStart: 0s}}}}\n",
            pod("batch", "3"),
            pod("web", "100m")
        ));
        let r = run(&p, &w, 1, false);
        // One big pod holds 3 of 4 vCPU, the other big ones wait their turn (one every 10 minutes,
        // seven by the end); the small ones fit beside it as they arrive.
        assert_eq!(r.pods.placed, 17, "{}", r.table());
        assert_eq!(
            target(&r, "sim").peak_running,
            3,
            "a big pod and two overlapping small ones"
        );
        assert_eq!(r.pending.len(), 1);
        assert_eq!(
            (r.pending[0].group.as_str(), r.pending[0].pods),
            ("big", 13)
        );
    }

    #[test]
    fn a_long_pending_queue_is_retried_without_quadratic_work() {
        let p = policy(
            "  targets:\n    - {name: sim, provider: sim, region: lab, quota: {pods: 10}}\n",
        );
        let w = workload(&format!(
            "  duration: 1h\n  groups:\n    - {{name: many, count: 5000, over: 1m, runFor: {{min: 30s, max: 90s}}, pod: {}}}\n",
            pod("batch", "100m")
        ));
        let r = run(&p, &w, 1, false);
        assert!(r.pods.placed > 300, "{}", r.table());
        assert!(r.pods.pending_at_end > 4000);
        // Queued pods identical to a waiting one are not decided again until room frees.
        assert!(
            r.totals.decisions < 2 * r.pods.placed + r.totals.retry_sweeps + 100,
            "{:?}",
            r.totals
        );
    }

    #[test]
    fn the_same_policy_workload_and_seed_give_a_byte_identical_report() {
        let p = policy(TWO_SIMS);
        let w = workload(&format!(
            "  duration: 1h\n  groups:\n    - {{name: web, count: 500, over: 30m, arrival: random, runFor: {{min: 1m, max: 9m}}, pod: {}}}\n  events:\n    - {{at: 10m, target: primary, down: 5m}}\n",
            pod("web", "250m")
        ));
        let a = run(&p, &w, 7, false).to_json();
        assert_eq!(a, run(&p, &w, 7, false).to_json());
        assert_ne!(
            a,
            run(&p, &w, 8, false).to_json(),
            "another seed draws other cold starts and run times"
        );
    }

    #[test]
    fn an_outage_naming_an_unknown_target_is_an_error_with_its_line() {
        let p = policy(TWO_SIMS);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        let text = format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: Workload\nspec:\n  duration: 1h\n  groups:\n    - {{name: web, count: 1, runFor: 1m, pod: {}}}\n  events:\n    - {{at: 1m, target: nowhere, down: 1m}}\n",
            pod("web", "1")
        );
        std::fs::write(&path, text).unwrap();
        let err = run_file(&p, &path, 1, false).unwrap_err().to_string();
        assert!(err.ends_with("w.yaml:8: spec.events[0].target: unknown target \"nowhere\" (the policy has primary, backup)"), "{err}");
    }

    #[test]
    fn a_missing_workload_file_is_an_error_not_a_panic() {
        let err = run_file(
            &policy(TWO_SIMS),
            std::path::Path::new("no/such/workload.yaml"),
            1,
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read workload no/such/workload.yaml"),
            "{err}"
        );
    }

    #[test]
    fn the_report_is_written_as_json_and_an_svg_chart() {
        let p = policy(TWO_SIMS);
        let w = workload(&format!(
            "  duration: 10m\n  groups:\n    - {{name: web, count: 20, runFor: 1m, pod: {}}}\n",
            pod("web", "1")
        ));
        let r = run(&p, &w, 1, false);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/out");
        r.write(&out).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["pods"]["placed"], 20);
        let svg = std::fs::read_to_string(out.join("running.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("primary"),
            "{}",
            &svg[..200.min(svg.len())]
        );
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        assert!(matches!(
            r.write(&blocked),
            Err(crate::simulate::Error::Write { .. })
        ));
    }

    #[test]
    fn only_expressions_reading_the_pod_name_make_pods_of_a_group_distinct() {
        assert!(reads_pod_name("pod.name.startsWith('a')"));
        assert!(reads_pod_name("pod[\"name\"] == 'x'"));
        assert!(!reads_pod_name("pod.namespace == 'web'"));
        assert!(!reads_pod_name("pod.gpus > 0"));
    }
}
