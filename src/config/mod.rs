//! The gateway's own configuration (`burstgate run` flags and environment): node identity, taint,
//! where the policy lives, listen ports, namespace and cluster id, and how patient the layers
//! around cloud calls are (retry deadline, per-attempt timeout, circuit breaker).

use std::path::PathBuf;
use std::time::Duration;

use crate::provider::layers;

/// Orphan GC's minimum age in production, seconds (`--gc-min-age-seconds`' default): a workload
/// no pod owns is deleted only once it is this old.
pub const DEFAULT_GC_MIN_AGE_SECONDS: u64 = 600;

/// `burstgate run` settings. Every flag also reads a `BURSTGATE_*` environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the virtual node.
    #[arg(long, env = "BURSTGATE_NODE_NAME", default_value = "burstgate")]
    pub node_name: String,
    /// Policy directory (watched; a bad edit keeps the last good policy serving).
    #[arg(long, env = "BURSTGATE_POLICY_DIR", default_value = "policies")]
    pub policy_dir: PathBuf,
    /// Extra node labels, `key=value` (repeatable); the AKS virtual-node labels are always set.
    #[arg(long = "node-label", value_parser = parse_key_value)]
    pub node_labels: Vec<(String, String)>,
    /// Taint key of the node.
    #[arg(
        long,
        env = "BURSTGATE_TAINT_KEY",
        default_value = "virtual-kubelet.io/provider"
    )]
    pub taint_key: String,
    /// Taint value of the node.
    #[arg(long, env = "BURSTGATE_TAINT_VALUE", default_value = "azure")]
    pub taint_value: String,
    /// Taint effect of the node (`NoSchedule`, `PreferNoSchedule`, `NoExecute`).
    #[arg(long, env = "BURSTGATE_TAINT_EFFECT", default_value = "NoSchedule")]
    pub taint_effect: String,
    /// Azure Resource Manager endpoint of `aci` targets (another Azure cloud, or a test emulator).
    #[arg(
        long,
        env = "BURSTGATE_ARM_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub arm_endpoint: String,
    /// Azure Monitor endpoint for the CPU and memory metrics of `aci` targets' container groups
    /// (default: `--arm-endpoint`, where Azure serves them).
    #[arg(long, env = "BURSTGATE_AZURE_MONITOR_ENDPOINT")]
    pub azure_monitor_endpoint: Option<String>,
    /// How long a workload's CPU and memory sample serves `/stats/summary` and
    /// `/metrics/resource` before the provider is asked again, seconds (ACI: Azure Monitor
    /// aggregates per minute).
    #[arg(long, env = "BURSTGATE_USAGE_REFRESH_SECONDS", default_value_t = 60)]
    pub usage_refresh_seconds: u64,
    /// Most pod reconciles in flight at once (controller-runtime's `MaxConcurrentReconciles`).
    /// Each holds an apiserver connection while it writes: unbounded, a burst of 10,000 pods
    /// opened ~3,700 connections and held ~800 MB of their buffers (docs/performance.md).
    #[arg(
        long,
        env = "BURSTGATE_MAX_CONCURRENT_RECONCILES",
        default_value_t = 64
    )]
    pub max_concurrent_reconciles: u16,
    /// The cluster DNS (the kubelet's `--cluster-dns`: the `kube-dns` Service IP), comma
    /// separated. ACI groups in a delegated subnet resolve with it for `dnsPolicy: ClusterFirst`.
    #[arg(long, env = "BURSTGATE_CLUSTER_DNS", value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// A kubeconfig for kube-proxy (list/watch Services and EndpointSlices): ACI groups in a
    /// delegated subnet then run the spec's `kube-proxy` extension so ClusterIP Services answer,
    /// as on AKS virtual nodes. Needs `--cluster-cidr`.
    #[arg(
        long,
        env = "BURSTGATE_ACI_KUBE_PROXY_KUBECONFIG",
        requires = "cluster_cidr"
    )]
    pub aci_kube_proxy_kubeconfig: Option<PathBuf>,
    /// The cluster's pod CIDR (kube-proxy's `--cluster-cidr`).
    #[arg(long, env = "BURSTGATE_CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
    /// The cluster domain (the kubelet's `--cluster-domain`), for the pods' search domains.
    #[arg(
        long,
        env = "BURSTGATE_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// PEM CA bundle trusted, besides the platform's roots, by every Azure call (token endpoint
    /// and ARM): Azure Stack Hub, a TLS-inspecting egress proxy, a test emulator.
    #[arg(long, env = "BURSTGATE_AZURE_CA_FILE")]
    pub azure_ca_file: Option<PathBuf>,
    /// PEM CA bundle the kubelets of `cluster` targets' nodes serve certificates of, when it is
    /// not their cluster's CA (the default trust). Used to read shadow pods' usage from
    /// `/metrics/resource` where the target cluster serves no metrics.k8s.io. Never skipped:
    /// there is no insecure mode.
    #[arg(long, env = "BURSTGATE_CLUSTER_KUBELET_CA_FILE")]
    pub cluster_kubelet_ca_file: Option<PathBuf>,
    /// Port of the kubelet API (advertised in the node's daemonEndpoints).
    #[arg(long, env = "BURSTGATE_KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// PEM certificate (chain) the kubelet API serves; reloaded when the file changes. A
    /// self-signed certificate for the node's IP and name is served when absent.
    #[arg(
        long,
        env = "BURSTGATE_KUBELET_CERT_FILE",
        requires = "kubelet_key_file"
    )]
    pub kubelet_cert_file: Option<PathBuf>,
    /// PEM private key of `--kubelet-cert-file`; reloaded with it.
    #[arg(
        long,
        env = "BURSTGATE_KUBELET_KEY_FILE",
        requires = "kubelet_cert_file"
    )]
    pub kubelet_key_file: Option<PathBuf>,
    /// PEM CA bundle that signs client certificates of the kubelet API (the cluster CA, which
    /// signs the apiserver's `--kubelet-client-certificate`); the certificate's CN is the user,
    /// its O the groups. Without it only bearer tokens (TokenReview) authenticate.
    #[arg(long, env = "BURSTGATE_KUBELET_CLIENT_CA_FILE")]
    pub kubelet_client_ca_file: Option<PathBuf>,
    /// Serve the kubelet API without authentication or authorization. Local development only:
    /// anyone who reaches the port can read logs and exec into pods.
    #[arg(long, env = "BURSTGATE_INSECURE_KUBELET_API")]
    pub insecure_kubelet_api: bool,
    /// Where `/metrics` and `/healthz` are served (apart from the kubelet API).
    #[arg(long, env = "BURSTGATE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: std::net::SocketAddr,
    /// Address advertised as the node's InternalIP.
    #[arg(long, env = "BURSTGATE_NODE_IP", default_value = "127.0.0.1")]
    pub node_ip: String,
    /// Namespace of the gateway (leader Lease, Events about the gateway itself).
    #[arg(long, env = "BURSTGATE_NAMESPACE", default_value = "burstgate-system")]
    pub namespace: String,
    /// Cluster id written on every cloud workload; GC only touches workloads carrying it.
    #[arg(long, env = "BURSTGATE_CLUSTER_ID", default_value = "burstgate")]
    pub cluster_id: String,
    /// This replica's identity in leader election (defaults to the hostname).
    #[arg(long, env = "BURSTGATE_IDENTITY")]
    pub identity: Option<String>,
    /// Leader lease duration, seconds; a standby takes over within this after the leader dies.
    #[arg(long, env = "BURSTGATE_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// Minimum age, seconds, of an unowned cloud workload before orphan GC deletes it.
    #[arg(long, env = "BURSTGATE_GC_MIN_AGE_SECONDS", default_value_t = DEFAULT_GC_MIN_AGE_SECONDS)]
    pub gc_min_age_seconds: u64,
    /// Cold start of the simulated provider, milliseconds.
    #[arg(long, env = "BURSTGATE_SIM_COLD_START_MS", default_value_t = 1500)]
    pub sim_cold_start_ms: u64,
    /// Workloads the simulated provider holds at once; past it, it refuses creates as a full
    /// cloud would (the pods wait with a `NoTarget` Event).
    #[arg(long, env = "BURSTGATE_SIM_CAPACITY", default_value_t = 10_000)]
    pub sim_capacity: usize,
    /// A bucket the simulated cloud itself enforces, as a real cloud's API does:
    /// `OPERATION=BURST:PER_SECOND` (e.g. `create=100:20`, the Fargate launch rate), repeatable.
    /// A call past it is answered as throttled (a 429 with the wait), so a benchmark's "0
    /// throttles" shows the gateway's own limiter kept inside the cloud's bucket.
    #[arg(long = "sim-rate-limit", env = "BURSTGATE_SIM_RATE_LIMITS", value_delimiter = ',', value_parser = parse_rate_limit)]
    pub sim_rate_limits: Vec<crate::policy::model::RateLimitSpec>,
    /// One cloud call's time limit per attempt, seconds; an attempt over it is retried.
    #[arg(long, env = "BURSTGATE_CALL_TIMEOUT_SECONDS", default_value_t = 10)]
    pub call_timeout_seconds: u64,
    /// How long a cloud call is retried (throttled, transient, timed out), seconds; past it the
    /// call fails as a target-level error and the pod goes to the next target.
    #[arg(long, env = "BURSTGATE_RETRY_DEADLINE_SECONDS", default_value_t = 20)]
    pub retry_deadline_seconds: u64,
    /// Target-level failures in a row that open a target's circuit.
    #[arg(long, env = "BURSTGATE_CIRCUIT_FAILURES", default_value_t = 5)]
    pub circuit_failures: u32,
    /// How long an open circuit keeps its target out of decisions before one probe call may go,
    /// seconds.
    #[arg(
        long,
        env = "BURSTGATE_CIRCUIT_COOL_DOWN_SECONDS",
        default_value_t = 30
    )]
    pub circuit_cool_down_seconds: u64,
}

