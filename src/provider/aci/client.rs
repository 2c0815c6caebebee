//! The ACI [`Provider`] of one target: each method a few steps over the ARM wire
//! ([`arm`](crate::provider::aci::arm)), the status cache
//! ([`cache`](crate::provider::aci::cache)) and the websockets
//! ([`streams`](crate::provider::aci::streams)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;

use crate::policy::model::OperationClass;
use crate::provider::aci::arm::Arm;
use crate::provider::aci::cache::StatusCache;
use crate::provider::aci::logs::filter_log;
use crate::provider::aci::retry::ArmBudget;
use crate::provider::aci::settings::Settings;
use crate::provider::aci::status::{Cadence, GroupView, owned_workload, workload_status};
use crate::provider::aci::streams::{attach_output, exec_command_line, exec_output, exec_session};
use crate::provider::aci::translate::{OWNER_TAGS, TAG_CREATED, translate};
use crate::provider::aci::usage::usage_of;
use crate::provider::contract::WorkloadUsage;
use crate::provider::contract::{
    Capabilities, ExecOutput, ExecRequest, ExecSession, LogOptions, OutputStream, OwnedWorkload,
    PodRejection, Provider, ProviderError, TerminalSize, WorkloadPhase, WorkloadSpec,
    WorkloadStatus,
};
use crate::provider::kit::cadence::listing_interval;
use crate::provider::kit::usage::UsageCache;
use crate::provider::layers::Layers;

/// GETs in flight at once during a status batch.
const GET_CONCURRENCY: usize = 8;

/// The `aci` provider for one target.
pub struct AciProvider {
    settings: Settings,
    arm: Arm,
    cache: StatusCache,
    usage: UsageCache,
    /// The rate of the target's read bucket.
    reads_per_second: Option<f64>,
    /// Pages the last orphan listing read.
    listing_reads: AtomicUsize,
}

impl AciProvider {
    /// A provider for the target `settings` describes, authenticating with `credential`, calling
    /// through `layers`.
    pub fn new(
        settings: Settings,
        credential: Arc<dyn TokenCredential>,
        layers: Layers,
    ) -> AciProvider {
        AciProvider::with_transport(settings, credential, layers, None)
    }

    /// [`AciProvider::new`], sending ARM requests through `transport` (from
    /// [`azure_transport`](crate::provider::aci::azure_transport)) when given.
    pub fn with_transport(
        settings: Settings,
        credential: Arc<dyn TokenCredential>,
        layers: Layers,
        transport: Option<Transport>,
    ) -> AciProvider {
        let reads = layers.per_second(OperationClass::Read);
        let cadence = Cadence::default().within(reads);
        AciProvider {
            arm: Arm::new(&settings, credential, layers, transport),
            usage: UsageCache::new(settings.usage_refresh, reads),
            settings,
            cache: StatusCache::new(cadence),
            reads_per_second: reads,
            listing_reads: AtomicUsize::new(0),
        }
    }

    /// The same provider re-reading groups at `cadence` (tests use [`Cadence::eager`]).
    pub fn with_cadence(mut self, cadence: Cadence) -> AciProvider {
        self.cache = StatusCache::new(cadence);
        self
    }

    /// The target's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What ARM last said is left of the subscription's request budget (see
    /// [`ArmBudget::low`] for how the layers could use it).
    pub fn arm_budget(&self) -> ArmBudget {
        self.arm.budget()
    }

    /// The status of `existing`, the group a retried create finds: it must be this pod's.
    fn adopt(
        &self,
        spec: &WorkloadSpec,
        existing: &GroupView,
    ) -> Result<WorkloadStatus, ProviderError> {
        let same_owner = existing.tag(OWNER_TAGS.pod_uid) == Some(spec.owner.pod_uid.as_str())
            && existing.tag(OWNER_TAGS.cluster_id) == Some(spec.owner.cluster_id.as_str());
        if !same_owner {
            return Err(ProviderError::cloud_pod(
                "NameConflict",
                format!(
                    "container group {} exists in resource group {} and does not belong to pod UID {} of cluster {}",
                    spec.id,
                    self.settings.resource_group,
                    spec.owner.pod_uid,
                    spec.owner.cluster_id
                ),
            ));
        }
        let status = workload_status(&spec.id, existing);
        if existing.has_instance_view() {
            self.cache
                .remember(&spec.id, &status, existing.fingerprint());
        }
        Ok(status)
    }

    /// The listed groups to use for this batch, by name: the last list when it is fresh and
    /// every id is in it and settled, else a new list.
    async fn listed(&self, ids: &[String]) -> Result<HashMap<String, GroupView>, ProviderError> {
        if let Some(groups) = self.cache.reusable_list(ids) {
            return Ok(groups);
        }
        let groups: HashMap<String, GroupView> = self
            .arm
            .list_groups()
            .await?
            .0
            .into_iter()
            .filter_map(|g| g.name.clone().map(|n| (n, g)))
            .collect();
        self.cache.store_list(groups.clone());
        Ok(groups)
    }
}

