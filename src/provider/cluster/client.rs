//! The `cluster` provider: shadow pods and their Secrets through the Kubernetes API of the target
//! cluster, every call through the target's [`Layers`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::policy::model::OperationClass;
use crate::provider::cluster::kubelets::Kubelets;
use crate::provider::cluster::retry::{is_gone, provider_error};
use crate::provider::cluster::settings::Settings;
use crate::provider::cluster::status::{
    DEFAULT_UNSCHEDULABLE_GRACE, exec_exit_code, workload_status,
};
use crate::provider::cluster::translate::{Shadow, translate};
use crate::provider::cluster::usage::{PodMetricsList, usage_of};
use crate::provider::contract::{
    Capabilities, ExecOutput, ExecRequest, ExecSession, LogOptions, OwnedWorkload, Provider,
    ProviderError, WorkloadSpec, WorkloadStatus,
};
use crate::provider::contract::{
    ExecEvent, OutputStream, PortConnection, WorkloadUsage, usage_not_reported,
};
use crate::provider::kit::ownership::{
    MANAGED_BY, MANAGED_BY_VALUE, OwnerKeys, WORKLOAD, label_value,
};
use crate::provider::kit::usage::{DEFAULT_REFRESH, UsageCache};
use crate::provider::layers::Layers;

/// Field manager of the Secrets' server-side applies.
const FIELD_MANAGER: &str = "burstgate";
/// Pod UIDs per status list call (the label selector stays around 20 KB).
const STATUS_BATCH: usize = 500;
/// An exec keeps at most this much of each stream (the rest is read and dropped).
const EXEC_OUTPUT_LIMIT: usize = 4 << 20;

/// Runs pods as shadow pods on the real nodes of a cluster (this one or another, by the client).
pub struct ClusterProvider {
    settings: Settings,
    layers: Layers,
    client: kube::Client,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    unschedulable_grace: Duration,
    usage: UsageCache,
    /// Where usage comes from when the cluster serves no metrics.k8s.io: its nodes' kubelets.
    kubelets: Option<Kubelets>,
    /// Whether the cluster's exec websocket can close stdin alone (`v5.channel.k8s.io`, from
    /// Kubernetes 1.30), read once from its version.
    closes_stdin: tokio::sync::OnceCell<bool>,
}

