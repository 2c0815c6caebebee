//! `burstgate run` as operators run it (the real binary, as child processes) against the real
//! apiserver, scheduler and controller-manager, driven with kubectl: AKS virtual-node manifests,
//! Services, scale to zero, leader failover, and a bad policy edit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burstgate::controller::events::EventReason;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::gateway::{
    AciOnly, Gateway, NodeCleanup, aci_faults, aci_groups, aci_only, aks_deployment,
    endpoints_become, moto_env, node_ready, start_on_aci, subscription_id,
};
use crate::common::{
    create_namespace, eventually, grant_leader_election, kube_admin, peers, run_tool, unique_name,
};

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
      # As an operator would cap a cloud: every call waits in these buckets.
      rateLimits:
        - {operation: create, burst: 20, perSecond: 10}
        - {operation: read, burst: 50, perSecond: 25}
  rules:
    - name: everything
      match: {}
";

async fn setup(prefix: &str) -> (kube::Client, String, String, tempfile::TempDir) {
    let client = kube_admin().await;
    let ns = unique_name(prefix);
    create_namespace(&client, &ns).await;
    // The test namespace is the gateways' --namespace: bind deploy/'s leader-election role there.
    grant_leader_election(&client, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    (client, ns, unique_name("vnode"), dir)
}

fn running_ready(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && s.and_then(|s| s.pod_ip.as_deref()).is_some()
}

async fn all_running(
    pods: &Api<Pod>,
    app: &str,
    n: usize,
    node: &str,
    limit: Duration,
) -> Vec<Pod> {
    eventually(
        &format!("{n} pods of {app} Running and Ready on {node}"),
        limit,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            let ok = list.items.len() == n
                && list.items.iter().all(|p| {
                    running_ready(p)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                });
            ok.then_some(list.items)
        },
    )
    .await
}

fn kubectl(args: &[&str]) -> String {
    let kubeconfig = peers().get("KUBECONFIG_ADMIN").to_string();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
    all.extend_from_slice(args);
    let (code, out) = run_tool(&peers().path("KUBECTL"), &all, "");
    assert_eq!(code, 0, "kubectl {args:?} failed: {out}");
    out
}

/// The Events of `ns` with `reason`.
async fn events_with(
    client: &kube::Client,
    ns: &str,
    reason: EventReason,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason.as_str()))
        .collect()
}

/// The Deployment `hello` (3 AKS virtual-node pods on `node`) and a Service selecting it.
async fn hello_with_a_service(client: &kube::Client, ns: &str, node: &str) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("hello", 3, node))
        .await
        .unwrap();
    let svc = json!({"metadata": {"name": "hello"}, "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80}]}});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(svc).unwrap(),
        )
        .await
        .unwrap();
    deployments
}

#[tokio::test]
async fn an_aks_virtual_node_deployment_runs_on_the_gateway_and_its_service_gets_the_pod_ips() {
    let (client, ns, node, dir) = setup("e2e").await;
    let _cleanup = NodeCleanup(node.clone());
    let gw = Gateway::start(&node, &ns, dir.path(), "solo");
    node_ready(&client, &node).await;

    let deployments = hello_with_a_service(&client, &ns, &node).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = all_running(&pods, "hello", 3, &node, Duration::from_secs(120)).await;
    let mut ips: Vec<String> = running
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ips.sort();

    endpoints_become(&client, &ns, "hello", &ips).await;

    let get_nodes = kubectl(&["get", "node", &node, "--no-headers"]);
    assert!(
        get_nodes.contains(" Ready "),
        "kubectl get nodes: {get_nodes}"
    );
    let describe = kubectl(&[
        "describe",
        "pod",
        "-n",
        &ns,
        running[0].metadata.name.as_deref().unwrap(),
    ]);
    assert!(
        describe.contains(EventReason::Placed.as_str()) && describe.contains("placed on sim-local"),
        "kubectl describe pod:\n{describe}\n{}",
        gw.log_tail()
    );
    assert!(
        describe.contains("burstgate.io/target: sim-local")
            || describe.contains("burstgate.io/target=sim-local"),
        "{describe}"
    );

    // A real scrape of the gateway passes promtool's checks and counts the three placements.
    let scrape = gw.scrape();
    let (code, lint) = run_tool(&peers().path("PROMTOOL"), &["check", "metrics"], &scrape);
    assert_eq!(code, 0, "promtool check metrics: {lint}\n{scrape}");
    assert!(
        scrape.contains("burstgate_decisions_total{target=\"sim-local\",outcome=\"placed\"} 3"),
        "{scrape}"
    );
    assert!(scrape.contains("burstgate_leader 1"), "{scrape}");
    assert!(
        scrape.contains("burstgate_target_pods_used{target=\"sim-local\"} 3"),
        "{scrape}"
    );

    // Scale to zero: every pod goes, through the gateway's delete path.
    deployments
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(
        "all pods are gone after scaling to zero",
        Duration::from_secs(60),
        || async {
            pods.list(&ListParams::default().labels("app=hello"))
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(|_| ())
        },
    )
    .await;
    drop(gw);
}

