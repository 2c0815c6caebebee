//! Reads and checks policy files into a [`Policy`]; the only part of `policy/` that touches files.
//!
//! Every problem is reported as `file:line: field.path: message`, and all problems of all files
//! are reported at once. Watching the directory and keeping the last good policy serving on a
//! bad reload is the caller's job: this module only says "here is the new policy" or "here is
//! why not".

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::policy::checked::{
    AllowRejection, Budget, Connection, MAX_TARGETS, Matcher, Objective, Policy, Pricing, Quota,
    Rule, Source, Target, TargetId, usd_to_micros,
};
use crate::policy::expression::Expression;
use crate::policy::model::{
    API_VERSION, AllowSpec, BudgetSpec, KIND, LimitsSpec, NamedObjective, ObjectiveSpec,
    OnNoTarget, PolicyDocument, PricingSpec, ProviderKind, QuotaSpec, RateLimitSpec, RuleSpec,
    TargetSpec,
};

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line, when the field exists in the file.
    pub line: Option<usize>,
    /// Field path, e.g. `spec.targets[2].pricing.vcpuHour` (empty for whole-file problems).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a policy could not be loaded. Never retryable without an edit, except `Io`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read (retryable: the file may be mid-write).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The files were read but are not a valid policy.
    #[error("{}", render(.0))]
    Invalid(Vec<PolicyError>),
}

impl LoadError {
    /// The individual problems (empty for I/O errors).
    pub fn problems(&self) -> &[PolicyError] {
        match self {
            LoadError::Invalid(v) => v,
            LoadError::Io { .. } => &[],
        }
    }
}

fn render(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads every `*.yaml` / `*.yml` file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Policy, LoadError> {
    let io = |path: &Path, source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        files.push((path.display().to_string(), text));
    }
    if files.is_empty() {
        return Err(LoadError::Invalid(vec![PolicyError {
            file: dir.display().to_string(),
            line: None,
            field: String::new(),
            message: "no policy files (*.yaml) in this directory".into(),
        }]));
    }
    load_files(&files)
}

/// Loads policy documents given as `(file name, contents)`, merged in the order given.
pub fn load_files(files: &[(String, String)]) -> Result<Policy, LoadError> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (name, text) in files {
        match parse_document(name, text) {
            Ok(doc) => parsed.push(doc),
            Err(e) => errors.push(e),
        }
    }
    let policy = build(&parsed, files, &mut errors);
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

/// A parsed file and the line of every field path in it.
struct Parsed {
    file: String,
    doc: PolicyDocument,
    lines: LineMap,
}

impl Parsed {
    fn error(&self, field: String, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: self.lines.line_of(&field),
            field,
            message: message.into(),
        }
    }
    fn source(&self, field: &str) -> Source {
        Source {
            file: self.file.clone(),
            line: self.lines.line_of(field),
        }
    }
}

fn parse_document(file: &str, text: &str) -> Result<Parsed, PolicyError> {
    let lines = LineMap::build(text);
    let options = serde_saphyr::options! { with_snippet: false };
    let mut path: Option<String> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, PolicyDocument>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    let err = match result {
        Ok(doc) => {
            let parsed = Parsed {
                file: file.to_string(),
                doc,
                lines,
            };
            if parsed.doc.api_version != API_VERSION {
                return Err(parsed.error(
                    "apiVersion".into(),
                    format!("must be {API_VERSION}, got {:?}", parsed.doc.api_version),
                ));
            }
            if parsed.doc.kind != KIND {
                return Err(parsed.error(
                    "kind".into(),
                    format!("must be {KIND}, got {:?}", parsed.doc.kind),
                ));
            }
            return Ok(parsed);
        }
        Err(e) => e,
    };
    let field = path.filter(|p| p != ".").unwrap_or_default();
    let line = err
        .location()
        .map(|l| l.line() as usize)
        .or_else(|| lines.line_of(&field));
    let message = first_line(&err.to_string());
    Err(PolicyError {
        file: file.to_string(),
        line,
        field,
        message,
    })
}

