//! `deploy/` as operators install it (`kubectl apply -k deploy/`), checked against the real
//! apiserver and against the code: it renders the same every time, applies (server-side dry
//! run), runs `burstgate run` with flags it accepts and every policy file, wires monitoring to the
//! alert rules, and its RBAC is exactly enough: the gateway identity of the test cluster is bound
//! to deploy/rbac's roles (tests/peers/kustomize/gateway-rbac, applied by up.sh), the gateway
//! tests run under it, and `kubectl auth can-i` says yes to each call the code makes and no to
//! the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{kube_client_at, peers, run_tool};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the peers' kubectl with `args`, returning exit code and output.
fn kubectl(args: &[&str]) -> (i32, String) {
    run_tool(&peers().path("KUBECTL"), args, "")
}

/// `kubectl kustomize <dir>` (a path relative to the repository), as text.
fn kustomize_text(dir: &str) -> String {
    let path = repo().join(dir);
    let (code, out) = kubectl(&["kustomize", path.to_str().unwrap()]);
    assert_eq!(code, 0, "kubectl kustomize {dir}:\n{out}");
    out
}

/// `kubectl kustomize <dir>`, one JSON value per object.
fn kustomize(dir: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&kustomize_text(dir))
        .unwrap_or_else(|err| panic!("kubectl kustomize {dir} is not YAML: {err}"))
}

/// The object of `kind` named `name`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", ids(objects)))
}

fn ids(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{} {}",
                o["apiVersion"], o["kind"], o["metadata"]["name"]
            )
        })
        .collect()
}

fn parse_yaml(text: &str, what: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|err| panic!("{what} is not YAML: {err}"))
}

#[test]
fn kubectl_kustomize_deploy_renders_the_same_core_objects_every_time() {
    let first = kustomize_text("deploy");
    assert_eq!(
        first,
        kustomize_text("deploy"),
        "two renders of deploy/ differ"
    );
    let objects = kustomize("deploy");
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "FlowSchema",
        "Namespace",
        "PodDisruptionBudget",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(
        kinds,
        expected.iter().map(|k| k.to_string()).collect(),
        "{:?}",
        ids(&objects)
    );
    // Applies on a bare cluster: no custom resources (those live in deploy/monitoring/).
    for o in &objects {
        let group = o["apiVersion"]
            .as_str()
            .unwrap()
            .split_once('/')
            .map_or("", |(g, _)| g);
        assert!(
            [
                "",
                "apps",
                "flowcontrol.apiserver.k8s.io",
                "policy",
                "rbac.authorization.k8s.io"
            ]
            .contains(&group),
            "{} needs a CRD or API a bare cluster may lack: move it to deploy/monitoring/",
            o["kind"]
        );
    }
    // No hash suffixes: the Deployment's volume names the ConfigMap that exists.
    let deployment = object(&objects, "Deployment", "burstgate");
    let volume = &deployment["spec"]["template"]["spec"]["volumes"][0];
    object(
        &objects,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    let dashboard = object(&objects, "ConfigMap", "burstgate-grafana-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["burstgate.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/burstgate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        json, file,
        "the dashboard ConfigMap is deploy/grafana/burstgate.json"
    );
}

#[test]
fn the_policies_configmap_holds_every_policy_file_and_they_load() {
    let objects = kustomize("deploy");
    let data = object(&objects, "ConfigMap", "burstgate-policies")["data"]
        .as_object()
        .expect("data")
        .clone();
    let on_disk: BTreeMap<String, String> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let in_configmap: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        in_configmap.keys().collect::<Vec<_>>(),
        on_disk.keys().collect::<Vec<_>>(),
        "policies/Kustomization must list every policy file of policies/ (kustomize has no globs)"
    );
    assert_eq!(
        in_configmap, on_disk,
        "the ConfigMap carries the files unchanged"
    );
    let files: Vec<(String, String)> = in_configmap.into_iter().collect();
    let policy = burstgate::policy::load_files(&files)
        .unwrap_or_else(|err| panic!("the ConfigMap's policy does not load: {err}"));
    assert!(!policy.targets.is_empty());
}

