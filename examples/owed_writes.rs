//! The writes a virtual node owes each pod it places, and nothing else: what bounds placement
//! on the apiserver's side, measured without the gateway.
//!
//! For every pod bound to `--node` (found as the gateway finds them: a LIST, then a WATCH of the
//! node's pods, held to the end), `--concurrency` pods at a time, it makes the four requests the
//! gateway makes for a placement, in the gateway's order and with bodies built by the gateway's
//! own functions: the placement annotations (a merge patch conditioned on the resourceVersion
//! read), one TokenRequest per projected service-account token, the `Placed` Event (the
//! gateway's `Recorder`), and the Running status (`status::from_workload` and `merge_patch`, of
//! pods/status). No decision, no provider, no cache of the gateway's. `scripts/scale.py`'s
//! `owed` mode runs it where the `backlog` mode runs the gateway, and prints the same record
//! (requests per pod by verb and resource, so the two are seen to do equal work);
//! docs/performance.md compares them.
//!
//! `cargo run --release --example owed_writes -- --kubeconfig FILE --node NODE`

use std::sync::Arc;
use std::time::Instant;

use burstgate::controller::recorder::{Publication, Recorder};
use burstgate::controller::{identity, placement, status};
use burstgate::provider::{ContainerState, ContainerStatus, WorkloadPhase, WorkloadStatus};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

/// The owed writes for every pod of a node.
#[derive(Parser)]
struct Args {
    /// Kubeconfig of the identity to write as (the gateway's, for its RBAC and flow schema).
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// The node whose pods are placed.
    #[arg(long)]
    node: String,
    /// Pods placed at once (the gateway's reconciles in flight).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let started = Instant::now();
    // The node's pods, as the gateway's pod cache has them: one LIST, then a WATCH to the end.
    let (store, writer) = reflector::store::<Pod>();
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = watcher::Config::default().fields(&format!("spec.nodeName={}", args.node));
    let watch = watcher(pods, selector).reflect(writer).applied_objects();
    tokio::spawn(watch.for_each(|_| async {}));
    store.wait_until_ready().await?;
    let listed = store.state();
    let recorder = Arc::new(Recorder::new(
        client.clone(),
        "burstgate",
        "owed-writes".into(),
    ));
    let placing = Instant::now();
    let failures: usize = futures::stream::iter(listed.iter().cloned())
        .map(|pod| {
            let (client, recorder) = (client.clone(), recorder.clone());
            async move { place(&client, &recorder, &pod).await }
        })
        .buffer_unordered(args.concurrency)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    let seconds = placing.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "pods": listed.len(),
            "failed": failures,
            "list_s": (placing - started).as_secs_f64(),
            "place_s": seconds,
            "pods_per_s": listed.len() as f64 / seconds,
        })
    );
    Ok(())
}

/// The four owed writes for `pod`, in the gateway's order.
async fn place(client: &kube::Client, recorder: &Recorder, pod: &Pod) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let id = format!("bg-{uid}");
    // As the gateway writes them for scale.py's pods (100m, 128Mi) under scale.py's policy.
    let annotations = json!({
        placement::TARGET: "sim-scale",
        placement::PROVIDER: "sim",
        placement::REGION: "local",
        placement::HOURLY_COST: "0.004500",
        placement::RESOURCE_ID: id,
        placement::SIZE: "100m,128Mi",
        placement::BUDGETS: "",
        placement::POLICY_HASH: "5f0c3a9d2b7e4c61",
    });
    let patch = json!({"metadata": {"annotations": annotations, "resourceVersion": pod.resource_version()}});
    let pod = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let projected = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref());
    for source in projected {
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &ns);
        accounts
            .create_token_request(
                &identity::account_of(&pod),
                &PostParams::default(),
                &identity::request_for(&pod, source),
            )
            .await?;
    }
    recorder
        .publish(Publication {
            type_: EventType::Normal,
            reason: "Placed",
            action: "Burst",
            // `explain::summary`'s words for the one-target policy scale.py gives the gateway.
            note: "placed on sim-scale (sim local, $0.0045/h) by rule everything, objective cost"
                .into(),
            regarding: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: Some(uid.clone()),
                resource_version: pod.resource_version(),
                ..Default::default()
            },
        })
        .await?;
    let now = Timestamp::now().to_string();
    let workload = WorkloadStatus {
        id,
        phase: WorkloadPhase::Running,
        ip: Some("10.244.0.1".into()),
        started_at: Some(now.clone()),
        containers: pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: ContainerState::Running {
                    started_at: now.clone(),
                },
                restart_count: 0,
                ready: true,
                last_state: None,
            })
            .collect(),
        init_containers: Vec::new(),
        events: Vec::new(),
        message: None,
    };
    let desired = status::from_workload(&pod, &workload, "127.0.0.1", &Time(Timestamp::now()));
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(status::merge_patch(&desired)),
    )
    .await?;
    Ok(())
}