fn selector(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn age(
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> Duration {
    created
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or_default()
}

/// Reads `reader` to its end, keeping at most `limit` bytes.
async fn read_capped(reader: Option<impl AsyncRead + Unpin>, limit: usize) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Whether a cluster of version `major`.`minor` (as `/version` spells them: "1", "30+")
/// negotiates `v5.channel.k8s.io` for exec.
fn speaks_v5(major: &str, minor: &str) -> bool {
    let number = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or_default();
    (number(major), number(minor)) >= (1, 30)
}

/// What the target cluster answered when asked for its shadow pods' PodMetrics.
enum MetricsAnswer {
    /// The list.
    Served(PodMetricsList),
    /// No metrics.k8s.io there (no metrics-server): ask the kubelets.
    NotServed,
    /// The gateway may not read them (the apiserver's message).
    Forbidden(String),
}

impl MetricsAnswer {
    /// The request metric's result for this answer.
    fn label(&self) -> &'static str {
        match self {
            MetricsAnswer::Served(_) => "ok",
            MetricsAnswer::NotServed => "not_served",
            MetricsAnswer::Forbidden(_) => "forbidden",
        }
    }
}

impl ClusterProvider {
    /// A provider creating shadow pods in `settings.namespace` through `client`.
    pub fn new(settings: Settings, client: kube::Client, layers: Layers) -> ClusterProvider {
        ClusterProvider {
            pods: Api::namespaced(client.clone(), &settings.namespace),
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            usage: UsageCache::new(DEFAULT_REFRESH, layers.per_second(OperationClass::Read)),
            client,
            settings,
            layers,
            unschedulable_grace: DEFAULT_UNSCHEDULABLE_GRACE,
            kubelets: None,
            closes_stdin: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether the cluster's exec websocket can close stdin alone: Kubernetes 1.30 and later
    /// (`v5.channel.k8s.io`, KEP-4006 on by default). A cluster whose version cannot be read is
    /// taken for an older one (the end of stdin then waits a grace, `streams.rs`).
    async fn closes_stdin(&self) -> bool {
        *self
            .closes_stdin
            .get_or_init(|| async {
                match self.client.apiserver_version().await {
                    Ok(v) => speaks_v5(&v.major, &v.minor),
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster target: its version is unknown; stdin's end waits a grace");
                        false
                    }
                }
            })
            .await
    }

    /// Shadow pods' usage samples serve `refresh` before metrics.k8s.io (or the kubelets) are
    /// asked again.
    pub fn with_usage_refresh(mut self, refresh: Duration) -> ClusterProvider {
        self.usage = UsageCache::new(refresh, self.layers.per_second(OperationClass::Read));
        self
    }

    /// When the cluster serves no metrics.k8s.io, reads the shadow pods' usage from the
    /// `/metrics/resource` of their nodes' kubelets, as metrics-server does, with `config`'s
    /// credentials (the target cluster's client configuration, the one `client` was built from),
    /// trusting `kubelet_ca_file` or else `config`'s CA. Without it such a cluster's pods report
    /// no usage.
    pub fn with_kubelet_access(
        mut self,
        config: kube::Config,
        kubelet_ca_file: Option<std::path::PathBuf>,
    ) -> ClusterProvider {
        self.kubelets = Some(Kubelets::new(config, kubelet_ca_file));
        self
    }

    /// The shadow namespace's PodMetrics (one list); [`MetricsAnswer::NotServed`] when the
    /// cluster serves no metrics.k8s.io (404: no metrics-server there), and
    /// [`MetricsAnswer::Forbidden`] when the gateway may not read them (403): both are answers
    /// about usage, not failures of the target, so they never count towards its circuit.
    async fn pod_metrics(&self) -> Result<MetricsAnswer, ProviderError> {
        let path = format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods?labelSelector={}",
            self.settings.namespace,
            form_urlencoded::byte_serialize(format!("{MANAGED_BY}={MANAGED_BY_VALUE}").as_bytes())
                .collect::<String>()
        );
        let client = &self.client;
        self.layers
            .call_labelled(
                OperationClass::Read,
                "ListPodMetrics",
                MetricsAnswer::label,
                || {
                    let path = path.clone();
                    async move {
                        let request = axum::http::Request::get(path)
                            .body(Vec::new())
                            .expect("a valid request");
                        match client.request::<PodMetricsList>(request).await {
                            Ok(list) => Ok(MetricsAnswer::Served(list)),
                            Err(kube::Error::Api(e)) if e.code == 404 => {
                                Ok(MetricsAnswer::NotServed)
                            }
                            Err(kube::Error::Api(e)) if e.code == 403 => {
                                Ok(MetricsAnswer::Forbidden(e.message))
                            }
                            Err(e) => Err(provider_error(&e)),
                        }
                    }
                },
            )
            .await
    }

    /// How long a shadow pod may stay unschedulable before its status says the cluster is full
    /// (default 60 s; then its phase is `Rejected`, see "Cluster full" in
    /// [`crate::provider::cluster`]).
    pub fn with_unschedulable_grace(mut self, grace: Duration) -> ClusterProvider {
        self.unschedulable_grace = grace;
        self
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn status_of(&self, pod: &Pod) -> WorkloadStatus {
        workload_status(pod, Timestamp::now(), self.unschedulable_grace)
    }

    async fn read_pod(&self, id: &str) -> Result<Option<Pod>, ProviderError> {
        let pods = &self.pods;
        self.layers
            .call(OperationClass::Read, "ReadPod", || async move {
                pods.get_opt(id).await.map_err(|e| provider_error(&e))
            })
            .await
    }

    /// Creates the pod, or finds the one a previous attempt made.
    async fn create_pod(&self, shadow: &Shadow, spec: &WorkloadSpec) -> Result<Pod, ProviderError> {
        let pods = &self.pods;
        let created = self
            .layers
            .call(OperationClass::Create, "CreatePod", || async move {
                match pods
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        &shadow.pod,
                    )
                    .await
                {
                    Ok(p) => Ok(Some(p)),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(None),
                    Err(e) => Err(provider_error(&e)),
                }
            })
            .await?;
        let pod = match created {
            Some(p) => p,
            None => self
                .read_pod(&spec.id)
                .await?
                .ok_or_else(|| ProviderError::Transient {
                    message: format!(
                        "shadow pod {}/{} was deleted while being created again",
                        self.settings.namespace, spec.id
                    ),
                    retry_after: None,
                })?,
        };
        let uid_label = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(OwnerKeys::KUBERNETES.pod_uid));
        if uid_label != Some(&label_value(&spec.owner.pod_uid)) {
            return Err(ProviderError::cloud_target(
                "NameTaken",
                format!(
                    "pod {}/{} exists but does not belong to pod UID {}",
                    self.settings.namespace, spec.id, spec.owner.pod_uid
                ),
            ));
        }
        Ok(pod)
    }

    /// Applies the pod's Secrets, owned by the pod (server-side apply: creates or updates, so a
    /// retried create converges).
    async fn apply_secrets(&self, pod: &Pod, shadow: &Shadow) -> Result<(), ProviderError> {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        for secret in [&shadow.secret, &shadow.registry_secret]
            .into_iter()
            .flatten()
        {
            let mut secret = secret.clone();
            secret.metadata.owner_references = Some(vec![owner.clone()]);
            let name = secret.metadata.name.clone().unwrap_or_default();
            let (secrets, secret, name) = (&self.secrets, &secret, &name);
            self.layers
                .call(OperationClass::Create, "ApplySecret", || async move {
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    secrets
                        .patch(name, &params, &Patch::Apply(secret))
                        .await
                        .map(drop)
                        .map_err(|e| provider_error(&e))
                })
                .await?;
        }
        Ok(())
    }

    /// The shadow pods of `ids` that exist: one list call per batch of up to 500, by label
    /// selector `burstgate.io/managed-by=burstgate,burstgate.io/pod-uid in (...)`.
    async fn shadow_pods(&self, ids: &[String]) -> Result<Vec<Pod>, ProviderError> {
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let uids: Vec<String> = wanted
            .iter()
            .filter_map(|id| id.strip_prefix("bg-"))
            .map(label_value)
            .collect();
        let mut out = Vec::new();
        for chunk in uids.chunks(STATUS_BATCH) {
            let params = ListParams::default().labels(&format!(
                "{MANAGED_BY}={MANAGED_BY_VALUE},{} in ({})",
                OwnerKeys::KUBERNETES.pod_uid,
                chunk.join(",")
            ));
            let (pods, params) = (&self.pods, &params);
            let list = self
                .layers
                .call(OperationClass::Read, "ListPods", || async move {
                    pods.list(params).await.map_err(|e| provider_error(&e))
                })
                .await?;
            out.extend(list.items.into_iter().filter(|pod| {
                pod.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| wanted.contains(n))
            }));
        }
        Ok(out)
    }

    /// The usage of the shadow pods `due` from their nodes' kubelets (see `kubelets.rs`), stored
    /// in the usage cache. `Err` when none of them has a sample and their kubelets failed: not
    /// reported with the first failure's fix when nothing but a fix helps, else transient.
    async fn kubelet_usage(
        &self,
        kubelets: &Kubelets,
        due: &[String],
        now: std::time::Instant,
    ) -> Result<(), ProviderError> {
        let pods = match self.shadow_pods(due).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::info!(target_name = %self.settings.target, error = %e, "cluster: listing the shadow pods to read their usage failed");
                for id in due {
                    self.usage.read_failed(id, now);
                }
                return Ok(());
            }
        };
        let mut read = kubelets
            .usage(&self.layers, &self.client, &self.settings.namespace, &pods)
            .await;
        let mut failures = Vec::new();
        for id in due {
            match read.remove(id) {
                Some(Err(e)) => {
                    self.usage.read_failed(id, now);
                    failures.push(e);
                }
                Some(Ok(sample)) => self.usage.store(id, sample, now),
                None => self.usage.store(id, None, now),
            }
        }
        if failures.is_empty() || !self.usage.known(due).is_empty() {
            return Ok(());
        }
        let first = &failures[0];
        if failures.iter().any(|e| e.is_retryable()) {
            Err(ProviderError::Transient {
                message: format!("no usage from the kubelets: {first}"),
                retry_after: None,
            })
        } else {
            Err(usage_not_reported(self.name(), &first.to_string()))
        }
    }

    async fn delete_secrets(&self, id: &str) -> Result<(), ProviderError> {
        let secrets = &self.secrets;
        let params = ListParams::default().labels(&selector(&[
            (MANAGED_BY, MANAGED_BY_VALUE.into()),
            (WORKLOAD, label_value(id)),
        ]));
        let params = &params;
        self.layers
            .call(OperationClass::Delete, "DeleteSecrets", || async move {
                secrets
                    .delete_collection(&DeleteParams::default(), params)
                    .await
                    .map(drop)
                    .map_err(|e| provider_error(&e))
            })
            .await
    }
}

