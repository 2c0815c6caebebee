//! The workload file a simulation replays: groups of pods arriving over time, running for a
//! while, and target outages.
//!
//! ```yaml
//! apiVersion: burstgate.io/v1alpha1
//! kind: Workload
//! metadata: {name: burst}            # optional; the file name otherwise
//! spec:
//!   duration: 1h                     # horizon of the virtual clock
//!   groups:
//!     - name: web-burst
//!       count: 2000
//!       start: 0s                    # first arrival (default 0s)
//!       over: 10m                    # arrivals spread over this window (default 0s: all at once)
//!       arrival: even                # even (default) or random (uniform in the window, seeded)
//!       runFor: {min: 10m, max: 20m} # or one duration; drawn per pod from the seed
//!       pod:                         # a Pod manifest (apiVersion, kind and name optional)
//!         metadata: {namespace: web, labels: {app: web}}
//!         spec: {containers: [{name: app, image: nginx, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}
//!   events:                          # optional: target outages (new creates there fail)
//!     - {at: 20m, target: aci-eastus, down: 10m}
//!   providers:                       # optional: how the simulated clouds behave
//!     aci: {coldStart: {min: 10s, max: 60s}, capacity: {vcpu: 100, pods: 100}}
//!     sim: {coldStart: 2s}
//! ```
//!
//! Durations are `500ms`, `90s`, `10m`, `1h30m`, `1.5h`, or a number of seconds. Unknown fields
//! are errors; every error names `file:line: field`. Default cold starts: ACI 10-60 s, Fargate
//! 20-70 s, cluster 2-5 s, sim 1-5 s; default capacity: ACI's published 100 container groups and
//! 100 cores per region (see [`crate::provider::limits`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::policy::model::{API_VERSION, ProviderKind};
use crate::policy::{PodView, Policy};
use crate::provider::limits::{self, Capacity};
use crate::simulate::error::{Error, Result};

/// Virtual time and durations, in microseconds.
pub type Micros = u64;
/// One second of virtual time.
pub const SECOND: Micros = 1_000_000;
/// The only `kind` of workload file.
pub const KIND: &str = "Workload";
/// Most pods one workload may hold.
pub const MAX_PODS: u64 = 1_000_000;

/// A checked workload, ready to replay.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `metadata.name`, else the file name without extension.
    pub name: String,
    /// The file it was read from, for messages.
    pub file: String,
    /// Horizon of the virtual clock.
    pub duration: Micros,
    /// Pod groups, in file order.
    pub groups: Vec<Group>,
    /// Target outages, in file order.
    pub outages: Vec<Outage>,
    /// How each simulated provider behaves.
    pub providers: Providers,
}

/// Pods made from one template.
#[derive(Debug, Clone)]
pub struct Group {
    /// Unique name; pods are named `<group>-<n>`.
    pub name: String,
    /// How many pods.
    pub count: u32,
    /// First arrival.
    pub start: Micros,
    /// Window the arrivals spread over.
    pub over: Micros,
    /// How arrivals spread over the window.
    pub arrival: Arrival,
    /// How long each pod runs once Running.
    pub run_for: Range,
    /// The engine's view of the template (name and UID are set per pod).
    pub pod: PodView,
}

/// How a group's arrivals spread over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced: pod `i` of `n` at `start + over * i / n`.
    #[default]
    Even,
    /// Uniformly at random in the window (from the seed).
    Random,
}

/// A target that refuses new creates for a while.
#[derive(Debug, Clone)]
pub struct Outage {
    /// When it starts.
    pub at: Micros,
    /// Target name in the policy.
    pub target: String,
    /// How long it lasts.
    pub down: Micros,
    /// Line in the workload file, for messages.
    pub line: Option<usize>,
}

/// A closed range of durations; a value is drawn uniformly from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Shortest.
    pub min: Micros,
    /// Longest.
    pub max: Micros,
}

