//! The shadow pods' usage read from the kubelets of the nodes they run on, as metrics-server
//! reads it, for target clusters that serve no metrics.k8s.io: a shadow pod's `spec.nodeName` ->
//! that Node's address (`status.addresses`: InternalIP, then ExternalIP, then Hostname, the order
//! metrics-server's manifests give `--kubelet-preferred-address-types`) and kubelet port
//! (`status.daemonEndpoints.kubeletEndpoint.Port`, 10250 when unset) -> `GET /metrics/resource`
//! there, parsed and turned into rates by `scrape.rs`.
//!
//! - Credentials: the target cluster's own client configuration (bearer token, client
//!   certificate or exec plugin, as its kubeconfig or in-cluster identity says); the kubelet's
//!   webhook authorizer asks the API server whether that identity may `get` `nodes/metrics`
//!   (the least privilege: never `nodes/proxy`, which lets its holder exec into any pod of the
//!   node). TLS is verified against the target cluster's CA, or the bundle given
//!   (`--cluster-kubelet-ca-file`) when kubelets serve certificates of another CA; never skipped,
//!   whatever the kubeconfig says for the API server.
//! - Cost: one scrape per node per usage refresh, and a read of its Node when its address is
//!   older than five minutes or its last scrape failed, each a `Read` call through the target's
//!   layers (its rate limit and per-attempt timeout). A kubelet's failure is its
//!   node's, not the target's: it comes back as a value ([`Error`]), so the layers neither retry
//!   it (the next refresh does) nor count it towards the target's circuit.
//! - Rates need two scrapes: the first scrape of a node gives its pods no usage yet; the last
//!   scrape of each node, and a client per kubelet, are kept (forgotten after ten minutes
//!   unused).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;

use crate::policy::model::OperationClass;
use crate::provider::cluster::retry::provider_error;
use crate::provider::cluster::scrape::{ParseError, Scrape, parse, usage_between};
use crate::provider::contract::{ProviderError, WorkloadUsage};
use crate::provider::layers::Layers;

/// The kubelet port when a Node does not say (the kubelet's default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Connect and read time limit of one scrape: below the layers' per-attempt timeout, so a
/// kubelet that does not answer is this node's failure, not a timed-out target call.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes scraped at once.
const CONCURRENT_NODES: usize = 8;
/// A node's last scrape not used in this long is dropped.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How long a node's kubelet address serves before its Node is read again.
const ADDRESS_TTL: Duration = Duration::from_secs(300);
/// The address types tried, in order.
const ADDRESS_TYPES: [&str; 3] = ["InternalIP", "ExternalIP", "Hostname"];

