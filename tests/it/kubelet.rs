//! The kubelet API against the real apiserver and kubectl: `burstgate run` (the binary) serves it
//! with a certificate signed by the cluster CA, the apiserver reaches it at the node's InternalIP
//! and kubelet port with its kubelet client certificate, and kubectl's logs, logs -f and exec
//! work on a pod of the virtual node. Straight to the port, nobody passes without credentials the
//! apiserver vouches for and RBAC allows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{eventually, kube_admin, peers, run_tool, unique_name};

const WAIT: Duration = Duration::from_secs(60);

const POLICY: &str = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: sim-local
      provider: sim
      region: local
      latencyMs: 5
      pricing: {vcpuHour: 0.04, gibHour: 0.004}
      quota: {vcpu: 64, memoryGiB: 256, pods: 100}
  rules:
    - name: everything
      match: {}
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A serving certificate for 127.0.0.1 signed by the cluster CA (what the apiserver verifies
/// with `--kubelet-certificate-authority`), written into `dir`: (cert, key).
fn serving_certificate(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        dir.join("kubelet.crt"),
        dir.join("kubelet.key"),
        dir.join("kubelet.csr"),
        dir.join("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let subject = format!("/CN={cn}");
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-subj",
        &subject,
        "-out",
        csr.to_str().unwrap(),
    ]);
    let serial = format!(
        "{}",
        std::process::id() as u64 * 1_000_003 + free_port() as u64
    );
    let (ca, ca_key) = (peers().path("KUBE_CA"), peers().path("KUBE_CA_KEY"));
    run(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-set_serial",
        &serial,
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// One `burstgate run` with the kubelet API on its own port; killed when dropped, and its node
/// deleted.
struct Gateway {
    child: Child,
    log: PathBuf,
    node: String,
    kubelet_port: u16,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(ns: &str) -> Gateway {
        let node = unique_name("kubelet");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/policy.yaml"), POLICY).unwrap();
        let (cert, key) = serving_certificate(dir.path(), &node);
        let log = std::env::temp_dir().join(format!("{node}.log"));
        let kubelet_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_burstgate"))
            .args([
                "run",
                "--node-name",
                &node,
                "--namespace",
                ns,
                "--identity",
                "kubelet-it",
                "--cluster-id",
                "kubelet-it",
            ])
            .arg("--policy-dir")
            .arg(dir.path().join("policy"))
            .arg("--kubeconfig")
            .arg(peers().path("KUBECONFIG_ADMIN"))
            .args(["--sim-cold-start-ms", "300", "--node-ip", "127.0.0.1"])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", free_port()),
                "--kubelet-port",
                &kubelet_port.to_string(),
            ])
            .arg("--kubelet-cert-file")
            .arg(&cert)
            .arg("--kubelet-key-file")
            .arg(&key)
            .arg("--kubelet-client-ca-file")
            .arg(peers().path("KUBE_CA"))
            .env("RUST_LOG", "burstgate=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("burstgate run starts");
        Gateway {
            child,
            log,
            node,
            kubelet_port,
            _dir: dir,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.kubelet_port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let kubeconfig = peers().get("KUBECONFIG_ADMIN").to_string();
        let _ = run_tool(
            &peers().path("KUBECTL"),
            &[
                "--kubeconfig",
                &kubeconfig,
                "delete",
                "node",
                &self.node,
                "--wait=false",
            ],
            "",
        );
    }
}

/// A namespace and a pod bound to the gateway's node, Running at the simulated provider.
async fn running_pod(client: &kube::Client, gw: &Gateway, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": gw.node, "containers": [{"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let what = format!(
        "pod web Running on {} (gateway log:\n{})",
        gw.node,
        gw.log_tail()
    );
    eventually(&what, WAIT, || async {
        pods.get("web")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
}

async fn namespace(client: &kube::Client) -> String {
    let ns = unique_name("kubelet");
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    ns
}

/// kubectl as cluster admin in `ns`: exit code, stdout, stderr.
fn kubectl(ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(peers().path("KUBECTL"))
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args(["-n", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The highest "running for Ns" second in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| {
            l.split("running for ")
                .nth(1)?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .max()
}

#[tokio::test]
async fn kubectl_logs_logs_follow_and_exec_reach_the_pod_through_the_apiserver() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = Gateway::start(&ns);
    running_pod(&client, &gw, &ns).await;

    // kubectl logs: the apiserver finds the node's InternalIP and kubelet port, verifies the
    // serving certificate against the cluster CA, and presents its kubelet client certificate.
    let what = format!("kubectl logs answers (gateway log:\n{})", gw.log_tail());
    let logs = eventually(&what, WAIT, || async {
        let (code, out, _) = kubectl(&ns, &["logs", "web"]);
        (code == 0 && out.contains("sim: container app started")).then_some(out)
    })
    .await;
    assert!(logs.starts_with("sim: container app created\n"), "{logs}");

    // --tail=1: exactly the newest line.
    let (code, tail, err) = kubectl(&ns, &["logs", "web", "--tail=1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("sim: container app "), "{tail}");

    // --timestamps: each line carries its RFC 3339 time.
    let (_, stamped, _) = kubectl(&ns, &["logs", "web", "--tail=1", "--timestamps"]);
    let ts = stamped.split_whitespace().next().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "{stamped}"
    );

    // logs -f: lines written after kubectl started arrive on its stdout.
    let (_, now, _) = kubectl(&ns, &["logs", "web"]);
    let before = last_tick(&now).unwrap_or(0);
    let mut follow = Command::new(peers().path("KUBECTL"))
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args(["-n", &ns, "logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let streamed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if last_tick(&line).is_some_and(|t| t >= before + 3) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        streamed,
        "kubectl logs -f streamed no line newer than second {before} within 30 s; got {seen:?}"
    );

    // exec: the WebSocket channel protocol through the apiserver's upgrade proxy.
    let (code, out, err) = kubectl(&ns, &["exec", "web", "--", "echo", "hi"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hi\n"),
        "stderr: {err}\ngateway log:\n{}",
        gw.log_tail()
    );
    let (code, _, _) = kubectl(&ns, &["exec", "web", "--", "exit", "3"]);
    assert_eq!(code, 3, "the remote exit code is kubectl's");
    let (code, _, err) = kubectl(&ns, &["exec", "web", "--", "no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("no-such-command: command not found"), "{err}");
    let (code, _, err) = kubectl(&ns, &["exec", "-i", "web", "--", "echo", "hi"]);
    assert_ne!(code, 0);
    assert!(err.contains("stdin is not supported yet"), "{err}");
}

/// curl straight to the kubelet port (the cluster CA verifies its certificate): HTTP status and body.
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}", "--cacert"])
        .arg(peers().path("KUBE_CA"))
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let answer = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap();
    answer
        .status
        .and_then(|s| s.token)
        .expect("the apiserver issues a token")
}

#[tokio::test]
async fn the_kubelet_port_refuses_the_anonymous_and_the_unauthorized_and_serves_the_apiserver() {
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let gw = Gateway::start(&ns);
    running_pod(&client, &gw, &ns).await;
    let logs = gw.url(&format!("/containerLogs/{ns}/web/app"));
    let (cert, key) = (
        peers().get("KUBELET_CLIENT_CERT").to_string(),
        peers().get("KUBELET_CLIENT_KEY").to_string(),
    );
    let as_apiserver = ["--cert", cert.as_str(), "--key", key.as_str()];

    // The apiserver's kubelet client certificate (CN kube-apiserver-kubelet-client, O system:masters).
    let what = format!(
        "the kubelet API answers the apiserver's certificate (gateway log:\n{})",
        gw.log_tail()
    );
    let body = eventually(&what, WAIT, || async {
        Some(curl(&logs, &as_apiserver))
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    })
    .await;
    assert!(body.contains("sim: container app started"), "{body}");

    // No credentials at all.
    let (code, body) = curl(&logs, &[]);
    assert_eq!(code, 401, "{body}");

    // A real user (a ServiceAccount token the apiserver vouches for) whom RBAC grants nothing here.
    let token = service_account_token(&client, &ns, "reader").await;
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl(&logs, &["-H", &bearer]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(&format!("user=system:serviceaccount:{ns}:reader, verb=get, resource=nodes, subresource(s)=[proxy]")), "{body}");
    // A token nobody issued.
    let (code, body) = curl(&logs, &["-H", "Authorization: Bearer not-a-real-token"]);
    assert_eq!(code, 401, "{body}");

    // Granted nodes/proxy on this node, the same token reads the logs.
    let role_name = format!("{ns}-node-proxy");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let role = json!({"metadata": {"name": role_name}, "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "resourceNames": [gw.node], "verbs": ["get"]}]});
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(role).unwrap(),
        )
        .await
        .unwrap();
    let binding = json!({"metadata": {"name": role_name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
                         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]});
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(binding).unwrap(),
        )
        .await
        .unwrap();
    let granted = eventually("the granted token reads the logs", WAIT, || async {
        Some(curl(&logs, &["-H", &bearer])).filter(|(code, _)| *code == 200)
    })
    .await;
    assert!(
        granted.1.contains("sim: container app started"),
        "{}",
        granted.1
    );
    // ... but nodes/stats is another subresource it was not granted.
    let (code, _) = curl(&gw.url("/stats/summary"), &["-H", &bearer]);
    assert_eq!(code, 403);

    // The rest of the API, as the apiserver.
    let (code, body) = curl(
        &gw.url(&format!("/containerLogs/{ns}/nope/app")),
        &as_apiserver,
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = curl(
        &gw.url(&format!("/containerLogs/{ns}/web/app?tailLines=1")),
        &as_apiserver,
    );
    assert_eq!((code, body.lines().count()), (200, 1), "{body}");
    let (code, body) = curl(&gw.url("/stats/summary"), &as_apiserver);
    assert_eq!(code, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["node"]["nodeName"], gw.node.as_str());
    assert_eq!(summary["pods"][0]["podRef"]["name"], "web");
    let (code, body) = curl(
        &gw.url(&format!("/run/{ns}/web/app?cmd=echo%20ran")),
        &[&as_apiserver[..], &["-X", "POST"]].concat(),
    );
    assert_eq!((code, body.as_str()), (200, "ran\n"));
    let (code, body) = curl(&gw.url(&format!("/portForward/{ns}/web")), &as_apiserver);
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("does not support port-forward"), "{body}");
    let (code, body) = curl(&gw.url("/healthz"), &as_apiserver);
    assert_eq!((code, body.as_str()), (200, "ok"));

    let _ = bindings.delete(&role_name, &DeleteParams::default()).await;
    let _ = roles.delete(&role_name, &DeleteParams::default()).await;
}
