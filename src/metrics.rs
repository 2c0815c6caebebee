//! Prometheus metrics (prometheus-client, one registry, `burstgate_` prefix, units in names) and
//! the `/metrics` + `/healthz` HTTP endpoint, on its own port apart from the kubelet API.
//!
//! Counters are bumped where things happen (decisions, reloads, orphan GC); quota, spend and
//! leader gauges are refreshed from the ledger and the live policy at scrape time, so they are
//! never stale.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::policy::checked::micros_to_usd;
use crate::policy::{Ledger, Policy};

/// `{target, outcome}` of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Chosen target, or `none`.
    pub target: String,
    /// `placed`, `pending` or `failed`.
    pub outcome: String,
}

/// `{target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Target name.
    pub target: String,
}

/// `{target, state}` of a circuit breaker's transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// Target name.
    pub target: String,
    /// The state entered: `open`, `half-open` or `closed`.
    pub state: String,
}

/// `{budget}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// Budget name.
    pub budget: String,
}

/// `{target, phase}` of pods on the node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    /// Target name, or `none` before placement.
    pub target: String,
    /// Pod phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub phase: String,
}

/// `{result}` of a policy reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `loaded`, `unchanged` or `rejected`.
    pub result: String,
}

/// `{hash}` of the policy serving.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy hash.
    pub hash: String,
}

/// `{provider, region, operation, result}` of one cloud call attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Provider kind.
    pub provider: String,
    /// Region.
    pub region: String,
    /// The cloud API called (`RunTask`, `ContainerGroups_CreateOrUpdate`...).
    pub operation: String,
    /// `ok`, `throttled`, `transient`, `timeout`, `target`, `pod` or `not_supported`.
    pub result: String,
}

/// `{provider, region, operation}` of cloud call latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Provider kind.
    pub provider: String,
    /// Region.
    pub region: String,
    /// The cloud API called.
    pub operation: String,
}

/// `{provider, region, class}` of rate-limiter waits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimiterLabels {
    /// Provider kind.
    pub provider: String,
    /// Region.
    pub region: String,
    /// Request class (`create`, `delete`, `read`, `launch`, `register`).
    pub class: String,
}

/// `{cache, result}` of a kubelet API review cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthCacheLabels {
    /// `token` (TokenReview) or `access` (SubjectAccessReview).
    pub cache: String,
    /// `hit` or `miss`.
    pub result: String,
}