impl Range {
    /// A range of one value.
    pub const fn fixed(v: Micros) -> Range {
        Range { min: v, max: v }
    }
    /// The value at `u` in `[0, 1)`.
    pub fn at(&self, u: f64) -> Micros {
        self.min + ((self.max - self.min) as f64 * u) as Micros
    }
}

/// How one simulated provider behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderSettings {
    /// Time from the accepted create to Running.
    pub cold_start: Range,
    /// What one region (per spot / regular) runs at once; beyond it creates are refused.
    pub capacity: Capacity,
}

/// Settings for every provider kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Providers {
    /// Azure Container Instances.
    pub aci: ProviderSettings,
    /// ECS on Fargate.
    pub fargate: ProviderSettings,
    /// The cluster itself.
    pub cluster: ProviderSettings,
    /// The simulated provider.
    pub sim: ProviderSettings,
}

impl Default for Providers {
    fn default() -> Self {
        let s = |min: u64, max: u64, kind| ProviderSettings {
            cold_start: Range {
                min: min * SECOND,
                max: max * SECOND,
            },
            capacity: limits::capacity(kind),
        };
        Providers {
            aci: s(10, 60, ProviderKind::Aci),
            fargate: s(20, 70, ProviderKind::Fargate),
            cluster: s(2, 5, ProviderKind::Cluster),
            sim: s(1, 5, ProviderKind::Sim),
        }
    }
}

impl Providers {
    /// The settings of one provider kind.
    pub fn get(&self, kind: ProviderKind) -> &ProviderSettings {
        match kind {
            ProviderKind::Aci => &self.aci,
            ProviderKind::Fargate => &self.fargate,
            ProviderKind::Cluster => &self.cluster,
            ProviderKind::Sim => &self.sim,
        }
    }
    fn get_mut(&mut self, kind: ProviderKind) -> &mut ProviderSettings {
        match kind {
            ProviderKind::Aci => &mut self.aci,
            ProviderKind::Fargate => &mut self.fargate,
            ProviderKind::Cluster => &mut self.cluster,
            ProviderKind::Sim => &mut self.sim,
        }
    }
}