/// serde-saphyr appends " at line N column M"; the line is reported separately.
fn first_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn build(parsed: &[Parsed], files: &[(String, String)], errors: &mut Vec<PolicyError>) -> Policy {
    let (targets, target_index) = build_targets(parsed, errors);
    let budgets = build_budgets(parsed, errors);
    let (default_objective, default_on_no_target) = build_defaults(parsed, errors);
    let defaults = (default_objective, default_on_no_target);
    let rules = build_rules(parsed, &targets, &target_index, defaults, errors);
    Policy {
        targets,
        budgets,
        rules,
        default_objective,
        default_on_no_target,
        hash: hash(files),
        files: files.iter().map(|(n, _)| n.clone()).collect(),
    }
}

/// Every file's targets in order, with unique names and at most [`MAX_TARGETS`], and an index
/// by name; at least one target in all.
fn build_targets(
    parsed: &[Parsed],
    errors: &mut Vec<PolicyError>,
) -> (Vec<Target>, HashMap<String, TargetId>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut target_index: HashMap<String, TargetId> = HashMap::new();
    for p in parsed {
        for (i, spec) in p.doc.spec.targets.iter().enumerate() {
            let at = format!("spec.targets[{i}]");
            if let Some(first) = target_index.get(&spec.name) {
                let first = &targets[first.index()].source;
                errors.push(p.error(
                    format!("{at}.name"),
                    format!(
                        "duplicate target name {:?} (first defined at {})",
                        spec.name,
                        describe(first)
                    ),
                ));
                continue;
            }
            if targets.len() == MAX_TARGETS {
                errors.push(p.error(at, format!("too many targets: at most {MAX_TARGETS}")));
                continue;
            }
            let id = TargetId(targets.len() as u16);
            target_index.insert(spec.name.clone(), id);
            targets.push(check_target(p, &at, spec, id, errors));
        }
    }
    if targets.is_empty() && !parsed.is_empty() {
        let p = &parsed[0];
        errors.push(p.error(
            "spec.targets".into(),
            "no targets defined in any policy file",
        ));
    }
    (targets, target_index)
}

/// Every file's budgets in order, with unique names.
fn build_budgets(parsed: &[Parsed], errors: &mut Vec<PolicyError>) -> Vec<Budget> {
    let mut budgets: Vec<Budget> = Vec::new();
    for p in parsed {
        for (i, spec) in p.doc.spec.budgets.iter().enumerate() {
            let at = format!("spec.budgets[{i}]");
            if let Some(first) = budgets.iter().find(|b| b.name == spec.name) {
                errors.push(p.error(
                    format!("{at}.name"),
                    format!(
                        "duplicate budget name {:?} (first defined at {})",
                        spec.name,
                        describe(&first.source)
                    ),
                ));
                continue;
            }
            budgets.push(check_budget(p, &at, spec, errors));
        }
    }
    budgets
}

/// One budget: a valid name and at least one limit, each a number >= 0.
fn check_budget(p: &Parsed, at: &str, spec: &BudgetSpec, errors: &mut Vec<PolicyError>) -> Budget {
    check_name(p, &format!("{at}.name"), &spec.name, errors);
    let mut limit =
        |field: &str, v: Option<f64>| non_negative(p, &format!("{at}.{field}"), v, errors);
    let max_vcpu = limit("maxVcpu", spec.max_vcpu);
    let max_mem = limit("maxMemoryGiB", spec.max_memory_gib);
    let max_cost = limit("maxHourlyCost", spec.max_hourly_cost);
    if max_vcpu.is_none() && max_mem.is_none() && max_cost.is_none() {
        errors.push(p.error(
            at.to_string(),
            "a budget must set maxVcpu, maxMemoryGiB or maxHourlyCost",
        ));
    }
    Budget {
        name: spec.name.clone(),
        namespaces: spec.namespaces.clone(),
        labels: pairs(&spec.labels),
        max_milli_cpu: max_vcpu.map(|v| (v * 1000.0).floor() as u64),
        max_memory_mib: max_mem.map(|v| (v * 1024.0).floor() as u64),
        max_hourly_micros: max_cost.map(|v| (v * 1e6).floor() as u64),
        source: p.source(at),
    }
}

