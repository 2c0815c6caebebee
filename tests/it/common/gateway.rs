//! `burstgate run` as operators run it, as a child process of the test: started with a policy
//! directory and extra environment, killed with SIGKILL, its node deleted when the test ends;
//! and the environment that points its AWS and Azure credential chains at the peers.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::json;

use crate::common::{
    create_namespace, eventually, grant_leader_election, peers, run_tool, unique_name,
};

/// One `burstgate run` child process; killed (SIGKILL) when dropped.
pub struct Gateway {
    child: Child,
    log: PathBuf,
    /// Port of its `/metrics`.
    pub metrics_port: u16,
}

impl Gateway {
    pub fn start(node: &str, ns: &str, policy_dir: &Path, identity: &str) -> Gateway {
        Gateway::start_with_env(
            node,
            ns,
            policy_dir,
            identity,
            std::iter::empty::<(&str, &str)>(),
        )
    }

    pub fn start_with_env(
        node: &str,
        ns: &str,
        policy_dir: &Path,
        identity: &str,
        env: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Gateway {
        // The identity deploy/rbac grants (tests/peers/kustomize/gateway-rbac), not an admin.
        let kubeconfig = peers().path("KUBECONFIG_GATEWAY");
        Gateway::start_via(&kubeconfig, node, ns, policy_dir, identity, env)
    }

    /// [`Gateway::start_with_env`] reaching the apiserver through `kubeconfig`.
    pub fn start_via(
        kubeconfig: &Path,
        node: &str,
        ns: &str,
        policy_dir: &Path,
        identity: &str,
        env: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Gateway {
        // Appended to: a restarted gateway's log follows the one before it.
        let log = std::env::temp_dir().join(format!("{node}-{identity}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kubelet_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_burstgate"))
            .args([
                "run",
                "--node-name",
                node,
                "--namespace",
                ns,
                "--identity",
                identity,
                "--cluster-id",
                "e2e",
            ])
            .arg("--policy-dir")
            .arg(policy_dir)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--sim-cold-start-ms", "300", "--node-ip", "10.7.7.7"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(["--kubelet-port", &kubelet_port.to_string()])
            // Tests run in parallel, each with its own virtual node: one extra label keeps each
            // test's pods on its own node (the manifests are otherwise AKS's, unchanged).
            .arg("--node-label")
            .arg(format!("burstgate.io/test-node={node}"))
            .env("RUST_LOG", "burstgate=info")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("burstgate run starts");
        Gateway {
            child,
            log,
            metrics_port,
        }
    }

    /// One scrape of `/metrics`, as a Prometheus server without OpenMetrics would do it.
    pub fn scrape(&self) -> String {
        self.try_scrape().expect("the metrics port answers")
    }

    /// [`Gateway::scrape`], or `None` while the metrics port does not answer yet.
    pub fn try_scrape(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        Some(body.to_string())
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts that no `secret` reaches what operators and other tenants read: this gateway's
    /// log, the Events and pod annotations of `ns`, the metrics, and the plain fields of
    /// `cloud` (request bodies or state from the emulator or moto; only a field whose JSON
    /// pointer ends with one of `secret_fields` may hold one).
    pub async fn assert_no_leak(
        &self,
        client: &kube::Client,
        ns: &str,
        secrets: &[&str],
        cloud: &[serde_json::Value],
        secret_fields: &[&str],
    ) {
        use k8s_openapi::api::core::v1::{Event, Pod};
        let log = self.log();
        let metrics = self.scrape();
        let events = Api::<Event>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        for secret in secrets {
            assert!(!log.contains(secret), "a secret reached the gateway log");
            assert!(!metrics.contains(secret), "a secret reached the metrics");
            for e in &events {
                let text = format!("{:?} {:?}", e.message, e.reason);
                assert!(!text.contains(secret), "a secret reached an Event: {text}");
            }
            for p in &pods {
                let annotations = serde_json::to_string(&p.metadata.annotations).unwrap();
                assert!(
                    !annotations.contains(secret),
                    "a secret reached an annotation"
                );
            }
        }
        let mut found = Vec::new();
        for doc in cloud {
            crate::common::find_strings(doc, "", secrets, &mut found);
        }
        for (path, _) in found {
            assert!(
                secret_fields.iter().any(|f| path.ends_with(f)),
                "a secret reached the cloud's plain field {path}"
            );
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Gateway {
    /// [`eventually`], failing with the tail of this gateway's log when `probe` never succeeds.
    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}; gateway log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (at most `limit`) for the process to end by itself, as an armed fail point makes
    /// it; the exit status.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the gateway did not end within {limit:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running (it has not exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the child can be waited for")
            .is_none()
    }

    /// [`Gateway::kill`] in place, for a test that starts another in its stead.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL, as a node failure or the OOM killer would: no shutdown path runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the test's virtual node when the test ends, pass or fail.
pub struct NodeCleanup(pub String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let (kubeconfig, node) = (peers().get("KUBECONFIG_ADMIN").to_string(), self.0.clone());
        let _ = run_tool(
            &peers().path("KUBECTL"),
            &[
                "--kubeconfig",
                &kubeconfig,
                "delete",
                "node",
                &node,
                "--wait=false",
            ],
            "",
        );
    }
}

pub async fn node_ready(client: &kube::Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "the virtual node is Ready",
        Duration::from_secs(60),
        || async {
            nodes
                .get(node)
                .await
                .ok()?
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// A Deployment written for AKS virtual nodes, unchanged.
pub fn aks_deployment(name: &str, replicas: i32, node: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "web", "image": "mcr.microsoft.com/azuredocs/aci-helloworld", "ports": [{"containerPort": 80}],
                                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
                    "nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/role": "agent", "beta.kubernetes.io/os": "linux",
                                     "burstgate.io/test-node": node},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}, {"key": "azure.com/aci", "effect": "NoSchedule"}]
                }
            }
        }
    }))
    .unwrap()
}

