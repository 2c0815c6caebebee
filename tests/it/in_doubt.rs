//! A create whose outcome is unknown: moto starts the task but its answer never reaches the
//! gateway, and the target then stops answering. The pod must not run anywhere else while that
//! task may live (never two copies, checked on the peers' logs: the emulator's creation log and
//! the tap in front of moto); once the target answers again, the pod runs on the task that
//! landed, one workload in all.

use std::time::Duration;

use burstgate::controller::events::EventReason;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::common::copies::{EcsTap, Lifetimes};
use crate::common::gateway::{
    Gateway, NodeCleanup, aci_faults, aks_deployment, azure_env, gateway_namespace, moto_env,
    node_ready, subscription_id,
};
use crate::common::{ecs_client, kube_admin, peers, unique_name};

#[tokio::test]
async fn a_create_whose_answer_is_lost_keeps_the_pod_on_its_target_until_it_answers_and_never_runs_it_twice()
 {
    let peers = peers();
    let client = kube_admin().await;
    let ns = gateway_namespace(&client, "doubt").await;
    let node = unique_name("vdoubt");
    let _cleanup = NodeCleanup(node.clone());
    let subscription = subscription_id();
    aci_faults(&subscription, json!({"provisioningDelaySeconds": 1})).await;
    let ecs = ecs_client();
    let cluster = unique_name("doubt");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let tap = EcsTap::start().await;

    // Fargate is cheaper, ACI the fallback.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: fargate-use1
      provider: fargate
      region: {region}
      pricing: {{vcpuHour: 0.01, gibHour: 0.001}}
      fargate: {{cluster: {cluster}, subnets: [{subnet}], securityGroups: [{sg}]}}
    - name: aci-eastus
      provider: aci
      region: eastus
      pricing: {{vcpuHour: 0.05, gibHour: 0.005}}
      aci: {{subscriptionId: {subscription}, resourceGroup: burstgate-doubt}}
  rules:
    - name: everything
      match: {{}}
",
            region = peers.get("ECS_REGION"),
            subnet = peers.get("ECS_TEST_SUBNET"),
            sg = peers.get("ECS_TEST_SG"),
        ),
    )
    .unwrap();
    let mut env = moto_env(&tap.url);
    env.extend(azure_env(peers.get("ACI_PRISM_URL")));
    let gw = Gateway::start_with_env(&node, &ns, dir.path(), "doubter", env);
    node_ready(&client, &node).await;

    // The RunTask reaches moto (the task starts) and from then on no answer comes back.
    tap.lose_answers_from("RunTask");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &aks_deployment("doubt", 1, &node))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let placed_on = |p: &Pod| p.annotations().get("burstgate.io/target").cloned();
    // The gateway gives up on Fargate (its create's outcome is unknown): either it says the pod
    // stays there in doubt, or it has moved the pod to ACI.
    let moved_or_in_doubt = gw
        .eventually(
            "the pod in doubt on Fargate (or moved)",
            Duration::from_secs(180),
            || async {
                let pod = pods.list(&ListParams::default()).await.ok()?.items.pop()?;
                if placed_on(&pod).as_deref() == Some("aci-eastus") {
                    return Some("moved to aci-eastus".to_string());
                }
                let in_doubt = events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some(EventReason::WorkloadInDoubt.as_str()));
                in_doubt.then(|| "in doubt on fargate-use1".to_string())
            },
        )
        .await;
    println!("in doubt: the pod was {moved_or_in_doubt} while Fargate's answers were lost");
    tap.answer_again();

    let pod = gw
        .eventually("the pod running", Duration::from_secs(180), || async {
            let pod = pods.list(&ListParams::default()).await.ok()?.items.pop()?;
            let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
            running.then_some(pod)
        })
        .await;
    let uid = pod.uid().unwrap();
    let mut lives = Lifetimes::default();
    lives.add_aci(&subscription).await;
    lives.add_fargate(&ecs, &cluster, &tap).await;
    println!(
        "in doubt: the pod runs on {:?}; workloads ever: {:?}",
        placed_on(&pod),
        lives.by_uid.get(&uid)
    );
    lives.assert_never_two_at_once("a create whose answer was lost");
    assert_eq!(tap.run_tasks(), 1, "one RunTask landed");
    assert_eq!(
        placed_on(&pod).as_deref(),
        Some("fargate-use1"),
        "the pod stays with the task that landed"
    );
    assert_eq!(
        lives.by_uid.get(&uid).map(Vec::len),
        Some(1),
        "one workload ever: {:?}",
        lives.by_uid.get(&uid)
    );
}