#[tokio::test]
async fn killing_the_leader_lets_the_standby_take_over_and_finish_the_burst() {
    let (client, ns, node, dir) = setup("failover").await;
    let _cleanup = NodeCleanup(node.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let a = Gateway::start(&node, &ns, dir.path(), "replica-a");
    let holder = eventually("a leader is elected", Duration::from_secs(60), || async {
        leases
            .get("burstgate-leader")
            .await
            .ok()?
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    })
    .await;
    assert_eq!(holder, "replica-a");
    let b = Gateway::start(&node, &ns, dir.path(), "replica-b");
    node_ready(&client, &node).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("burst", 20, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the burst is under way",
        Duration::from_secs(120),
        || async {
            let l = pods
                .list(&ListParams::default().labels("app=burst"))
                .await
                .ok()?;
            (l.items.iter().filter(|p| running_ready(p)).count() >= 5).then_some(())
        },
    )
    .await;

    // A crash, not a graceful stop: the Lease is not released.
    let killed = Instant::now();
    drop(a);
    let new_holder = eventually(
        "the standby takes the Lease",
        Duration::from_secs(30),
        || async {
            leases
                .get("burstgate-leader")
                .await
                .ok()?
                .spec?
                .holder_identity
                .filter(|h| h == "replica-b")
        },
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(new_holder, "replica-b");
    assert!(
        took <= Duration::from_secs(20),
        "takeover took {took:?}, expected within one 15 s lease period (+ renew slack)"
    );
    all_running(&pods, "burst", 20, &node, Duration::from_secs(180)).await;
    let decided: Vec<String> = pods
        .list(&ListParams::default().labels("app=burst"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("burstgate.io/target").cloned())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        decided.iter().all(|t| t == "sim-local"),
        "{decided:?}\n{}",
        b.log_tail()
    );
}

/// The value of the unlabelled metric `name` in a scrape.
fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_replica_that_leads_again_starts_from_its_pod_cache_and_places_what_came_meanwhile() {
    let (client, ns, node, dir) = setup("relead").await;
    let _cleanup = NodeCleanup(node.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let gw = Gateway::start(&node, &ns, dir.path(), "solo");
    let leading = |is: f64| {
        let gw = &gw;
        async move {
            gw.eventually(
                &format!("burstgate_leader {is}"),
                Duration::from_secs(60),
                || async {
                    let scrape = gw.try_scrape()?;
                    (metric(&scrape, "burstgate_leader") == Some(is)).then_some(())
                },
            )
            .await
        }
    };
    leading(1.0).await;
    node_ready(&client, &node).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("burst", 2, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = all_running(&pods, "burst", 2, &node, Duration::from_secs(120)).await;
    let lists = |scrape: &str| metric(scrape, "burstgate_pod_cache_lists_total");
    assert_eq!(lists(&gw.scrape()), Some(1.0), "{}", gw.log_tail());

    // Someone else holds the Lease for a while: the gateway's term ends, and the pods created
    // meanwhile wait, bound to the node, for a leader.
    let hold = |holder: Option<&'static str>| {
        let leases = &leases;
        eventually(
            "the intruder's write (409s retried)",
            Duration::from_secs(10),
            move || async move {
                let mut lease = leases.get("burstgate-leader").await.ok()?;
                let spec = lease.spec.as_mut()?;
                spec.holder_identity = holder.map(str::to_owned);
                spec.lease_duration_seconds = Some(3600);
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                leases
                    .replace("burstgate-leader", &PostParams::default(), &lease)
                    .await
                    .ok()
            },
        )
    };
    hold(Some("intruder")).await;
    leading(0.0).await;
    deployments
        .patch(
            "burst",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    eventually(
        "the new pods bound to the node",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=burst"))
                .await
                .ok()?;
            let bound = list
                .items
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
                .count();
            (bound == 4).then_some(())
        },
    )
    .await;
    let placed = |p: &Pod| p.annotations().contains_key("burstgate.io/target");
    let unplaced = pods
        .list(&ListParams::default().labels("app=burst"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| !placed(p))
        .count();
    assert_eq!(unplaced, 2, "nobody placed them while nobody led");

    // The intruder lets go of the Lease: the gateway leads again, from its cache.
    hold(None).await;
    leading(1.0).await;
    let all = all_running(&pods, "burst", 4, &node, Duration::from_secs(120)).await;
    for before in &first {
        let now = all
            .iter()
            .find(|p| p.uid() == before.uid())
            .expect("the first pods are still there");
        assert_eq!(
            now.annotations(),
            before.annotations(),
            "a pod placed before is left as it was"
        );
        assert_eq!(
            now.status.as_ref().and_then(|s| s.start_time.clone()),
            before.status.as_ref().and_then(|s| s.start_time.clone())
        );
    }
    assert_eq!(
        lists(&gw.scrape()),
        Some(1.0),
        "the second term listed the node's pods again:\n{}",
        gw.log_tail()
    );
}

#[tokio::test]
async fn a_bad_policy_edit_keeps_the_last_good_policy_serving_and_warns_on_the_node() {
    let (client, ns, node, dir) = setup("badpolicy").await;
    let _cleanup = NodeCleanup(node.clone());
    let gw = Gateway::start(&node, &ns, dir.path(), "solo");
    node_ready(&client, &node).await;
    let nodes: Api<Node> = Api::all(client.clone());
    std::fs::write(dir.path().join("zz-broken.yaml"), "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - name: x\n      provider: gcp\n").unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let warning = eventually(
        "a PolicyInvalid Warning Event on the node",
        Duration::from_secs(60),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node.as_str())
                        && e.reason.as_deref() == Some("PolicyInvalid")
                })
        },
    )
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(
        note.contains("zz-broken.yaml:6") && note.contains("spec.targets[0].provider"),
        "{note}"
    );

    // The last good policy still places pods.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("after", 1, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    all_running(&pods, "after", 1, &node, Duration::from_secs(90)).await;
    let ready = nodes
        .get(&node)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{}",
        gw.log_tail()
    );
}

