//! ClusterIP Services from a container group, as AKS virtual nodes reach them: the ACI spec's
//! `kube-proxy` deployment extension (`extensions[]`, `extensionType: kube-proxy`) runs kube-proxy
//! beside the pod's containers with the cluster's pod CIDR, its Kubernetes version and a
//! kubeconfig (a protected setting: a secret, sent only there). Only a group in a delegated subnet
//! of the cluster's VNet can route to the Services' endpoints, so public groups get none. Pure.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;

use super::settings::Settings;
use super::wire::Sensitive;

/// What kube-proxy in a container group needs (the gateway's `--aci-kube-proxy-kubeconfig`,
/// `--cluster-cidr` and the apiserver's version).
#[derive(Debug, Clone)]
pub struct KubeProxy {
    /// The cluster's pod CIDR (`10.244.0.0/16`).
    pub cluster_cidr: String,
    /// The apiserver's version (`v1.30.4`).
    pub kube_version: String,
    /// A kubeconfig for kube-proxy's identity (list/watch Services and EndpointSlices).
    pub kubeconfig: SecretString,
}

impl PartialEq for KubeProxy {
    fn eq(&self, other: &Self) -> bool {
        self.cluster_cidr == other.cluster_cidr
            && self.kube_version == other.kube_version
            && self.kubeconfig.expose_secret() == other.kubeconfig.expose_secret()
    }
}

impl Eq for KubeProxy {}

/// `DeploymentExtensionSpec`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExtensionBody {
    /// Extension name.
    pub(crate) name: String,
    /// Its properties.
    pub(crate) properties: ExtensionProperties,
}

/// `DeploymentExtensionSpecProperties`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExtensionProperties {
    /// `kube-proxy`.
    pub(crate) extension_type: String,
    /// Extension version.
    pub(crate) version: String,
    /// `clusterCidr`, `kubeVersion`.
    pub(crate) settings: serde_json::Value,
    /// `kubeConfig`, base64: secret.
    pub(crate) protected_settings: ProtectedSettings,
}

/// The extension's protected settings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProtectedSettings {
    /// The kubeconfig, base64.
    pub(crate) kube_config: Sensitive,
}

/// The extensions of a group on the target `settings` describes.
pub(crate) fn extensions(settings: &Settings) -> Vec<ExtensionBody> {
    let Some(proxy) = settings
        .kube_proxy
        .as_ref()
        .filter(|_| !settings.subnet_ids.is_empty())
    else {
        return Vec::new();
    };
    let kubeconfig = base64::engine::general_purpose::STANDARD
        .encode(proxy.kubeconfig.expose_secret().as_bytes());
    vec![ExtensionBody {
        name: "kube-proxy".into(),
        properties: ExtensionProperties {
            extension_type: "kube-proxy".into(),
            version: "1.0".into(),
            settings: json!({"clusterCidr": proxy.cluster_cidr, "kubeVersion": proxy.kube_version}),
            protected_settings: ProtectedSettings {
                kube_config: Sensitive::new(kubeconfig),
            },
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(subnet: bool) -> Settings {
        let mut s = crate::provider::aci::settings::for_tests();
        if subnet {
            s.subnet_ids = vec!["/subscriptions/s/x/subnets/aci".into()];
        }
        s.kube_proxy = Some(KubeProxy {
            cluster_cidr: "10.244.0.0/16".into(),
            kube_version: "v1.30.4".into(),
            kubeconfig: SecretString::from("apiVersion: v1\nkind: Config\n"),
        });
        s
    }

    #[test]
    fn a_group_in_a_delegated_subnet_runs_kube_proxy_with_the_kubeconfig_protected() {
        let ext = extensions(&settings(true));
        let json = serde_json::to_value(&ext).unwrap();
        assert_eq!(json[0]["properties"]["extensionType"], "kube-proxy");
        assert_eq!(
            json[0]["properties"]["settings"]["clusterCidr"],
            "10.244.0.0/16"
        );
        assert_eq!(json[0]["properties"]["settings"]["kubeVersion"], "v1.30.4");
        assert_eq!(
            json[0]["properties"]["protectedSettings"]["kubeConfig"],
            base64::engine::general_purpose::STANDARD.encode("apiVersion: v1\nkind: Config\n")
        );
        assert!(
            !format!("{ext:?}").contains("kind: Config"),
            "Debug redacts the kubeconfig"
        );
    }

    #[test]
    fn a_public_group_gets_no_kube_proxy_it_could_not_route_with() {
        assert!(extensions(&settings(false)).is_empty());
    }
}