#[test]
fn the_deployment_runs_burstgate_with_flags_and_environment_it_accepts() {
    let objects = kustomize("deploy");
    let deployment = object(&objects, "Deployment", "burstgate");
    assert_eq!(deployment["spec"]["replicas"], 2, "one leader, one standby");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "burstgate");
    assert!(
        pod["tolerations"].is_null(),
        "the gateway must never tolerate its own virtual node's taint"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/burstgate/burstgate:0.1.0");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    let config = burstgate::config::RunConfig::from_flags(&args[1..])
        .unwrap_or_else(|err| panic!("burstgate run rejects {args:?}: {err}"));

    // The policy directory is where the ConfigMap of policies is mounted.
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "burstgate-policies")
        .expect("a policies volume");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the policies volume mounted");
    assert_eq!(
        config.policy_dir,
        PathBuf::from(mount["mountPath"].as_str().unwrap())
    );

    // Every BURSTGATE_* variable is one `burstgate run` reads.
    let cmd = <burstgate::config::RunConfig as clap::Args>::augment_args(clap::Command::new("run"));
    let known: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    for name in env.keys().filter(|n| n.starts_with("BURSTGATE_")) {
        assert!(
            known.contains(*name),
            "{name} is not an environment variable of burstgate run (it reads {known:?})"
        );
    }
    for downward in [
        "BURSTGATE_NAMESPACE",
        "BURSTGATE_IDENTITY",
        "BURSTGATE_NODE_IP",
    ] {
        assert!(
            env[downward]["valueFrom"]["fieldRef"].is_object(),
            "{downward} comes from the downward API"
        );
    }
    // Cloud credentials only from optional Secret references, never literal values.
    for name in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        let key = &env[name]["valueFrom"]["secretKeyRef"];
        assert_eq!(key["optional"], true, "{name}: {:?}", env[name]);
        assert!(env[name]["value"].is_null());
    }

    // Ports: the container's, the Services', and what the flags listen on agree.
    let ports: BTreeMap<&str, i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let metrics_addr: std::net::SocketAddr = env["BURSTGATE_METRICS_ADDR"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ports["metrics"], i64::from(metrics_addr.port()));
    assert_eq!(
        ports["kubelet"].to_string(),
        env["BURSTGATE_KUBELET_PORT"]["value"].as_str().unwrap()
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    for (service, port) in [
        ("burstgate-metrics", "metrics"),
        ("burstgate-kubelet", "kubelet"),
    ] {
        let spec = &object(&objects, "Service", service)["spec"];
        assert_eq!(
            &spec["selector"], selector,
            "{service} selects the gateway pods"
        );
        assert_eq!(spec["ports"][0]["targetPort"], port);
        assert_eq!(spec["ports"][0]["port"].as_i64(), Some(ports[port]));
    }
    assert_eq!(
        &object(&objects, "PodDisruptionBudget", "burstgate")["spec"]["selector"]["matchLabels"],
        selector
    );
}

/// The file a volume item lands at: `mountPath/path` of the item with `key`.
fn mounted_file(container: &Value, volume: &Value, key: &str) -> PathBuf {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]));
    assert_eq!(mount["readOnly"], true, "{mount}");
    let source = volume
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "name")
        .map(|(_, v)| v)
        .unwrap();
    let item = source["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("volume {} has no item {key}", volume["name"]));
    PathBuf::from(mount["mountPath"].as_str().unwrap()).join(item["path"].as_str().unwrap())
}