/// Why a node's kubelet gave no usage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway's identity may not read the Node (401/403 from the API server). Not
    /// retryable: grant it `get` on `nodes`.
    #[error(
        "node {node}: the gateway may not read it ({message}): grant `get` on `nodes` to its identity in the target cluster"
    )]
    NodeForbidden {
        /// The node.
        node: String,
        /// The API server's message.
        message: String,
    },
    /// The Node is not there (deleted under its pods). Not retryable.
    #[error("node {node} is not in the target cluster")]
    NodeNotFound {
        /// The node.
        node: String,
    },
    /// The Node has no address of a type tried. Not retryable (until the node reports one).
    #[error("node {node} reports no InternalIP, ExternalIP or Hostname address for its kubelet")]
    NoAddress {
        /// The node.
        node: String,
    },
    /// The kubelet refused the gateway's identity (401: not authenticated, 403: not authorized
    /// for `nodes/metrics`). Not retryable: the fix is RBAC (or the kubelet's webhook authn).
    #[error(
        "the kubelet of node {node} refused the gateway ({status}: {message}): grant `get` on `nodes/metrics` to the gateway's identity in the target cluster (deploy/rbac: ClusterRole burstgate-node-metrics; not nodes/proxy)"
    )]
    Refused {
        /// The node.
        node: String,
        /// 401 or 403.
        status: u16,
        /// The kubelet's message.
        message: String,
    },
    /// The kubelet's serving certificate is not signed by a CA the gateway trusts. Not retryable:
    /// give the kubelets' CA.
    #[error(
        "the kubelet of node {node} at {url} serves a certificate the gateway does not trust ({message}): give the kubelets' serving CA with --cluster-kubelet-ca-file"
    )]
    Untrusted {
        /// The node.
        node: String,
        /// The kubelet's URL.
        url: String,
        /// The TLS error.
        message: String,
    },
    /// No answer (refused, reset, timed out). Retryable at the next refresh.
    #[error(
        "cannot reach the kubelet of node {node} at {url} ({message}): the gateway needs to reach each node's kubelet port, as metrics-server does"
    )]
    Unreachable {
        /// The node.
        node: String,
        /// The kubelet's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// Any other answer: 5xx is retryable at the next refresh, the rest not.
    #[error("the kubelet of node {node} answered {status}: {message}")]
    Answered {
        /// The node.
        node: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer is not the Prometheus text format. Not retryable.
    #[error("the kubelet of node {node}: {source}")]
    Parse {
        /// The node.
        node: String,
        /// What is wrong with it.
        #[source]
        source: ParseError,
    },
    /// No client could be built for the kubelet's URL (a bad CA bundle, an unusable address).
    /// Not retryable.
    #[error("node {node}: cannot build a client for its kubelet: {source}")]
    Client {
        /// The node.
        node: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The target's layers refused or gave up (circuit open, API server unreachable while reading
    /// the Node). Retryable as the layers' error is.
    #[error("node {node}: {source}")]
    Layers {
        /// The node.
        node: String,
        /// The layers' error.
        #[source]
        source: ProviderError,
    },
}

impl Error {
    /// Whether the next refresh may succeed without anyone fixing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Answered { status, .. } => *status >= 500,
            Error::Layers { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// A short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NodeForbidden { .. } => "node_forbidden",
            Error::NodeNotFound { .. } => "node_not_found",
            Error::NoAddress { .. } => "no_address",
            Error::Refused { .. } => "refused",
            Error::Untrusted { .. } => "untrusted",
            Error::Unreachable { .. } => "unreachable",
            Error::Answered { .. } => "answered",
            Error::Parse { .. } => "parse",
            Error::Client { .. } => "client",
            Error::Layers { .. } => "layers",
        }
    }

    /// The node it is about.
    pub fn node(&self) -> &str {
        match self {
            Error::NodeForbidden { node, .. }
            | Error::NodeNotFound { node }
            | Error::NoAddress { node }
            | Error::Refused { node, .. }
            | Error::Untrusted { node, .. }
            | Error::Unreachable { node, .. }
            | Error::Answered { node, .. }
            | Error::Parse { node, .. }
            | Error::Client { node, .. }
            | Error::Layers { node, .. } => node,
        }
    }
}

/// `node`'s kubelet as metrics-server finds it: its first address of [`ADDRESS_TYPES`] and its
/// daemon endpoint's port (10250 when 0 or unset); `None` without such an address.
pub(crate) fn kubelet_address(node: &Node) -> Option<(String, u16)> {
    let status = node.status.as_ref()?;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let address = ADDRESS_TYPES.iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.type_ == *kind && !a.address.is_empty())
    })?;
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .and_then(|e| u16::try_from(e.port).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((address.address.clone(), port))
}

/// The kubelet's base URL (`https://host:port`, an IPv6 address in brackets).
fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// Whether `err` (or what caused it) is a TLS failure: the certificate was not trusted. An
/// `io::Error` is looked into, not past: its `source()` skips the error it wraps, and hyper's
/// connect error wraps rustls' in two of them (`Connect, Custom { Other, Custom { InvalidData,
/// InvalidCertificate(UnknownIssuer) } }`, seen on the peers' kubelet).
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// Classifies a failed scrape of `node`'s kubelet at `url`.
fn classify(node: &str, url: &str, err: &kube::Error) -> Error {
    let node = node.to_string();
    match err {
        kube::Error::Api(status) => match status.code {
            401 | 403 => Error::Refused {
                node,
                status: status.code,
                message: status.message.clone(),
            },
            code => Error::Answered {
                node,
                status: code,
                message: status.message.clone(),
            },
        },
        other if is_tls(other) => Error::Untrusted {
            node,
            url: url.to_string(),
            message: other.to_string(),
        },
        other => Error::Unreachable {
            node,
            url: url.to_string(),
            message: other.to_string(),
        },
    }
}

