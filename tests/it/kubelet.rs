//! The kubelet API against the real apiserver and kubectl: `burstgate run` (the binary) serves it
//! with a certificate signed by the cluster CA, the apiserver reaches it at the node's InternalIP
//! and kubelet port with its kubelet client certificate, and kubectl's logs, logs -f and exec
//! (and attach, on ACI)
//! work on a pod of the virtual node: on the simulated provider, and on ACI (the gateway's real
//! Azure credential chain and ARM client, through Prism to the project's ACI emulator). Straight
//! to the port, nobody passes without credentials the apiserver vouches for and RBAC allows.
//! On the on-cluster target, the shadow pod runs on the peers' real test node (a kubelet 1.20.2
//! on containerd): logs, exec with stdin, a terminal and exit codes, attach -i, cp from the pod
//! and port-forward go kubectl -> apiserver -> the gateway -> apiserver -> the real kubelet.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burstgate::controller::placement::{RESOURCE_ID, TARGET};
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
    /// The gateway with the simulated provider.
    fn start(ns: &str) -> Gateway {
        Gateway::start_with(ns, POLICY, |_| {})
    }

    /// The gateway with `policy`; `configure` adds flags and environment (a provider's).
    fn start_with(ns: &str, policy: &str, configure: impl FnOnce(&mut Command)) -> Gateway {
        let node = unique_name("kubelet");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/policy.yaml"), policy).unwrap();
        let (cert, key) = serving_certificate(dir.path(), &node);
        let log = std::env::temp_dir().join(format!("{node}.log"));
        let kubelet_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_burstgate"));
        command
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
            .stderr(std::fs::File::create(&log).unwrap());
        configure(&mut command);
        let child = command.spawn().expect("burstgate run starts");
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
async fn running_pod(client: &kube::Client, gw: &Gateway, ns: &str) -> Pod {
    running_pod_from(
        client,
        gw,
        ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": gw.node, "containers": [{"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}
        }),
    )
    .await
}

/// Creates `pod` (named `web`, bound to the gateway's node) and waits until it is Running.
async fn running_pod_from(
    client: &kube::Client,
    gw: &Gateway,
    ns: &str,
    pod: serde_json::Value,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let what = format!("pod web Running on {}", gw.node);
    eventually_or_log(gw, &what, || async {
        pods.get("web")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
}

/// Polls `probe` every 200 ms for up to [`WAIT`]; on timeout, panics with `what` and the
/// gateway's log as it is then.
async fn eventually_or_log<T, F, Fut>(gw: &Gateway, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; gateway log:\n{}",
            gw.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    kubectl_via(Transport::WebSocket, ns, args, None)
}

/// How kubectl carries exec and attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// kubectl's default: a WebSocket (which the 1.20 apiserver passes through to the kubelet).
    WebSocket,
    /// `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`: SPDY/3.1 end to end, as every apiserver from
    /// 1.30 on speaks to kubelets whatever kubectl used.
    Spdy,
}

const TRANSPORTS: [Transport; 2] = [Transport::WebSocket, Transport::Spdy];

/// `kubectl -n NS ARGS` as the admin, its exec and attach over `transport`.
fn kubectl_command(transport: Transport, ns: &str, args: &[&str]) -> Command {
    let mut command = Command::new(peers().path("KUBECTL"));
    command
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args(["-n", ns])
        .args(args)
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if transport == Transport::Spdy {
                "false"
            } else {
                "true"
            },
        );
    command
}

