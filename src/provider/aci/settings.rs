//! The settings of one ACI target (subscription, resource group, region), as
//! `provider/factories.rs` builds them from the policy; read by the translator and the client.

/// ARM in Azure's public cloud.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// One ACI target, as the lead builds it from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Target name in the policy.
    pub target: String,
    /// Azure region (`eastus`).
    pub region: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group holding the container groups.
    pub resource_group: String,
    /// Run container groups with priority `Spot`.
    pub spot: bool,
    /// Subnets to join (private IP); empty: a public IP.
    pub subnet_ids: Vec<String>,
    /// Give public groups their name as DNS label.
    pub dns_name_label: bool,
    /// ARM endpoint ([`DEFAULT_ARM_ENDPOINT`]).
    pub arm_endpoint: String,
    /// Azure Monitor's endpoint for the groups' CPU and memory metrics (empty: `arm_endpoint`,
    /// where Azure serves them; tests point it at the emulator beside Prism, which knows only
    /// ACI's spec).
    pub monitor_endpoint: String,
    /// How long a group's usage sample serves before Azure Monitor is asked again.
    pub usage_refresh: std::time::Duration,
    /// The cluster DNS groups in `subnet_ids` use for `dnsPolicy: ClusterFirst` (none: Azure's).
    pub cluster_dns: Option<super::dns::ClusterDns>,
    /// kube-proxy for groups in `subnet_ids`, so ClusterIP Services answer (none: no extension).
    pub kube_proxy: Option<super::kube_proxy::KubeProxy>,
}

/// A target for unit tests: eastus, no subnet, nothing optional.
#[cfg(test)]
pub(crate) fn for_tests() -> Settings {
    Settings {
        target: "aci-eastus".into(),
        region: "eastus".into(),
        subscription_id: "00000000-0000-0000-0000-000000000000".into(),
        resource_group: "rg".into(),
        spot: false,
        subnet_ids: vec![],
        dns_name_label: false,
        arm_endpoint: DEFAULT_ARM_ENDPOINT.into(),
        monitor_endpoint: String::new(),
        usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
        cluster_dns: None,
        kube_proxy: None,
    }
}
