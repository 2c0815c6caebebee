//! How `burstgate run` builds each target's adapter from its policy block: the one place where
//! policy settings meet adapter settings.

use std::sync::Arc;

use crate::policy::Target;
use crate::policy::checked::Connection;
use crate::provider::Provider;
use crate::provider::cluster::{ClusterProvider, Settings as ClusterSettings};
use crate::provider::layers::{Layered, Layers};
use crate::provider::registry::Factory;
use crate::provider::sim::{SimCloud, SimProvider};

/// `sim` targets: one in-process cloud shared by all of them; each call goes through the
/// target's layers, so `rateLimits` and circuit breaking behave as with a real cloud.
pub struct SimFactory {
    cloud: Arc<SimCloud>,
}

impl SimFactory {
    /// Adapters over `cloud`.
    pub fn new(cloud: Arc<SimCloud>) -> SimFactory {
        SimFactory { cloud }
    }
}

#[async_trait::async_trait]
impl Factory for SimFactory {
    async fn build(&self, _target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(Layered::new(
            Arc::new(SimProvider::new(self.cloud.clone())),
            layers,
        )))
    }
}

/// `cluster` targets: shadow pods in the target's namespace of this cluster (the gateway's own
/// client) or of another one (its `kubeconfig`).
pub struct ClusterFactory {
    client: kube::Client,
}

impl ClusterFactory {
    /// Adapters that use `client` unless a target names another cluster.
    pub fn new(client: kube::Client) -> ClusterFactory {
        ClusterFactory { client }
    }
}

#[async_trait::async_trait]
impl Factory for ClusterFactory {
    async fn build(&self, target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        let (namespace, kubeconfig) = match &target.connection {
            Connection::Cluster(c) => (c.namespace.clone(), c.kubeconfig.clone()),
            _ => ("burstgate-shadow".to_string(), None),
        };
        let client = match kubeconfig {
            None => self.client.clone(),
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(&path).map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?;
                let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?;
                kube::Client::try_from(config).map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?
            }
        };
        Ok(Arc::new(ClusterProvider::new(ClusterSettings { target: target.name.clone(), namespace }, client, layers)))
    }
}
