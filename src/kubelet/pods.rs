//! From a kubelet API path (`namespace/pod/container`) to the workload that runs it: the pod from
//! the apiserver, its placement annotations, and the provider of its target.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::controller::context::Gateway;
use crate::controller::placement::{RESOURCE_ID, TARGET};
use crate::kubelet::error::{Error, Result};
use crate::provider::Provider;

/// A pod of this node with a workload at a provider.
pub struct Placed {
    /// `namespace/name`, for messages.
    pub key: String,
    /// The pod as the apiserver has it.
    pub pod: Pod,
    /// The container asked for.
    pub container: String,
    /// The target it runs on.
    pub target: String,
    /// The workload id at the provider.
    pub workload: String,
    /// The target's provider.
    pub provider: Arc<dyn Provider>,
}

impl Placed {
    /// A provider failure, with this pod and target in the message.
    pub fn error(&self, source: crate::provider::ProviderError) -> Error {
        Error::provider(source, &self.key, &self.target)
    }
}

/// Finds `namespace/name` on this node and the provider of its target; 404 for a pod or
/// container that is not there, 503 while the pod waits for a target.
pub async fn find(gw: &Gateway, namespace: &str, name: &str, container: &str) -> Result<Placed> {
    let key = format!("{namespace}/{name}");
    let api: Api<Pod> = Api::namespaced(gw.client.clone(), namespace);
    let pod = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Api {
            pod: key.clone(),
            source,
        })?
        .ok_or_else(|| Error::NotFound(format!("pod {key} not found")))?;
    placed(gw, key, pod, container)
}

/// The placement of `pod` (pure but for the provider lookup in the live policy).
fn placed(gw: &Gateway, key: String, pod: Pod, container: &str) -> Result<Placed> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node != Some(gw.config.node_name.as_str()) {
        return Err(Error::NotFound(format!(
            "pod {key} is not on node {}",
            gw.config.node_name
        )));
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !containers.contains(&container) {
        return Err(Error::NotFound(format!(
            "container {container} is not in pod {key} (it has: {})",
            containers.join(", ")
        )));
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let (Some(target), Some(workload)) = (annotations.get(TARGET), annotations.get(RESOURCE_ID))
    else {
        return Err(Error::Unavailable(format!(
            "pod {key} has no target yet: container {container} is waiting to start"
        )));
    };
    let provider = gw.provider_for_target(target).ok_or_else(|| {
        Error::Unavailable(format!(
            "pod {key} runs on target {target}, which the current policy does not have"
        ))
    })?;
    Ok(Placed {
        key,
        container: container.to_string(),
        target: target.clone(),
        workload: workload.clone(),
        provider,
        pod,
    })
}