/// The objective and no-target behaviour of rules that set none: from the one file with
/// `spec.defaults`, else cost and pending.
fn build_defaults(parsed: &[Parsed], errors: &mut Vec<PolicyError>) -> (Objective, OnNoTarget) {
    let mut default_objective = Objective::Cost;
    let mut default_on_no_target = OnNoTarget::Pending;
    let mut defaults_from: Option<&str> = None;
    for p in parsed {
        if let Some(d) = &p.doc.spec.defaults {
            if let Some(first) = defaults_from {
                errors.push(p.error(
                    "spec.defaults".into(),
                    format!("defaults are already set in {first}; set them in one file"),
                ));
                continue;
            }
            defaults_from = Some(&p.file);
            if let Some(o) = &d.objective {
                default_objective = check_objective(p, "spec.defaults.objective", o, errors);
            }
            if let Some(n) = d.on_no_target {
                default_on_no_target = n;
            }
        }
    }
    (default_objective, default_on_no_target)
}

/// Every file's rules in order, with unique names, checked against the targets.
fn build_rules(
    parsed: &[Parsed],
    targets: &[Target],
    target_index: &HashMap<String, TargetId>,
    defaults: (Objective, OnNoTarget),
    errors: &mut Vec<PolicyError>,
) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for p in parsed {
        for (i, spec) in p.doc.spec.rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            if let Some(first) = rules.iter().find(|r| r.name == spec.name) {
                errors.push(p.error(
                    format!("{at}.name"),
                    format!(
                        "duplicate rule name {:?} (first defined at {})",
                        spec.name,
                        describe(&first.source)
                    ),
                ));
                continue;
            }
            rules.push(check_rule(
                p,
                &at,
                spec,
                targets,
                target_index,
                defaults,
                errors,
            ));
        }
    }
    rules
}

fn describe(source: &Source) -> String {
    match source.line {
        Some(l) => format!("{}:{l}", source.file),
        None => source.file.clone(),
    }
}

