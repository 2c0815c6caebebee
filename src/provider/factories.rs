//! How `burstgate run` builds each target's adapter from its policy block: the one place where
//! policy settings meet adapter settings.

use std::sync::Arc;

use crate::policy::Target;
use crate::policy::checked::Connection;
use crate::provider::Provider;
use crate::provider::cluster::{ClusterProvider, Settings as ClusterSettings};
use crate::provider::fargate::{FargateProvider, Settings as FargateSettings};
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

/// `fargate` targets: credentials and endpoint from the standard AWS chain (IRSA web identity,
/// env, instance profile; `AWS_ENDPOINT_URL` for tests), loaded once; region and cluster per
/// target from its `fargate` block.
#[derive(Default)]
pub struct FargateFactory {
    sdk: tokio::sync::OnceCell<aws_types::SdkConfig>,
}

#[async_trait::async_trait]
impl Factory for FargateFactory {
    async fn build(&self, target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        let Connection::Fargate(f) = &target.connection else {
            return Err(format!("target {} has no `fargate` block (cluster, subnets, securityGroups)", target.name));
        };
        let sdk = self.sdk.get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest())).await;
        let settings = FargateSettings {
            target: target.name.clone(),
            region: target.region.clone(),
            cluster: f.cluster.clone(),
            subnets: f.subnets.clone(),
            security_groups: f.security_groups.clone(),
            assign_public_ip: f.assign_public_ip,
            spot: target.spot,
            execution_role_arn: f.execution_role_arn.clone(),
            task_role_arn: f.task_role_arn.clone(),
            log_group: f.log_group.clone(),
            secrets_prefix: "burstgate/".into(),
        };
        Ok(Arc::new(FargateProvider::new(settings, sdk, layers)))
    }
}
