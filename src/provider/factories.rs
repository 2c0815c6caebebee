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
        let reads = layers.per_second(crate::policy::model::OperationClass::Read);
        Ok(Arc::new(Layered::new(
            Arc::new(SimProvider::new(self.cloud.clone()).reading_within(reads)),
            layers,
        )))
    }
}

/// `cluster` targets: shadow pods in the target's namespace of this cluster (the gateway's own
/// client) or of another one (its `kubeconfig`).
pub struct ClusterFactory {
    client: kube::Client,
    config: kube::Config,
    usage_refresh: std::time::Duration,
    kubelet_ca_file: Option<std::path::PathBuf>,
}

impl ClusterFactory {
    /// Adapters that use `client` (built from `config`) unless a target names another cluster.
    /// `config`'s credentials also read the kubelets when the cluster has no metrics-server.
    pub fn new(client: kube::Client, config: kube::Config) -> ClusterFactory {
        ClusterFactory {
            client,
            config,
            usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
            kubelet_ca_file: None,
        }
    }

    /// Kubelets serve certificates of the CA bundle `path`, not of their cluster's CA
    /// (`--cluster-kubelet-ca-file`).
    pub fn with_kubelet_ca_file(mut self, path: Option<std::path::PathBuf>) -> ClusterFactory {
        self.kubelet_ca_file = path;
        self
    }

    /// Shadow pods' usage samples serve `refresh` before metrics.k8s.io is asked again.
    pub fn with_usage_refresh(mut self, refresh: std::time::Duration) -> ClusterFactory {
        self.usage_refresh = refresh;
        self
    }
}

#[async_trait::async_trait]
impl Factory for ClusterFactory {
    async fn build(&self, target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        let (namespace, kubeconfig) = match &target.connection {
            Connection::Cluster(c) => (c.namespace.clone(), c.kubeconfig.clone()),
            _ => ("burstgate-shadow".to_string(), None),
        };
        let (client, config) = match kubeconfig {
            None => (self.client.clone(), self.config.clone()),
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(&path)
                    .map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?;
                let config = kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?;
                let client = kube::Client::try_from(config.clone())
                    .map_err(|e| format!("cluster.kubeconfig {path}: {e}"))?;
                (client, config)
            }
        };
        Ok(Arc::new(
            ClusterProvider::new(
                ClusterSettings {
                    target: target.name.clone(),
                    namespace,
                },
                client,
                layers,
            )
            .with_usage_refresh(self.usage_refresh)
            .with_kubelet_access(config, self.kubelet_ca_file.clone()),
        ))
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
            return Err(format!(
                "target {} has no `fargate` block (cluster, subnets, securityGroups)",
                target.name
            ));
        };
        let sdk = self
            .sdk
            .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
            .await;
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

/// `aci` targets: one [`crate::provider::aci::AciProvider`] per target, all with the gateway's
/// one Azure credential. The adapter calls its layers per ARM request itself, so it is not
/// wrapped in [`Layered`].
pub struct AciFactory {
    credential: Arc<dyn azure_core::credentials::TokenCredential>,
    arm_endpoint: String,
    transport: Option<azure_core::http::Transport>,
    cluster_dns: Option<crate::provider::aci::ClusterDns>,
    kube_proxy: Option<crate::provider::aci::KubeProxy>,
    monitor_endpoint: String,
    usage_refresh: std::time::Duration,
}

impl AciFactory {
    /// Adapters authenticating with `credential` against ARM at `arm_endpoint`
    /// ([`crate::provider::aci::DEFAULT_ARM_ENDPOINT`] in Azure's public cloud).
    pub fn new(
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        arm_endpoint: &str,
    ) -> AciFactory {
        AciFactory {
            credential,
            arm_endpoint: arm_endpoint.to_string(),
            transport: None,
            cluster_dns: None,
            kube_proxy: None,
            monitor_endpoint: String::new(),
            usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
        }
    }

