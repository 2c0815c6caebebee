//! The environment a kubelet gives a container beyond its own `env`: the Service variables
//! (`KUBERNETES_SERVICE_HOST`/`_PORT` always, every Service of the pod's namespace when
//! `enableServiceLinks` is on, in Docker-links form too). Pure; `$(VAR)` expansion is
//! [`crate::provider::kit::expansion`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The variables of `services` (the pod's namespace's when it links them, and the master
/// Service `kubernetes` of `default`), in the kubelet's order: per Service, sorted by name.
/// Headless Services and those without a cluster IP give none.
pub fn service_env<S: std::borrow::Borrow<Service>>(services: &[S]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().map(|s| s.borrow()).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for s in sorted {
        let Some(spec) = &s.spec else { continue };
        let ip = match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != "None" => ip,
            _ => continue,
        };
        let name = env_name(s.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                    p.port.to_string(),
                ));
            }
        }
        // Docker links.
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in ports {
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), proto(p).to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// A Service name as an env var prefix: upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// A lookup over `env` (later entries win, as a container's env overrides).
pub fn lookup_in(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    move |name| map.get(name).map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    #[test]
    fn the_master_service_gives_kubernetes_service_host_and_port() {
        let env = service_env(&[service(
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
        )]);
        let lookup = lookup_in(&env);
        assert_eq!(
            lookup("KUBERNETES_SERVICE_HOST").as_deref(),
            Some("10.96.0.1")
        );
        assert_eq!(lookup("KUBERNETES_SERVICE_PORT").as_deref(), Some("443"));
        assert_eq!(
            lookup("KUBERNETES_SERVICE_PORT_HTTPS").as_deref(),
            Some("443")
        );
        assert_eq!(
            lookup("KUBERNETES_PORT").as_deref(),
            Some("tcp://10.96.0.1:443")
        );
        assert_eq!(
            lookup("KUBERNETES_PORT_443_TCP_ADDR").as_deref(),
            Some("10.96.0.1")
        );
    }

    #[test]
    fn a_service_name_with_dashes_becomes_an_upper_case_prefix_and_headless_services_give_nothing()
    {
        let env = service_env(&[
            service(
                "redis-primary",
                "10.96.3.4",
                serde_json::json!([{"port": 6379}]),
            ),
            service("peers", "None", serde_json::json!([{"port": 7000}])),
        ]);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "REDIS_PRIMARY_SERVICE_HOST",
                "REDIS_PRIMARY_SERVICE_PORT",
                "REDIS_PRIMARY_PORT",
                "REDIS_PRIMARY_PORT_6379_TCP",
                "REDIS_PRIMARY_PORT_6379_TCP_PROTO",
                "REDIS_PRIMARY_PORT_6379_TCP_PORT",
                "REDIS_PRIMARY_PORT_6379_TCP_ADDR",
            ]
        );
    }
}