#[test]
fn the_kubelet_api_serves_the_tls_secret_and_verifies_clients_with_the_cluster_ca() {
    let objects = kustomize("deploy");
    let pod = &object(&objects, "Deployment", "burstgate")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config = burstgate::config::RunConfig::from_flags(&args[1..]).unwrap();
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };

    // The serving certificate: the kubernetes.io/tls Secret's two keys, and the Secret is
    // required (no silent fallback to a self-signed certificate, no start without it).
    let tls = volume("kubelet-tls");
    assert_eq!(tls["secret"]["secretName"], "burstgate-kubelet-tls");
    assert_ne!(
        tls["secret"]["optional"], true,
        "a missing Secret must keep the pod from starting"
    );
    assert_eq!(
        config.kubelet_cert_file,
        Some(mounted_file(container, &tls, "tls.crt"))
    );
    assert_eq!(
        config.kubelet_key_file,
        Some(mounted_file(container, &tls, "tls.key"))
    );

    // Client certificates: the cluster CA from the ConfigMap every namespace has.
    let ca = volume("cluster-ca");
    assert_eq!(ca["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        config.kubelet_client_ca_file,
        Some(mounted_file(container, &ca, "ca.crt"))
    );
    assert!(!config.insecure_kubelet_api);

    // On the test cluster (set up like kubeadm), that ConfigMap is the CA that signed the API
    // server's kubelet client certificate, so the apiserver's kubectl logs/exec authenticate.
    let kubeconfig = peers().get("KUBECONFIG_ADMIN");
    let (code, published) = kubectl(&[
        "--kubeconfig",
        kubeconfig,
        "-n",
        "default",
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert_eq!(code, 0, "{published}");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &published).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca_file)
        .arg(peers().path("KUBELET_CLIENT_CERT"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "kube-root-ca.crt does not verify the apiserver's kubelet client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deploy_applies_to_the_real_apiserver_in_a_server_side_dry_run() {
    // The test apiserver is Kubernetes 1.20, before policy/v1 and flowcontrol/v1: the overlay
    // changes only the PodDisruptionBudget's and the FlowSchema's apiVersions. Prove that, then
    // dry-run the overlay.
    let mut base = kustomize("deploy");
    let overlay = kustomize("tests/peers/kustomize/deploy-k8s-1.20");
    for (kind, v1, beta) in [
        ("PodDisruptionBudget", "policy/v1", "policy/v1beta1"),
        (
            "FlowSchema",
            "flowcontrol.apiserver.k8s.io/v1",
            "flowcontrol.apiserver.k8s.io/v1beta1",
        ),
    ] {
        let o = base.iter_mut().find(|o| o["kind"] == kind).unwrap();
        assert_eq!(o["apiVersion"], v1);
        o["apiVersion"] = json!(beta);
    }
    assert_eq!(
        base, overlay,
        "the 1.20 overlay must differ from deploy/ only in those apiVersions"
    );

    let dir = repo().join("tests/peers/kustomize/deploy-k8s-1.20");
    let kubeconfig = peers().get("KUBECONFIG_ADMIN");
    let (code, out) = kubectl(&[
        "--kubeconfig",
        kubeconfig,
        "apply",
        "-k",
        dir.to_str().unwrap(),
        "--dry-run=server",
    ]);
    assert_eq!(code, 0, "kubectl apply -k deploy/ --dry-run=server:\n{out}");
    for o in &overlay {
        let kind = o["kind"].as_str().unwrap().to_lowercase();
        let name = o["metadata"]["name"].as_str().unwrap();
        let listed = out.lines().any(|l| {
            (l.starts_with(&format!("{kind}/")) || l.starts_with(&format!("{kind}.")))
                && l.contains(&format!("/{name} "))
        });
        assert!(listed, "{kind}/{name} missing from:\n{out}");
    }
    assert!(
        out.lines().all(|l| l.ends_with("(server dry run)")),
        "{out}"
    );
}

/// The API server's answer to `path` as `client`: which flow schema and priority level its fair
/// queuing put the request in (APF's `X-Kubernetes-PF-*-UID` response headers), by UID.
async fn classified(client: &kube::Client, path: &str) -> (String, String) {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    let response = client.send(request.map(Into::into)).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("{path}: no {name} in {:?}", response.headers()))
            .to_str()
            .unwrap()
            .to_owned()
    };
    (
        header("X-Kubernetes-PF-FlowSchema-UID"),
        header("X-Kubernetes-PF-PriorityLevel-UID"),
    )
}