    /// Groups' CPU and memory come from Azure Monitor at `endpoint` (none: the ARM endpoint),
    /// each group's sample serving `refresh` before it is read again.
    pub fn with_usage(
        mut self,
        endpoint: Option<String>,
        refresh: std::time::Duration,
    ) -> AciFactory {
        self.monitor_endpoint = endpoint.unwrap_or_default();
        self.usage_refresh = refresh;
        self
    }

    /// Groups in a delegated subnet run kube-proxy as `proxy` says, so ClusterIPs answer.
    pub fn with_kube_proxy(mut self, proxy: Option<crate::provider::aci::KubeProxy>) -> AciFactory {
        self.kube_proxy = proxy;
        self
    }

    /// Groups in a delegated subnet resolve `ClusterFirst` with `dns` (`--cluster-dns`).
    pub fn with_cluster_dns(mut self, mut dns: crate::provider::aci::ClusterDns) -> AciFactory {
        dns.servers.retain(|s| !s.trim().is_empty());
        self.cluster_dns = Some(dns).filter(|d| !d.servers.is_empty());
        self
    }

    /// ARM requests go through `transport` (extra trusted CAs, see
    /// [`crate::provider::aci::azure_transport`]).
    pub fn with_transport(mut self, transport: Option<azure_core::http::Transport>) -> AciFactory {
        self.transport = transport;
        self
    }
}

/// The adapter settings of an `aci` target: its policy block plus region, spot and endpoint.
pub fn aci_settings(
    target: &Target,
    arm_endpoint: &str,
) -> Result<crate::provider::aci::Settings, String> {
    let crate::policy::checked::Connection::Aci(spec) = &target.connection else {
        return Err(format!(
            "target {} has no aci block (subscriptionId, resourceGroup)",
            target.name
        ));
    };
    Ok(crate::provider::aci::Settings {
        target: target.name.clone(),
        region: target.region.clone(),
        subscription_id: spec.subscription_id.clone(),
        resource_group: spec.resource_group.clone(),
        spot: target.spot,
        subnet_ids: spec.subnet_ids.clone(),
        dns_name_label: spec.dns_name_label,
        arm_endpoint: arm_endpoint.to_string(),
        monitor_endpoint: String::new(),
        usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
        cluster_dns: None,
        kube_proxy: None,
    })
}

#[async_trait::async_trait]
impl Factory for AciFactory {
    async fn build(&self, target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        let mut settings = aci_settings(target, &self.arm_endpoint)?;
        settings.cluster_dns = self.cluster_dns.clone();
        settings.kube_proxy = self.kube_proxy.clone();
        settings.monitor_endpoint = self.monitor_endpoint.clone();
        settings.usage_refresh = self.usage_refresh;
        Ok(Arc::new(crate::provider::aci::AciProvider::with_transport(
            settings,
            self.credential.clone(),
            layers,
            self.transport.clone(),
        )))
    }
}

/// A provider kind this gateway cannot serve (e.g. no Azure credential found): every target of
/// that kind is unusable, and the node's conditions say why.
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl Factory for Unavailable {
    async fn build(&self, _target: &Target, _layers: Layers) -> Result<Arc<dyn Provider>, String> {
        Err(self.0.clone())
    }
}

#[cfg(test)]
mod aci_tests {
    use super::*;

    #[test]
    fn an_aci_target_block_becomes_the_adapter_settings() {
        let text = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      aci: {subscriptionId: 00000000-0000-0000-0000-000000000001, resourceGroup: burst, dnsNameLabel: true}
";
        let policy =
            crate::policy::load_files(&[("p.yaml".into(), text.into())]).expect("policy loads");
        let s = aci_settings(
            policy.target_by_name("aci-eastus").unwrap(),
            crate::provider::aci::DEFAULT_ARM_ENDPOINT,
        )
        .unwrap();
        assert_eq!(
            (
                s.region.as_str(),
                s.resource_group.as_str(),
                s.dns_name_label,
                s.spot
            ),
            ("eastus", "burst", true, false)
        );
        assert_eq!(s.subscription_id, "00000000-0000-0000-0000-000000000001");
    }
}
