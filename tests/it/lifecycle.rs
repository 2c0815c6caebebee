//! A pod's lifecycle as a kubelet gives it, through `burstgate run` and the real apiserver.
//!
//! Termination grace on ACI (through Prism, so every request is checked against Microsoft's
//! spec): a pod deleted with a grace period has its container group stopped
//! (`ContainerGroups_Stop`) before the group's delete, and the pod object goes away only after
//! the delete was answered (the emulator's request log).
//!
//! Kubelet-like restarts on Fargate (moto): a
//! task whose essential container exited stays stopped at ECS, so a pod with `restartPolicy:
//! Always` gets a new task for the same pod after a back-off (a `BackOff` Warning Event, the pod
//! Running in `CrashLoopBackOff` meanwhile), with `restartCount` and `lastState` on its
//! containers; a pod with `restartPolicy: Never` ends Succeeded with its one task. Never two
//! tasks of a pod alive at once: checked on the tap in front of moto (`common::copies`), through
//! which the test also stops the tasks ("the container exited": moto has no container that can
//! exit by itself, and reports exit code 0 for every container it stops).
//!
//! moto's containers never report RUNNING (its task does): "running" here is the pod's phase
//! and a container no longer backing off.
//!
//! Back-off lengths are printed (the wait from the stop to the new RunTask), never asserted: the
//! status loop reads Running Fargate pods every 10 s.

use std::time::{Duration, Instant};

use aws_sdk_ecs::types::DesiredStatus;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::copies::{EcsTap, Lifetimes, described_tasks, task_pod_uid};
use crate::common::gateway::{
    Gateway, NodeCleanup, aci_groups, aci_only, gateway_namespace, moto_env, node_ready,
};
use crate::common::{ecs_client, ecs_client_at, kube_admin, peers, unique_name};

fn burst_pod(name: &str, node: &str, restart_policy: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "app", "image": "public.ecr.aws/docker/library/busybox:1.36",
                            "command": ["sh", "-c", "sleep 3600"],
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}],
            "nodeSelector": {"type": "virtual-kubelet", "burstgate.io/test-node": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]
        }
    }))
    .unwrap()
}

/// The running tasks of pod `uid` in `cluster`.
async fn running_tasks(ecs: &aws_sdk_ecs::Client, cluster: &str, uid: &str) -> Vec<String> {
    described_tasks(ecs, cluster, DesiredStatus::Running)
        .await
        .iter()
        .filter(|t| task_pod_uid(t) == Some(uid) && t.last_status() != Some("STOPPED"))
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect()
}