/// The environment that points the AWS chain of `burstgate run` at moto through `endpoint`
/// (moto itself, or a fault proxy in front of it).
pub fn moto_env(endpoint: &str) -> Vec<(&'static str, String)> {
    let peers = peers();
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        (
            "AWS_ACCESS_KEY_ID",
            peers.get("ECS_ACCESS_KEY_ID").to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            peers.get("ECS_SECRET_ACCESS_KEY").to_string(),
        ),
        ("AWS_REGION", peers.get("ECS_REGION").to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// The environment that points the Azure chain of `burstgate run` at the ACI emulator: a client
/// secret against the emulator's HTTPS token endpoint (trusted through `--azure-ca-file`), and
/// ARM at `arm_endpoint` (Prism in front of the emulator, or a fault proxy in front of Prism).
pub fn azure_env(arm_endpoint: &str) -> Vec<(&'static str, String)> {
    let peers = peers();
    vec![
        ("BURSTGATE_ARM_ENDPOINT", arm_endpoint.to_string()),
        (
            "BURSTGATE_AZURE_CA_FILE",
            peers.get("ACI_EMULATOR_CA").to_string(),
        ),
        (
            "AZURE_AUTHORITY_HOST",
            peers.get("ACI_AUTHORITY_HOST").to_string(),
        ),
        ("AZURE_TENANT_ID", "burstgate-e2e-tenant".to_string()),
        ("AZURE_CLIENT_ID", "burstgate-e2e".to_string()),
        ("AZURE_CLIENT_SECRET", "burstgate-e2e-secret".to_string()),
    ]
}

/// A fresh namespace for gateways started with `--namespace` (deploy/'s leader-election role is
/// bound there).
pub async fn gateway_namespace(client: &kube::Client, prefix: &str) -> String {
    let ns = unique_name(prefix);
    create_namespace(client, &ns).await;
    grant_leader_election(client, &ns).await;
    ns
}

/// The container groups of `subscription` as the ACI emulator holds them (its control API).
pub async fn aci_groups(subscription: &str) -> Vec<serde_json::Value> {
    let url = format!(
        "{}/_emulator/state?subscriptionId={subscription}",
        peers().get("ACI_EMULATOR_URL").trim_end_matches('/')
    );
    let state: serde_json::Value = reqwest::get(&url)
        .await
        .expect("emulator state")
        .json()
        .await
        .expect("state JSON");
    state["groups"].as_array().cloned().unwrap_or_default()
}

/// Sets `faults` (e.g. `provisioningDelaySeconds`) for `subscription` at the ACI emulator.
pub async fn aci_faults(subscription: &str, mut faults: serde_json::Value) {
    faults["subscriptionId"] = json!(subscription);
    let control = peers()
        .get("ACI_EMULATOR_URL")
        .trim_end_matches('/')
        .to_string();
    let res = reqwest::Client::new()
        .post(format!("{control}/_emulator/faults"))
        .json(&faults)
        .send()
        .await
        .expect("emulator control API");
    assert!(
        res.status().is_success(),
        "setting emulator faults {faults}: {}",
        res.status()
    );
}

/// A fresh subscription id at the emulator: parallel tests never see each other's groups.
pub fn subscription_id() -> String {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:08x}-{n:04x}-4000-8000-{:012x}",
        std::process::id(),
        clock & 0xffff_ffff_ffff
    )
}

