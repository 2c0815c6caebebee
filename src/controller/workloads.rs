//! What the kubelet API may see of a running gateway ([`Workloads`]): the node's name, the API
//! client, the metrics, and where a placed pod's workload runs. Not the ledger, the policy or
//! target health: those stay with the controllers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::controller::context::Gateway;
use crate::controller::placement::Workload;
use crate::metrics::Metrics;
use crate::provider::Provider;

/// Where a pod's workload runs, as far as the kubelet API is concerned.
pub enum Location {
    /// The pod has no placement annotations yet: it waits for a target.
    Unplaced,
    /// The pod was placed on `target`, for which the live policy has no adapter.
    NoProvider {
        /// The target its annotations name.
        target: String,
    },
    /// The pod's workload `workload` is on `target`, reached through `provider`.
    Found {
        /// The target its annotations name.
        target: String,
        /// The workload id at the provider.
        workload: String,
        /// The adapter serving the target.
        provider: Arc<dyn Provider>,
    },
}

/// The kubelet API's view of the gateway: a pod's workload and the provider that runs it, plus
/// what serving requests needs (node name, API client, metrics). The gateway implements it; the
/// kubelet API's tests implement it with fakes.
///
/// ```
/// # use burstgate::controller::workloads::{Location, Workloads};
/// # use k8s_openapi::api::core::v1::Pod;
/// fn describe(workloads: &dyn Workloads, pod: &Pod) -> String {
///     match workloads.locate(pod) {
///         Location::Found { target, workload, provider } => {
///             format!("{workload} on {target} ({})", provider.name())
///         }
///         Location::NoProvider { target } => format!("{target} is not in the policy"),
///         Location::Unplaced => "waiting for a target".into(),
///     }
/// }
/// ```
pub trait Workloads: Send + Sync {
    /// The virtual node's name: the kubelet API serves its pods only.
    fn node_name(&self) -> &str;

    /// The gateway's API client: token and access reviews, reading the node's pods.
    fn client(&self) -> &kube::Client;

    /// The gateway's metrics (the review caches count their lookups there).
    fn metrics(&self) -> &Arc<Metrics>;

    /// The adapter serving the target named `target` in the live policy.
    fn provider(&self, target: &str) -> Option<Arc<dyn Provider>>;

    /// Where `pod`'s workload runs: its placement annotations, then the provider of its target.
    fn locate(&self, pod: &Pod) -> Location {
        let Some(Workload { target, id }) = Workload::of(pod) else {
            return Location::Unplaced;
        };
        match self.provider(&target) {
            Some(provider) => Location::Found {
                target,
                workload: id,
                provider,
            },
            None => Location::NoProvider { target },
        }
    }
}

impl Workloads for Gateway {
    fn node_name(&self) -> &str {
        &self.config.node_name
    }

    fn client(&self) -> &kube::Client {
        &self.client
    }

    fn metrics(&self) -> &Arc<Metrics> {
        Gateway::metrics(self)
    }

    fn provider(&self, target: &str) -> Option<Arc<dyn Provider>> {
        self.provider_for_target(target)
    }
}