/// The first container status of `pod`.
fn app_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test]
async fn a_fargate_pod_whose_task_stops_gets_a_new_task_after_a_back_off_and_stays_running() {
    let peers = peers();
    let client = kube_admin().await;
    let ns = gateway_namespace(&client, "restarts").await;
    let node = unique_name("vrestart");
    let _cleanup = NodeCleanup(node.clone());
    let ecs = ecs_client();
    let cluster = unique_name("restarts");
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster on moto");
    let tap = EcsTap::start().await;
    // Through the tap, so it sees the stops the test makes.
    let stopper = ecs_client_at(&tap.url);

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
    let gw = Gateway::start_with_env(&node, &ns, dir.path(), "restarter", moto_env(&tap.url));
    node_ready(&client, &node).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for (name, policy) in [("always", "Always"), ("never", "Never")] {
        pods.create(&PostParams::default(), &burst_pod(name, &node, policy))
            .await
            .unwrap();
    }
    let running = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = pods.get(name).await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        }
    };
    let always = gw
        .eventually("pod always Running", Duration::from_secs(120), || {
            running("always")
        })
        .await;
    let never = gw
        .eventually("pod never Running", Duration::from_secs(120), || {
            running("never")
        })
        .await;
    let (always_uid, never_uid) = (always.uid().unwrap(), never.uid().unwrap());

    // The Never pod's container exits: the pod is over, with its one task.
    let never_task = running_tasks(&ecs, &cluster, &never_uid).await;
    assert_eq!(never_task.len(), 1, "{never_task:?}");
    stopper
        .stop_task()
        .cluster(&cluster)
        .task(&never_task[0])
        .reason("Essential container in task exited")
        .send()
        .await
        .unwrap();

    let mut waits = Vec::new();
    for restart in 1..=2 {
        let old = running_tasks(&ecs, &cluster, &always_uid).await;
        assert_eq!(
            old.len(),
            1,
            "one task alive before restart {restart}: {old:?}"
        );
        let stopped_at = Instant::now();
        stopper
            .stop_task()
            .cluster(&cluster)
            .task(&old[0])
            .reason("Essential container in task exited")
            .send()
            .await
            .unwrap();
        // While it waits: Running, CrashLoopBackOff, the ended run as lastState.
        let waiting = gw
            .eventually(
                "pod always in CrashLoopBackOff",
                Duration::from_secs(60),
                || async {
                    let pod = pods.get("always").await.ok()?;
                    let c = app_status(&pod)?;
                    let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone();
                    (reason.as_deref() == Some("CrashLoopBackOff")).then_some(pod)
                },
            )
            .await;
        assert_eq!(
            waiting.status.as_ref().unwrap().phase.as_deref(),
            Some("Running"),
            "the pod stays Running while its container backs off"
        );
        let c = app_status(&waiting).unwrap();
        assert_eq!(c.restart_count, restart - 1);
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("lastState terminated while backing off");
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (0, Some("Completed"))
        );
        // Then a new task for the same pod, and the container running again with its count.
        let restarted = gw
            .eventually("pod always restarted", Duration::from_secs(120), || async {
                let pod = pods.get("always").await.ok()?;
                let c = app_status(&pod)?;
                let waiting = c.state.as_ref()?.waiting.as_ref();
                let backing_off =
                    waiting.is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
                (c.restart_count == restart && !backing_off).then_some(pod)
            })
            .await;
        waits.push(stopped_at.elapsed().as_secs_f64());
        let c = app_status(&restarted).unwrap();
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(
            last.map(|t| t.exit_code),
            Some(0),
            "lastState after restart {restart}: {c:?}"
        );
        assert_eq!(
            restarted.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
        let now = running_tasks(&ecs, &cluster, &always_uid).await;
        assert_eq!(
            now.len(),
            1,
            "one task alive after restart {restart}: {now:?}"
        );
        assert_ne!(now, old, "restart {restart} is a new task");
    }
    println!(
        "restarts: from the stop to the container running again: {:?} s (back-offs 10 s, 20 s; status read every 10 s)",
        waits
            .iter()
            .map(|w| (w * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );

    let back_offs: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("BackOff"))
        .collect();
    assert!(
        !back_offs.is_empty()
            && back_offs.iter().all(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("always")
            }),
        "a BackOff Warning on the restarting pod only: {back_offs:?}"
    );
    let never = gw
        .eventually("pod never Succeeded", Duration::from_secs(60), || async {
            let pod = pods.get("never").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(pod)
        })
        .await;
    assert_eq!(app_status(&never).unwrap().restart_count, 0);

    let mut lives = Lifetimes::default();
    lives.add_fargate(&ecs, &cluster, &tap).await;
    lives.assert_never_two_at_once("a Fargate pod restarted twice");
    assert_eq!(lives.fargate_untimed, 0, "the tap saw every start and stop");
    assert_eq!(
        lives.by_uid.get(&always_uid).map(Vec::len),
        Some(3),
        "three runs of the restarting pod: {:?}",
        lives.by_uid.get(&always_uid)
    );
    assert_eq!(lives.by_uid.get(&never_uid).map(Vec::len), Some(1));

    // Deleting the pod stops its task; nothing is left running.
    pods.delete("always", &DeleteParams::default())
        .await
        .unwrap();
    gw.eventually("pod always gone", Duration::from_secs(60), || async {
        pods.get_opt("always").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(running_tasks(&ecs, &cluster, &always_uid).await.is_empty());
    let mut lives = Lifetimes::default();
    lives.add_fargate(&ecs, &cluster, &tap).await;
    lives.assert_never_two_at_once("after the delete");
}

#[tokio::test]
async fn an_aci_pod_deleted_with_a_grace_period_has_its_group_stopped_then_deleted_before_it_goes()
{
    let s = aci_only("grace", "burstgate-grace").await;
    let _guards = s.guards;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    let mut pod = burst_pod("graceful", &s.node, "Always");
    pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(5);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid =
        s.gw.eventually("pod graceful Running", Duration::from_secs(90), || async {
            let pod = pods.get("graceful").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then(|| pod.uid())?
        })
        .await;
    let group = format!("bg-{uid}");
    let started = Instant::now();
    pods.delete("graceful", &DeleteParams::default())
        .await
        .unwrap();
    s.gw.eventually("pod graceful gone", Duration::from_secs(60), || async {
        pods.get_opt("graceful").await.ok()?.is_none().then_some(())
    })
    .await;
    let gone_after = started.elapsed();
    assert!(
        !aci_groups(&s.subscription)
            .await
            .iter()
            .any(|g| g["name"].as_str() == Some(group.as_str())),
        "the group is deleted by the time the pod object is gone"
    );
    let log: serde_json::Value = reqwest::get(format!(
        "{}/_emulator/requests?subscriptionId={}",
        peers().get("ACI_EMULATOR_URL"),
        s.subscription
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let of_group: Vec<(String, String, u64)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(&group)))
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default().to_string(),
                r["path"].as_str().unwrap_or_default().to_string(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .filter(|(m, _, _)| m != "GET")
        .collect();
    let stop = of_group
        .iter()
        .position(|(m, p, status)| m == "POST" && p.ends_with("/stop") && *status == 204);
    let delete = of_group
        .iter()
        .position(|(m, _, status)| m == "DELETE" && (200..300).contains(status));
    assert!(
        matches!((stop, delete), (Some(a), Some(b)) if a < b),
        "the group is stopped (204) and then deleted: {of_group:#?}"
    );
    println!(
        "grace: an ACI pod with a 5 s grace period stopped, deleted and gone {:.1} s after its delete",
        gone_after.as_secs_f64()
    );
}