/// `GET path` over HTTP/1.0 (so never chunked); the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A real Prometheus server scraping one gateway every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(metrics_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: burstgate\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = Command::new(peers().path("PROMETHEUS"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The instant-query result vector of `expr`, when the query succeeds.
    fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let body = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success")
            .then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_burst() {
    let (client, ns, node, dir) = setup("dashboard").await;
    let _cleanup = NodeCleanup(node.clone());
    let with_budget = format!("{POLICY}  budgets:\n    - {{name: everyone, maxHourlyCost: 5}}\n");
    std::fs::write(dir.path().join("policy.yaml"), with_budget).unwrap();
    let gw = Gateway::start(&node, &ns, dir.path(), "solo");
    let prometheus = Prometheus::start(gw.metrics_port);
    node_ready(&client, &node).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("burst", 5, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    all_running(&pods, "burst", 5, &node, Duration::from_secs(120)).await;

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/burstgate.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(move |t| {
                (
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (title, expr) in exprs {
        eventually(
            &format!("panel {title:?} ({expr}) returns data"),
            Duration::from_secs(90),
            || async {
                prometheus
                    .query(&expr)
                    .filter(|r| !r.is_empty())
                    .map(|_| ())
            },
        )
        .await;
    }
    drop(gw);
}

/// The e2e flow with a real adapter: an AKS-style Deployment bursts to a Fargate target (ECS on
/// moto), credentials and endpoint from the standard AWS environment variables as in
/// A policy of two targets: Fargate on moto's ECS `cluster` behind `rate_limits` (a YAML flow
/// list's items), cheaper, then the simulator.
fn fargate_then_sim(cluster: &str, rate_limits: &str) -> String {
    let peers = peers();
    format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
      rateLimits: [{rate_limits}]
    - name: sim-local
      provider: sim
      region: local
      pricing: {{vcpuHour: 0.5, gibHour: 0.05}}
  rules:
    - name: everything
      match: {{}}
",
        region = peers.get("ECS_REGION"),
        subnet = peers.get("ECS_TEST_SUBNET"),
        sg = peers.get("ECS_TEST_SG"),
    )
}

/// Orphan GC lists a target no faster than a tenth of its read bucket allows: a Fargate target
/// whose reads refill at 0.5/s is listed every 40 s (a listing with no task is a ListTasks page
/// and a ListSecrets page: 2 reads at 0.05/s), while a sim
/// target beside it is listed at every pass (each second with a GC minimum age of 2 s). The
/// term's start lists each target once: GC's first pass judges the listing the ledger's restore
/// made.
#[tokio::test]
async fn orphan_gc_lists_a_target_within_a_tenth_of_its_read_bucket() {
    let (client, ns, node, dir) = setup("gcpace").await;
    let _cleanup = NodeCleanup(node.clone());
    let peers = peers();
    let cluster = unique_name("gcpace");
    crate::common::ecs_client()
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let policy = fargate_then_sim(&cluster, "{operation: read, burst: 5, perSecond: 0.5}");
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let mut env = moto_env(peers.get("ECS_ENDPOINT"));
    env.push(("BURSTGATE_GC_MIN_AGE_SECONDS", "2".into()));
    let gw = Gateway::start_with_env(&node, &ns, dir.path(), "solo", env);
    node_ready(&client, &node).await;
    let calls = |scrape: &str, operation: &str| -> f64 {
        scrape
            .lines()
            .filter(|l| {
                l.starts_with("burstgate_provider_requests_total{")
                    && l.contains(&format!("operation=\"{operation}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Passes each second: the sim target listed at each.
    let first = gw
        .eventually(
            "two GC passes over the sim target",
            Duration::from_secs(30),
            || async {
                let scrape = gw.try_scrape()?;
                (calls(&scrape, "List") >= 2.0).then_some(scrape)
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = gw.scrape();
    let sim_lists = calls(&later, "List") - calls(&first, "List");
    // The term's start lists every target once (ledger restore), and GC's first pass judges
    // that listing instead of making its own.
    let list_tasks = (calls(&first, "ListTasks"), calls(&later, "ListTasks"));
    assert!(
        sim_lists >= 5.0,
        "the sim target is listed at every pass: {sim_lists} in 8 s"
    );
    assert!(
        list_tasks == (1.0, 1.0),
        "Fargate was listed once at the term's start, for the ledger and GC's first pass, then waits 40 s: ListTasks {list_tasks:?}; gateway log:\n{}",
        gw.log_tail()
    );
    assert_eq!(
        metric(
            &later,
            "burstgate_orphan_gc_listing_interval_seconds{target=\"fargate-use1\"}"
        ),
        Some(40.0)
    );
    assert_eq!(
        metric(
            &later,
            "burstgate_orphan_gc_listing_interval_seconds{target=\"sim-local\"}"
        ),
        Some(1.0)
    );
}

/// An orphan whose delete fails is tried again at the next GC pass, not at its target's next
/// listing: a pod placed on Fargate (moto, behind the fault proxy) is force-deleted while the
/// gateway is down; the next gateway's GC lists the target every 20 s (its read bucket refills
/// 1.5/s, a listing of one task is 3 reads), judges the orphan at its second listing (moto
/// gives no task age: it ages from GC's first sighting), and the StopTask meets an outage; once
/// the outage ends, the orphan is stopped within seconds, before any further ListTasks.
#[tokio::test]
async fn an_orphan_whose_delete_failed_is_deleted_at_the_next_pass_without_listing_its_target_again()
 {
    use crate::common::fault_proxy::{FaultProxy, Mode, Operation};
    let (client, ns, node, dir) = setup("gccarry").await;
    let _cleanup = NodeCleanup(node.clone());
    let peers = peers();
    let cluster = unique_name("gccarry");
    let ecs = crate::common::ecs_client();
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let proxy = FaultProxy::start(peers.get("ECS_ENDPOINT")).await;
    let policy = fargate_then_sim(&cluster, "{operation: read, burst: 5, perSecond: 1.5}");
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let mut env = moto_env(&proxy.url);
    env.push(("BURSTGATE_GC_MIN_AGE_SECONDS", "2".into()));
    // A failed call gives up after a second of retries, so the outage fails the first delete.
    env.push(("BURSTGATE_RETRY_DEADLINE_SECONDS", "1".into()));
    let first = Gateway::start_with_env(&node, &ns, dir.path(), "solo", env.clone());
    node_ready(&client, &node).await;
    let template = aks_deployment("left", 1, &node).spec.template;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("left".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running_tasks = || async {
        ecs.list_tasks()
            .cluster(&cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .ok()
            .map(|r| r.task_arns().len())
    };
    first
        .eventually(
            "the pod placed on Fargate and its task running",
            Duration::from_secs(60),
            || async {
                let pod = pods.get("left").await.ok()?;
                let target = pod.annotations().get("burstgate.io/target")?.clone();
                (target == "fargate-use1" && running_tasks().await? == 1).then_some(())
            },
        )
        .await;

    // The gateway is down when the pod is force-deleted: its task is an orphan.
    first.kill();
    pods.delete("left", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the pod is gone", Duration::from_secs(30), || async {
        pods.get_opt("left").await.ok()?.is_none().then_some(())
    })
    .await;
    proxy.set_scoped(Mode::Outage, Some(Operation::Delete));
    let gw = Gateway::start_with_env(&node, &ns, dir.path(), "solo", env);
    gw.eventually(
        "GC tried to stop the orphan",
        Duration::from_secs(45),
        || async { (proxy.requests_of(&["StopTask"]) > 0).then_some(()) },
    )
    .await;
    // GC's listings of the cluster's tasks (a delete's lookup of its task names the workload).
    let listings = || proxy.requests_naming_no_workload(&["ListTasks"]);
    let lists = listings();
    // Passes each second carry the orphan, failing, until the outage ends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running_tasks().await, Some(1), "stopped during the outage");
    proxy.set(Mode::Pass);
    gw.eventually(
        "the orphan is stopped soon after the outage ends",
        Duration::from_secs(10),
        || async { (running_tasks().await? == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        listings(),
        lists,
        "Fargate was listed again: the orphan waited for a listing, not for the next pass"
    );
    let scrape = gw.scrape();
    assert!(
        metric(&scrape, "burstgate_orphan_gc_failures_total").is_some_and(|n| n >= 1.0),
        "the failed delete is counted"
    );
    // The task stops before the delete returns (its secrets go after it).
    gw.eventually(
        "the orphan counted as collected",
        Duration::from_secs(10),
        || async {
            let scrape = gw.try_scrape()?;
            (metric(&scrape, "burstgate_orphans_collected_total") == Some(1.0)).then_some(())
        },
    )
    .await;
}

/// production; every pod runs with its task's IP, one task per pod; deleting the Deployment
/// stops every task.
#[tokio::test]
async fn a_deployment_bursts_to_fargate_on_moto_and_deleting_it_stops_every_task() {
    let (client, ns, node, dir) = setup("fargate").await;
    let _cleanup = NodeCleanup(node.clone());
    let peers = peers();
    let ecs = crate::common::ecs_client();
    let cluster = unique_name("e2e");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let policy = format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.04048, gibHour: 0.004445, minimumSeconds: 60}}
      quota: {{vcpu: 40, pods: 20}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}],
                executionRoleArn: arn:aws:iam::123456789012:role/burstgate-task-execution}}
  rules:
    - name: everything
      match: {{}}
",
        region = peers.get("ECS_REGION"),
        subnet = peers.get("ECS_TEST_SUBNET"),
        sg = peers.get("ECS_TEST_SG"),
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let gw = Gateway::start_with_env(
        &node,
        &ns,
        dir.path(),
        "solo",
        moto_env(peers.get("ECS_ENDPOINT")),
    );
    node_ready(&client, &node).await;
    // The app reads a database password from a Secret, as its env.
    let password = format!("fargate-db-password-{}", unique_name("s"));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "stringData": {"password": password},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut deployment = serde_json::to_value(aks_deployment("burst", 3, &node)).unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    ]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // moto starts tasks RUNNING but leaves their containers' lastStatus PENDING (its documented
    // quirk), so the pods stay ContainerCreating; what moto can show is every pod with its own
    // task's ENI IP.
    let running = eventually(
        "3 pods placed on Fargate with their task's IP",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=burst"))
                .await
                .ok()?;
            let placed: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    p.annotations()
                        .get("burstgate.io/target")
                        .map(String::as_str)
                        == Some("fargate-use1")
                })
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .is_some()
                })
                .collect();
            (placed.len() == 3).then_some(placed)
        },
    )
    .await;
    // Admission gave every pod the automatic token volume, which a task cannot mount: each
    // pod's placement says it runs without it, as a Warning.
    let without: Vec<String> = events_with(&client, &ns, EventReason::PlacedWithout)
        .await
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.type_.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(without.len(), 3, "{without:#?}");
    assert!(
        without.iter().all(|e| e.starts_with("Warning ")
            && e.contains(
                "fargate-use1 runs it without: automatic service-account token kube-api-access-"
            )),
        "{without:#?}"
    );
    let tasks = || async {
        let listed = ecs
            .list_tasks()
            .cluster(&cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .unwrap();
        listed.task_arns().len()
    };
    assert_eq!(tasks().await, 3, "one task per pod");
    for p in &running {
        assert_eq!(
            p.annotations()
                .get("burstgate.io/target")
                .map(String::as_str),
            Some("fargate-use1")
        );
        let id = p.annotations()["burstgate.io/resource-id"].clone();
        let started = ecs
            .list_tasks()
            .cluster(&cluster)
            .started_by(&id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            started.task_arns().len(),
            1,
            "exactly one task started by {id}"
        );
    }
    println!(
        "fargate e2e: 3 pods placed on moto with their tasks' IPs, {} tasks",
        tasks().await
    );
    // The password reached no log line, Event, annotation or metric, and nothing of ECS at
    // moto (task definitions, tasks): only Secrets Manager holds it, which the task references.
    let moto: serde_json::Value =
        reqwest::get(format!("{}/moto-api/data.json", peers.get("ECS_ENDPOINT")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        moto["ecs"]["TaskDefinition"]
            .to_string()
            .contains("DB_PASSWORD"),
        "the task definitions name the secret env var"
    );
    gw.assert_no_leak(&client, &ns, &[&password], &[moto["ecs"].clone()], &[])
        .await;

    deployments
        .delete("burst", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(
        "every task stopped after the Deployment is deleted",
        Duration::from_secs(90),
        || async { (tasks().await == 0).then_some(()) },
    )
    .await;
}

/// Fallback under a region outage, through the project's fault proxy in front of moto: the
/// cheaper Fargate target answers 503 to everything, so every pod falls back to the next target
/// (a ProviderRejected Event names the outage), none is lost, the Fargate circuit opens, and the
/// read rate measured at the proxy never exceeds the target's bucket.
#[tokio::test]
async fn pods_fall_back_to_the_next_target_when_fargate_is_down_and_the_proxy_never_sees_more_than_the_limiter_allows()
 {
    use crate::common::fault_proxy::{FaultProxy, Mode};
    let (client, ns, node, dir) = setup("outage").await;
    let _cleanup = NodeCleanup(node.clone());
    let peers = peers();
    let proxy = FaultProxy::start(peers.get("ECS_ENDPOINT")).await;
    proxy.set(Mode::Outage);
    let policy = fargate_then_sim(
        "unreachable",
        "{operation: read, burst: 3, perSecond: 2}, {operation: create, burst: 3, perSecond: 2}",
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let gw = Gateway::start_with_env(&node, &ns, dir.path(), "solo", moto_env(&proxy.url));
    node_ready(&client, &node).await;
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &aks_deployment("burst", 6, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = tokio::time::timeout(
        Duration::from_secs(100),
        all_running(&pods, "burst", 6, &node, Duration::from_secs(90)),
    )
    .await
    .unwrap_or_else(|_| panic!("pods did not fall back; gateway log:\n{}", gw.log_tail()));
    println!(
        "outage: 6 pods Running on the fallback target {:.1}s after the Deployment was created",
        started.elapsed().as_secs_f64()
    );
    for p in &running {
        assert_eq!(
            p.annotations()
                .get("burstgate.io/target")
                .map(String::as_str),
            Some("sim-local"),
            "{}",
            p.name_any()
        );
    }
    // The outage was tried (cost order puts Fargate first) and is named to the app team.
    let rejected = events_with(&client, &ns, EventReason::ProviderRejected)
        .await
        .len();
    assert!(
        rejected >= 1,
        "a ProviderRejected Event names the Fargate outage"
    );
    assert!(proxy.requests() > 0, "the gateway did try Fargate");
    // Requests wait in the target's buckets: burst 3 + 2/s, so never more than 5 in one second.
    let reads = ["ListTasks", "DescribeTasks", "DescribeTaskDefinition"];
    let peak = proxy.max_in_window(&reads, Duration::from_secs(1));
    println!(
        "outage: {} requests at the proxy, peak {peak} reads in one second (limit 3 + 2/s)",
        proxy.requests()
    );
    assert!(
        peak <= 5,
        "{peak} reads within one second exceed the read bucket"
    );
    let metrics = gw.scrape();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("burstgate_circuit_state{")
                && l.contains("fargate-use1")
                && !l.ends_with(" 0")),
        "the Fargate circuit left closed:\n{metrics}"
    );
}

/// The first end-to-end test with the ACI adapter in place of sim: `burstgate run` with the
/// standard Azure chain (a client secret against the emulator's HTTPS token endpoint) and ARM
/// through Prism. An AKS virtual-node Deployment runs on ACI, each pod Running and Ready with
/// its container group's IP, the Service's endpoints are those IPs, and scaling to zero deletes
/// every container group.
#[tokio::test]
async fn an_aks_deployment_bursts_to_aci_its_service_gets_the_container_groups_ips_and_scaling_to_zero_deletes_them()
 {
    let AciOnly {
        client,
        ns,
        node,
        subscription,
        gw,
        guards: _guards,
    } = aci_only("aci-e2e", "burstgate-e2e").await;

    let deployments = hello_with_a_service(&client, &ns, &node).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = tokio::time::timeout(
        Duration::from_secs(120),
        all_running(&pods, "hello", 3, &node, Duration::from_secs(130)),
    )
    .await
    .unwrap_or_else(|_| panic!("pods did not run on ACI; gateway log:\n{}", gw.log_tail()));

    // Each pod carries its own container group's IP, and the group is tagged with its UID.
    let groups = aci_groups(&subscription).await;
    assert_eq!(groups.len(), 3, "one container group per pod: {groups:#?}");
    let mut ips = Vec::new();
    for p in &running {
        let uid = p.uid().unwrap();
        let group = groups
            .iter()
            .find(|g| g["tags"]["burstgate.io-pod-uid"] == uid.as_str())
            .unwrap_or_else(|| panic!("no container group tagged with {uid}"));
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        assert_eq!(group["ip"].as_str(), Some(ip.as_str()), "{}", p.name_any());
        assert_eq!(group["name"].as_str(), Some(format!("bg-{uid}").as_str()));
        assert_eq!(
            p.annotations()
                .get("burstgate.io/target")
                .map(String::as_str),
            Some("aci-eastus")
        );
        ips.push(ip);
    }
    ips.sort();
    endpoints_become(&client, &ns, "hello", &ips).await;
    let describe = kubectl(&["describe", "pod", "-n", &ns, &running[0].name_any()]);
    assert!(
        describe.contains("placed on aci-eastus"),
        "kubectl describe pod:\n{describe}"
    );

    deployments
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(
        "every container group deleted after scaling to zero",
        Duration::from_secs(90),
        || async {
            let left = aci_groups(&subscription).await;
            let pods_left = pods
                .list(&ListParams::default().labels("app=hello"))
                .await
                .ok()?
                .items
                .len();
            (left.is_empty() && pods_left == 0).then_some(())
        },
    )
    .await;
    println!(
        "aci e2e: 3 pods Running on ACI with their groups' IPs as the Service's endpoints; scaled to zero, 0 groups left"
    );
}

#[tokio::test]
async fn a_gpu_pod_written_for_aks_virtual_nodes_is_scheduled_and_runs_on_the_aci_gpu_target_with_its_sku()
 {
    let (client, ns, node, dir) = setup("gpu-e2e").await;
    let _cleanup = NodeCleanup(node.clone());
    let subscription = subscription_id();
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    // The cheaper target has no GPU: only the ACI GPU target can take the pod.
    let policy = format!(
        "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: sim-local
      provider: sim
      region: local
      pricing: {{vcpuHour: 0.001, gibHour: 0.0001}}
    - name: aci-gpu-eastus
      provider: aci
      region: eastus
      pricing: {{vcpuHour: 0.0405, gibHour: 0.00445}}
      quota: {{pods: 4}}
      limits: {{gpus: [V100]}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-gpu}}
  rules:
    - name: everything
      match: {{}}
"
    );
    let gw = start_on_aci(&client, &node, &ns, &dir, &policy).await;

    // The GPU pod of the AKS virtual-node GPU tutorial, not bound: the real scheduler must find
    // nvidia.com/gpu on the virtual node.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let gpu: Pod = serde_json::from_value(json!({
        "metadata": { "name": "tf-mnist", "annotations": { "burstgate.io/gpu-sku": "V100" } },
        "spec": {
            "containers": [{ "name": "mnist", "image": "mcr.microsoft.com/azuredocs/samples-tf-mnist-demo:gpu",
                             "resources": { "requests": { "cpu": "1", "memory": "4Gi" },
                                            "limits": { "nvidia.com/gpu": "1" } } }],
            "nodeSelector": { "type": "virtual-kubelet", "burstgate.io/test-node": node },
            "tolerations": [{ "key": "virtual-kubelet.io/provider", "operator": "Exists" }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &gpu).await.unwrap();
    let running = gw
        .eventually(
            "the GPU pod Running on ACI",
            Duration::from_secs(120),
            || async {
                // A job without ports: its container group gets no IP address.
                pods.get("tf-mnist").await.ok().filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
            },
        )
        .await;
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str()),
        "bound to the virtual node by the scheduler"
    );
    assert_eq!(
        running
            .annotations()
            .get("burstgate.io/target")
            .map(String::as_str),
        Some("aci-gpu-eastus")
    );
    let groups = aci_groups(&subscription).await;
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let gpu_request = &groups[0]["spec"]["properties"]["containers"][0]["properties"]["resources"]
        ["requests"]["gpu"];
    assert_eq!(gpu_request["count"], json!(1), "{gpu_request}");
    assert_eq!(gpu_request["sku"], json!("V100"), "{gpu_request}");
    pods.delete("tf-mnist", &DeleteParams::default())
        .await
        .unwrap();
    gw.eventually(
        "the container group deleted",
        Duration::from_secs(60),
        || async {
            aci_groups(&subscription)
                .await
                .iter()
                .all(|g| g["provisioningState"] == "Deleting")
                .then_some(())
        },
    )
    .await;
}
