//! A pod's DNS as a container group's `dnsConfig`, the way a kubelet writes `resolv.conf`:
//! `dnsPolicy: ClusterFirst` (the default) points at the cluster DNS (`--cluster-dns`) with the
//! pod's search domains (`<ns>.svc.<domain> svc.<domain> <domain>`) and `ndots:5`, merged with
//! the pod's own `dnsConfig`; `None` is the pod's `dnsConfig` alone; `Default` is Azure's DNS plus
//! the pod's `dnsConfig`. The cluster DNS is only reachable from a group in a delegated subnet:
//! a public group resolves with Azure's DNS (docs/providers-aci.md). Pure.

use k8s_openapi::api::core::v1::PodSpec;
use serde::Serialize;

use super::settings::Settings;
use crate::provider::kit::{TranslateError, unsupported};

/// The cluster's DNS, as the kubelet's `--cluster-dns` and `--cluster-domain` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// Nameserver IPs (the `kube-dns` Service's cluster IP).
    pub servers: Vec<String>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// `DnsConfiguration` of the ACI spec.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DnsConfigBody {
    /// Nameservers, at least one.
    pub(crate) name_servers: Vec<String>,
    /// Search domains, space separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) search_domains: Option<String>,
    /// resolv.conf options, space separated (`ndots:5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) options: Option<String>,
}

/// resolv.conf allows three nameservers.
const MAX_SERVERS: usize = 3;

/// The group's `dnsConfig` for a pod of namespace `ns` (`None`: Azure's DNS as it is).
pub(crate) fn dns_config(
    pod: &PodSpec,
    ns: &str,
    settings: &Settings,
) -> Result<Option<DnsConfigBody>, TranslateError> {
    let own = pod.dns_config.as_ref();
    let own_servers: Vec<String> = own.and_then(|c| c.nameservers.clone()).unwrap_or_default();
    let own_searches: Vec<String> = own.and_then(|c| c.searches.clone()).unwrap_or_default();
    let own_options: Vec<(String, Option<String>)> = own
        .and_then(|c| c.options.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
        .collect();
    let policy = pod.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = settings
        .cluster_dns
        .as_ref()
        .filter(|c| !c.servers.is_empty() && !settings.subnet_ids.is_empty());
    let (servers, searches, options) = match (policy, cluster) {
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(c)) => {
            let d = &c.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(own_searches);
            let mut options = vec![("ndots".to_string(), Some("5".to_string()))];
            for (name, value) in own_options {
                options.retain(|(n, _)| *n != name);
                options.push((name, value));
            }
            let servers = c.servers.iter().cloned().chain(own_servers).collect();
            (servers, searches, options)
        }
        // Default, None, or ClusterFirst where the cluster DNS cannot be reached: the pod's own.
        _ => (own_servers, own_searches, own_options),
    };
    if servers.is_empty() {
        if searches.is_empty() && options.is_empty() {
            return Ok(None);
        }
        return Err(unsupported(
            "spec.dnsConfig",
            "ACI takes search domains and options only with nameservers: add spec.dnsConfig.nameservers (or run the target in a delegated subnet with the gateway's --cluster-dns)",
        ));
    }
    let mut servers = servers;
    servers.dedup();
    servers.truncate(MAX_SERVERS);
    let words = |v: Vec<String>| (!v.is_empty()).then(|| v.join(" "));
    Ok(Some(DnsConfigBody {
        name_servers: servers,
        search_domains: words(searches),
        options: words(
            options
                .into_iter()
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}:{v}"),
                    None => n,
                })
                .collect(),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(subnet: bool, dns: bool) -> Settings {
        let mut s = crate::provider::aci::settings::for_tests();
        if subnet {
            s.subnet_ids = vec!["/subscriptions/s/x/subnets/aci".into()];
        }
        s.cluster_dns = dns.then(|| ClusterDns {
            servers: vec!["10.96.0.10".into()],
            domain: "cluster.local".into(),
        });
        s
    }

    fn pod(spec: serde_json::Value) -> PodSpec {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "app", "image": "i"}]);
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn cluster_first_in_a_subnet_points_at_the_cluster_dns_with_the_pods_search_domains() {
        let body = dns_config(&pod(serde_json::json!({})), "shop", &settings(true, true))
            .unwrap()
            .unwrap();
        assert_eq!(
            body,
            DnsConfigBody {
                name_servers: vec!["10.96.0.10".into()],
                search_domains: Some(
                    "shop.svc.cluster.local svc.cluster.local cluster.local".into()
                ),
                options: Some("ndots:5".into()),
            }
        );
    }

    #[test]
    fn the_pods_own_dns_config_is_merged_and_its_options_win() {
        let spec = pod(serde_json::json!({"dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["corp.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let body = dns_config(&spec, "shop", &settings(true, true))
            .unwrap()
            .unwrap();
        assert_eq!(body.name_servers, ["10.96.0.10", "1.1.1.1"]);
        assert!(
            body.search_domains
                .unwrap()
                .ends_with(" cluster.local corp.example")
        );
        assert_eq!(body.options.as_deref(), Some("ndots:2 edns0"));
    }

    #[test]
    fn a_public_group_or_no_cluster_dns_keeps_azures_dns() {
        let spec = pod(serde_json::json!({}));
        assert_eq!(
            dns_config(&spec, "shop", &settings(false, true)).unwrap(),
            None
        );
        assert_eq!(
            dns_config(&spec, "shop", &settings(true, false)).unwrap(),
            None
        );
    }

    #[test]
    fn dns_policy_none_uses_the_pods_dns_config_alone() {
        let spec = pod(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["8.8.8.8"], "searches": ["example.com"]}}));
        let body = dns_config(&spec, "shop", &settings(true, true))
            .unwrap()
            .unwrap();
        assert_eq!(body.name_servers, ["8.8.8.8"]);
        assert_eq!(body.search_domains.as_deref(), Some("example.com"));
        assert_eq!(body.options, None);
    }

    #[test]
    fn search_domains_without_any_nameserver_are_refused_with_the_way_out() {
        let spec =
            pod(serde_json::json!({"dnsPolicy": "Default", "dnsConfig": {"searches": ["corp"]}}));
        let err = dns_config(&spec, "shop", &settings(false, false)).unwrap_err();
        assert!(matches!(err, TranslateError::Unsupported { .. }), "{err:?}");
    }
}