#[async_trait::async_trait]
impl Provider for ClusterProvider {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn capabilities(&self) -> Capabilities {
        crate::provider::kit::declared(crate::policy::model::ProviderKind::Cluster)
            .serving(true, true, true)
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let shadow = translate(spec, &self.settings.namespace)?;
        let pod = self.create_pod(&shadow, spec).await?;
        if let Err(e) = self.apply_secrets(&pod, &shadow).await {
            if !e.is_retryable() {
                // The pod would wait for its Secret forever: take it back, the target refused.
                if let Err(cleanup) = self.delete(&spec.id).await {
                    tracing::warn!(workload = %spec.id, error = %cleanup, "removing a shadow pod whose Secret was refused failed");
                }
            }
            return Err(e);
        }
        Ok(self.status_of(&pod))
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let pods = &self.pods;
        self.layers
            .call(OperationClass::Delete, "DeletePod", || async move {
                match pods.delete(id, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_gone(&e) => Ok(()),
                    Err(e) => Err(provider_error(&e)),
                }
            })
            .await?;
        // The Secrets' ownerReference lets a garbage collector remove them too, but not every
        // setup runs one: delete them explicitly.
        self.delete_secrets(id).await
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        Ok(self
            .shadow_pods(ids)
            .await?
            .iter()
            .filter_map(|pod| Some((pod.metadata.name.clone()?, self.status_of(pod))))
            .collect())
    }

    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        let params = ListParams::default().labels(&selector(&[
            (MANAGED_BY, MANAGED_BY_VALUE.into()),
            (OwnerKeys::KUBERNETES.cluster_id, label_value(cluster_id)),
            (OwnerKeys::KUBERNETES.node, label_value(node)),
        ]));
        let (pods, secrets, params) = (&self.pods, &self.secrets, &params);
        let pod_list = self
            .layers
            .call(OperationClass::Read, "ListPods", || async move {
                pods.list(params).await.map_err(|e| provider_error(&e))
            })
            .await?;
        // Secrets left behind by a delete that stopped half-way are owned workloads too: GC
        // deletes them by id.
        let secret_list = self
            .layers
            .call(OperationClass::Read, "ListSecrets", || async move {
                secrets
                    .list_metadata(params)
                    .await
                    .map_err(|e| provider_error(&e))
            })
            .await?;
        let now = Timestamp::now();
        let mut owned: BTreeMap<String, OwnedWorkload> = BTreeMap::new();
        for meta in secret_list
            .items
            .iter()
            .map(|s| &s.metadata)
            .chain(pod_list.items.iter().map(|p| &p.metadata))
        {
            let annotations = meta.annotations.clone().unwrap_or_default();
            let Some(owner) = OwnerKeys::KUBERNETES
                .read(|k| annotations.get(k).map(String::as_str))
                .filter(|o| o.cluster_id == cluster_id && o.node == node)
            else {
                continue;
            };
            let id = annotations
                .get(WORKLOAD)
                .cloned()
                .or_else(|| meta.name.clone())
                .unwrap_or_default();
            // Pods come last: a pod's age wins over its Secrets'.
            owned.insert(
                id.clone(),
                OwnedWorkload {
                    id,
                    owner,
                    age: age(meta.creation_timestamp.as_ref(), now),
                    leftover: false,
                },
            );
        }
        Ok(owned.into_values().collect())
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        let params = log_params(container, opts);
        let (pods, params) = (&self.pods, &params);
        self.layers
            .call(OperationClass::Read, "ReadPodLog", || async move {
                pods.logs(id, params).await.map_err(|e| provider_error(&e))
            })
            .await
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .tty(false);
        let (pods, params) = (&self.pods, &params);
        // Only the connection goes through the layers (a retry there runs nothing twice); the
        // command's own run time is not a call timeout.
        let mut process = self
            .layers
            .call(OperationClass::Create, "ExecPod", || async move {
                pods.exec(id, command.to_vec(), params)
                    .await
                    .map_err(|e| provider_error(&e))
            })
            .await?;
        let status = process.take_status();
        let (stdout, stderr) = tokio::join!(
            read_capped(process.stdout(), EXEC_OUTPUT_LIMIT),
            read_capped(process.stderr(), EXEC_OUTPUT_LIMIT)
        );
        let exit_code = match status {
            Some(status) => status.await.map(|s| exec_exit_code(&s)).transpose()?,
            None => None,
        };
        if let Err(e) = process.join().await {
            tracing::debug!(workload = %id, error = %e, "exec stream ended with an error");
        }
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    async fn exec_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        let params = session_params(container, request);
        let (pods, params, command) = (&self.pods, &params, &request.command);
        // As in `exec`: only the connection goes through the layers.
        let process = self
            .layers
            .call(OperationClass::Create, "ExecPod", || async move {
                pods.exec(id, command.clone(), params)
                    .await
                    .map_err(|e| provider_error(&e))
            })
            .await?;
        Ok(crate::provider::cluster::streams::session(
            process,
            request.tty,
            self.closes_stdin().await,
        ))
    }

    /// Attaches to the shadow pod's container through the cluster's `pods/attach`: its output,
    /// and its stdin and terminal when asked (the container must have been started with
    /// `stdin: true` / `tty: true`, as on any node).
    async fn attach_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        let params = session_params(container, request);
        let (pods, params) = (&self.pods, &params);
        // As in `exec`: only the connection goes through the layers.
        let process = self
            .layers
            .call(OperationClass::Create, "AttachPod", || async move {
                pods.attach(id, params)
                    .await
                    .map_err(|e| provider_error(&e))
            })
            .await?;
        Ok(crate::provider::cluster::streams::session(
            process,
            request.tty,
            self.closes_stdin().await,
        ))
    }

    async fn attach(&self, id: &str, container: &str) -> Result<OutputStream, ProviderError> {
        let request = ExecRequest::default();
        let session = self.attach_session(id, container, &request).await?;
        Ok(futures::StreamExt::boxed(futures::StreamExt::filter_map(
            session.output,
            |event| async move {
                match event {
                    Ok(ExecEvent::Stdout(data) | ExecEvent::Stderr(data)) => Some(Ok(data)),
                    Ok(ExecEvent::Exited(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            },
        )))
    }

    fn forwards_ports(&self) -> bool {
        true
    }

    /// Connects to `port` of the shadow pod through the cluster's `pods/portforward` (kube's
    /// WebSocket client, `v4.channel.k8s.io`).
    async fn port_forward(&self, id: &str, port: u16) -> Result<PortConnection, ProviderError> {
        let pods = &self.pods;
        let mut forwarder = self
            .layers
            .call(OperationClass::Create, "PortForwardPod", || async move {
                pods.portforward(id, &[port])
                    .await
                    .map_err(|e| provider_error(&e))
            })
            .await?;
        let stream = forwarder
            .take_stream(port)
            .expect("the port asked for has a stream");
        let error = forwarder
            .take_error(port)
            .expect("the port asked for has an error channel");
        let id = id.to_string();
        let error = Box::pin(async move {
            let message = error.await;
            if let Err(e) = forwarder.join().await {
                tracing::debug!(workload = %id, error = %e, "cluster port-forward ended with an error");
            }
            message
        });
        Ok(PortConnection {
            stream: Box::new(stream),
            error,
        })
    }

    /// What the target cluster's metrics-server measured of the shadow pods (one PodMetrics
    /// list of the namespace when any is due); when the cluster serves no metrics.k8s.io, what
    /// their nodes' kubelets measured (`kubelets.rs`: one scrape per node).
    async fn usage(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadUsage>, ProviderError> {
        let due = self.usage.due(ids, std::time::Instant::now());
        if due.is_empty() {
            return Ok(self.usage.known(ids));
        }
        let listed = self.pod_metrics().await;
        let now = std::time::Instant::now();
        match listed {
            Ok(MetricsAnswer::Served(list)) => {
                let mut samples: BTreeMap<String, WorkloadUsage> = list
                    .items
                    .iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, usage_of(p)?)))
                    .collect();
                for id in &due {
                    self.usage.store(id, samples.remove(id), now);
                }
            }
            Ok(MetricsAnswer::Forbidden(message)) => {
                for id in &due {
                    self.usage.read_failed(id, now);
                }
                return Err(usage_not_reported(
                    self.name(),
                    &format!(
                        "the target cluster refused the gateway its PodMetrics ({message}): grant `get` and `list` on `pods.metrics.k8s.io` in namespace {} (deploy/rbac, ClusterRole burstgate-shadow)",
                        self.settings.namespace
                    ),
                ));
            }
            Ok(MetricsAnswer::NotServed) => {
                let Some(kubelets) = &self.kubelets else {
                    for id in &due {
                        self.usage.read_failed(id, now);
                    }
                    return Err(usage_not_reported(
                        self.name(),
                        "the target cluster serves no metrics.k8s.io and the gateway has no access to its kubelets: install metrics-server there",
                    ));
                };
                self.kubelet_usage(kubelets, &due, now).await?;
            }
            Err(e) => {
                tracing::info!(target_name = %self.settings.target, error = %e, "cluster: reading the shadow pods' metrics failed");
                for id in &due {
                    self.usage.read_failed(id, now);
                }
            }
        }
        Ok(self.usage.known(ids))
    }
}

