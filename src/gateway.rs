//! `burstgate run`: the gateway's main job, and its one shutdown path.
//!
//! Every replica watches the policy directory; the replica that holds the leader Lease runs the
//! node and pod controllers; every replica serves the kubelet API. SIGTERM or SIGINT cancels one token: controllers drain, the leader
//! Lease is released (a standby takes over at once), and the process exits within a bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;
use crate::controller::context::Gateway;
use crate::controller::leader::{ElectionConfig, LeaderElector};
use crate::controller::pod_cache::PodCache;
use crate::controller::reload::{PolicyReloader, run_reload};
use crate::controller::{node, pod};
use crate::policy::model::ProviderKind;
use crate::provider::factories::{
    AciFactory, ClusterFactory, FargateFactory, SimFactory, Unavailable,
};
use crate::provider::registry::Factory;
use crate::provider::sim::SimCloud;

/// How long shutdown waits for everything to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the gateway could not start. Not retryable by the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig (or in-cluster configuration) could not be loaded.
    #[error("kubernetes configuration: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// `BURSTGATE_FAIL_AFTER` names no fail point.
    #[error("{0}")]
    FailPoint(String),
    /// Leadership was lost and the controllers would not stop in time: the process must end
    /// now, without draining, so that it never acts beside the next leader.
    #[error("leader election")]
    Fenced(#[from] crate::controller::leader::Error),
}

/// The gateway's client and the configuration it was built from (which also reads the kubelets
/// of an on-cluster target without metrics-server).
async fn client(config: &RunConfig) -> Result<(kube::Client, kube::Config), Error> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    Ok((kube::Client::try_from(kube_config.clone())?, kube_config))
}

/// The provider kinds this gateway can build adapters for (`client` built from `kube_config`).
pub fn factories(
    config: &RunConfig,
    client: &kube::Client,
    kube_config: &kube::Config,
    kube_version: &str,
) -> BTreeMap<ProviderKind, Arc<dyn Factory>> {
    let cloud = SimCloud::with_settings(crate::provider::sim::Settings {
        cold_start: Duration::from_millis(config.sim_cold_start_ms),
        capacity: config.sim_capacity,
        rate_limits: config.sim_rate_limits.clone(),
    })
    .expect("--sim-rate-limit buckets are checked when the flags are parsed");
    BTreeMap::from([
        (
            ProviderKind::Sim,
            Arc::new(SimFactory::new(cloud)) as Arc<dyn Factory>,
        ),
        (
            ProviderKind::Cluster,
            Arc::new(
                ClusterFactory::new(client.clone(), kube_config.clone())
                    .with_usage_refresh(config.usage_refresh())
                    .with_kubelet_ca_file(config.cluster_kubelet_ca_file.clone()),
            ) as Arc<dyn Factory>,
        ),
        (
            ProviderKind::Fargate,
            Arc::new(FargateFactory::default()) as Arc<dyn Factory>,
        ),
        (ProviderKind::Aci, aci_factory(config, kube_version)),
    ])
}

/// The factory of `aci` targets: the Azure credential chain and the ARM endpoint, both trusting
/// `--azure-ca-file` when given; unavailable (the node says why) without a credential, or when
/// the kube-proxy kubeconfig named cannot be read.
fn aci_factory(config: &RunConfig, kube_version: &str) -> Arc<dyn Factory> {
    use crate::provider::aci::{azure_transport, default_credential};
    let built = azure_transport(config.azure_ca_file.as_deref())
        .and_then(|transport| Ok((default_credential(transport.clone())?, transport)));
    let kube_proxy = match (&config.aci_kube_proxy_kubeconfig, &config.cluster_cidr) {
        (Some(path), Some(cidr)) => match std::fs::read_to_string(path) {
            Ok(kubeconfig) => Some(crate::provider::aci::KubeProxy {
                cluster_cidr: cidr.clone(),
                kube_version: kube_version.to_string(),
                kubeconfig: kubeconfig.into(),
            }),
            Err(e) => {
                return Arc::new(Unavailable(format!(
                    "cannot read the kube-proxy kubeconfig {}: {e}",
                    path.display()
                )));
            }
        },
        _ => None,
    };
    match built {
        Ok((credential, transport)) => {
            let dns = crate::provider::aci::ClusterDns {
                servers: config.cluster_dns.clone(),
                domain: config.cluster_domain.clone(),
            };
            Arc::new(
                AciFactory::new(credential, &config.arm_endpoint)
                    .with_transport(transport)
                    .with_cluster_dns(dns)
                    .with_kube_proxy(kube_proxy)
                    .with_usage(
                        config.azure_monitor_endpoint.clone(),
                        config.usage_refresh(),
                    ),
            )
        }
        Err(e) => Arc::new(Unavailable(format!("no Azure credential: {e}"))),
    }
}