#[tokio::test]
async fn the_gateways_leases_are_queued_at_leader_election_priority_and_its_pod_calls_are_not() {
    // deploy/flowcontrol, applied by up.sh for the test gateway identity: its heartbeats must
    // not wait behind its own pod writes in one flow of `global-default`.
    let admin = kube_client_at(&peers().path("KUBECONFIG_ADMIN")).await;
    let gateway = kube_client_at(&peers().path("KUBECONFIG_GATEWAY")).await;
    let uid = |path: String| {
        let admin = admin.clone();
        async move {
            let request = http::Request::get(path).body(Vec::new()).unwrap();
            let object: Value = admin.request(request).await.unwrap();
            object["metadata"]["uid"].as_str().unwrap().to_owned()
        }
    };
    let flowcontrol = "/apis/flowcontrol.apiserver.k8s.io/v1beta1";
    let ours = uid(format!("{flowcontrol}/flowschemas/burstgate-leases")).await;
    let leader_election = uid(format!(
        "{flowcontrol}/prioritylevelconfigurations/leader-election"
    ))
    .await;
    let global_default = uid(format!(
        "{flowcontrol}/prioritylevelconfigurations/global-default"
    ))
    .await;
    // The leader Lease in the gateway's namespace, the node heartbeat in kube-node-lease (found
    // or not, allowed or not: fair queuing classifies a request before it is authorized).
    for lease in [
        "/apis/coordination.k8s.io/v1/namespaces/burstgate/leases/burstgate-leader",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/some-node",
    ] {
        assert_eq!(
            classified(&gateway, lease).await,
            (ours.clone(), leader_election.clone()),
            "{lease}"
        );
    }
    let (_, level) = classified(&gateway, "/api/v1/namespaces/default/pods?limit=1").await;
    assert_eq!(
        level, global_default,
        "the gateway's pod calls stay in global-default"
    );
    // Only the gateway's: the same Lease read by another identity is not ours.
    let (schema, _) = classified(
        &admin,
        "/apis/coordination.k8s.io/v1/namespaces/burstgate/leases/burstgate-leader",
    )
    .await;
    assert_ne!(schema, ours);
}