/// Waits until the endpoints of Service `name` are exactly `ips` (sorted).
pub async fn endpoints_become(client: &kube::Client, ns: &str, name: &str, ips: &[String]) {
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("the endpoints of Service {name} to be {ips:?}"),
        Duration::from_secs(60),
        || async {
            let e = endpoints.get(name).await.ok()?;
            let mut got: Vec<String> = e
                .subsets?
                .iter()
                .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
                .collect();
            got.sort();
            (got == ips).then_some(())
        },
    )
    .await;
}

/// `burstgate run` with `policy` (whose ACI targets use the emulator through Prism, with the
/// standard Azure credential chain), once its node is Ready.
pub async fn start_on_aci(
    client: &kube::Client,
    node: &str,
    ns: &str,
    dir: &tempfile::TempDir,
    policy: &str,
) -> Gateway {
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let gw = Gateway::start_with_env(
        node,
        ns,
        dir.path(),
        "solo",
        azure_env(peers().get("ACI_PRISM_URL")),
    );
    node_ready(client, node).await;
    gw
}

/// A test namespace and virtual node served by `burstgate run` whose only target is
/// `aci-eastus`: the emulator through Prism, in a fresh subscription, groups in
/// `resource_group`. The node is deleted when this is dropped.
pub struct AciOnly {
    /// The admin client.
    pub client: kube::Client,
    /// The test namespace (also the gateway's).
    pub ns: String,
    /// The virtual node's name.
    pub node: String,
    /// The emulator subscription of the target.
    pub subscription: String,
    /// The gateway.
    pub gw: Gateway,
    /// What must live as long as the test: bind it (`guards: _guards`), never `..` it away, or
    /// the node and the policy directory go at once.
    pub guards: (NodeCleanup, tempfile::TempDir),
}

/// A policy whose only target is `aci-eastus` in `subscription`, groups in `resource_group`.
pub fn aci_eastus_policy(subscription: &str, resource_group: &str) -> String {
    format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {{vcpuHour: 0.0405, gibHour: 0.00445}}
      aci: {{subscriptionId: {subscription}, resourceGroup: {resource_group}}}
  rules:
    - name: everything
      match: {{}}
"
    )
}

/// [`AciOnly`], its node Ready.
pub async fn aci_only(prefix: &str, resource_group: &str) -> AciOnly {
    let client = crate::common::kube_admin().await;
    let ns = unique_name(prefix);
    create_namespace(&client, &ns).await;
    grant_leader_election(&client, &ns).await;
    let node = unique_name("vnode");
    let cleanup = NodeCleanup(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let subscription = subscription_id();
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    let policy = aci_eastus_policy(&subscription, resource_group);
    let gw = start_on_aci(&client, &node, &ns, &dir, &policy).await;
    AciOnly {
        client,
        ns,
        node,
        subscription,
        gw,
        guards: (cleanup, dir),
    }
}