impl Workload {
    /// Parses and checks a workload file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Workload> {
        let options = serde_saphyr::options! { with_snippet: false };
        let mut path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize::<_, Document>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        });
        match parsed {
            Ok(doc) => check(file, doc),
            Err(e) => {
                let field = if path == "." {
                    String::new()
                } else {
                    without_span_segments(&path)
                };
                Err(Error::Invalid {
                    file: file.to_string(),
                    line: e.location().map(|l| l.line() as usize),
                    field,
                    message: first_line(&e.to_string()),
                })
            }
        }
    }

    /// Reads and parses a workload file.
    pub fn read(path: &std::path::Path) -> Result<Workload> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Workload::parse(&path.display().to_string(), &text)
    }

    /// Checks what only the policy can tell: every outage names one of its targets.
    pub fn check_against(&self, policy: &Policy) -> Result<()> {
        for (i, o) in self.outages.iter().enumerate() {
            if policy.target_by_name(&o.target).is_none() {
                let known: Vec<&str> = policy.targets.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::Invalid {
                    file: self.file.clone(),
                    line: o.line,
                    field: format!("spec.events[{i}].target"),
                    message: format!(
                        "unknown target {:?} (the policy has {})",
                        o.target,
                        known.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Pods in the whole workload.
    pub fn pod_count(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }
}

/// `Spanned` fields add a `value` segment to serde paths (`spec.value.groups[0].pod.value`);
/// operators never write it, so it is dropped after the fields this file wraps.
fn without_span_segments(path: &str) -> String {
    const SPANNED: [&str; 14] = [
        "apiVersion",
        "kind",
        "spec",
        "duration",
        "name",
        "count",
        "over",
        "runFor",
        "pod",
        "at",
        "target",
        "down",
        "coldStart",
        "vcpu",
    ];
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('.') {
        let previous = out.last().map(|s: &&str| s.split('[').next().unwrap_or(s));
        if segment == "value" && previous.is_some_and(|p| SPANNED.contains(&p)) {
            continue;
        }
        out.push(segment);
    }
    out.join(".")
}

/// serde-saphyr appends " at line N, column M"; the line is reported separately.
fn first_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// One workload file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    /// Must be `burstgate.io/v1alpha1`.
    api_version: Spanned<String>,
    /// Must be `Workload`.
    kind: Spanned<String>,
    /// Optional name.
    #[serde(default)]
    metadata: MetadataSpec,
    /// The workload.
    spec: Spanned<Spec>,
}

/// Descriptive metadata.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MetadataSpec {
    /// Shown in the report.
    #[serde(default)]
    name: Option<String>,
    /// For humans.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// The body of a workload file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    /// Horizon of the virtual clock.
    duration: Spanned<DurationSpec>,
    /// Pod groups.
    groups: Vec<GroupSpec>,
    /// Target outages.
    #[serde(default)]
    events: Vec<EventSpec>,
    /// Provider behaviour overrides.
    #[serde(default)]
    providers: ProvidersSpec,
}

/// One pod group as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupSpec {
    /// Unique name.
    name: Spanned<String>,
    /// How many pods.
    count: Spanned<u32>,
    /// First arrival.
    #[serde(default)]
    start: DurationSpec,
    /// Arrival window.
    #[serde(default)]
    over: Option<Spanned<DurationSpec>>,
    /// `even` or `random`.
    #[serde(default)]
    arrival: Arrival,
    /// Run time once Running.
    run_for: Spanned<RangeSpec>,
    /// Pod manifest template.
    pod: Spanned<serde_json::Value>,
}

/// One outage as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventSpec {
    /// Start.
    at: Spanned<DurationSpec>,
    /// Target name.
    target: Spanned<String>,
    /// Length.
    down: Spanned<DurationSpec>,
}

/// Per-provider overrides.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProvidersSpec {
    #[serde(default)]
    aci: Option<ProviderSpec>,
    #[serde(default)]
    fargate: Option<ProviderSpec>,
    #[serde(default)]
    cluster: Option<ProviderSpec>,
    #[serde(default)]
    sim: Option<ProviderSpec>,
}

/// How one simulated provider behaves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProviderSpec {
    /// Time from accepted create to Running.
    #[serde(default)]
    cold_start: Option<Spanned<RangeSpec>>,
    /// Regional capacity; a field left out keeps the published default.
    #[serde(default)]
    capacity: Option<CapacitySpec>,
}

/// Regional capacity as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CapacitySpec {
    /// Cores at once.
    #[serde(default)]
    vcpu: Option<Spanned<f64>>,
    /// Workloads at once.
    #[serde(default)]
    pods: Option<u64>,
}

/// A duration: `90s`, `10m`, `1h30m`, `250ms`, `1.5h`, or a number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DurationSpec(Micros);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = DurationSpec;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 90s, 10m, 1h30m or a number of seconds")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<DurationSpec, E> {
        v.checked_mul(SECOND)
            .map(DurationSpec)
            .ok_or_else(|| E::custom("duration too long"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<DurationSpec, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("duration {v} is negative")))
            .and_then(|v| self.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<DurationSpec, E> {
        seconds(v)
            .map(DurationSpec)
            .ok_or_else(|| E::custom(format!("duration {v} is not a number of seconds >= 0")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<DurationSpec, E> {
        parse_duration(v).map(DurationSpec).ok_or_else(|| {
            E::custom(format!("invalid duration {v:?}: expected e.g. 90s, 10m, 1h30m, 250ms or a number of seconds"))
        })
    }
}

fn seconds(v: f64) -> Option<Micros> {
    (0.0..1e9)
        .contains(&v)
        .then(|| (v * SECOND as f64).round() as Micros)
}

/// Parses `1h30m`, `90s`, `250ms`, `1.5h`, `30` (seconds).
pub fn parse_duration(s: &str) -> Option<Micros> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return seconds(v);
    }
    let mut rest = s;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * factor;
    }
    seconds(total)
}