/// kubectl as cluster admin in `ns` with exec and attach over `transport`, `stdin` fed to it
/// (none: /dev/null): exit code, stdout (bytes as text), stderr.
fn kubectl_via(
    transport: Transport,
    ns: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (i32, String, String) {
    let (code, out, err) = kubectl_bytes(transport, ns, args, stdin);
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// As [`kubectl_via`], stdout as bytes.
fn kubectl_bytes(
    transport: Transport,
    ns: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (i32, Vec<u8>, String) {
    use std::io::Write as _;
    let mut child = kubectl_command(transport, ns, args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().expect("kubectl ends");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl exec -it` in `ns` under a pseudo-terminal of `cols`x`rows` (util-linux `script`),
/// over `transport`, typing `keys` once it runs: exit code and what the terminal showed.
fn kubectl_in_terminal(
    transport: Transport,
    ns: &str,
    args: &[&str],
    keys: &str,
    (cols, rows): (u16, u16),
) -> (i32, String) {
    use std::io::Write as _;
    let quoted = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line = [
        peers().path("KUBECTL").to_string_lossy().as_ref(),
        "--kubeconfig",
        peers().path("KUBECONFIG_ADMIN").to_string_lossy().as_ref(),
        "-n",
        ns,
    ]
    .iter()
    .chain(args)
    .map(|a| quoted(a))
    .collect::<Vec<_>>()
    .join(" ");
    let websockets = if transport == Transport::Spdy {
        "false"
    } else {
        "true"
    };
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("stty cols {cols} rows {rows}; {line}"),
            "/dev/null",
        ])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut pipe = child.stdin.take().unwrap();
    let keys = keys.to_string();
    std::thread::spawn(move || {
        // kubectl puts the terminal in raw mode once its session runs.
        std::thread::sleep(Duration::from_secs(3));
        let _ = pipe.write_all(keys.as_bytes());
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut stdout = child.stdout.take().unwrap();
    let screen = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut seen);
        String::from_utf8_lossy(&seen).into_owned()
    });
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().expect("script is waited for") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (code, screen.join().unwrap_or_default())
}

/// The highest "running for Ns" second in `text` (the simulated provider's log lines).
fn last_tick(text: &str) -> Option<u64> {
    last_number(text, "running for ", "s")
}

/// The highest `N` of the lines `...{before}N{after}` in `text`.
fn last_number(text: &str, before: &str, after: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split(before).nth(1)?.strip_suffix(after)?.parse().ok())
        .max()
}

/// `kubectl logs -f web` in `ns`: whether a line whose tick (by `tick`) is at least `at_least`
/// arrives within 30 s, and every line seen.
fn follow_until(ns: &str, tick: fn(&str) -> Option<u64>, at_least: u64) -> (bool, Vec<String>) {
    streamed_until(ns, &["logs", "-f", "web"], |line| {
        tick(line).is_some_and(|t| t >= at_least)
    })
}

/// kubectl `args` in `ns` as a child: whether a line for which `done` holds arrives on its stdout
/// within 30 s, and every line seen; then the child is killed.
fn streamed_until(ns: &str, args: &[&str], done: impl Fn(&str) -> bool) -> (bool, Vec<String>) {
    streamed_via(Transport::WebSocket, ns, args, done)
}

/// As [`streamed_until`], with exec and attach over `transport`.
fn streamed_via(
    transport: Transport,
    ns: &str,
    args: &[&str],
    done: impl Fn(&str) -> bool,
) -> (bool, Vec<String>) {
    let mut follow = kubectl_command(transport, ns, args)
        .stdin(Stdio::null())
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
                if done(&line) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    (streamed, seen)
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
    let (streamed, seen) = follow_until(&ns, last_tick, before + 3);
    assert!(
        streamed,
        "kubectl logs -f streamed no line newer than second {before} within 30 s; got {seen:?}"
    );

    // exec, over each transport through the apiserver's upgrade proxy: the WebSocket channel
    // protocol, and SPDY/3.1 end to end.
    for transport in TRANSPORTS {
        let (code, out, err) =
            kubectl_via(transport, &ns, &["exec", "web", "--", "echo", "hi"], None);
        assert_eq!(
            (code, out.as_str()),
            (0, "hi\n"),
            "{transport:?}: stderr: {err}\ngateway log:\n{}",
            gw.log_tail()
        );
        let (code, _, _) = kubectl_via(transport, &ns, &["exec", "web", "--", "exit", "3"], None);
        assert_eq!(code, 3, "{transport:?}: the remote exit code is kubectl's");
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &["exec", "web", "--", "no-such-command"],
            None,
        );
        assert_eq!(code, 127, "{transport:?}");
        assert!(
            err.contains("no-such-command: command not found"),
            "{transport:?}: {err}"
        );
        // The simulated cloud runs commands, not sessions: stdin is refused, saying so.
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &["exec", "-i", "web", "--", "echo", "hi"],
            Some(b"x"),
        );
        assert_ne!(code, 0, "{transport:?}");
        assert!(
            err.contains("sim does not support exec with stdin or a terminal (-i/-t)"),
            "{transport:?}: {err}"
        );
    }
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
    // The kubelet API remembers a denial for 30 s (as the kubelet's webhook authorizer does):
    // right after the grant the token is still refused, from the cache ...
    let (code, body) = curl(&logs, &["-H", &bearer]);
    assert_eq!(code, 403, "{body}");
    // ... and once the denial expired, the new review allows it.
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
    // The simulated cloud reports no usage: no usage fields, never zeros.
    assert!(summary["pods"][0].get("cpu").is_none(), "{summary}");
    assert!(summary["node"].get("memory").is_none(), "{summary}");
    let (code, body) = curl(
        &gw.url(&format!("/run/{ns}/web/app?cmd=echo%20ran")),
        &[&as_apiserver[..], &["-X", "POST"]].concat(),
    );
    assert_eq!((code, body.as_str()), (200, "ran\n"));
    let (code, body) = curl(&gw.url(&format!("/portForward/{ns}/web")), &as_apiserver);
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("does not support port-forward"), "{body}");
    // The simulated provider cannot attach: 501 naming it, before any upgrade.
    let (code, body) = curl(
        &gw.url(&format!("/attach/{ns}/web/app?stdout=1")),
        &as_apiserver,
    );
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("sim does not support attach (pod "), "{body}");
    let (code, body) = curl(&gw.url("/healthz"), &as_apiserver);
    assert_eq!((code, body.as_str()), (200, "ok"));

    let _ = bindings.delete(&role_name, &DeleteParams::default()).await;
    let _ = roles.delete(&role_name, &DeleteParams::default()).await;
}

/// The policy of a gateway whose only target is ACI in `subscription` (the emulator's).
fn aci_policy(subscription: &str) -> String {
    format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
      latencyMs: 25
      pricing: {{vcpuHour: 0.0405, gibHour: 0.00445}}
      quota: {{vcpu: 10, pods: 10}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-kubelet-it}}
  rules:
    - name: everything
      match: {{}}
"
    )
}

/// A random subscription id: the emulator keeps each subscription's groups, faults and request
/// log apart, so parallel tests do not see each other.
fn random_subscription() -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(unique_name("subscription").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The emulator's control API (not through Prism), scoped to `subscription`.
async fn emulator(
    method: reqwest::Method,
    what: &str,
    subscription: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let base = peers()
        .get("ACI_EMULATOR_URL")
        .trim_end_matches('/')
        .to_string();
    let http = reqwest::Client::new();
    let request = match body {
        Some(body) => http
            .request(method, format!("{base}/_emulator/{what}"))
            .json(&body),
        None => http.request(
            method,
            format!("{base}/_emulator/{what}?subscriptionId={subscription}"),
        ),
    };
    let answer = request
        .send()
        .await
        .expect("the emulator's control API answers");
    assert!(
        answer.status().is_success(),
        "emulator {what}: {}",
        answer.status()
    );
    answer.json().await.expect("JSON from the control API")
}

#[tokio::test]
async fn kubectl_logs_logs_follow_exec_and_attach_reach_a_pod_running_on_aci_through_the_apiserver()
{
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let subscription = random_subscription();
    emulator(
        reqwest::Method::POST,
        "faults",
        &subscription,
        Some(json!({"subscriptionId": subscription, "provisioningDelaySeconds": 1})),
    )
    .await;
    // `burstgate run` as in production: the Azure credential chain from the environment (a client
    // secret, the token from the emulator's Entra-like endpoint), ARM through Prism, and the
    // peers' CA trusted by every Azure call.
    let gw = Gateway::start_with(&ns, &aci_policy(&subscription), |command| {
        command
            .arg("--arm-endpoint")
            .arg(peers().get("ACI_PRISM_URL"))
            .arg("--azure-ca-file")
            .arg(peers().path("ACI_EMULATOR_CA"))
            .env("AZURE_AUTHORITY_HOST", peers().get("ACI_AUTHORITY_HOST"))
            .env("AZURE_TENANT_ID", "burstgate-test-tenant")
            .env("AZURE_CLIENT_ID", "burstgate-kubelet-it")
            .env("AZURE_CLIENT_SECRET", "burstgate-kubelet-it-secret")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("BURSTGATE_ARM_ENDPOINT");
    });
    let marker = unique_name("marker");
    let pod = running_pod_from(
        &client,
        &gw,
        &ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {"nodeName": gw.node, "containers": [{
                "name": "app", "image": "nginx:1.27",
                "env": [{"name": "MARKER", "value": marker}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}
            }]}
        }),
    )
    .await;

    // It runs on ACI: the pod names the target and the container group, which the emulator has
    // in this test's subscription.
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(TARGET).map(String::as_str),
        Some("aci-eastus")
    );
    let group = format!("bg-{}", pod.metadata.uid.as_deref().unwrap());
    assert_eq!(annotations.get(RESOURCE_ID), Some(&group));
    let state = emulator(reqwest::Method::GET, "state", &subscription, None).await;
    let groups: Vec<&str> = state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(groups, vec![group.as_str()], "{state}");

    // kubectl logs: apiserver -> kubelet API -> the ACI adapter -> Prism -> the emulator.
    let what = "kubectl logs answering with the ACI container's lines";
    let logs = eventually_or_log(&gw, what, || async {
        let (code, out, _) = kubectl(&ns, &["logs", "web"]);
        (code == 0 && out.contains("app: line 1\n")).then_some(out)
    })
    .await;
    assert!(
        logs.starts_with("app: started from image nginx:1.27\n"),
        "{logs}"
    );
    let (code, tail, err) = kubectl(&ns, &["logs", "web", "--tail=1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("app: line "), "{tail}");
    // ACI keeps only the current instance: --previous says so rather than print the current one.
    let (code, out, err) = kubectl(&ns, &["logs", "web", "--previous"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("previous container instance") && err.contains("aci"),
        "{err}"
    );

    // logs -f: lines ACI writes after kubectl started arrive on its stdout.
    let line = |text: &str| last_number(text, "app: line ", "");
    let (_, now, _) = kubectl(&ns, &["logs", "web"]);
    let before = line(&now).unwrap_or(0);
    let (streamed, seen) = follow_until(&ns, line, before + 3);
    assert!(
        streamed,
        "kubectl logs -f streamed no ACI line after line {before} within 30 s; got {seen:?}"
    );

    // exec: the command runs in the container group, over ACI's exec websocket; `hostname` there
    // is the group's name and the environment is the pod's.
    let (code, out, err) = kubectl(&ns, &["exec", "web", "--", "hostname"]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{group}\n").as_str()),
        "stderr: {err}\ngateway log:\n{}",
        gw.log_tail()
    );
    let (code, out, err) = kubectl(
        &ns,
        &["exec", "web", "-c", "app", "--", "printenv", "MARKER"],
    );
    assert_eq!((code, out), (0, format!("{marker}\n")), "{err}");
    let requests = emulator(reqwest::Method::GET, "requests", &subscription, None).await;
    let exec_path = format!("/containerGroups/{group}/containers/app/exec");
    let execs = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with(&exec_path))
        })
        .map(|r| r["status"].as_u64())
        .collect::<Vec<_>>();
    assert_eq!(execs, vec![Some(200), Some(200)], "{requests}");

    // ACI takes one command line and splits it on spaces: an argument with a space is refused
    // before any ARM call, and kubectl says why.
    let (code, _, err) = kubectl(&ns, &["exec", "web", "--", "sh", "-c", "echo hi"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("ACI splits the command line on spaces"),
        "{err}"
    );

    // Interactive exec over each transport: stdin reaches the container through ACI's exec
    // websocket and its end (closing stdin) ends the command; `kubectl cp` (tar over exec stdin
    // and stdout) works both ways. ACI reports no exit code: kubectl exits 0.
    for transport in TRANSPORTS {
        let input = format!("{transport:?} stdin {marker}\n");
        let (code, out, err) = kubectl_via(
            transport,
            &ns,
            &["exec", "-i", "web", "--", "cat"],
            Some(input.as_bytes()),
        );
        assert_eq!(
            (code, out.as_str()),
            (0, input.as_str()),
            "{transport:?}: stderr: {err}\ngateway log:\n{}",
            gw.log_tail()
        );
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("notes.txt");
        // Over a megabyte: more than SPDY's default 64 KiB window many times over.
        let content = format!("copied over {transport:?} {marker}\n").repeat(24 * 1024);
        std::fs::write(&local, &content).unwrap();
        // To a directory: kubectl asks `test -d DEST` first, and with no exit code from ACI the
        // answer is always yes (docs/operations.md says so).
        let into = format!("web:/tmp/{transport:?}/");
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &["cp", local.to_str().unwrap(), &into],
            None,
        );
        assert_eq!(code, 0, "{transport:?}: kubectl cp to the pod: {err}");
        let path = format!("/tmp/{transport:?}/notes.txt");
        let remote = format!("web:{path}");
        let (code, out, err) =
            kubectl_via(transport, &ns, &["exec", "web", "--", "cat", &path], None);
        assert_eq!(
            (code, out.as_str()),
            (0, content.as_str()),
            "{transport:?}: {err}"
        );
        let back = dir.path().join("back.txt");
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &["cp", &remote, back.to_str().unwrap()],
            None,
        );
        assert_eq!(code, 0, "{transport:?}: kubectl cp from the pod: {err}");
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            content,
            "{transport:?}"
        );
    }

    // exec -it under a terminal: the container group's exec starts with the terminal's size
    // (ACI takes it in the exec request), the typed lines reach the shell and its output the
    // terminal; `exit` ends the session.
    for transport in TRANSPORTS {
        let (code, screen) = kubectl_in_terminal(
            transport,
            &ns,
            &["exec", "-it", "web", "--", "sh"],
            "hostname\rexit\r",
            (100, 30),
        );
        assert!(
            code == 0 && screen.contains(&group),
            "{transport:?}: exit {code}, the terminal showed {screen:?}\ngateway log:\n{}",
            gw.log_tail()
        );
    }
    let requests = emulator(reqwest::Method::GET, "requests", &subscription, None).await;
    let sizes: Vec<serde_json::Value> = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with(&exec_path))
        })
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r["body"].as_str()?).ok())
        .filter(|body| body["command"] == "sh")
        .map(|body| body["terminalSize"].clone())
        .collect();
    assert_eq!(
        sizes,
        vec![json!({"rows": 30, "cols": 100}); 2],
        "{requests}"
    );

    // attach, over each transport: kubectl attach streams the container's output through the
    // apiserver, the kubelet API's /attach and ACI's attach websocket: the lines so far, then new
    // ones as ACI writes them.
    for transport in TRANSPORTS {
        let (_, now, _) = kubectl(&ns, &["logs", "web"]);
        let before = line(&now).unwrap_or(0);
        let (streamed, seen) = streamed_via(transport, &ns, &["attach", "web"], |l| {
            line(l).is_some_and(|n| n >= before + 2)
        });
        assert!(
            streamed,
            "{transport:?}: kubectl attach printed no ACI line after line {before} within 30 s; got {seen:?}\ngateway log:\n{}",
            gw.log_tail()
        );
        assert_eq!(
            seen.first().map(String::as_str),
            Some("app: started from image nginx:1.27"),
            "{transport:?}: {seen:?}"
        );
    }
    let requests = emulator(reqwest::Method::GET, "requests", &subscription, None).await;
    let attach_path = format!("/containerGroups/{group}/containers/app/attach");
    assert!(
        requests["requests"].as_array().unwrap().iter().any(|r| {
            r["method"] == "POST"
                && r["status"] == 200
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&attach_path))
        }),
        "{requests}"
    );
    // ACI's attach is output only: -i (and -it) is refused, naming the provider, and kubectl
    // says why.
    for transport in TRANSPORTS {
        for args in [&["attach", "-i", "web"][..], &["attach", "-it", "web"][..]] {
            let (code, _, err) = kubectl_via(transport, &ns, args, Some(b"x"));
            assert_ne!(code, 0, "{transport:?} {args:?}");
            assert!(
                err.contains("aci does not support attach with stdin or a terminal")
                    && err.contains("output only"),
                "{transport:?} {args:?}: {err}"
            );
        }
    }

    // port-forward: ACI forwards no ports, and kubectl says so, naming it.
    let (code, _, err) = kubectl(&ns, &["port-forward", "pod/web", "18080:80"]);
    assert_ne!(code, 0);
    assert!(err.contains("aci does not support port-forward"), "{err}");
}

/// The number after `{series}{labels}` in Prometheus text, and its timestamp (milliseconds).
fn sample(text: &str, series_and_labels: &str) -> Option<(f64, i64)> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{series_and_labels} ")))?;
    let mut fields = line[series_and_labels.len()..].split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// The emulator's Azure Monitor requests for `group`.
async fn metrics_reads(subscription: &str, group: &str) -> usize {
    let requests = emulator(reqwest::Method::GET, "requests", subscription, None).await;
    let path = format!("/containerGroups/{group}/providers/Microsoft.Insights/metrics");
    requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(&path)))
        .count()
}

#[tokio::test]
async fn kubectl_top_data_of_a_pod_on_aci_is_what_azure_monitor_says_through_the_apiserver() {
    const REFRESH_SECONDS: u64 = 4;
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let subscription = random_subscription();
    emulator(
        reqwest::Method::POST,
        "faults",
        &subscription,
        Some(json!({"subscriptionId": subscription, "provisioningDelaySeconds": 1})),
    )
    .await;
    // Azure Monitor is not in ACI's spec, so Prism cannot route it: the gateway reads metrics
    // from the emulator beside Prism, as it would from management.azure.com in Azure.
    let gw = Gateway::start_with(&ns, &aci_policy(&subscription), |command| {
        command
            .arg("--arm-endpoint")
            .arg(peers().get("ACI_PRISM_URL"))
            .arg("--azure-monitor-endpoint")
            .arg(peers().get("ACI_EMULATOR_URL"))
            .args(["--usage-refresh-seconds", &REFRESH_SECONDS.to_string()])
            .arg("--azure-ca-file")
            .arg(peers().path("ACI_EMULATOR_CA"))
            .env("AZURE_AUTHORITY_HOST", peers().get("ACI_AUTHORITY_HOST"))
            .env("AZURE_TENANT_ID", "burstgate-test-tenant")
            .env("AZURE_CLIENT_ID", "burstgate-kubelet-it")
            .env("AZURE_CLIENT_SECRET", "burstgate-kubelet-it-secret")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("BURSTGATE_ARM_ENDPOINT");
    });
    let pod = running_pod(&client, &gw, &ns).await;
    let group = format!("bg-{}", pod.metadata.uid.as_deref().unwrap());
    let set = |cpu_millicores: u64, memory_bytes: u64| {
        let (subscription, group) = (subscription.clone(), group.clone());
        async move {
            emulator(
                reqwest::Method::POST,
                "usage",
                &subscription,
                Some(
                    json!({"subscriptionId": subscription, "group": group, "container": "app",
                            "cpuMillicores": cpu_millicores, "memoryBytes": memory_bytes}),
                ),
            )
            .await
        }
    };
    set(250, 50 << 20).await;
    let summary_path = format!("/api/v1/nodes/{}/proxy/stats/summary", gw.node);
    let resource_path = format!("/api/v1/nodes/{}/proxy/metrics/resource", gw.node);
    let raw = |path: &str| {
        let (code, out, err) = kubectl(&ns, &["get", "--raw", path]);
        assert_eq!(code, 0, "kubectl get --raw {path}: {err}");
        out
    };
    let web = |summary: &serde_json::Value| {
        summary["pods"]
            .as_array()
            .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == "web").cloned())
    };

    // The summary through the apiserver: the container's, the pod's and the node's usage are
    // what the emulator was told, stamped with Azure Monitor's sample time.
    let first = Instant::now();
    let summary: serde_json::Value = serde_json::from_str(&raw(&summary_path)).unwrap();
    let pod_summary = web(&summary).expect("the pod is in the summary");
    let app = &pod_summary["containers"][0];
    assert_eq!(app["name"], "app", "{summary}");
    assert_eq!(app["cpu"]["usageNanoCores"], 250_000_000u64, "{summary}");
    assert_eq!(app["memory"]["workingSetBytes"], 50u64 << 20, "{summary}");
    assert_eq!(pod_summary["cpu"]["usageNanoCores"], 250_000_000u64);
    assert_eq!(summary["node"]["memory"]["workingSetBytes"], 50u64 << 20);
    let stamped = chrono::DateTime::parse_from_rfc3339(app["cpu"]["time"].as_str().unwrap());
    assert!(stamped.is_ok(), "{summary}");

    // /metrics/resource (what metrics-server scrapes): the same figures with timestamps.
    let text = raw(&resource_path);
    let labels = format!("{{container=\"app\",namespace=\"{ns}\",pod=\"web\"}}");
    let memory = sample(
        &text,
        &format!("container_memory_working_set_bytes{labels}"),
    );
    assert_eq!(memory.map(|m| m.0), Some((50u64 << 20) as f64), "{text}");
    let (cpu_before, at_before) =
        sample(&text, &format!("container_cpu_usage_seconds_total{labels}")).expect("cpu");
    assert!(cpu_before > 0.0, "{text}");
    assert!(text.contains("\nscrape_error 0\n"), "{text}");
    assert!(text.contains("\nnode_memory_working_set_bytes "), "{text}");

    // A new figure shows once the sample's freshness has passed, and the CPU counter moves on
    // at the new rate; meanwhile Azure Monitor is read at most once per refresh.
    set(500, 80 << 20).await;
    let what = "the summary showing the emulator's new usage";
    let updated = eventually_or_log(&gw, what, || async {
        let summary: serde_json::Value = serde_json::from_str(&raw(&summary_path)).ok()?;
        let pod = web(&summary)?;
        (pod["containers"][0]["cpu"]["usageNanoCores"] == 500_000_000u64).then_some(pod)
    })
    .await;
    assert_eq!(
        updated["containers"][0]["memory"]["workingSetBytes"],
        80u64 << 20
    );
    let elapsed = first.elapsed().as_secs_f64();
    let reads = metrics_reads(&subscription, &group).await;
    let bound = (elapsed / REFRESH_SECONDS as f64).floor() as usize + 1;
    println!(
        "usage: {reads} Azure Monitor reads in {elapsed:.1} s with a {REFRESH_SECONDS} s refresh (bound {bound})"
    );
    assert!(
        (2..=bound).contains(&reads),
        "{reads} metrics reads in {elapsed:.1} s"
    );
    let text = raw(&resource_path);
    let (cpu_after, at_after) =
        sample(&text, &format!("container_cpu_usage_seconds_total{labels}")).expect("cpu");
    assert!(
        cpu_after > cpu_before && at_after > at_before,
        "the counter moved from {cpu_before}@{at_before} to {cpu_after}@{at_after}"
    );

    // kubectl top reads metrics.k8s.io, which metrics-server serves from these endpoints; the
    // peers run no metrics-server, so kubectl says the Metrics API is not there.
    let (code, _, err) = kubectl(&ns, &["top", "pod", "web"]);
    assert_ne!(code, 0);
    assert!(err.contains("Metrics API not available"), "{err}");
}

/// The policy of a gateway whose only target runs shadow pods in `shadow_ns` of this cluster.
fn cluster_policy(shadow_ns: &str) -> String {
    format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: onprem
      provider: cluster
      region: local
      latencyMs: 2
      pricing: {{vcpuHour: 0.01, gibHour: 0.001}}
      quota: {{vcpu: 16, memoryGiB: 64, pods: 10}}
      cluster: {{namespace: {shadow_ns}}}
  rules:
    - name: everything
      match: {{}}
"
    )
}

/// Starts `kubectl port-forward pod/web LOCAL:80` in `ns` (`websockets`: kubectl's default,
/// SPDY tunnelled in a WebSocket; else SPDY): the child, LOCAL, and whether kubectl said it
/// listens ("Forwarding from 127.0.0.1:LOCAL -> 80") within 20 s.
fn spawn_port_forward(ns: &str, websockets: bool) -> (std::process::Child, u16, bool) {
    let local = free_port();
    let mut child = Command::new(peers().path("KUBECTL"))
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args(["-n", ns, "port-forward", "pod/web", &format!("{local}:80")])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(20))
        .is_ok_and(|l| l.contains("Forwarding from"));
    (child, local, listening)
}

/// `kubectl port-forward pod/web LOCAL:80` in `ns` over `transport` (`websockets`: kubectl's
/// default, SPDY tunnelled in a WebSocket; else SPDY): connects once to the local port, and
/// returns what kubectl printed on stderr within 20 s.
fn port_forward_once(ns: &str, websockets: bool) -> String {
    let (mut child, local, listening) = spawn_port_forward(ns, websockets);
    if listening && let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) {
        use std::io::{Read as _, Write as _};
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = conn.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let _ = conn.read(&mut [0u8; 64]);
    }
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains("error forwarding port");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen.join("\n")
}

#[tokio::test]
async fn kubectl_port_forward_reaches_an_on_cluster_pods_shadow_through_the_apiserver_both_ways() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let client = kube_admin().await;
    let ns = namespace(&client).await;
    let shadow_ns = namespace(&client).await;
    let gw = Gateway::start_with(&ns, &cluster_policy(&shadow_ns), |_| {});
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": gw.node, "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    let web = pods.create(&PostParams::default(), &web).await.unwrap();
    let shadow_name = format!("bg-{}", web.metadata.uid.as_deref().unwrap());

    // The test plays the shadow pod's node (not the peers' real one), whose kubelet address is a
    // port nothing listens on, so the apiserver's own forward to it is refused.
    let node_name = unique_name("it-portforward-node");
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": node_name},
        "spec": {"unschedulable": true, "taints": [{"key": "it.burstgate.io/no-kubelet", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let dead_port = free_port();
    nodes
        .patch_status(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": dead_port}}
            }})),
        )
        .await
        .unwrap();
    let shadows: Api<Pod> = Api::namespaced(client.clone(), &shadow_ns);
    eventually_or_log(&gw, "the shadow pod", || async {
        shadows.get_opt(&shadow_name).await.ok().flatten()
    })
    .await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": shadow_name},
                         "target": {"kind": "Node", "name": node_name}});
    shadows
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &shadow_name,
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    shadows
        .patch_status(
            &shadow_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "startTime": now,
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "",
                                        "state": {"running": {"startedAt": now}}}]}})),
        )
        .await
        .unwrap();
    eventually_or_log(&gw, "pod web Running from its shadow", || async {
        pods.get("web")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;

    // kubectl -> apiserver -> the kubelet API (SPDY, or SPDY tunnelled in a WebSocket) -> the
    // cluster adapter's pods/portforward -> apiserver -> the shadow pod's node, which refuses:
    // kubectl prints the whole chain's answer for the connection.
    for websockets in [false, true] {
        let stderr = port_forward_once(&ns, websockets);
        println!("kubectl port-forward (websockets={websockets}):\n{stderr}");
        assert!(
            stderr.contains("error forwarding port 80 to pod")
                && stderr.contains(&format!("127.0.0.1:{dead_port}")),
            "websockets={websockets}: kubectl said:\n{stderr}\ngateway log:\n{}",
            gw.log_tail()
        );
    }
    // The WebSocket channel protocol (v4.channel.k8s.io, kube-rs' and client-go's own
    // port-forward): the same chain, the same answer on the port's error channel.
    let mut forwarder = pods.portforward("web", &[80]).await.unwrap();
    let error = tokio::time::timeout(WAIT, forwarder.take_error(80).unwrap())
        .await
        .expect("an answer on the error channel");
    let error = error.unwrap_or_default();
    println!("port-forward over v4.channel.k8s.io: {error}");
    assert!(
        error.contains("error forwarding port 80 to pod")
            && error.contains(&format!("127.0.0.1:{dead_port}")),
        "{error}\ngateway log:\n{}",
        gw.log_tail()
    );
    let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
    assert_eq!(
        log.matches("kubelet API: port-forward").count(),
        3,
        "one port-forward session per way in, none refused before the upgrade:\n{}",
        gw.log_tail()
    );

    let _ = pods
        .delete("web", &DeleteParams::default().grace_period(0))
        .await;
    let _ = shadows
        .delete(&shadow_name, &DeleteParams::default().grace_period(0))
        .await;
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
}

/// A pseudo-random payload of `len` bytes (xorshift), so that a relay that drops, repeats or
/// reorders a chunk shows.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `kubectl port-forward pod/web LOCAL:80` in `ns` (`websockets`: kubectl's default, SPDY
/// tunnelled in a WebSocket; else SPDY), then `connections` connections one after the other, each
/// sending `data` to the pod's echo server while reading: what each got back, and kubectl's stderr.
fn port_forward_echo(
    ns: &str,
    websockets: bool,
    data: &[u8],
    connections: usize,
) -> (Vec<Vec<u8>>, String) {
    use std::io::{Read as _, Write as _};
    let (mut child, local, listening) = spawn_port_forward(ns, websockets);
    let mut got = Vec::new();
    for _ in 0..connections {
        if !listening {
            break;
        }
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) else {
            break;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
        let mut writer = conn.try_clone().unwrap();
        let out = data.to_vec();
        let sender = std::thread::spawn(move || writer.write_all(&out));
        let mut back = vec![0u8; data.len()];
        let mut filled = 0;
        while filled < back.len() {
            match conn.read(&mut back[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        back.truncate(filled);
        let _ = sender.join();
        got.push(back);
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (got, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `kubectl exec` in `ns` over `transport` with `input` on its stdin, which then stays open until
/// kubectl ends: exit code, stdout, stderr. Held open so a command that reads to its input's end
/// is tested too: a 1.20 cluster speaks only v4.channel.k8s.io, which cannot close stdin alone,
/// so a closed stdin reaches the command only as the connection's end, 3 s later
/// (docs/operations.md).
fn exec_holding_stdin(
    transport: Transport,
    ns: &str,
    args: &[&str],
    input: &[u8],
) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = kubectl_command(transport, ns, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut pipe = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
        std::thread::sleep(WAIT);
    });
    let out = child.wait_with_output().expect("kubectl ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl attach -i web` in `ns` over `transport`, typing `line`: whether the container's echo of
/// it (`attached: LINE`) comes back on kubectl's stdout within 30 s, and every line seen.
fn attach_and_type(transport: Transport, ns: &str, line: &str) -> (bool, Vec<String>) {
    use std::io::Write as _;
    let mut child = kubectl_command(transport, ns, &["attach", "-i", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let typed = format!("{line}\n");
    // Typed once the session runs, and stdin left open: kubectl would end the session on EOF.
    let typist = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = stdin.write_all(typed.as_bytes());
        std::thread::sleep(Duration::from_secs(30));
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("attached: {line}");
    let mut seen = Vec::new();
    let echoed = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                let done = l == want;
                seen.push(l);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(typist);
    (echoed, seen)
}

#[tokio::test]
async fn an_on_cluster_pod_on_a_real_kubelet_serves_logs_exec_attach_port_forward_and_usage_through_kubectl()
 {
    let client = kube_admin().await;
    let ns = unique_name("kubelet-real");
    crate::common::create_namespace(&client, &ns).await;
    let shadow_ns = unique_name("kubelet-shadow");
    crate::common::create_namespace(&client, &shadow_ns).await;
    // Usage is read again every 3 s (60 s by default), so that two scrapes of the real kubelet,
    // which a CPU rate needs, come within the test.
    let gw = Gateway::start_with(&ns, &cluster_policy(&shadow_ns), |command| {
        command.args(["--usage-refresh-seconds", "3"]);
    });
    let (test_node, image) = (
        peers().get("KUBE_TEST_NODE").to_string(),
        peers().get("KUBE_TEST_NODE_IMAGE"),
    );
    // The virtual pod tolerates the test node's taint; its shadow keeps that toleration (only
    // the virtual-kubelet ones go), so the scheduler puts the shadow on the real node. The
    // container echoes TCP port 80 back, and each line of its stdin to its stdout, and burns a
    // little CPU every second (a few percent of a core), so its CPU usage is never 0.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": gw.node, "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 1,
                 "tolerations": [{"key": peers().get("KUBE_TEST_NODE_TAINT"), "operator": "Exists", "effect": "NoSchedule"}],
                 "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never", "stdin": true,
                                 "command": ["sh", "-c", "echo started on $(hostname); nc -ll -p 80 -e cat & (while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1; done) & while read -r l; do echo \"attached: $l\"; done; sleep 3600"],
                                 "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]}
    }))
    .unwrap();
    let web = pods.create(&PostParams::default(), &web).await.unwrap();
    let shadow_name = format!("bg-{}", web.metadata.uid.as_deref().unwrap());
    let shadows: Api<Pod> = Api::namespaced(client.clone(), &shadow_ns);
    let shadow = eventually_or_log(&gw, "the shadow pod Running on the test node", || async {
        shadows
            .get_opt(&shadow_name)
            .await
            .ok()
            .flatten()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    assert_eq!(
        shadow.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(test_node.as_str())
    );
    let shadow_ip = shadow.status.as_ref().and_then(|s| s.pod_ip.clone());
    let running = eventually_or_log(&gw, "pod web Running from its shadow", || async {
        pods.get("web")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    assert_eq!(
        running.status.and_then(|s| s.pod_ip),
        shadow_ip,
        "the virtual pod carries the IP the real kubelet gave its shadow"
    );

    // logs: kubectl -> apiserver -> the gateway's kubelet API -> pods/log of the shadow -> the
    // real kubelet -> containerd's log file.
    let (code, out, err) = kubectl(&ns, &["logs", "web"]);
    assert!(
        code == 0 && out.contains("started on web"),
        "kubectl logs: {out}{err}\ngateway log:\n{}",
        gw.log_tail()
    );

    for transport in TRANSPORTS {
        // exec with stdin and the command's exit code, through both hops. kubectl's stdin stays
        // open until the command ends: see `exec_holding_stdin` for why.
        let (code, out, err) = exec_holding_stdin(
            transport,
            &ns,
            &[
                "exec",
                "-i",
                "web",
                "--",
                "sh",
                "-c",
                "read -r l; echo \"exec got $l\"; exit 7",
            ],
            b"a line for exec\n",
        );
        assert_eq!(
            (code, out.as_str()),
            (7, "exec got a line for exec\n"),
            "{transport:?}: {err}\ngateway log:\n{}",
            gw.log_tail()
        );
        // attach -i: a typed line reaches the container's stdin, and its echo comes back.
        let line = format!("typed over {transport:?}");
        let (echoed, seen) = attach_and_type(transport, &ns, &line);
        assert!(
            echoed,
            "{transport:?}: kubectl attach -i showed {seen:?}\ngateway log:\n{}",
            gw.log_tail()
        );
        let (_, logs, _) = kubectl(&ns, &["logs", "web"]);
        assert!(logs.contains(&format!("attached: {line}")), "{logs}");
    }

    // exec -it under a terminal (kubectl's resize reaches the real kubelet: `stty size` shows it)
    // with the shell's exit code; and kubectl cp from the pod (tar over exec's stdout), byte for
    // byte; kubectl cp into the pod, and a stdin that ends before the command.
    let expected: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let (code, _, err) = kubectl(
        &ns,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done > /tmp/big.txt",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for transport in TRANSPORTS {
        let (code, screen) = kubectl_in_terminal(
            transport,
            &ns,
            &["exec", "-it", "web", "--", "sh"],
            "stty size\rexit 5\r",
            (100, 30),
        );
        assert!(
            code == 5 && screen.contains("30 100"),
            "{transport:?}: exit {code}, the terminal showed {screen:?}\ngateway log:\n{}",
            gw.log_tail()
        );
        let dir = tempfile::tempdir().unwrap();
        let back = dir.path().join("big.txt");
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &["cp", "web:/tmp/big.txt", back.to_str().unwrap()],
            None,
        );
        assert_eq!(code, 0, "{transport:?}: kubectl cp from the pod: {err}");
        let copied = std::fs::read_to_string(&back).unwrap_or_default();
        assert!(
            copied == expected,
            "{transport:?}: {} of {} bytes copied{}",
            copied.len(),
            expected.len(),
            if copied.len() == expected.len() {
                ", different"
            } else {
                ""
            }
        );

        // Into the pod (tar over exec's stdin): the 1.20 cluster cannot close stdin alone
        // (v4.channel), so the gateway holds the end of stdin a grace for tar to finish instead
        // of cutting the connection (which lost 50-170 KiB of 576 KiB before).
        let into = dir.path().join("into.txt");
        let sent = expected.repeat(3);
        std::fs::write(&into, &sent).unwrap();
        let (code, _, err) = kubectl_via(
            transport,
            &ns,
            &[
                "cp",
                into.to_str().unwrap(),
                &format!("web:/tmp/into-{transport:?}.txt"),
            ],
            None,
        );
        assert_eq!(code, 0, "{transport:?}: kubectl cp into the pod: {err}");
        let (code, out, err) = kubectl_via(
            transport,
            &ns,
            &[
                "exec",
                "web",
                "--",
                "cat",
                &format!("/tmp/into-{transport:?}.txt"),
            ],
            None,
        );
        assert!(
            code == 0 && out == sent,
            "{transport:?}: {} of {} bytes arrived in the pod (exit {code}): {err}",
            out.len(),
            sent.len()
        );
        // A stdin that ends before the command does: its exit code still comes back.
        let (code, out, err) = kubectl_via(
            transport,
            &ns,
            &[
                "exec",
                "-i",
                "web",
                "--",
                "sh",
                "-c",
                "read l; sleep 1; echo got $l; exit 7",
            ],
            Some(b"hi\n"),
        );
        assert_eq!(
            (code, out.trim()),
            (7, "got hi"),
            "{transport:?}: stdin closed before the command ended: {err}"
        );
    }

    // port-forward: 256 KiB each way per connection, two connections per kubectl session, over
    // SPDY and over SPDY tunnelled in a WebSocket; every byte comes back, in order.
    let data = payload(256 * 1024);
    for websockets in [false, true] {
        let started = Instant::now();
        let (got, stderr) = port_forward_echo(&ns, websockets, &data, 2);
        println!(
            "port-forward (websockets={websockets}): 2 x {} KiB echoed in {:?}",
            data.len() / 1024,
            started.elapsed()
        );
        assert_eq!(got.len(), 2, "websockets={websockets}: {stderr}");
        for back in &got {
            assert!(
                back == &data,
                "websockets={websockets}: {} of {} bytes came back{}; kubectl said:\n{stderr}\ngateway log:\n{}",
                back.len(),
                data.len(),
                if back.len() == data.len() {
                    ", different"
                } else {
                    ""
                },
                gw.log_tail()
            );
        }
    }
    // The WebSocket channel protocol (v4.channel.k8s.io, kube-rs' and client-go's own).
    let mut forwarder = pods.portforward("web", &[80]).await.unwrap();
    let mut stream = forwarder.take_stream(80).unwrap();
    let small = payload(4096);
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream.write_all(&small).await.unwrap();
        let mut back = vec![0u8; small.len()];
        tokio::time::timeout(WAIT, stream.read_exact(&mut back))
            .await
            .expect("the echo within a minute")
            .unwrap();
        assert_eq!(back, small);
    }
    drop(stream);
    forwarder.abort();

    // Usage (`kubectl top`'s source): the peers serve no metrics.k8s.io, so the gateway reads the
    // shadow pod's usage from the real kubelet's /metrics/resource, as metrics-server would, with
    // its own identity (deploy/rbac grants it nodes/metrics); CPU is the rate between two scrapes.
    let raw = |path: &str| {
        let (code, out, err) = kubectl(&ns, &["get", "--raw", path]);
        assert_eq!(code, 0, "{path}: {err}");
        out
    };
    let real_labels =
        format!("{{container=\"app\",namespace=\"{shadow_ns}\",pod=\"{shadow_name}\"}}");
    let ours_labels = format!("{{container=\"app\",namespace=\"{ns}\",pod=\"web\"}}");
    let memory_series = "container_memory_working_set_bytes";
    let cpu_series = "container_cpu_usage_seconds_total";
    let real_path = format!("/api/v1/nodes/{test_node}/proxy/metrics/resource");
    let ours_path = format!("/api/v1/nodes/{}/proxy/metrics/resource", gw.node);
    // The real kubelet's figures of the container (CPU counter, working set), read before each
    // look at the gateway's and once after the last: the gateway's scrapes fall between them.
    let real = |text: &str| {
        Some((
            sample(text, &format!("{cpu_series}{real_labels}"))?,
            sample(text, &format!("{memory_series}{real_labels}"))?,
        ))
    };
    let seen = std::sync::Mutex::new(Vec::<((f64, i64), (f64, i64))>::new());
    let started = Instant::now();
    let (cpu, memory) = eventually_or_log(&gw, "web's usage from the real kubelet", || async {
        if let Some(figures) = real(&raw(&real_path)) {
            seen.lock().unwrap().push(figures);
        }
        let ours = raw(&ours_path);
        let cpu = sample(&ours, &format!("{cpu_series}{ours_labels}"))?;
        let memory = sample(&ours, &format!("{memory_series}{ours_labels}"))?;
        Some((cpu, memory))
    })
    .await;
    let mut seen = seen.into_inner().unwrap();
    seen.extend(real(&raw(&real_path)));
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    let real_memory: Vec<(f64, i64)> = seen.iter().map(|(_, m)| *m).collect();
    println!(
        "usage from the real kubelet after {:?}: the gateway's cpu counter {} s at {}, working set {} B at {}; the kubelet's counter went {} -> {} s meanwhile, its working sets: {real_memory:?}",
        started.elapsed(),
        cpu.0,
        cpu.1,
        memory.0,
        memory.1,
        first.0.0,
        last.0.0
    );
    // The gateway's counter starts at its first sample: the kubelet's counter's rise between its
    // first two scrapes (plus the rate since, if it read again). Both scrapes fall between the
    // first and the last read above, and the kubelet's counter only rises.
    assert!(
        cpu.0 > 0.0 && cpu.0 <= last.0.0 - first.0.0 + 1e-6,
        "the container burns CPU: the gateway's counter {} s is not within the kubelet's rise 0..={} s",
        cpu.0,
        last.0.0 - first.0.0
    );
    // The working set is the kubelet's own figure: the very one when the timestamps match, else
    // a sample the kubelet took between this test's first and last reads (the gateway read it
    // between two of them: its value may fall outside theirs, which moved 1.7-2.4 MB in one
    // run), of the same size as theirs.
    let (low, high) = real_memory
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), (m, _)| {
            (l.min(*m), h.max(*m))
        });
    match real_memory.iter().find(|(_, at)| *at == memory.1) {
        Some((same, _)) => assert_eq!(memory.0, *same, "the same sample"),
        None => {
            let (from, to) = (real_memory[0].1, real_memory[real_memory.len() - 1].1);
            assert!(
                (from..=to).contains(&memory.1),
                "the gateway's working set was sampled at {}, not between the kubelet's samples {from}..={to}",
                memory.1
            );
            assert!(
                (low / 2.0..=high * 2.0).contains(&memory.0),
                "the gateway's working set {} is not of the size of the kubelet's {low}..={high}",
                memory.0
            );
        }
    }
    // The summary (`kubectl top`'s other source, and the HPA's through metrics-server) carries
    // the same figures for web: a CPU rate above zero and the working set.
    let summary: serde_json::Value = serde_json::from_str(&raw(&format!(
        "/api/v1/nodes/{}/proxy/stats/summary",
        gw.node
    )))
    .unwrap();
    let pod = summary["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == "web"))
        .unwrap_or_else(|| panic!("web is in the summary: {summary}"));
    let app = &pod["containers"][0];
    println!(
        "summary: web's app uses {} nanocores and {} B",
        app["cpu"]["usageNanoCores"], app["memory"]["workingSetBytes"]
    );
    assert!(
        app["cpu"]["usageNanoCores"].as_u64().is_some_and(|n| n > 0),
        "{pod}"
    );
    // It may be a newer sample than the one above: the kubelet's figure now widens the range.
    let (low, high) = sample(&raw(&real_path), &format!("{memory_series}{real_labels}"))
        .map_or((low, high), |(m, _)| (low.min(m), high.max(m)));
    let working_set = app["memory"]["workingSetBytes"].as_f64().unwrap_or(-1.0);
    assert!(
        working_set == memory.0 || (low..=high).contains(&working_set),
        "the summary's working set {working_set} is neither the gateway's {} nor within the kubelet's {low}..={high}",
        memory.0
    );

    // Delete: the gateway deletes the shadow, the real kubelet stops it, both objects go.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually_or_log(&gw, "pod web and its shadow gone", || async {
        let gone = pods.get_opt("web").await.ok()?.is_none()
            && shadows.get_opt(&shadow_name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}