#[test]
fn monitoring_scrapes_the_metrics_service_as_the_job_the_alerts_watch_and_carries_rules_yaml() {
    let core = kustomize("deploy");
    let monitoring = kustomize("deploy/monitoring");
    let kinds: BTreeSet<&str> = monitoring
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["PrometheusRule", "ServiceMonitor"]));

    let monitor = &object(&monitoring, "ServiceMonitor", "burstgate")["spec"];
    let service = object(&core, "Service", "burstgate-metrics");
    let labels = service["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the ServiceMonitor selects burstgate-metrics by {k}"
        );
    }
    let others: Vec<&Value> = core
        .iter()
        .filter(|o| o["kind"] == "Service" && o["metadata"]["name"] != "burstgate-metrics")
        .collect();
    for other in others {
        let selected = monitor["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| other["metadata"]["labels"].get(k) == Some(v));
        assert!(
            !selected,
            "the ServiceMonitor also selects {}",
            other["metadata"]["name"]
        );
    }
    assert_eq!(
        monitor["namespaceSelector"]["matchNames"][0],
        service["metadata"]["namespace"]
    );
    assert_eq!(
        monitor["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    // Prometheus-operator names the job after the Service label named by jobLabel.
    let job = &labels[monitor["jobLabel"].as_str().unwrap()];
    let rules_text = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yaml")).unwrap();
    assert!(
        rules_text.contains(&format!("up{{job={job}}}")),
        "the alerts watch job {job}"
    );

    let rule = object(&monitoring, "PrometheusRule", "burstgate");
    assert_eq!(
        rule["spec"],
        parse_yaml(&rules_text, "deploy/prometheus/rules.yaml"),
        "deploy/monitoring/prometheusrule.yaml is stale: run deploy/monitoring/sync-rules.sh"
    );
}

/// One question for `kubectl auth can-i`: verb, resource (with `--subresource=` or a name when
/// needed) and namespace (`-A` for all).
struct Ask(&'static str, &'static str, &'static str);

/// What the code calls (see deploy/rbac/roles.yaml for which code), each answered yes.
const NEEDED: &[Ask] = &[
    Ask("list", "pods", "-A"),
    Ask("watch", "pods", "-A"),
    Ask("get", "pods", "default"),
    Ask("patch", "pods", "default"),
    Ask("delete", "pods", "default"),
    Ask("patch", "pods --subresource=status", "default"),
    Ask("get", "nodes", ""),
    Ask("create", "nodes", ""),
    Ask("patch", "nodes", ""),
    Ask("patch", "nodes --subresource=status", ""),
    Ask("create", "events.events.k8s.io", "default"),
    Ask("patch", "events.events.k8s.io", "default"),
    Ask("create", "events.events.k8s.io", "kube-system"),
    Ask("create", "tokenreviews.authentication.k8s.io", ""),
    Ask("create", "subjectaccessreviews.authorization.k8s.io", ""),
    Ask("get", "secrets", "default"),
    Ask("get", "configmaps", "default"),
    Ask("create", "serviceaccounts --subresource=token", "default"),
    Ask("list", "services", "default"),
    Ask("get", "services", "default"),
    Ask("get", "leases.coordination.k8s.io", "burstgate"),
    Ask("create", "leases.coordination.k8s.io", "burstgate"),
    Ask("update", "leases.coordination.k8s.io", "burstgate"),
    Ask("create", "leases.coordination.k8s.io", "kube-node-lease"),
    Ask("patch", "leases.coordination.k8s.io", "kube-node-lease"),
    Ask("create", "pods", "burstgate-shadow"),
    Ask("get", "pods", "burstgate-shadow"),
    Ask("list", "pods", "burstgate-shadow"),
    Ask("watch", "pods", "burstgate-shadow"),
    Ask("delete", "pods", "burstgate-shadow"),
    Ask("get", "pods --subresource=log", "burstgate-shadow"),
    Ask("create", "pods --subresource=exec", "burstgate-shadow"),
    Ask("create", "pods --subresource=attach", "burstgate-shadow"),
    Ask(
        "create",
        "pods --subresource=portforward",
        "burstgate-shadow",
    ),
    // (metrics.k8s.io pods, also granted there, cannot be asked: the peers serve no metrics API.)
    // Without it, the shadow pods' usage from their nodes' kubelets (ClusterRole
    // burstgate-node-metrics).
    Ask("get", "nodes --subresource=metrics", ""),
    Ask("create", "secrets", "burstgate-shadow"),
    Ask("get", "secrets", "burstgate-shadow"),
    Ask("delete", "secrets", "burstgate-shadow"),
    // Allowed though not wished for, because RBAC cannot say otherwise (docs/deployment.md):
    // a Secret is read by name wherever a bursting pod may reference one, kube-system included,
    // and any node name can be patched (`--node-name` is configurable; no resourceNames).
    Ask("get", "secrets", "kube-system"),
    Ask("patch", "nodes/some-other-node", ""),
    // Tokens are minted for the service account of a pod on the virtual node, bound to that pod
    // (src/controller/identity.rs); RBAC cannot narrow `serviceaccounts/token` to those.
    Ask("create", "serviceaccounts --subresource=token", "burstgate"),
];

/// What the gateway must not do, each answered no.
const REFUSED: &[Ask] = &[
    Ask("*", "*", "-A"),
    Ask("list", "secrets", "-A"),
    Ask("watch", "secrets", "-A"),
    Ask("list", "secrets", "default"),
    Ask("list", "secrets", "burstgate-shadow"),
    Ask("create", "secrets", "default"),
    Ask("update", "secrets", "burstgate-shadow"),
    Ask("list", "configmaps", "-A"),
    Ask("watch", "configmaps", "default"),
    Ask("create", "pods", "default"),
    Ask("update", "pods", "default"),
    Ask("create", "pods --subresource=exec", "default"),
    Ask("create", "pods --subresource=attach", "default"),
    Ask("create", "pods --subresource=portforward", "default"),
    Ask("get", "pods --subresource=log", "default"),
    Ask("create", "pods --subresource=eviction", "default"),
    Ask("delete", "nodes", ""),
    Ask("update", "nodes", ""),
    Ask("list", "nodes", ""),
    // Usage needs nodes/metrics only; nodes/proxy would let the gateway exec into any pod.
    Ask("get", "nodes --subresource=proxy", ""),
    Ask("create", "nodes --subresource=proxy", ""),
    Ask("get", "nodes --subresource=stats", ""),
    Ask("create", "events", "default"),
    Ask("delete", "events.events.k8s.io", "default"),
    Ask("get", "leases.coordination.k8s.io", "kube-system"),
    Ask("update", "leases.coordination.k8s.io", "default"),
    Ask("delete", "leases.coordination.k8s.io", "burstgate"),
    Ask("get", "leases.coordination.k8s.io", "kube-node-lease"),
    Ask("create", "clusterrolebindings", ""),
    Ask("create", "rolebindings", "burstgate"),
    Ask("create", "clusterroles", ""),
    Ask("escalate", "clusterroles", ""),
    Ask("bind", "clusterroles", ""),
    Ask("impersonate", "users", ""),
    Ask("impersonate", "serviceaccounts", "burstgate"),
    Ask("create", "deployments.apps", "burstgate"),
    Ask("patch", "deployments.apps", "burstgate"),
    Ask("update", "configmaps", "burstgate"),
    Ask("create", "namespaces", ""),
    Ask("delete", "namespaces", ""),
    Ask(
        "create",
        "customresourcedefinitions.apiextensions.k8s.io",
        "",
    ),
    Ask(
        "create",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "",
    ),
];

/// `kubectl auth can-i` for every question with `identity` (leading kubectl arguments), as
/// `(question, allowed)`.
fn can_i(identity: &[&str], asks: &[Ask]) -> Vec<(String, bool)> {
    asks.iter()
        .map(|Ask(verb, resource, ns)| {
            let mut args: Vec<&str> = identity.to_vec();
            args.extend(["auth", "can-i", verb]);
            args.extend(resource.split(' '));
            match *ns {
                "" => {}
                "-A" => args.push("--all-namespaces"),
                ns => args.extend(["-n", ns]),
            }
            let (code, out) = kubectl(&args);
            let question = format!("{verb} {resource} {ns}");
            match (code, out.lines().next().unwrap_or("").trim()) {
                (0, "yes") => (question, true),
                (1, "no") => (question, false),
                _ => panic!("kubectl {args:?} answered {code}: {out}"),
            }
        })
        .collect()
}

/// Asserts every NEEDED question is a yes and every REFUSED one a no for `identity`.
fn assert_exactly_what_the_code_needs(who: &str, identity: &[&str]) {
    let denied: Vec<String> = can_i(identity, NEEDED)
        .into_iter()
        .filter(|(_, yes)| !yes)
        .map(|(q, _)| q)
        .collect();
    assert!(
        denied.is_empty(),
        "{who} may not do what the code calls: {denied:#?}"
    );
    let allowed: Vec<String> = can_i(identity, REFUSED)
        .into_iter()
        .filter(|(_, yes)| *yes)
        .map(|(q, _)| q)
        .collect();
    assert!(
        allowed.is_empty(),
        "{who} may do more than the code needs: {allowed:#?}"
    );
}

#[test]
fn the_test_cluster_binds_the_gateway_identity_to_exactly_deploy_rbac() {
    // up.sh applied tests/peers/kustomize/gateway-rbac; the live roles must be deploy/'s current
    // ones, or the answers below would be about stale rules.
    let kubeconfig = peers().get("KUBECONFIG_ADMIN");
    let user = peers().get("KUBE_GATEWAY_USER");
    for role in kustomize("deploy/rbac").iter().filter(|o| {
        ["ClusterRole", "ClusterRoleBinding", "RoleBinding"].contains(&o["kind"].as_str().unwrap())
    }) {
        let kind = role["kind"].as_str().unwrap();
        let name = role["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["--kubeconfig", kubeconfig, "get", kind, name, "-o", "json"];
        if let Some(ns) = role["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let (code, out) = kubectl(&args);
        assert_eq!(
            code, 0,
            "{kind} {name} is not on the test cluster (re-run tests/peers/up.sh): {out}"
        );
        let live: Value = serde_json::from_str(&out).unwrap();
        let stale = "the test cluster's RBAC differs from deploy/rbac: re-run tests/peers/up.sh";
        if kind == "ClusterRole" {
            assert_eq!(live["rules"], role["rules"], "{kind} {name}: {stale}");
        } else {
            assert_eq!(live["roleRef"], role["roleRef"], "{kind} {name}: {stale}");
            let mut expected = role["subjects"].as_array().unwrap().clone();
            expected.push(
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}),
            );
            assert_eq!(
                live["subjects"],
                Value::Array(expected),
                "{kind} {name}: {stale}"
            );
        }
    }
}

#[test]
fn the_gateway_identity_may_do_what_the_code_calls_and_nothing_more() {
    assert_exactly_what_the_code_needs(
        "the test gateway identity",
        &["--kubeconfig", peers().get("KUBECONFIG_GATEWAY")],
    );
}

#[test]
fn the_in_cluster_service_account_is_bound_the_same_way() {
    assert_exactly_what_the_code_needs(
        "ServiceAccount burstgate/burstgate",
        &[
            "--kubeconfig",
            peers().get("KUBECONFIG_ADMIN"),
            "--as=system:serviceaccount:burstgate:burstgate",
        ],
    );
}