/// A single duration or `{min, max}`.
#[derive(Debug, Clone, Copy)]
struct RangeSpec {
    min: Micros,
    max: Micros,
}

impl<'de> Deserialize<'de> for RangeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(RangeVisitor)
    }
}

struct RangeVisitor;

impl<'de> Visitor<'de> for RangeVisitor {
    type Value = RangeSpec;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration (e.g. 10m) or {min: 10m, max: 20m}")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RangeSpec, E> {
        DurationVisitor
            .visit_u64(v)
            .map(|d| RangeSpec { min: d.0, max: d.0 })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RangeSpec, E> {
        DurationVisitor
            .visit_i64(v)
            .map(|d| RangeSpec { min: d.0, max: d.0 })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<RangeSpec, E> {
        DurationVisitor
            .visit_f64(v)
            .map(|d| RangeSpec { min: d.0, max: d.0 })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RangeSpec, E> {
        DurationVisitor
            .visit_str(v)
            .map(|d| RangeSpec { min: d.0, max: d.0 })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RangeSpec, A::Error> {
        let (mut min, mut max) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "min" => min = Some(map.next_value::<DurationSpec>()?.0),
                "max" => max = Some(map.next_value::<DurationSpec>()?.0),
                other => return Err(de::Error::unknown_field(other, &["min", "max"])),
            }
        }
        let min = min.ok_or_else(|| de::Error::missing_field("min"))?;
        let max = max.ok_or_else(|| de::Error::missing_field("max"))?;
        Ok(RangeSpec { min, max })
    }
}

fn line<T>(s: &Spanned<T>) -> Option<usize> {
    let l = s.referenced.line();
    (l > 0).then_some(l as usize)
}

/// A problem at `line` of `file`, in `field`.
fn invalid(file: &str, line: Option<usize>, field: &str, message: String) -> Error {
    Error::Invalid {
        file: file.to_string(),
        line,
        field: field.to_string(),
        message,
    }
}

/// Checks a parsed document, stopping at the first problem (in file order).
fn check(file: &str, doc: Document) -> Result<Workload> {
    check_header(file, &doc)?;
    let spec_line = line(&doc.spec);
    let spec = doc.spec.value;
    let duration = spec.duration.value.0;
    if duration == 0 {
        return Err(invalid(
            file,
            line(&spec.duration),
            "spec.duration",
            "must be longer than 0s".into(),
        ));
    }
    if spec.groups.is_empty() {
        return Err(invalid(
            file,
            spec_line,
            "spec.groups",
            "a workload needs at least one group".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut total = 0u64;
    let groups = spec
        .groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| check_group(file, i, g, duration, &mut names, &mut total))
        .collect::<Result<Vec<_>>>()?;
    let outages = spec
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| check_event(file, i, e, duration))
        .collect::<Result<Vec<_>>>()?;
    let providers = check_providers(file, spec.providers)?;
    let stem = std::path::Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Workload {
        name: doc.metadata.name.unwrap_or(stem),
        file: file.to_string(),
        duration,
        groups,
        outages,
        providers,
    })
}

/// `apiVersion` and `kind` say this is a workload file.
fn check_header(file: &str, doc: &Document) -> Result<()> {
    if doc.api_version.value != API_VERSION {
        let got = &doc.api_version.value;
        return Err(invalid(
            file,
            line(&doc.api_version),
            "apiVersion",
            format!("must be {API_VERSION}, got {got:?}"),
        ));
    }
    if doc.kind.value != KIND {
        return Err(invalid(
            file,
            line(&doc.kind),
            "kind",
            format!("must be {KIND}, got {:?}", doc.kind.value),
        ));
    }
    Ok(())
}

/// Group `i`: a new name, at least one pod (and at most [`MAX_PODS`] counting the groups before,
/// whose names and pod count are in `names` and `total`), arrivals within the horizon, a run time
/// and a pod template.
fn check_group(
    file: &str,
    i: usize,
    g: GroupSpec,
    duration: Micros,
    names: &mut BTreeSet<String>,
    total: &mut u64,
) -> Result<Group> {
    let at = format!("spec.groups[{i}]");
    let name = g.name.value.trim().to_string();
    if name.is_empty() {
        let field = format!("{at}.name");
        return Err(invalid(
            file,
            line(&g.name),
            &field,
            "must not be empty".into(),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(invalid(
            file,
            line(&g.name),
            &format!("{at}.name"),
            format!("duplicate group name {name:?}"),
        ));
    }
    if g.count.value == 0 {
        let field = format!("{at}.count");
        return Err(invalid(
            file,
            line(&g.count),
            &field,
            "must be at least 1".into(),
        ));
    }
    *total += u64::from(g.count.value);
    if *total > MAX_PODS {
        return Err(invalid(
            file,
            line(&g.count),
            &format!("{at}.count"),
            format!("a workload holds at most {MAX_PODS} pods"),
        ));
    }
    let over = g.over.as_ref().map_or(0, |o| o.value.0);
    if g.start.0.saturating_add(over) > duration {
        return Err(invalid(
            file,
            g.over.as_ref().and_then(line).or(line(&g.name)),
            &format!("{at}.over"),
            format!(
                "arrivals must end within spec.duration ({}); start + over = {}",
                human(duration),
                human(g.start.0 + over)
            ),
        ));
    }
    let run_for = check_run_for(file, &at, &g.run_for)?;
    let pod_line = line(&g.pod).or(line(&g.name));
    let pod = crate::policy::testing::pod_from_value(g.pod.value)
        .map_err(|m| invalid(file, pod_line, &format!("{at}.pod"), m))?;
    Ok(Group {
        name,
        count: g.count.value,
        start: g.start.0,
        over,
        arrival: g.arrival,
        run_for,
        pod,
    })
}

/// A group's `runFor`: an ordered range longer than nothing.
fn check_run_for(file: &str, at: &str, run_for: &Spanned<RangeSpec>) -> Result<Range> {
    let field = format!("{at}.runFor");
    let range = Range {
        min: run_for.value.min,
        max: run_for.value.max,
    };
    if range.min > range.max {
        let message = "min must not be larger than max".into();
        return Err(invalid(file, line(run_for), &field, message));
    }
    if range.max == 0 {
        let message = "must be longer than 0s".into();
        return Err(invalid(file, line(run_for), &field, message));
    }
    Ok(range)
}

/// Outage `i`: starts within the horizon and lasts a while. Its target is checked against the
/// policy later ([`Workload::check_against`]).
fn check_event(file: &str, i: usize, e: EventSpec, duration: Micros) -> Result<Outage> {
    let at = format!("spec.events[{i}]");
    if e.at.value.0 >= duration {
        return Err(invalid(
            file,
            line(&e.at),
            &format!("{at}.at"),
            format!("must be before spec.duration ({})", human(duration)),
        ));
    }
    if e.down.value.0 == 0 {
        let field = format!("{at}.down");
        return Err(invalid(
            file,
            line(&e.down),
            &field,
            "must be longer than 0s".into(),
        ));
    }
    Ok(Outage {
        at: e.at.value.0,
        target: e.target.value.clone(),
        down: e.down.value.0,
        line: line(&e.target),
    })
}

/// The defaults, with each provider block written in the file applied over its kind's.
fn check_providers(file: &str, p: ProvidersSpec) -> Result<Providers> {
    let mut providers = Providers::default();
    for (kind, spec) in [
        (ProviderKind::Aci, p.aci),
        (ProviderKind::Fargate, p.fargate),
        (ProviderKind::Cluster, p.cluster),
        (ProviderKind::Sim, p.sim),
    ] {
        if let Some(spec) = spec {
            apply_provider(file, kind, spec, providers.get_mut(kind))?;
        }
    }
    Ok(providers)
}

/// One provider block: a cold start range and capacity fields that replace the defaults.
fn apply_provider(
    file: &str,
    kind: ProviderKind,
    spec: ProviderSpec,
    settings: &mut ProviderSettings,
) -> Result<()> {
    let at = format!("spec.providers.{kind}");
    if let Some(cs) = spec.cold_start {
        if cs.value.min > cs.value.max {
            return Err(invalid(
                file,
                line(&cs),
                &format!("{at}.coldStart"),
                "min must not be larger than max".into(),
            ));
        }
        settings.cold_start = Range {
            min: cs.value.min,
            max: cs.value.max,
        };
    }
    if let Some(c) = spec.capacity {
        if let Some(v) = c.vcpu {
            if !v.value.is_finite() || v.value < 0.0 {
                return Err(invalid(
                    file,
                    line(&v),
                    &format!("{at}.capacity.vcpu"),
                    format!("must be a number >= 0, got {}", v.value),
                ));
            }
            settings.capacity.milli_cpu = Some((v.value * 1000.0).floor() as u64);
        }
        if let Some(pods) = c.pods {
            settings.capacity.pods = Some(pods);
        }
    }
    Ok(())
}

/// A duration for people: `850ms`, `42s`, `4m10s`, `1h05m`.
pub fn human(d: Micros) -> String {
    let ms = d / 1000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = (d + SECOND / 2) / SECOND;
    match s {
        0..60 => {
            let tenths = (d + SECOND / 20) / (SECOND / 10);
            if tenths % 10 == 0 {
                format!("{}s", tenths / 10)
            } else {
                format!("{}.{}s", tenths / 10, tenths % 10)
            }
        }
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: burstgate.io/v1alpha1
kind: Workload
spec:
  duration: 1h
  groups:
    - name: web
      count: 10
      over: 10m
      runFor: {min: 1m, max: 2m}
      pod:
        metadata: {namespace: web, labels: {app: web}}
        spec: {containers: [{name: app, image: nginx, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}
  events:
    - {at: 20m, target: aci-eastus, down: 10m}
";

    fn error(text: &str) -> String {
        Workload::parse("w.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn durations_parse_in_every_spelling_operators_write() {
        assert_eq!(parse_duration("90s"), Some(90 * SECOND));
        assert_eq!(parse_duration("1h30m"), Some(5400 * SECOND));
        assert_eq!(parse_duration("250ms"), Some(SECOND / 4));
        assert_eq!(parse_duration("1.5h"), Some(5400 * SECOND));
        assert_eq!(parse_duration("30"), Some(30 * SECOND));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("-5s"), None);
    }

    #[test]
    fn a_valid_workload_parses_into_groups_outages_and_default_providers() {
        let w = Workload::parse("dir/burst.yaml", GOOD).unwrap();
        assert_eq!(w.name, "burst");
        assert_eq!(w.duration, 3600 * SECOND);
        assert_eq!(w.groups[0].count, 10);
        assert_eq!(
            w.groups[0].run_for,
            Range {
                min: 60 * SECOND,
                max: 120 * SECOND
            }
        );
        assert_eq!(w.groups[0].pod.resources.milli_cpu, 500);
        assert_eq!(w.groups[0].pod.namespace, "web");
        assert_eq!(w.outages[0].target, "aci-eastus");
        assert_eq!(w.outages[0].line, Some(14));
        assert_eq!(
            w.providers.aci.cold_start,
            Range {
                min: 10 * SECOND,
                max: 60 * SECOND
            }
        );
        assert_eq!(w.providers.aci.capacity.pods, Some(100));
    }

    #[test]
    fn an_unknown_field_is_reported_with_file_line_and_field() {
        let msg = error(&GOOD.replace("      over: 10m", "      over: 10m\n      colour: blue"));
        assert!(
            msg.starts_with("w.yaml:9: spec.groups[0].colour: unknown field `colour`"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_duration_is_reported_with_file_line_and_field() {
        let msg = error(&GOOD.replace("over: 10m", "over: 10 minutes"));
        assert!(
            msg.starts_with("w.yaml:8: spec.groups[0].over: invalid duration \"10 minutes\""),
            "{msg}"
        );
    }

    #[test]
    fn a_range_with_min_above_max_is_rejected_on_its_line() {
        let msg = error(&GOOD.replace("{min: 1m, max: 2m}", "{min: 3m, max: 2m}"));
        assert_eq!(
            msg,
            "w.yaml:9: spec.groups[0].runFor: min must not be larger than max"
        );
    }

    #[test]
    fn an_unknown_key_in_a_range_is_rejected() {
        let msg = error(&GOOD.replace("{min: 1m, max: 2m}", "{min: 1m, mx: 2m}"));
        assert!(
            msg.starts_with("w.yaml:9: spec.groups[0].runFor: unknown field `mx`"),
            "{msg}"
        );
    }

    #[test]
    fn an_invalid_pod_template_names_the_group_pod_field() {
        let msg = error(&GOOD.replace("cpu: 500m", "cpu: lots"));
        assert!(
            msg.starts_with("w.yaml:11: spec.groups[0].pod: container app: cpu quantity \"lots\""),
            "{msg}"
        );
    }

    #[test]
    fn arrivals_past_the_horizon_are_rejected() {
        let msg = error(&GOOD.replace("over: 10m", "over: 2h"));
        assert!(
            msg.starts_with(
                "w.yaml:8: spec.groups[0].over: arrivals must end within spec.duration"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_kind_is_rejected_on_line_two() {
        assert_eq!(
            error(&GOOD.replace("kind: Workload", "kind: Pod")),
            "w.yaml:2: kind: must be Workload, got \"Pod\""
        );
    }

    #[test]
    fn malformed_yaml_is_reported_with_its_line() {
        let msg = error("apiVersion: burstgate.io/v1alpha1\nkind: Workload\nspec:\n  groups: [\n");
        assert!(msg.starts_with("w.yaml:"), "{msg}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_path() {
        let err = Workload::read(std::path::Path::new("/nonexistent/burst.yaml")).unwrap_err();
        assert!(matches!(err, Error::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read workload /nonexistent/burst.yaml (pass --workload FILE"),
            "{err}"
        );
        assert_eq!(
            std::error::Error::source(&err).map(|s| s.to_string()),
            Some("No such file or directory (os error 2)".into())
        );
    }

    #[test]
    fn provider_overrides_replace_cold_starts_and_capacity() {
        let text = format!(
            "{GOOD}  providers:\n    sim: {{coldStart: 0s}}\n    aci: {{capacity: {{vcpu: 50}}}}\n"
        );
        let w = Workload::parse("w.yaml", &text).unwrap();
        assert_eq!(w.providers.sim.cold_start, Range::fixed(0));
        assert_eq!(
            w.providers.aci.capacity,
            Capacity {
                pods: Some(100),
                milli_cpu: Some(50_000)
            }
        );
    }

    #[test]
    fn durations_read_naturally_in_reports() {
        assert_eq!(human(850_000), "850ms");
        assert_eq!(human(42 * SECOND), "42s");
        assert_eq!(human(2_500_000), "2.5s");
        assert_eq!(human(250 * SECOND), "4m10s");
        assert_eq!(human(3900 * SECOND), "1h05m");
    }
}