/// `{kind}` of a race the gateway expects and handles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RaceLabels {
    /// `pod_gone` (deleted between the read and the write) or `pod_changed` (a conflict).
    pub kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by chosen target and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time one decision took (engine + ledger).
    pub decision_seconds: Histogram,
    /// Policy reloads by result.
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// 1 for the hash of the policy serving.
    pub policy_info: Family<PolicyLabels, Gauge>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Pods on the virtual node by target and phase.
    pub pods: Family<PodLabels, Gauge>,
    /// Pods waiting for a target (Pending without a placement).
    pub pods_waiting: Gauge,
    /// Age of the oldest pod waiting for a target, seconds.
    pub oldest_waiting_seconds: FloatGauge,
    /// Orphan workloads deleted.
    pub orphans_collected: Counter,
    /// Orphan GC passes that failed.
    pub gc_failures: Counter,
    /// Seconds orphan GC waits between two listings of a target.
    pub gc_listing_interval: Family<TargetLabels, FloatGauge>,
    /// Whole LISTs of the node's pods into the pod cache (the first, and each re-LIST).
    pub pod_cache_lists: Counter,
    target_vcpu_used: Family<TargetLabels, FloatGauge>,
    target_vcpu_limit: Family<TargetLabels, FloatGauge>,
    target_memory_used: Family<TargetLabels, FloatGauge>,
    target_memory_limit: Family<TargetLabels, FloatGauge>,
    target_pods_used: Family<TargetLabels, Gauge>,
    target_pods_limit: Family<TargetLabels, Gauge>,
    target_spend: Family<TargetLabels, FloatGauge>,
    budget_spend: Family<BudgetLabels, FloatGauge>,
    budget_spend_limit: Family<BudgetLabels, FloatGauge>,
    /// Cloud call attempts by provider, region, API and result.
    pub provider_requests: Family<RequestLabels, Counter>,
    /// Cloud call latency by provider, region and API.
    pub provider_request_seconds: Family<OperationLabels, Histogram>,
    /// Throttled answers (429, ThrottlingException) by provider, region and API.
    pub provider_throttled: Family<OperationLabels, Counter>,
    /// Time calls waited in the rate limiter before going.
    pub rate_limiter_wait_seconds: Family<LimiterLabels, Histogram>,
    /// Circuit state per target: 0 closed, 1 half-open, 2 open.
    pub circuit_state: Family<TargetLabels, Gauge>,
    /// Circuit transitions per target, by the state entered.
    pub circuit_transitions: Family<CircuitLabels, Counter>,
    /// Kubelet API review cache lookups by cache and result.
    pub kubelet_auth_cache: Family<AuthCacheLabels, Counter>,
    /// Expected races, handled quietly (logged at debug).
    pub expected_races: Family<RaceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    // Long on purpose: every metric built and registered with its help text, in /metrics order.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("burstgate");
        let m = Metrics {
            decisions: Family::default(),
            decision_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 10)),
            policy_reloads: Family::default(),
            policy_info: Family::default(),
            leader: Gauge::default(),
            pods: Family::default(),
            pods_waiting: Gauge::default(),
            oldest_waiting_seconds: FloatGauge::default(),
            orphans_collected: Counter::default(),
            gc_failures: Counter::default(),
            gc_listing_interval: Family::default(),
            pod_cache_lists: Counter::default(),
            target_vcpu_used: Family::default(),
            target_vcpu_limit: Family::default(),
            target_memory_used: Family::default(),
            target_memory_limit: Family::default(),
            target_pods_used: Family::default(),
            target_pods_limit: Family::default(),
            target_spend: Family::default(),
            budget_spend: Family::default(),
            budget_spend_limit: Family::default(),
            provider_requests: Family::default(),
            provider_request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            provider_throttled: Family::default(),
            rate_limiter_wait_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 10))
            }),
            circuit_state: Family::default(),
            circuit_transitions: Family::default(),
            kubelet_auth_cache: Family::default(),
            expected_races: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "decisions",
            "Placement decisions by chosen target and outcome",
            m.decisions.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time one placement decision took",
            m.decision_seconds.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy directory reloads by result",
            m.policy_reloads.clone(),
        );
        registry.register(
            "policy_info",
            "The hash of the policy serving (value 1)",
            m.policy_info.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        registry.register(
            "pods",
            "Pods on the virtual node by target and phase",
            m.pods.clone(),
        );
        registry.register(
            "pods_waiting",
            "Pods bound to the node that no target has taken yet",
            m.pods_waiting.clone(),
        );
        registry.register(
            "oldest_waiting_pod_seconds",
            "Age of the oldest pod waiting for a target",
            m.oldest_waiting_seconds.clone(),
        );
        registry.register(
            "pod_cache_lists",
            "Whole LISTs of the node's pods into this replica's pod cache: its first, and each the watch needed again",
            m.pod_cache_lists.clone(),
        );
        registry.register(
            "orphans_collected",
            "Cloud workloads deleted because their pod no longer exists",
            m.orphans_collected.clone(),
        );
        registry.register(
            "orphan_gc_failures",
            "Orphan GC passes that could not run",
            m.gc_failures.clone(),
        );
        registry.register(
            "orphan_gc_listing_interval_seconds",
            "Seconds between two orphan GC listings of a target: the GC period, or longer when a listing is large for the target's read bucket",
            m.gc_listing_interval.clone(),
        );
        registry.register(
            "target_vcpu_used",
            "vCPU reserved on a target",
            m.target_vcpu_used.clone(),
        );
        registry.register(
            "target_vcpu_limit",
            "vCPU quota of a target (absent when unlimited)",
            m.target_vcpu_limit.clone(),
        );
        registry.register(
            "target_memory_used_bytes",
            "Memory reserved on a target",
            m.target_memory_used.clone(),
        );
        registry.register(
            "target_memory_limit_bytes",
            "Memory quota of a target (absent when unlimited)",
            m.target_memory_limit.clone(),
        );
        registry.register(
            "target_pods_used",
            "Pods placed on a target",
            m.target_pods_used.clone(),
        );
        registry.register(
            "target_pods_limit",
            "Pod quota of a target (absent when unlimited)",
            m.target_pods_limit.clone(),
        );
        registry.register(
            "target_spend_usd_per_hour",
            "Hourly spend of the pods on a target",
            m.target_spend.clone(),
        );
        registry.register(
            "budget_spend_usd_per_hour",
            "Hourly spend counted against a budget",
            m.budget_spend.clone(),
        );
        registry.register(
            "budget_spend_limit_usd_per_hour",
            "Hourly spend cap of a budget (absent when unset)",
            m.budget_spend_limit.clone(),
        );
        registry.register(
            "provider_requests",
            "Cloud API call attempts by provider, region, operation and result",
            m.provider_requests.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Cloud API call latency",
            m.provider_request_seconds.clone(),
        );
        registry.register(
            "provider_throttled",
            "Throttled cloud API answers (429, ThrottlingException)",
            m.provider_throttled.clone(),
        );
        registry.register(
            "rate_limiter_wait_seconds",
            "Time cloud calls waited in the rate limiter",
            m.rate_limiter_wait_seconds.clone(),
        );
        registry.register(
            "circuit_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open",
            m.circuit_state.clone(),
        );
        registry.register(
            "circuit_transitions",
            "Circuit breaker transitions per target, by the state entered",
            m.circuit_transitions.clone(),
        );
        registry.register(
            "kubelet_auth_cache_lookups",
            "Kubelet API TokenReview and SubjectAccessReview cache lookups by cache and result",
            m.kubelet_auth_cache.clone(),
        );
        registry.register(
            "expected_races",
            "Races the gateway expects and handles: a pod deleted or changed between a read and a write",
            m.expected_races.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one cloud call attempt.
    pub fn provider_request(
        &self,
        provider: &str,
        region: &str,
        operation: &str,
        result: &str,
        seconds: f64,
    ) {
        let op = OperationLabels {
            provider: provider.into(),
            region: region.into(),
            operation: operation.into(),
        };
        self.provider_requests
            .get_or_create(&RequestLabels {
                provider: op.provider.clone(),
                region: op.region.clone(),
                operation: op.operation.clone(),
                result: result.into(),
            })
            .inc();
        self.provider_request_seconds
            .get_or_create(&op)
            .observe(seconds);
        if result == "throttled" {
            self.provider_throttled.get_or_create(&op).inc();
        }
    }

    /// Counts one expected race (`pod_gone`, `pod_changed`).
    pub fn expected_race(&self, kind: &str) {
        self.expected_races
            .get_or_create(&RaceLabels { kind: kind.into() })
            .inc();
    }

    /// Counts one lookup in a kubelet API review cache (`token` or `access`).
    pub fn kubelet_auth_cache(&self, cache: &str, hit: bool) {
        self.kubelet_auth_cache
            .get_or_create(&AuthCacheLabels {
                cache: cache.to_string(),
                result: if hit { "hit" } else { "miss" }.to_string(),
            })
            .inc();
    }

    /// Counts one decision.
    pub fn decided(&self, target: Option<&str>, outcome: &str, seconds: f64) {
        let labels = DecisionLabels {
            target: target.unwrap_or("none").to_string(),
            outcome: outcome.to_string(),
        };
        self.decisions.get_or_create(&labels).inc();
        self.decision_seconds.observe(seconds);
    }

    /// Counts one reload and records which policy serves.
    pub fn reloaded(&self, result: &str, serving: Option<&str>) {
        self.policy_reloads
            .get_or_create(&ReloadLabels {
                result: result.to_string(),
            })
            .inc();
        if let Some(hash) = serving {
            self.policy_info.clear();
            self.policy_info
                .get_or_create(&PolicyLabels {
                    hash: hash.to_string(),
                })
                .set(1);
        }
    }

    /// Sets the pod gauges from one pass over the node's pods: `(target, phase, waiting age)`,
    /// where the age is set for pods still waiting for a target.
    pub fn observe_pods<'a>(
        &self,
        pods: impl Iterator<Item = (Option<&'a str>, &'a str, Option<f64>)>,
    ) {
        // Counted first, then set: no label strings built per pod (at 100,000 pods, building
        // them every second was a tenth of the gateway's CPU).
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let (mut waiting, mut oldest) = (0i64, 0f64);
        for (target, phase, waiting_for) in pods {
            *counts.entry((target.unwrap_or("none"), phase)).or_default() += 1;
            if let Some(age) = waiting_for {
                waiting += 1;
                oldest = oldest.max(age);
            }
        }
        self.pods.clear();
        for ((target, phase), n) in counts {
            self.pods
                .get_or_create(&PodLabels {
                    target: target.to_string(),
                    phase: phase.to_string(),
                })
                .set(n);
        }
        self.pods_waiting.set(waiting);
        self.oldest_waiting_seconds.set(oldest);
    }

    /// Refreshes quota and spend gauges from the ledger under `policy`.
    pub fn observe_ledger(&self, policy: &Policy, ledger: &Ledger) {
        for family in [
            &self.target_vcpu_used,
            &self.target_vcpu_limit,
            &self.target_memory_used,
            &self.target_memory_limit,
            &self.target_spend,
        ] {
            family.clear();
        }
        self.target_pods_used.clear();
        self.target_pods_limit.clear();
        self.budget_spend.clear();
        self.budget_spend_limit.clear();
        let bound = ledger.policy_hash() == policy.hash;
        for t in &policy.targets {
            let l = TargetLabels {
                target: t.name.clone(),
            };
            let u = if bound {
                ledger.target_usage(t.id)
            } else {
                Default::default()
            };
            self.target_vcpu_used
                .get_or_create(&l)
                .set(u.milli_cpu as f64 / 1000.0);
            self.target_memory_used
                .get_or_create(&l)
                .set(u.memory_mib as f64 * 1048576.0);
            self.target_pods_used.get_or_create(&l).set(u.pods as i64);
            self.target_spend
                .get_or_create(&l)
                .set(micros_to_usd(u.hourly_micros));
            if let Some(q) = t.quota.milli_cpu {
                self.target_vcpu_limit
                    .get_or_create(&l)
                    .set(q as f64 / 1000.0);
            }
            if let Some(q) = t.quota.memory_mib {
                self.target_memory_limit
                    .get_or_create(&l)
                    .set(q as f64 * 1048576.0);
            }
            if let Some(q) = t.quota.pods {
                self.target_pods_limit.get_or_create(&l).set(q as i64);
            }
        }
        for (i, b) in policy.budgets.iter().enumerate() {
            let l = BudgetLabels {
                budget: b.name.clone(),
            };
            let u = if bound {
                ledger.budget_usage(i)
            } else {
                Default::default()
            };
            self.budget_spend
                .get_or_create(&l)
                .set(micros_to_usd(u.hourly_micros));
            if let Some(m) = b.max_hourly_micros {
                self.budget_spend_limit
                    .get_or_create(&l)
                    .set(micros_to_usd(m));
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers that do
/// not ask for OpenMetrics (`promtool check metrics`, older agents): counter families are named
/// after their `_total` samples, and the `# EOF` marker goes.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Serves `/metrics` (refreshing gauges through `refresh` first) and `/healthz` on `addr` until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let handler = move |headers: axum::http::HeaderMap| {
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        async move {
            refresh();
            let openmetrics = headers
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            if openmetrics {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            } else {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    to_classic_text(&metrics.encode()),
                )
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(handler))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    #[test]
    fn pod_gauges_count_by_target_and_phase_and_track_the_oldest_waiting_pod() {
        let m = Metrics::new();
        let pods = [
            (Some("a"), "Running", None),
            (Some("a"), "Running", None),
            (None, "Pending", Some(30.0)),
            (None, "Pending", Some(700.0)),
        ];
        m.observe_pods(pods.into_iter());
        let text = m.encode();
        assert!(
            text.contains("burstgate_pods{target=\"a\",phase=\"Running\"} 2"),
            "{text}"
        );
        assert!(text.contains("burstgate_pods_waiting 2"), "{text}");
        assert!(
            text.contains("burstgate_oldest_waiting_pod_seconds 700.0"),
            "{text}"
        );
        m.observe_pods(std::iter::empty());
        assert!(
            !m.encode().contains("phase=\"Running\""),
            "gone pods leave no stale series"
        );
    }

    #[test]
    fn a_scrape_shows_decisions_reloads_and_quota_with_units_in_names() {
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: sim-a, provider: sim, region: r, pricing: {vcpuHour: 1}, quota: {vcpu: 8, pods: 10}}\n  budgets:\n    - {name: team, maxHourlyCost: 5}\n";
        let policy = load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let mut ledger = Ledger::new(&policy);
        let mut pod = crate::policy::PodView {
            uid: "u1".into(),
            namespace: "x".into(),
            ..Default::default()
        };
        pod.resources.milli_cpu = 2000;
        ledger.place(&policy, &pod, &[]);
        let m = Metrics::new();
        m.decided(Some("sim-a"), "placed", 2e-6);
        m.reloaded("loaded", Some(&policy.hash));
        m.observe_ledger(&policy, &ledger);
        let text = m.encode();
        assert!(
            text.contains("burstgate_decisions_total{target=\"sim-a\",outcome=\"placed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("burstgate_target_vcpu_used{target=\"sim-a\"} 2.0"),
            "{text}"
        );
        assert!(
            text.contains("burstgate_target_vcpu_limit{target=\"sim-a\"} 8.0"),
            "{text}"
        );
        assert!(
            text.contains("burstgate_budget_spend_usd_per_hour{budget=\"team\"} 2.0"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "burstgate_policy_info{{hash=\"{}\"}} 1",
                policy.hash
            )),
            "{text}"
        );
        assert!(
            text.contains("burstgate_decision_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let classic = to_classic_text(&text);
        assert!(
            classic.contains("# TYPE burstgate_decisions_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP burstgate_decisions_total Placement decisions"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
        assert!(classic.contains("# TYPE burstgate_leader gauge\n"));
    }
}
