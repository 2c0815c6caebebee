//! A control plane of one test's own: a fresh etcd and a kube-apiserver with exactly the shared
//! apiserver's flags (`KUBE_APISERVER_ARGS`: same CA, tokens, service-account keys, admission),
//! so a test can kill and restart both during a burst without disturbing the tests that share
//! the peers. It has no scheduler and no controller-manager: pods are bound by `nodeName`, and
//! the namespace's `default` ServiceAccount and `kube-root-ca.crt` are made by [`Plane::namespace`]
//! as those controllers would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::{kube_client_at, peers, run_tool};

/// A free TCP port on 127.0.0.1 (free when asked; the peers bind it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running etcd + kube-apiserver pair; both killed when dropped.
pub struct Plane {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
}

impl Plane {
    /// Starts etcd and the apiserver and returns once the apiserver is ready and the gateway
    /// identity has `deploy/rbac`'s roles (as up.sh grants them on the shared plane).
    pub async fn start() -> Plane {
        let apiserver_port = free_port();
        let mut plane = Plane {
            dir: tempfile::tempdir().unwrap(),
            etcd: None,
            apiserver: None,
            etcd_port: free_port(),
            etcd_peer_port: free_port(),
            apiserver_port,
            url: format!("https://127.0.0.1:{apiserver_port}"),
        };
        for (name, key) in [
            ("admin", "KUBECONFIG_ADMIN"),
            ("gateway", "KUBECONFIG_GATEWAY"),
        ] {
            let shared = std::fs::read_to_string(peers().path(key)).unwrap();
            let own = shared.replace(peers().get("KUBE_APISERVER_URL"), &plane.url);
            assert_ne!(
                shared,
                own,
                "{key} names {}",
                peers().get("KUBE_APISERVER_URL")
            );
            std::fs::write(plane.kubeconfig(name), own).unwrap();
        }
        plane.start_etcd().await;
        plane.start_apiserver().await;
        let admin = plane.admin().await;
        let (code, out) = run_tool(
            &peers().path("KUBECTL"),
            &[
                "--kubeconfig",
                plane.kubeconfig("admin").to_str().unwrap(),
                "apply",
                "-k",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/peers/kustomize/gateway-rbac"
                ),
            ],
            "",
        );
        assert_eq!(
            code, 0,
            "applying deploy/rbac to the private apiserver: {out}"
        );
        drop(admin);
        plane
    }

    /// This plane's kubeconfig for `who` (`admin` or `gateway`).
    pub fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.kubeconfig"))
    }

    /// A client as cluster admin.
    pub async fn admin(&self) -> kube::Client {
        kube_client_at(&self.kubeconfig("admin")).await
    }

    /// A client as the gateway identity.
    pub async fn gateway(&self) -> kube::Client {
        kube_client_at(&self.kubeconfig("gateway")).await
    }

    /// Creates namespace `ns` with what the controller-manager would put there for pods: the
    /// `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap.
    pub async fn namespace(&self, ns: &str) {
        let admin = self.admin().await;
        let pp = PostParams::default();
        Api::<Namespace>::all(admin.clone())
            .create(&pp, &from_json(json!({"metadata": {"name": ns}})))
            .await
            .unwrap();
        Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(&pp, &from_json(json!({"metadata": {"name": "default"}})))
            .await
            .unwrap();
        let ca = std::fs::read_to_string(peers().path("KUBE_CA")).unwrap();
        Api::<ConfigMap>::namespaced(admin, ns)
            .create(
                &pp,
                &from_json(
                    json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca}}),
                ),
            )
            .await
            .unwrap();
    }

    /// SIGKILLs the apiserver, as a crashed or rebooted control-plane machine.
    pub fn kill_apiserver(&mut self) {
        kill(&mut self.apiserver);
    }

    /// SIGKILLs etcd; its data stays, as on a disk that survives the crash.
    pub fn kill_etcd(&mut self) {
        kill(&mut self.etcd);
    }

    /// Starts etcd again on its data and ports.
    pub async fn start_etcd(&mut self) {
        let data = self.dir.path().join("etcd-data");
        let (client, peer) = (
            format!("http://127.0.0.1:{}", self.etcd_port),
            format!("http://127.0.0.1:{}", self.etcd_peer_port),
        );
        let child = spawn(
            &self.log("etcd"),
            Command::new(peers().path("ETCD_BIN"))
                .args(["--name", "private", "--data-dir"])
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &format!("private={peer}"),
                    "--log-level",
                    "warn",
                ]),
        );
        self.etcd = Some(child);
        let port = self.etcd_port;
        self.wait(
            "etcd accepting connections",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// Starts the apiserver again (on its port, against the plane's etcd) and waits until it is
    /// ready.
    pub async fn start_apiserver(&mut self) {
        let flags = std::fs::read_to_string(peers().path("KUBE_APISERVER_ARGS")).unwrap();
        let child = spawn(
            &self.log("kube-apiserver"),
            Command::new(peers().path("KUBE_APISERVER_BIN"))
                .arg(format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    self.etcd_port
                ))
                .arg(format!("--secure-port={}", self.apiserver_port))
                .args(flags.lines().filter(|l| !l.is_empty())),
        );
        self.apiserver = Some(child);
        let admin = self.admin().await;
        self.wait(
            "the private apiserver ready",
            Duration::from_secs(90),
            || {
                let admin = admin.clone();
                async move {
                    let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                    (admin.request_text(request).await.ok()? == "ok").then_some(())
                }
            },
        )
        .await;
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// [`eventually`], failing with the tails of the plane's logs.
    async fn wait<F, Fut>(&self, what: &str, limit: Duration, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<()>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        while probe().await.is_none() {
            if tokio::time::Instant::now() >= deadline {
                let logs = [self.log("etcd"), self.log("kube-apiserver")];
                let tails: Vec<String> = logs.iter().map(|l| tail(l)).collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}; logs:\n{}",
                    tails.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        kill(&mut self.apiserver);
        kill(&mut self.etcd);
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn spawn(log: &Path, command: &mut Command) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|err| panic!("starting {command:?}: {err}"))
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- {}:\n{}",
        log.display(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}