/// Keeps every target's adapter built for the live policy, until `term` is cancelled.
pub async fn sync_providers(gw: Arc<Gateway>, term: CancellationToken) {
    let mut policy = gw.policy_watch();
    loop {
        policy.mark_unchanged();
        gw.sync_providers().await;
        tokio::select! {
            _ = term.cancelled() => return,
            r = policy.changed() => if r.is_err() { return },
        }
    }
}

/// What the leader runs: the adapters, the virtual node and the pod lifecycle, until `term` is
/// cancelled and then for at most `grace`.
pub async fn run_controllers(
    gw: Arc<Gateway>,
    pods: PodCache,
    term: CancellationToken,
    grace: Duration,
) {
    let node = {
        let (gw, term) = (gw.clone(), term.clone());
        async move {
            if let Err(e) = node::run_node(gw, term.clone()).await {
                tracing::error!(error = %e, "the node controller stopped; giving up leadership");
                term.cancel();
            }
        }
    };
    // Once the term ends the controllers get `grace` to finish what they are doing; calls
    // still in flight then (hung on a partitioned apiserver, say) are dropped, which every step
    // of a pod's journey survives as it survives a crash.
    let controllers = async {
        tokio::join!(
            sync_providers(gw.clone(), term.clone()),
            node,
            pod::run(gw.clone(), pods, term.clone())
        )
    };
    tokio::select! {
        _ = controllers => {}
        () = async { term.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "the controllers were still busy after their term ended; dropped their calls in flight");
        }
    }
}

/// Runs the gateway until SIGTERM / SIGINT.
// Long on purpose: the one start-up and shutdown path, read top to bottom (build, start every
// task in one JoinSet, wait for a signal, cancel, drain under a bound).
pub async fn run(config: RunConfig) -> Result<(), Error> {
    crate::failpoint::arm_from_env().map_err(Error::FailPoint)?;
    let (client, kube_config) = client(&config).await?;
    let (tx, rx) = watch::channel(None);
    let reloader = PolicyReloader::new(config.policy_dir.clone(), tx);
    let election = ElectionConfig::from_run_config(&config);
    // kube-proxy in ACI groups runs the cluster's version; unknown only if the apiserver would
    // not say, and then the extension's default.
    let kube_version = match config.aci_kube_proxy_kubeconfig {
        Some(_) => client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_default(),
        None => String::new(),
    };
    let gw = Gateway::new(
        client.clone(),
        config.clone(),
        rx,
        factories(&config, &client, &kube_config, &kube_version),
        config.layer_settings(),
    );

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(signals(shutdown.clone()));
    let reload_gw = gw.clone();
    tasks.spawn(run_reload(
        reloader,
        gw.clone(),
        shutdown.clone(),
        move |outcome| {
            let serving = reload_gw.current_policy().map(|p| p.hash.clone());
            reload_gw
                .metrics()
                .reloaded(outcome.metric_label(), serving.as_deref());
        },
    ));
    let refresh_gw = gw.clone();
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || refresh_gw.refresh_metrics());
    let metrics_server = crate::metrics::serve(
        config.metrics_addr,
        gw.metrics().clone(),
        refresh,
        shutdown.clone(),
    );
    let (metrics_shutdown, addr) = (shutdown.clone(), config.metrics_addr);
    tasks.spawn(async move {
        if let Err(e) = metrics_server.await {
            tracing::error!(%addr, error = %e, "cannot serve /metrics; shutting down");
            metrics_shutdown.cancel();
        }
    });

    // Every replica serves the kubelet API (the apiserver may reach any of them).
    let (kubelet, kubelet_shutdown) = (
        crate::kubelet::serve(config.clone(), gw.clone(), shutdown.clone()),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        if let Err(e) = kubelet.await {
            tracing::error!(error = %e, "cannot serve the kubelet API; shutting down");
            kubelet_shutdown.cancel();
        }
    });

    // Every replica keeps the node's pods cached, so a term starts without listing them.
    let (pods, pod_watch) = PodCache::new(&gw, shutdown.clone());
    tasks.spawn(pod_watch);

    // The controllers' grace after a term: half the election's stop budget (the elector's
    // fence stays the backstop).
    let grace = election.stop_budget() / 2;
    let elector = LeaderElector::new(client, election);
    let mut leading = elector.subscribe();
    let leader_metrics = (gw.metrics().clone(), shutdown.clone());
    tasks.spawn(async move {
        let (metrics, shutdown) = leader_metrics;
        loop {
            metrics.leader.set(i64::from(*leading.borrow_and_update()));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = leading.changed() => if r.is_err() { return },
            }
        }
    });
    let leader_gw = gw.clone();
    elector
        .run(shutdown.clone(), move |term| {
            run_controllers(leader_gw.clone(), pods.clone(), term, grace)
        })
        .await?;

    shutdown.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
        gw.drain().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some tasks did not stop within {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    tracing::info!("burstgate stopped");
    Ok(())
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop with the shutdown token only");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