/// The apiserver's log parameters for `container` with `opts` (`previous` included: the shadow
/// pod's kubelet keeps the previous instance, as any node's does).
fn log_params(container: &str, opts: &LogOptions) -> LogParams {
    LogParams {
        container: Some(container.to_string()),
        tail_lines: opts
            .tail_lines
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        since_seconds: opts
            .since_seconds
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        timestamps: opts.timestamps,
        previous: opts.previous,
        ..Default::default()
    }
}

/// The `pods/exec` / `pods/attach` parameters of an interactive session: stdout always, stdin and
/// a terminal as asked, stderr only without a terminal (a TTY merges it into stdout).
fn session_params(container: &str, request: &ExecRequest) -> AttachParams {
    let tty = request.tty.is_some();
    AttachParams::default()
        .container(container)
        .stdin(request.stdin)
        .stdout(true)
        .stderr(!tty)
        .tty(tty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_from_1_30_close_stdin_alone_and_older_ones_do_not() {
        assert!(speaks_v5("1", "30"));
        assert!(speaks_v5("1", "35+"));
        assert!(!speaks_v5("1", "29"));
        assert!(!speaks_v5("1", "20"));
        assert!(!speaks_v5("", ""));
    }

    #[test]
    fn logs_of_the_previous_instance_are_asked_of_the_shadow_pods_kubelet() {
        let opts = LogOptions {
            tail_lines: Some(5),
            previous: true,
            ..Default::default()
        };
        let p = log_params("app", &opts);
        assert!(p.previous);
        assert_eq!(
            (p.container.as_deref(), p.tail_lines),
            (Some("app"), Some(5))
        );
        assert!(!log_params("app", &LogOptions::default()).previous);
    }
}