fn hash(files: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in files {
        let base = Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(base.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn check_name(p: &Parsed, field: &str, name: &str, errors: &mut Vec<PolicyError>) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        errors.push(p.error(
            field.to_string(),
            format!("{name:?} is not a valid name (lowercase letters, digits and '-', at most 63, not starting or ending with '-')"),
        ));
    }
}

fn non_negative(
    p: &Parsed,
    field: &str,
    v: Option<f64>,
    errors: &mut Vec<PolicyError>,
) -> Option<f64> {
    let v = v?;
    if !v.is_finite() || v < 0.0 {
        errors.push(p.error(field.to_string(), format!("must be a number >= 0, got {v}")));
        return None;
    }
    Some(v)
}

fn positive(p: &Parsed, field: &str, v: Option<f64>, errors: &mut Vec<PolicyError>) -> Option<f64> {
    let v = v?;
    if !v.is_finite() || v <= 0.0 {
        errors.push(p.error(field.to_string(), format!("must be a number > 0, got {v}")));
        return None;
    }
    Some(v)
}

fn check_target(
    p: &Parsed,
    at: &str,
    spec: &TargetSpec,
    id: TargetId,
    errors: &mut Vec<PolicyError>,
) -> Target {
    check_name(p, &format!("{at}.name"), &spec.name, errors);
    if spec.region.trim().is_empty() {
        errors.push(p.error(format!("{at}.region"), "must not be empty"));
    }
    let pricing = check_pricing(p, at, &spec.pricing, errors);
    let quota = check_quota(p, at, &spec.quota, errors);
    let (max_pod_milli_cpu, max_pod_memory_mib) = check_limits(p, at, &spec.limits, errors);
    check_rate_limits(p, at, &spec.rate_limits, errors);
    let connection = check_connection(p, at, spec, errors);
    Target {
        id,
        name: spec.name.clone(),
        provider: spec.provider,
        region: spec.region.clone(),
        spot: spec.spot,
        pricing,
        quota,
        latency_ms: spec.latency_ms,
        max_pod_milli_cpu,
        max_pod_memory_mib,
        gpus: spec.limits.gpus.clone(),
        rate_limits: spec.rate_limits.clone(),
        connection,
        source: p.source(at),
    }
}

/// A target's prices, each a number >= 0 (0 where it is not).
fn check_pricing(
    p: &Parsed,
    at: &str,
    spec: &PricingSpec,
    errors: &mut Vec<PolicyError>,
) -> Pricing {
    let mut price =
        |field: &str, v: f64| non_negative(p, &format!("{at}.pricing.{field}"), Some(v), errors);
    Pricing {
        vcpu_hour: price("vcpuHour", spec.vcpu_hour).unwrap_or(0.0),
        gib_hour: price("gibHour", spec.gib_hour).unwrap_or(0.0),
        minimum_seconds: spec.minimum_seconds,
    }
}

/// A target's quota in engine units; each limit a number >= 0, absent means unlimited.
fn check_quota(p: &Parsed, at: &str, q: &QuotaSpec, errors: &mut Vec<PolicyError>) -> Quota {
    Quota {
        milli_cpu: non_negative(p, &format!("{at}.quota.vcpu"), q.vcpu, errors)
            .map(|v| (v * 1000.0).floor() as u64),
        memory_mib: non_negative(p, &format!("{at}.quota.memoryGiB"), q.memory_gib, errors)
            .map(|v| (v * 1024.0).floor() as u64),
        pods: q.pods.map(u64::from),
        hourly_micros: non_negative(p, &format!("{at}.quota.hourlyCost"), q.hourly_cost, errors)
            .map(|v| (v * 1e6).floor() as u64),
    }
}

/// The largest pod a target takes, as (millicores, MiB), each a number > 0; GPU SKUs not empty.
fn check_limits(
    p: &Parsed,
    at: &str,
    l: &LimitsSpec,
    errors: &mut Vec<PolicyError>,
) -> (Option<u64>, Option<u64>) {
    let max_cpu = positive(
        p,
        &format!("{at}.limits.maxPodVcpu"),
        l.max_pod_vcpu,
        errors,
    );
    let max_mem = positive(
        p,
        &format!("{at}.limits.maxPodMemoryGiB"),
        l.max_pod_memory_gib,
        errors,
    );
    for (j, sku) in l.gpus.iter().enumerate() {
        if sku.trim().is_empty() {
            errors.push(p.error(
                format!("{at}.limits.gpus[{j}]"),
                "GPU SKU must not be empty",
            ));
        }
    }
    (
        max_cpu.map(|v| (v * 1000.0).floor() as u64),
        max_mem.map(|v| (v * 1024.0).floor() as u64),
    )
}

/// Every rate limit lets at least one request through, at a rate > 0.
fn check_rate_limits(
    p: &Parsed,
    at: &str,
    rate_limits: &[RateLimitSpec],
    errors: &mut Vec<PolicyError>,
) {
    for (j, rl) in rate_limits.iter().enumerate() {
        if rl.burst == 0 {
            errors.push(p.error(format!("{at}.rateLimits[{j}].burst"), "must be at least 1"));
        }
        positive(
            p,
            &format!("{at}.rateLimits[{j}].perSecond"),
            Some(rl.per_second),
            errors,
        );
    }
}

/// The one provider block a target may carry, matching its provider, with its required fields.
fn check_connection(
    p: &Parsed,
    at: &str,
    spec: &TargetSpec,
    errors: &mut Vec<PolicyError>,
) -> Connection {
    let blocks = [
        ("aci", spec.aci.is_some(), ProviderKind::Aci),
        ("fargate", spec.fargate.is_some(), ProviderKind::Fargate),
        ("cluster", spec.cluster.is_some(), ProviderKind::Cluster),
    ];
    for (field, present, kind) in blocks {
        if present && spec.provider != kind {
            errors.push(p.error(
                format!("{at}.{field}"),
                format!(
                    "a `{field}` block is only for provider {kind}; this target's provider is {}",
                    spec.provider
                ),
            ));
        }
    }
    let mut required = |field: String, value: &str| {
        if value.trim().is_empty() {
            errors.push(p.error(field, "must not be empty"));
        }
    };
    match spec.provider {
        ProviderKind::Aci => spec.aci.clone().map_or(Connection::None, |a| {
            required(format!("{at}.aci.subscriptionId"), &a.subscription_id);
            required(format!("{at}.aci.resourceGroup"), &a.resource_group);
            Connection::Aci(a)
        }),
        ProviderKind::Fargate => spec.fargate.clone().map_or(Connection::None, |f| {
            required(format!("{at}.fargate.cluster"), &f.cluster);
            if f.subnets.is_empty() {
                required(format!("{at}.fargate.subnets"), "");
            }
            Connection::Fargate(f)
        }),
        ProviderKind::Cluster => spec.cluster.clone().map_or(Connection::None, |c| {
            required(format!("{at}.cluster.namespace"), &c.namespace);
            Connection::Cluster(c)
        }),
        ProviderKind::Sim => Connection::None,
    }
}

fn check_objective(
    p: &Parsed,
    field: &str,
    spec: &ObjectiveSpec,
    errors: &mut Vec<PolicyError>,
) -> Objective {
    match spec {
        ObjectiveSpec::Named(NamedObjective::Cost) => Objective::Cost,
        ObjectiveSpec::Named(NamedObjective::Latency) => Objective::Latency,
        ObjectiveSpec::Weighted { weights } => {
            let cost = non_negative(
                p,
                &format!("{field}.weights.cost"),
                Some(weights.cost),
                errors,
            )
            .unwrap_or(0.0);
            let latency = non_negative(
                p,
                &format!("{field}.weights.latency"),
                Some(weights.latency),
                errors,
            )
            .unwrap_or(0.0);
            if cost + latency <= 0.0 {
                errors.push(p.error(
                    format!("{field}.weights"),
                    "at least one weight must be > 0",
                ));
                return Objective::Cost;
            }
            Objective::Weighted { cost, latency }
        }
    }
}

fn check_rule(
    p: &Parsed,
    at: &str,
    spec: &RuleSpec,
    targets: &[Target],
    index: &HashMap<String, TargetId>,
    (default_objective, default_on_no_target): (Objective, OnNoTarget),
    errors: &mut Vec<PolicyError>,
) -> Rule {
    if spec.name.trim().is_empty() {
        errors.push(p.error(format!("{at}.name"), "must not be empty"));
    }
    let expression = spec
        .matches
        .expression
        .as_deref()
        .and_then(|src| compile(p, at, src, errors));
    let allowed_targets: Option<Vec<TargetId>> = spec
        .allow
        .targets
        .as_ref()
        .map(|names| known_targets(p, &format!("{at}.allow.targets"), names, index, errors));
    if let Some(regions) = &spec.allow.regions {
        for (j, r) in regions.iter().enumerate() {
            if !targets.iter().any(|t| t.region == *r) {
                errors.push(p.error(
                    format!("{at}.allow.regions[{j}]"),
                    format!("no target is in region {r:?}"),
                ));
            }
        }
    }
    let fallback = known_targets(p, &format!("{at}.fallback"), &spec.fallback, index, errors);
    let allow = targets
        .iter()
        .map(|t| allow_rejection(&spec.allow, allowed_targets.as_deref(), t))
        .collect();
    let max_hourly = non_negative(
        p,
        &format!("{at}.maxHourlyCost"),
        spec.max_hourly_cost,
        errors,
    );
    Rule {
        name: spec.name.clone(),
        matcher: Matcher {
            namespaces: spec.matches.namespaces.clone(),
            labels: pairs(&spec.matches.labels),
            annotations: pairs(&spec.matches.annotations),
            expression,
        },
        allow,
        providers: spec.allow.providers.clone(),
        regions: spec.allow.regions.clone(),
        max_latency_ms: spec.max_latency_ms,
        max_hourly_micros: max_hourly.map(usd_to_micros),
        objective: spec
            .objective
            .as_ref()
            .map(|o| check_objective(p, &format!("{at}.objective"), o, errors))
            .unwrap_or(default_objective),
        fallback,
        on_no_target: spec.on_no_target.unwrap_or(default_on_no_target),
        source: p.source(at),
    }
}

/// A rule's `match.expression`, compiled; `None` (and an error) when it does not compile.
fn compile(p: &Parsed, at: &str, src: &str, errors: &mut Vec<PolicyError>) -> Option<Expression> {
    match Expression::compile(src) {
        Ok(e) => Some(e),
        Err(message) => {
            errors.push(p.error(format!("{at}.match.expression"), message));
            None
        }
    }
}

/// The ids of the targets named in the list at `field`; an unknown name is an error and left out.
fn known_targets(
    p: &Parsed,
    field: &str,
    names: &[String],
    index: &HashMap<String, TargetId>,
    errors: &mut Vec<PolicyError>,
) -> Vec<TargetId> {
    let mut known = |j: usize, name: &String| {
        let id = index.get(name).copied();
        if id.is_none() {
            errors.push(p.error(format!("{field}[{j}]"), format!("unknown target {name:?}")));
        }
        id
    };
    names
        .iter()
        .enumerate()
        .filter_map(|(j, n)| known(j, n))
        .collect()
}

/// Why a rule's `allow` keeps it off `t` (provider, then region, target, spot), or `None`.
fn allow_rejection(
    allow: &AllowSpec,
    allowed_targets: Option<&[TargetId]>,
    t: &Target,
) -> Option<AllowRejection> {
    if allow
        .providers
        .as_ref()
        .is_some_and(|ps| !ps.contains(&t.provider))
    {
        Some(AllowRejection::Provider)
    } else if allow
        .regions
        .as_ref()
        .is_some_and(|rs| !rs.contains(&t.region))
    {
        Some(AllowRejection::Region)
    } else if allowed_targets.is_some_and(|ts| !ts.contains(&t.id)) {
        Some(AllowRejection::Target)
    } else if t.spot && !allow.spot {
        Some(AllowRejection::Spot)
    } else {
        None
    }
}

/// Field path -> 1-based line, from saphyr's marked YAML tree.
struct LineMap(HashMap<String, usize>);

impl LineMap {
    fn build(text: &str) -> LineMap {
        use saphyr::{LoadableYamlNode, MarkedYaml};
        let mut map = HashMap::new();
        if let Ok(docs) = MarkedYaml::load_from_str(text)
            && let Some(doc) = docs.first()
        {
            walk(doc, String::new(), &mut map);
        }
        LineMap(map)
    }

    /// The line of `path`, or of its nearest ancestor present in the file.
    fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

fn walk(node: &saphyr::MarkedYaml<'_>, path: String, map: &mut HashMap<String, usize>) {
    use saphyr::YamlData;
    match &node.data {
        YamlData::Mapping(m) => {
            for (k, v) in m.iter() {
                let key = match &k.data {
                    YamlData::Value(saphyr::Scalar::String(s)) => s.to_string(),
                    YamlData::Value(saphyr::Scalar::Integer(i)) => i.to_string(),
                    YamlData::Representation(s, _, _) => s.to_string(),
                    _ => continue,
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                map.insert(child.clone(), k.span.start.line());
                walk(v, child, map);
            }
        }
        YamlData::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                map.insert(child.clone(), v.span.start.line());
                walk(v, child, map);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {vcpuHour: 0.0405, gibHour: 0.00445}
      quota: {vcpu: 100, pods: 100}
      latencyMs: 20
  rules:
    - name: everything
      match: {}
";

    fn load(text: &str) -> Result<Policy, LoadError> {
        load_files(&[("p.yaml".to_string(), text.to_string())])
    }

    fn only_error(text: &str) -> String {
        let err = load(text).unwrap_err();
        assert_eq!(err.problems().len(), 1, "expected one problem, got: {err}");
        err.to_string()
    }

    #[test]
    fn a_valid_policy_loads_with_targets_rules_and_a_hash() {
        let p = load(GOOD).unwrap();
        assert_eq!(p.targets.len(), 1);
        assert_eq!(p.targets[0].quota.milli_cpu, Some(100_000));
        assert_eq!(p.rules[0].name, "everything");
        assert_eq!(p.hash.len(), 16);
    }

    #[test]
    fn an_unknown_field_is_reported_with_file_line_and_path() {
        let text = GOOD.replace(
            "      latencyMs: 20",
            "      latencyMs: 20\n      colour: blue",
        );
        let msg = only_error(&text);
        assert!(msg.starts_with("p.yaml:11: spec.targets[0]"), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn a_negative_price_is_reported_on_its_line() {
        let text = GOOD.replace("vcpuHour: 0.0405", "vcpuHour: -1");
        assert_eq!(
            only_error(&text),
            "p.yaml:8: spec.targets[0].pricing.vcpuHour: must be a number >= 0, got -1"
        );
    }

    #[test]
    fn a_provider_block_of_another_provider_is_reported_with_its_field() {
        let text = GOOD.replace(
            "      latencyMs: 20",
            "      latencyMs: 20\n      fargate: {cluster: c, subnets: [s]}",
        );
        let msg = only_error(&text);
        assert!(
            msg.starts_with("p.yaml:")
                && msg.contains(
                    "spec.targets[0].fargate: a `fargate` block is only for provider fargate"
                ),
            "{msg}"
        );
    }

    #[test]
    fn an_aci_block_keeps_its_subscription_and_an_empty_resource_group_is_an_error() {
        let text = GOOD.replace(
            "      latencyMs: 20",
            "      latencyMs: 20\n      aci: {subscriptionId: sub-1, resourceGroup: rg}",
        );
        match &load(&text).unwrap().targets[0].connection {
            Connection::Aci(a) => assert_eq!(
                (a.subscription_id.as_str(), a.resource_group.as_str()),
                ("sub-1", "rg")
            ),
            other => panic!("expected an aci connection, got {other:?}"),
        }
        let empty = GOOD.replace(
            "      latencyMs: 20",
            "      latencyMs: 20\n      aci: {subscriptionId: sub-1, resourceGroup: ''}",
        );
        assert!(
            only_error(&empty).ends_with("spec.targets[0].aci.resourceGroup: must not be empty")
        );
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let text = GOOD.replace("latencyMs: 20", "latencyMs: fast");
        let msg = only_error(&text);
        assert!(
            msg.starts_with("p.yaml:10: spec.targets[0].latencyMs: "),
            "{msg}"
        );
    }

    #[test]
    fn malformed_yaml_is_reported_with_its_line() {
        let msg = only_error(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets: [\n",
        );
        assert!(msg.starts_with("p.yaml:"), "{msg}");
    }

    #[test]
    fn duplicate_target_names_across_files_point_at_the_first_definition() {
        let err = load_files(&[
            ("a.yaml".into(), GOOD.into()),
            ("b.yaml".into(), GOOD.replace("everything", "other")),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.yaml:5: spec.targets[0].name: duplicate target name \"aci-eastus\" (first defined at a.yaml:5)"
        );
    }

    #[test]
    fn a_rule_naming_an_unknown_target_is_rejected() {
        let text = GOOD.replace(
            "      match: {}",
            "      match: {}\n      fallback: [nowhere]",
        );
        assert_eq!(
            only_error(&text),
            "p.yaml:14: spec.rules[0].fallback[0]: unknown target \"nowhere\""
        );
    }

    #[test]
    fn an_invalid_cel_expression_is_rejected_on_its_line() {
        let text = GOOD.replace(
            "      match: {}",
            "      match:\n        expression: \"pod.cpu >\"",
        );
        let msg = only_error(&text);
        assert!(
            msg.starts_with("p.yaml:14: spec.rules[0].match.expression: invalid CEL expression"),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_api_version_is_rejected() {
        let msg = only_error(&GOOD.replace("v1alpha1", "v2"));
        assert_eq!(
            msg,
            "p.yaml:1: apiVersion: must be burstgate.io/v1alpha1, got \"burstgate.io/v2\""
        );
    }

    #[test]
    fn every_problem_of_every_file_is_reported_at_once() {
        let bad = GOOD
            .replace("vcpuHour: 0.0405", "vcpuHour: -1")
            .replace("region: eastus", "region: \"\"");
        let err = load(&bad).unwrap_err();
        assert_eq!(err.problems().len(), 2, "{err}");
    }

    #[test]
    fn a_policy_without_targets_is_rejected() {
        let msg = only_error(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  rules: []\n",
        );
        assert!(msg.contains("no targets defined"), "{msg}");
    }

    #[test]
    fn the_hash_changes_when_a_file_changes() {
        let a = load(GOOD).unwrap().hash;
        let b = load(&GOOD.replace("latencyMs: 20", "latencyMs: 21"))
            .unwrap()
            .hash;
        assert_ne!(a, b);
    }
}