impl RunConfig {
    /// How long a usage sample serves (`--usage-refresh-seconds`, at least one second).
    pub fn usage_refresh(&self) -> Duration {
        Duration::from_secs(self.usage_refresh_seconds.max(1))
    }

    /// Leader lease duration.
    pub fn leader_lease(&self) -> Duration {
        Duration::from_secs(self.leader_lease_seconds)
    }
    /// Orphan GC minimum age.
    pub fn gc_min_age(&self) -> Duration {
        Duration::from_secs(self.gc_min_age_seconds)
    }
    /// The layers every cloud call goes through: retry deadline, per-attempt timeout, circuit.
    pub fn layer_settings(&self) -> layers::Settings {
        let defaults = layers::Settings::default();
        layers::Settings {
            retry: layers::retry::Settings {
                call_timeout: Duration::from_secs(self.call_timeout_seconds.max(1)),
                deadline: Duration::from_secs(self.retry_deadline_seconds),
                ..defaults.retry
            },
            circuit: layers::circuit::Settings {
                failures_to_open: self.circuit_failures.max(1),
                cool_down: Duration::from_secs(self.circuit_cool_down_seconds),
            },
        }
    }
    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "burstgate".into())
        })
    }
}

/// `OPERATION=BURST:PER_SECOND`, e.g. `create=100:20`.
fn parse_rate_limit(s: &str) -> Result<crate::policy::model::RateLimitSpec, String> {
    let bad = || format!("{s:?} is not OPERATION=BURST:PER_SECOND (e.g. create=100:20)");
    let (operation, bucket) = s.split_once('=').ok_or_else(bad)?;
    let (burst, per_second) = bucket.split_once(':').ok_or_else(bad)?;
    let operation = serde_json::from_value(serde_json::Value::String(operation.trim().into()))
        .map_err(|_| {
            format!("{s:?}: the operation is one of create, delete, read, launch, register")
        })?;
    let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
    let per_second: f64 = per_second.trim().parse().map_err(|_| bad())?;
    if burst == 0 || !(per_second.is_finite() && per_second > 0.0) {
        return Err(format!(
            "{s:?}: the burst must be at least 1 and the rate positive"
        ));
    }
    Ok(crate::policy::model::RateLimitSpec {
        operation,
        burst,
        per_second,
    })
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

#[derive(clap::Parser)]
struct Wrapper {
    #[command(flatten)]
    config: RunConfig,
}

impl RunConfig {
    /// Parses `burstgate run` flags (without the program name), e.g. for tests and examples:
    /// the flags alone, no `BURSTGATE_*` variable of the caller's environment is read.
    pub fn from_flags(flags: &[&str]) -> Result<RunConfig, clap::Error> {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Wrapper::command().mut_args(|a| a.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(std::iter::once("burstgate").chain(flags.iter().copied()))?;
        Wrapper::from_arg_matches(&matches).map(|w| w.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parsed_for_tests_ignore_the_environment() {
        // SAFETY: no other test of this binary reads or writes this variable.
        unsafe { std::env::set_var("BURSTGATE_TAINT_EFFECT", "NoExecute") };
        let c = RunConfig::from_flags(&["--kubeconfig", "/k"]).unwrap();
        unsafe { std::env::remove_var("BURSTGATE_TAINT_EFFECT") };
        assert_eq!(c.taint_effect, "NoSchedule");
    }

    #[test]
    fn the_sim_clouds_own_buckets_are_read_as_operation_burst_and_rate() {
        let c = RunConfig::from_flags(&[
            "--sim-rate-limit",
            "create=100:20",
            "--sim-rate-limit",
            "create=100:0.3333,read=250:25",
        ])
        .unwrap();
        let got: Vec<_> = c
            .sim_rate_limits
            .iter()
            .map(|b| (b.operation, b.burst, b.per_second))
            .collect();
        use crate::policy::model::OperationClass::{Create, Read};
        assert_eq!(
            got,
            [
                (Create, 100, 20.0),
                (Create, 100, 0.3333),
                (Read, 250, 25.0)
            ]
        );
        for bad in [
            "create",
            "create=100",
            "write=1:1",
            "create=0:1",
            "create=1:0",
            "create=1:x",
        ] {
            assert!(
                RunConfig::from_flags(&["--sim-rate-limit", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_match_aks_virtual_nodes() {
        let c = RunConfig::from_flags(&["--kubeconfig", "/k"]).unwrap();
        assert_eq!(
            (
                c.node_name.as_str(),
                c.taint_key.as_str(),
                c.taint_value.as_str(),
                c.taint_effect.as_str()
            ),
            (
                "burstgate",
                "virtual-kubelet.io/provider",
                "azure",
                "NoSchedule"
            )
        );
        assert_eq!(c.kubelet_port, 10250);
    }

    #[test]
    fn a_kubelet_certificate_needs_its_key_and_the_api_is_secure_by_default() {
        assert!(RunConfig::from_flags(&["--kubelet-cert-file", "/c.pem"]).is_err());
        let c = RunConfig::from_flags(&[
            "--kubelet-cert-file",
            "/c.pem",
            "--kubelet-key-file",
            "/k.pem",
        ])
        .unwrap();
        assert_eq!(
            c.kubelet_key_file.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
        assert!(!c.insecure_kubelet_api);
    }

    #[test]
    fn extra_node_labels_must_be_key_value() {
        assert!(RunConfig::from_flags(&["--node-label", "novalue"]).is_err());
        let c = RunConfig::from_flags(&["--node-label", "zone=edge"]).unwrap();
        assert_eq!(
            c.node_labels,
            vec![("zone".to_string(), "edge".to_string())]
        );
    }

    #[test]
    fn the_layers_default_to_the_published_patience_and_follow_the_flags() {
        let c = RunConfig::from_flags(&[]).unwrap();
        assert_eq!(c.layer_settings(), layers::Settings::default());
        let c = RunConfig::from_flags(&[
            "--retry-deadline-seconds",
            "4",
            "--call-timeout-seconds",
            "0",
            "--circuit-failures",
            "3",
            "--circuit-cool-down-seconds",
            "5",
        ])
        .unwrap();
        let s = c.layer_settings();
        assert_eq!(s.retry.deadline, Duration::from_secs(4));
        assert_eq!(s.retry.call_timeout, Duration::from_secs(1), "at least 1 s");
        assert_eq!(s.circuit.failures_to_open, 3);
        assert_eq!(s.circuit.cool_down, Duration::from_secs(5));
    }
}
