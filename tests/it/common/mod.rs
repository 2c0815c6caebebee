//! Helpers shared by the integration tests: where the real peers are (the env file that
//! `tests/peers/up.sh` writes), clients for them, unique names, and bounded waits.
#![allow(dead_code)] // each test module uses its own subset

pub mod control_plane;
pub mod copies;
pub mod fault_proxy;
pub mod gateway;
pub mod partition;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The env file `tests/peers/up.sh` writes when it is not told otherwise.
const DEFAULT_PEERS_ENV: &str = "/var/tmp/burstgate-peers/peers.env";

/// The running peers, as `tests/peers/up.sh` described them in its env file.
#[derive(Debug)]
pub struct Peers {
    file: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Peers {
    /// The value of `key`; panics naming the key and the file when up.sh did not write it.
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "{} has no {key}: it was written by an older tests/peers/up.sh, run it again",
                self.file.display()
            )
        })
    }

    /// The value of `key` as a path that must exist.
    pub fn path(&self, key: &str) -> PathBuf {
        let path = PathBuf::from(self.get(key));
        assert!(
            path.exists(),
            "{key}={} from {} does not exist",
            path.display(),
            self.file.display()
        );
        path
    }
}

/// The peers of this test run. Panics, never skips, when there are none: a test that cannot
/// reach its peer must fail, locally and under `CI=true` alike.
pub fn peers() -> &'static Peers {
    static PEERS: OnceLock<Peers> = OnceLock::new();
    PEERS.get_or_init(|| {
        let from_env = std::env::var_os("BURSTGATE_PEERS_ENV");
        let file = from_env.clone().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_PEERS_ENV));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|err| {
            let why = if std::env::var("CI").as_deref() == Ok("true") {
                "CI=true and the peers are missing: tests/run.sh (.ci/run) must have brought them up, so tests/peers/up.sh failed or was not run"
            } else {
                "This test needs the real peers. Run the whole suite with `bash tests/run.sh`, or start the peers once with `bash tests/peers/up.sh` and then run any test, e.g. `BURSTGATE_PEERS_ENV=/var/tmp/burstgate-peers/peers.env cargo nextest run -E 'test(pod)'`; stop them with `bash tests/peers/down.sh`"
            };
            let source = if from_env.is_some() { "BURSTGATE_PEERS_ENV" } else { "the default path" };
            panic!("cannot read the peers env file {} ({source}): {err}.\n{why}", file.display())
        });
        Peers { vars: parse_env(&text), file }
    })
}

/// `KEY=VALUE` lines; blank lines and `#` comments are skipped.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// rustls needs one process-wide crypto provider; the dev build has aws-lc-rs (from the AWS
/// SDK). Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A kube client from one of up.sh's kubeconfigs (`KUBECONFIG_ADMIN`, `KUBECONFIG_GATEWAY`).
pub async fn kube_client(kubeconfig_key: &str) -> kube::Client {
    kube_client_at(&peers().path(kubeconfig_key)).await
}

/// A kube client from the kubeconfig at `path`.
pub async fn kube_client_at(path: &Path) -> kube::Client {
    kube::Client::try_from(kube_config_at(path).await).expect("building a kube client")
}

/// The client configuration of the kubeconfig at `path`.
pub async fn kube_config_at(path: &Path) -> kube::Config {
    install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap_or_else(|err| panic!("loading {}: {err}", path.display()))
}

/// The real apiserver as cluster admin (`system:masters`).
pub async fn kube_admin() -> kube::Client {
    kube_client("KUBECONFIG_ADMIN").await
}

/// The real apiserver as burstgate's least-privilege gateway identity.
pub async fn kube_gateway() -> kube::Client {
    kube_client("KUBECONFIG_GATEWAY").await
}

/// Binds deploy/'s ClusterRole `burstgate-leader-election` to the gateway identity in `ns` (as
/// deploy/ binds it to the ServiceAccount in `burstgate`), for a gateway run with
/// `--namespace ns`; returns once RBAC lets the gateway identity update Leases there.
pub async fn grant_leader_election(admin: &kube::Client, ns: &str) {
    grant_leader_election_to(admin, &kube_gateway().await, ns).await
}

/// [`grant_leader_election`] on the apiserver of `admin`, checked with `gateway`, the gateway
/// identity's client to that same apiserver.
pub async fn grant_leader_election_to(admin: &kube::Client, gateway: &kube::Client, ns: &str) {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::api::{Api, PostParams};
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "burstgate-leader-election", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "burstgate-leader-election"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": peers().get("KUBE_GATEWAY_USER")}],
    }))
    .expect("a valid RoleBinding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|err| panic!("binding burstgate-leader-election in {ns}: {err}"));
    let reviews: Api<SelfSubjectAccessReview> = Api::all(gateway.clone());
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {"resourceAttributes": {"verb": "update", "group": "coordination.k8s.io", "resource": "leases", "namespace": ns}},
    }))
    .expect("a valid SelfSubjectAccessReview");
    eventually(
        &format!("RBAC letting the gateway identity update Leases in {ns}"),
        Duration::from_secs(10),
        || async {
            let status = reviews
                .create(&PostParams::default(), &review)
                .await
                .ok()?
                .status?;
            status.allowed.then_some(())
        },
    )
    .await;
}