/// The request metric's result for one scrape's answer: `ok`, or the label of what [`classify`]
/// makes of the failure.
fn scrape_label(answer: &Result<String, kube::Error>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(e) => classify("", "", e).metric_label(),
    }
}

/// Reads the kubelets of a target cluster's nodes. One per cluster target.
pub(crate) struct Kubelets {
    /// The target cluster's client configuration (its credentials and CA).
    config: kube::Config,
    /// The kubelets' serving CA bundle, when not the cluster's.
    ca_file: Option<PathBuf>,
    /// A client per kubelet URL, built once, and when it was last used (forgotten after ten
    /// minutes unused: the node went, or its address changed).
    clients: Mutex<HashMap<String, (Instant, kube::Client)>>,
    /// Each node's kubelet URL, and when its Node was read.
    urls: Mutex<HashMap<String, (Instant, String)>>,
    /// Each node's last scrape, and when it was taken.
    last: Mutex<HashMap<String, (Instant, Scrape)>>,
    /// The failure last logged per node (logged again only when it changes or after a success).
    logged: Mutex<HashMap<String, String>>,
}

impl Kubelets {
    /// Kubelets reached with `config`'s credentials, trusting `ca_file` (else `config`'s CA).
    pub(crate) fn new(config: kube::Config, ca_file: Option<PathBuf>) -> Kubelets {
        Kubelets {
            config,
            ca_file,
            clients: Mutex::new(HashMap::new()),
            urls: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// A client for the kubelet at `url`: the target's credentials, its CA or `ca_file`, no
    /// proxy, no retries of its own, a short time limit, and certificates always verified.
    fn client_for(&self, node: &str, url: &str) -> Result<kube::Client, Error> {
        let now = Instant::now();
        {
            let mut clients = self.clients.lock().expect("kubelet clients");
            clients.retain(|_, (used, _)| now.saturating_duration_since(*used) < FORGET_AFTER);
            if let Some((used, client)) = clients.get_mut(url) {
                *used = now;
                return Ok(client.clone());
            }
        }
        let mut config = self.config.clone();
        config.cluster_url = url.parse().map_err(|_| Error::NoAddress {
            node: node.to_string(),
        })?;
        config.tls_server_name = None;
        config.accept_invalid_certs = false;
        config.proxy_url = None;
        config.default_retry = false;
        config.connect_timeout = Some(SCRAPE_TIMEOUT);
        config.read_timeout = Some(SCRAPE_TIMEOUT);
        config.write_timeout = Some(SCRAPE_TIMEOUT);
        if let Some(ca) = &self.ca_file {
            config.root_cert_file = Some(ca.clone());
            config.root_cert = None;
        }
        let client = kube::Client::try_from(config).map_err(|source| Error::Client {
            node: node.to_string(),
            source,
        })?;
        self.clients
            .lock()
            .expect("kubelet clients")
            .insert(url.to_string(), (now, client.clone()));
        Ok(client)
    }

    /// `node`'s kubelet URL, from its Node object read through the layers.
    async fn url_of(
        &self,
        layers: &Layers,
        nodes: &Api<Node>,
        node: &str,
    ) -> Result<String, Error> {
        let read = layers
            .call(OperationClass::Read, "ReadNode", || async move {
                match nodes.get_opt(node).await {
                    Ok(found) => Ok(Ok(found)),
                    // The identity's or the node's problem, not the target's: no retry, no circuit.
                    Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                        Ok(Err(s.message.clone()))
                    }
                    Err(e) => Err(provider_error(&e)),
                }
            })
            .await
            .map_err(|source| Error::Layers {
                node: node.to_string(),
                source,
            })?;
        let found = read.map_err(|message| Error::NodeForbidden {
            node: node.to_string(),
            message,
        })?;
        let found = found.ok_or_else(|| Error::NodeNotFound {
            node: node.to_string(),
        })?;
        let (host, port) = kubelet_address(&found).ok_or_else(|| Error::NoAddress {
            node: node.to_string(),
        })?;
        Ok(base_url(&host, port))
    }

    /// One scrape of `node`'s `/metrics/resource`, kept to `namespace`.
    async fn scrape(
        &self,
        layers: &Layers,
        nodes: &Api<Node>,
        node: &str,
        namespace: &str,
    ) -> Result<Scrape, Error> {
        let now = Instant::now();
        let known = self
            .urls
            .lock()
            .expect("kubelet urls")
            .get(node)
            .filter(|(read, _)| now.saturating_duration_since(*read) < ADDRESS_TTL)
            .map(|(_, url)| url.clone());
        let url = match known {
            Some(url) => url,
            None => {
                let url = self.url_of(layers, nodes, node).await?;
                self.urls
                    .lock()
                    .expect("kubelet urls")
                    .insert(node.to_string(), (now, url.clone()));
                url
            }
        };
        let scraped = self.scrape_at(layers, node, &url, namespace).await;
        if scraped.is_err() {
            // The node may have moved or gone: read it again next time.
            self.urls.lock().expect("kubelet urls").remove(node);
        }
        scraped
    }

    /// One scrape of the kubelet of `node` at `url`, kept to `namespace`.
    async fn scrape_at(
        &self,
        layers: &Layers,
        node: &str,
        url: &str,
        namespace: &str,
    ) -> Result<Scrape, Error> {
        let kubelet = self.client_for(node, url)?;
        let kubelet = &kubelet;
        let answer = layers
            .call_labelled(
                OperationClass::Read,
                "ScrapeKubelet",
                scrape_label,
                || async move {
                    let request = axum::http::Request::get("/metrics/resource")
                        .body(Vec::new())
                        .expect("a valid request");
                    // Every failure is the node's (see the module doc): a value, not a layer error.
                    Ok(kubelet.request_text(request).await)
                },
            )
            .await
            .map_err(|source| Error::Layers {
                node: node.to_string(),
                source,
            })?;
        let text = answer.map_err(|e| classify(node, url, &e))?;
        parse(&text, namespace).map_err(|source| Error::Parse {
            node: node.to_string(),
            source,
        })
    }

    /// The usage of each of `pods` (shadow pods in `namespace`), by pod name, from one scrape of
    /// each of their nodes: `Ok(None)` when the pod has no node yet or no rate yet (its node's
    /// first scrape, a restarted container), the node's error when its kubelet gave nothing.
    pub(crate) async fn usage(
        &self,
        layers: &Layers,
        client: &kube::Client,
        namespace: &str,
        pods: &[Pod],
    ) -> BTreeMap<String, Result<Option<WorkloadUsage>, Arc<Error>>> {
        let nodes_api: Api<Node> = Api::all(client.clone());
        let on_node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
        let nodes: BTreeSet<String> = pods.iter().filter_map(on_node).collect();
        let scrapes: HashMap<String, Result<Scrape, Arc<Error>>> = {
            use futures::StreamExt as _;
            let nodes_api = &nodes_api;
            futures::stream::iter(nodes)
                .map(|node| async move {
                    let scrape = self.scrape(layers, nodes_api, &node, namespace).await;
                    (node, scrape.map_err(Arc::new))
                })
                .buffer_unordered(CONCURRENT_NODES)
                .collect()
                .await
        };
        let now = Instant::now();
        let mut out = BTreeMap::new();
        let mut last = self.last.lock().expect("kubelet scrapes");
        last.retain(|_, (at, _)| now.saturating_duration_since(*at) < FORGET_AFTER);
        self.urls
            .lock()
            .expect("kubelet urls")
            .retain(|_, (read, _)| now.saturating_duration_since(*read) < FORGET_AFTER);
        for pod in pods {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            let usage = match on_node(pod).and_then(|n| Some((scrapes.get(&n)?, n))) {
                None => Ok(None),
                Some((Err(e), _)) => Err(e.clone()),
                Some((Ok(current), node)) => Ok(last
                    .get(&node)
                    .and_then(|(_, previous)| usage_between(previous, current, &name))),
            };
            out.insert(name, usage);
        }
        for (node, scrape) in scrapes {
            match scrape {
                Ok(current) => {
                    self.logged.lock().expect("kubelet log").remove(&node);
                    last.insert(node, (now, current));
                }
                Err(e) => self.log_once(&e),
            }
        }
        out
    }

    /// Logs `e` at warning level, unless the same failure of its node was the last one logged.
    fn log_once(&self, e: &Error) {
        let text = e.to_string();
        let mut logged = self.logged.lock().expect("kubelet log");
        if logged.get(e.node()).is_some_and(|t| *t == text) {
            return;
        }
        tracing::warn!(
            node = e.node(),
            reason = e.metric_label(),
            retryable = e.is_retryable(),
            "cluster: no usage from this node's kubelet: {text}"
        );
        logged.insert(e.node().to_string(), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(addresses: serde_json::Value, port: i64) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_kubelet_is_found_at_the_internal_ip_first_and_its_daemon_endpoint_port() {
        let n = node(
            json!([{"type": "Hostname", "address": "n1"}, {"type": "ExternalIP", "address": "203.0.113.9"},
                   {"type": "InternalIP", "address": "10.0.0.7"}]),
            10350,
        );
        assert_eq!(kubelet_address(&n), Some(("10.0.0.7".into(), 10350)));
        let n = node(json!([{"type": "Hostname", "address": "n1"}]), 0);
        assert_eq!(
            kubelet_address(&n),
            Some(("n1".into(), 10250)),
            "no IP: the hostname; port 0: the kubelet's default"
        );
        assert_eq!(kubelet_address(&node(json!([]), 10250)), None);
        assert_eq!(base_url("fd00::7", 10250), "https://[fd00::7]:10250");
    }

    #[test]
    fn a_403_from_a_kubelet_is_a_refusal_naming_the_rbac_to_grant_and_is_not_retried() {
        let status = kube::core::Status::failure(
            "Forbidden (user=burstgate-gateway, verb=get, resource=nodes, subresource=metrics)",
            "Failed to parse error data",
        )
        .with_code(403);
        let e = classify(
            "n1",
            "https://10.0.0.7:10250",
            &kube::Error::Api(status.boxed()),
        );
        assert!(matches!(e, Error::Refused { status: 403, .. }), "{e:?}");
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("`get` on `nodes/metrics`") && text.contains("not nodes/proxy"),
            "{text}"
        );
    }

    #[test]
    fn a_kubelet_that_does_not_answer_is_retried_at_the_next_refresh_and_a_5xx_too() {
        let e = classify("n1", "https://10.0.0.7:10250", &kube::Error::TlsRequired);
        assert!(matches!(e, Error::Unreachable { .. }) && e.is_retryable());
        let status = kube::core::Status::failure("busy", "").with_code(503);
        assert!(classify("n1", "u", &kube::Error::Api(status.boxed())).is_retryable());
        let status = kube::core::Status::failure("no such path", "").with_code(404);
        assert!(!classify("n1", "u", &kube::Error::Api(status.boxed())).is_retryable());
    }

    #[test]
    fn an_untrusted_certificate_is_told_apart_from_an_unreachable_kubelet() {
        // As hyper's connector returns it: rustls' error in an io::Error in an io::Error.
        let tls = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(is_tls(&tls));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_tls(&refused));
        let e = Error::Untrusted {
            node: "n1".into(),
            url: "https://10.0.0.7:10250".into(),
            message: tls.to_string(),
        };
        assert!(!e.is_retryable() && e.to_string().contains("--cluster-kubelet-ca-file"));
    }
}
