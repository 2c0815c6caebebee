//! Layers around a whole provider, for adapters whose every trait method is one cloud call
//! (the simulator): create is a `Create`, delete a `Delete`, listing and logs `Read`, status a
//! `Read` per [`STATUS_BATCH`] workloads. Real adapters make several calls per method and put
//! each through [`Layers::call`] instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::policy::model::OperationClass;
use crate::provider::contract::{ExecRequest, ExecSession, OutputStream};
use crate::provider::layers::Layers;
use crate::provider::{
    Capabilities, ExecOutput, LogOptions, OwnedWorkload, Provider, ProviderError, WorkloadSpec,
    WorkloadStatus,
};

/// The most workloads one status call of a whole provider reads, as one DescribeTasks reads
/// at most 100 tasks: a larger batch is several calls, a `Read` token each.
pub const STATUS_BATCH: usize = 100;

/// A provider whose methods each go through `layers`.
pub struct Layered {
    inner: Arc<dyn Provider>,
    layers: Layers,
}

impl Layered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Provider>, layers: Layers) -> Layered {
        Layered { inner, layers }
    }
}

#[async_trait::async_trait]
impl Provider for Layered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn running_poll(&self) -> std::time::Duration {
        self.inner.running_poll()
    }

    fn listing_interval(&self, floor: std::time::Duration) -> std::time::Duration {
        self.inner.listing_interval(floor)
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        self.layers
            .call(OperationClass::Create, "Create", || self.inner.create(spec))
            .await
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        self.layers
            .call(OperationClass::Delete, "Delete", || self.inner.delete(id))
            .await
    }

    async fn stop(&self, id: &str, grace: std::time::Duration) -> Result<(), ProviderError> {
        self.layers
            .call(OperationClass::Delete, "Stop", || {
                self.inner.stop(id, grace)
            })
            .await
    }

    fn restarts_containers(&self) -> bool {
        self.inner.restarts_containers()
    }

    async fn restart(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        self.layers
            .call(OperationClass::Create, "Restart", || {
                self.inner.restart(spec)
            })
            .await
    }

    async fn renew_files(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        self.layers
            .call(OperationClass::Create, "RenewFiles", || {
                self.inner.renew_files(spec)
            })
            .await
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        let mut out = BTreeMap::new();
        for batch in ids.chunks(STATUS_BATCH) {
            out.extend(
                self.layers
                    .call(OperationClass::Read, "Status", || self.inner.status(batch))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        self.layers
            .call(OperationClass::Read, "List", || {
                self.inner.list_owned(cluster_id, node)
            })
            .await
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        self.layers
            .call(OperationClass::Read, "Logs", || {
                self.inner.logs(id, container, opts)
            })
            .await
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        self.layers
            .call(OperationClass::Read, "Exec", || {
                self.inner.exec(id, container, command)
            })
            .await
    }

    async fn exec_session(
        &self,
        id: &str,
        container: &str,
        request: &ExecRequest,
    ) -> Result<ExecSession, ProviderError> {
        self.layers
            .call(OperationClass::Read, "Exec", || {
                self.inner.exec_session(id, container, request)
            })
            .await
    }

    async fn attach(&self, id: &str, container: &str) -> Result<OutputStream, ProviderError> {
        self.layers
            .call(OperationClass::Read, "Attach", || {
                self.inner.attach(id, container)
            })
            .await
    }
}