#[async_trait::async_trait]
impl Provider for AciProvider {
    fn name(&self) -> &'static str {
        "aci"
    }

    fn capabilities(&self) -> Capabilities {
        crate::provider::kit::declared(crate::policy::model::ProviderKind::Aci)
            .serving(true, true, true)
    }

    /// At every status tick (each second): the status cache answers from what it knows and
    /// GETs only the groups due at its [`Cadence`], so an exit is seen one cadence after it at
    /// most, not a cadence plus the controller's own poll interval.
    fn running_poll(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The last listing's pages, each a Read of the subscription's bucket.
    fn listing_interval(&self, floor: std::time::Duration) -> std::time::Duration {
        listing_interval(
            floor,
            self.reads_per_second,
            self.listing_reads.load(Ordering::Relaxed),
        )
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let body = translate(spec, &self.settings, &created_at)?;
        // A retried create finds the group it already made and does not PUT again: a PUT on a
        // running group would update it, and may restart it.
        if let Some(existing) = self.arm.get_group(&spec.id).await? {
            return self.adopt(spec, &existing);
        }
        let group = self.arm.put_group(&spec.id, &body).await?;
        let mut status = workload_status(&spec.id, &group);
        if status.phase != WorkloadPhase::Failed {
            status.phase = WorkloadPhase::Pending;
        }
        self.cache.created(&spec.id);
        Ok(status)
    }

    /// ACI cannot change a running group's files in place: the group is PUT again with the
    /// fresh files (its `burstgate.io-created` tag kept), an update that restarts its
    /// containers. Only this pod's existing group is updated; a missing one is `NotFound`.
    async fn renew_files(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let Some(existing) = self.arm.get_group(&spec.id).await? else {
            return Err(ProviderError::Pod(PodRejection::NotFound {
                message: format!("container group {} is gone", spec.id),
            }));
        };
        self.adopt(spec, &existing)?;
        let created_at = existing
            .tag(TAG_CREATED)
            .map(str::to_string)
            .unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
        let body = translate(spec, &self.settings, &created_at)?;
        let group = self.arm.put_group(&spec.id, &body).await?;
        self.cache.created(&spec.id);
        Ok(workload_status(&spec.id, &group))
    }

    /// `ContainerGroups_Stop`: ACI stops every container of the group (it offers no grace of
    /// its own: the containers are killed when the call returns, so no later than a kubelet
    /// would); the delete follows.
    async fn stop(&self, id: &str, grace: std::time::Duration) -> Result<(), ProviderError> {
        let _ = grace;
        self.arm.stop_group(id).await
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        self.arm.delete_group(id).await?;
        self.cache.forget(id);
        Ok(())
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let listed = self.listed(ids).await?;
        let plan = self.cache.plan(ids, &listed);
        let mut out = plan.known;
        let fetched: Vec<_> = futures::stream::iter(plan.to_get)
            .map(|(id, fingerprint)| async move {
                let got = self.arm.get_group(&id).await;
                (id, fingerprint, got)
            })
            .buffer_unordered(GET_CONCURRENCY)
            .collect()
            .await;
        for (id, fingerprint, got) in fetched {
            if let Some(status) = self.cache.fetched(&id, fingerprint, got?.as_ref()) {
                out.insert(id, status);
            }
        }
        Ok(out)
    }

    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        let now = Utc::now();
        let (groups, pages) = self.arm.list_groups().await?;
        self.listing_reads.store(pages, Ordering::Relaxed);
        Ok(groups
            .iter()
            .filter_map(|g| owned_workload(g, now, cluster_id, node))
            .collect())
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        if opts.previous {
            return Err(crate::provider::contract::previous_not_kept(self.name()));
        }
        let stamped = opts.timestamps || opts.since_seconds.is_some();
        let content = self
            .arm
            .container_logs(id, container, opts.tail_lines, stamped)
            .await?;
        let since = opts
            .since_seconds
            .map(|s| Utc::now() - chrono::Duration::seconds(s.min(i64::MAX as u64) as i64));
        Ok(filter_log(&content, since, opts.timestamps && stamped))
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        let line = exec_command_line(command)?;
        let size = TerminalSize::default();
        let session = self.arm.open_exec(id, container, &line, size).await?;
        Ok(ExecOutput {
            stdout: exec_output(session).await?,
            stderr: String::new(),
            exit_code: None,
        })
    }

    async fn exec_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        let line = exec_command_line(&request.command)?;
        let size = request.tty.unwrap_or_default();
        let session = self.arm.open_exec(id, container, &line, size).await?;
        Ok(exec_session(session).await?)
    }

    async fn attach(&self, id: &str, container: &str) -> Result<OutputStream, ProviderError> {
        let session = self.arm.open_attach(id, container).await?;
        Ok(attach_output(session).await?)
    }

    /// Azure Monitor's newest minute of each group, read at most once per `usage_refresh` (and
    /// within a share of the read bucket); a group whose read fails keeps its last sample.
    async fn usage(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadUsage>, ProviderError> {
        let due = self.usage.due(ids, std::time::Instant::now());
        let read: Vec<_> = futures::stream::iter(due)
            .map(|id| async move {
                let got = self.arm.group_metrics(&id, Utc::now()).await;
                (id, got)
            })
            .buffer_unordered(GET_CONCURRENCY)
            .collect()
            .await;
        for (id, got) in read {
            let now = std::time::Instant::now();
            match got {
                Ok(metrics) => self.usage.store(&id, usage_of(&metrics, Utc::now()), now),
                Err(e) => {
                    tracing::info!(target_name = %self.settings.target, id = %id, error = %e, "aci: reading a container group's usage from Azure Monitor failed");
                    self.usage.read_failed(&id, now);
                }
            }
        }
        Ok(self.usage.known(ids))
    }
}