/// Creates namespace `ns` and returns once it is usable for pods as on a real cluster: the
/// serviceaccount controller has made `default` there (ServiceAccount admission refuses pods until
/// then) and the root-CA publisher `kube-root-ca.crt` (the projected token volume reads it).
pub async fn create_namespace(admin: &kube::Client, ns: &str) {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
    use kube::api::{Api, PostParams};
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("a Namespace");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("creating namespace {ns}: {err}"));
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    eventually(
        &format!("ServiceAccount default and ConfigMap kube-root-ca.crt in {ns}"),
        Duration::from_secs(30),
        || async {
            accounts.get_opt("default").await.ok()??;
            config_maps.get_opt("kube-root-ca.crt").await.ok()??;
            Some(())
        },
    )
    .await;
}

/// aws-sdk-ecs against moto, with up.sh's static credentials and region.
pub fn ecs_client() -> aws_sdk_ecs::Client {
    ecs_client_at(peers().get("ECS_ENDPOINT"))
}

/// The same client against `url` (a tap or proxy in front of moto).
pub fn ecs_client_at(url: &str) -> aws_sdk_ecs::Client {
    use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
    let peers = peers();
    let credentials = Credentials::new(
        peers.get("ECS_ACCESS_KEY_ID"),
        peers.get("ECS_SECRET_ACCESS_KEY"),
        None,
        None,
        "burstgate-test-peers",
    );
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(peers.get("ECS_REGION").to_owned()))
        .credentials_provider(credentials)
        .endpoint_url(url)
        // moto's threaded server sometimes answers 500 when a DescribeTasks iterates a cluster's
        // tasks while a RunTask adds one ("dictionary changed size during iteration").
        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(5))
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

/// A name no other test (nor an earlier run) uses: `prefix-<pid>-<time>`, a valid DNS label.
/// nextest runs every test in its own process, so the PID separates concurrent tests.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{prefix}-{}-{:x}",
        std::process::id(),
        nanos % 0x1_0000_0000
    )
}

/// Polls `probe` every 200 ms until it returns `Some`, panicking with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Events about the object with `uid` whose reason is `reason` (none when the list fails).
pub async fn events_of(
    events: &kube::Api<k8s_openapi::api::core::v1::Event>,
    uid: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    let Ok(list) = events.list(&Default::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.uid.as_deref() == Some(uid)
        })
        .collect()
}

/// Runs a peer's command-line tool (e.g. `PROMTOOL`) with `stdin`, returning exit code and output.
pub fn run_tool(tool: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", tool.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_env_file_parser_skips_comments_and_keeps_equals_signs_in_values() {
    let vars = parse_env("# written by up.sh\n\nA=1\nURL=http://x/?a=b\n");
    assert_eq!(vars.len(), 2);
    assert_eq!(vars["A"], "1");
    assert_eq!(vars["URL"], "http://x/?a=b");
}

/// Every (JSON pointer, needle) where a string value of `v` contains one of `needles`.
pub fn find_strings(
    v: &serde_json::Value,
    path: &str,
    needles: &[&str],
    out: &mut Vec<(String, String)>,
) {
    use serde_json::Value;
    match v {
        Value::String(s) => out.extend(
            needles
                .iter()
                .filter(|n| s.contains(**n))
                .map(|n| (path.to_string(), n.to_string())),
        ),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| find_strings(x, &format!("{path}/{i}"), needles, out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| find_strings(x, &format!("{path}/{k}"), needles, out)),
        _ => {}
    }
}

/// Which requests a [`failing_gateway`] fails: asked with each request's method and path.
pub type Fails = std::sync::Arc<dyn Fn(&http::Method, &str) -> bool + Send + Sync>;

/// The gateway identity's client, failing every request `fails` names when it is sent (an
/// error from the transport, as a connection lost would give), sending the others to the real
/// apiserver.
pub async fn failing_gateway(fails: Fails) -> kube::Client {
    let config = kube_config_at(&peers().path("KUBECONFIG_GATEWAY")).await;
    let layer = tower::layer::layer_fn(move |inner| Failing {
        inner,
        fails: fails.clone(),
    });
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build()
}

/// The service [`failing_gateway`] puts in front of the client's own.
#[derive(Clone)]
struct Failing<S> {
    inner: S,
    fails: Fails,
}

impl<S> tower::Service<http::Request<kube::client::Body>> for Failing<S>
where
    S: tower::Service<http::Request<kube::client::Body>>,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        if (self.fails)(req.method(), req.uri().path()) {
            let failure = format!("injected failure of {} {}", req.method(), req.uri().path());
            return Box::pin(futures::future::ready(Err(failure.into())));
        }
        let sent = self.inner.call(req);
        Box::pin(async move { sent.await.map_err(Into::into) })
    }
}

/// The requests a recording client sent: method and path of each, in order.
pub type Sent = std::sync::Arc<std::sync::Mutex<Vec<(http::Method, String)>>>;

/// The gateway identity's client, recording the method and path of every request it sends.
pub async fn recording_gateway() -> (kube::Client, Sent) {
    let sent = Sent::default();
    let log = sent.clone();
    let record =
        tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
            let call = (req.method().clone(), req.uri().path().to_owned());
            log.lock().unwrap().push(call);
            req
        });
    let config = kube_config_at(&peers().path("KUBECONFIG_GATEWAY")).await;
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&record)
        .build();
    (client, sent)
}
