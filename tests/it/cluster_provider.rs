//! The cluster provider against the real apiserver. No kubelet runs these shadow pods (the peers'
//! one real node takes only pods tolerating its taint, and these do not): they stay Pending
//! unless the test plays the kubelet (binds a pod to a Node object it created and patches the
//! pod's status), and the real scheduler marks pods it cannot place Unschedulable. Shadow pods
//! on a real kubelet: `tests/it/kubelet.rs`.
//! Every test uses its own shadow namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use burstgate::policy::model::ProviderKind;
use burstgate::policy::sizing::Size;
use burstgate::provider::cluster::{ClusterProvider, Settings};
use burstgate::provider::contract::{EnvValue, EnvVar, RegistryCredential, Resolved, SecretString};
use burstgate::provider::kit::ownership::{MANAGED_BY, OwnerKeys, WORKLOAD};
use burstgate::provider::layers::Layers;
use burstgate::provider::{
    ContainerState, Owner, PodRejection, Provider, ProviderError, TargetRejection, WorkloadPhase,
    WorkloadSpec, workload_id,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{create_namespace, eventually, kube_admin, unique_name};

// The shadow objects' ownership keys, as GC reads them back.
const CLUSTER_ID: &str = OwnerKeys::KUBERNETES.cluster_id;
const NODE: &str = OwnerKeys::KUBERNETES.node;
const POD_NAME: &str = OwnerKeys::KUBERNETES.pod;
const POD_UID: &str = OwnerKeys::KUBERNETES.pod_uid;

const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "it-cluster";
const VIRTUAL_NODE: &str = "burstgate-it";
const SECRET_VALUE: &str = "s3cr3t-value-only-in-the-secret";

/// One test's shadow namespace and a provider writing into it.
struct Shadow {
    admin: kube::Client,
    ns: String,
    provider: ClusterProvider,
    pods: Api<Pod>,
    secrets: Api<Secret>,
}

async fn shadow(prefix: &str) -> Shadow {
    shadow_with_grace(prefix, Duration::from_secs(3600)).await
}

async fn shadow_with_grace(prefix: &str, grace: Duration) -> Shadow {
    let admin = kube_admin().await;
    let ns = unique_name(prefix);
    create_namespace(&admin, &ns).await;
    let settings = Settings {
        target: "onprem".into(),
        namespace: ns.clone(),
    };
    let provider = ClusterProvider::new(
        settings,
        admin.clone(),
        Layers::unlimited(ProviderKind::Cluster, "onprem", "local"),
    )
    .with_unschedulable_grace(grace);
    Shadow {
        pods: Api::namespaced(admin.clone(), &ns),
        secrets: Api::namespaced(admin.clone(), &ns),
        admin,
        ns,
        provider,
    }
}

impl Shadow {
    /// Removes the namespace; pods bound to a Node without kubelet need a grace-0 delete first.
    async fn cleanup(self) {
        let _ = self
            .pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await;
        let _ = Api::<Namespace>::all(self.admin)
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }

    async fn pod(&self, id: &str) -> Option<Pod> {
        self.pods.get_opt(id).await.unwrap()
    }
}

/// A pod as the API server has it on the virtual node, with the AKS virtual-node selector and
/// tolerations, and a selector no real node has (so the real scheduler never binds it).
fn virtual_pod(uid: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": format!("web-{uid}"), "namespace": "shop", "uid": uid },
        "spec": {
            "nodeName": VIRTUAL_NODE,
            "nodeSelector": { "type": "virtual-kubelet", "it.burstgate.io/never": "true" },
            "tolerations": [{ "key": "virtual-kubelet.io/provider", "operator": "Exists" }],
            "restartPolicy": "Never",
            "containers": containers,
        }
    }))
    .unwrap()
}

fn app() -> serde_json::Value {
    json!([{ "name": "app", "image": "registry.example/app:1" }])
}

fn workload(cluster_id: &str, uid: &str, pod: Pod, resolved: Resolved) -> WorkloadSpec {
    WorkloadSpec {
        id: workload_id(uid),
        owner: Owner {
            cluster_id: cluster_id.into(),
            node: VIRTUAL_NODE.into(),
            namespace: "shop".into(),
            pod: format!("web-{uid}"),
            pod_uid: uid.into(),
        },
        target: "onprem".into(),
        region: "local".into(),
        size: Size::default(),
        pod,
        resolved: Arc::new(resolved),
    }
}

fn with_secret_env() -> Resolved {
    Resolved {
        env: BTreeMap::from([(
            "app".to_string(),
            vec![
                EnvVar {
                    name: "MODE".into(),
                    value: EnvValue::Plain("fast".into()),
                },
                EnvVar {
                    name: "DB_PASSWORD".into(),
                    value: EnvValue::Secret(SecretString::from(SECRET_VALUE)),
                },
            ],
        )]),
        registry_credentials: vec![RegistryCredential {
            server: "registry.example".into(),
            username: "bot".into(),
            password: SecretString::from("pull-token"),
        }],
        ..Default::default()
    }
}

fn uid() -> String {
    unique_name("uid")
}

/// Plays the kubelet: binds the pod to `node` and reports `status`.
async fn kubelet_reports(s: &Shadow, id: &str, node: &str, status: serde_json::Value) {
    let pod = s.pod(id).await.expect("the shadow pod exists");
    if pod
        .spec
        .as_ref()
        .and_then(|p| p.node_name.as_ref())
        .is_none()
    {
        let binding = json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": id }, "target": { "kind": "Node", "name": node } });
        s.pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                id,
                &PostParams::default(),
                &binding,
            )
            .await
            .unwrap();
    }
    s.pods
        .patch_status(
            id,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

async fn fake_node(client: &kube::Client) -> String {
    let name = unique_name("it-shadow-node");
    let node: Node = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "unschedulable": true, "taints": [{ "key": "it.burstgate.io/no-kubelet", "effect": "NoSchedule" }] }
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn a_created_shadow_pod_is_owner_labelled_unpinned_and_keeps_secret_values_in_its_owned_secret()
 {
    let s = shadow("cp-create").await;
    let uid = uid();
    let spec = workload(CLUSTER, &uid, virtual_pod(&uid, app()), with_secret_env());

    let first = s.provider.create(&spec).await.unwrap();
    assert_eq!(
        (first.id.as_str(), first.phase),
        (spec.id.as_str(), WorkloadPhase::Pending)
    );

    let pod = s.pod(&spec.id).await.expect("the shadow pod exists");
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY], "burstgate");
    assert_eq!(
        (
            labels[CLUSTER_ID].as_str(),
            labels[NODE].as_str(),
            labels[POD_UID].as_str()
        ),
        (CLUSTER, VIRTUAL_NODE, uid.as_str())
    );
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()[POD_NAME],
        format!("web-{uid}")
    );
    let pod_spec = pod.spec.clone().unwrap();
    assert_eq!(pod_spec.node_name, None, "not pinned to the virtual node");
    assert_eq!(pod_spec.node_selector.unwrap().get("type"), None);
    assert!(
        pod_spec
            .tolerations
            .iter()
            .flatten()
            .all(|t| t.key.as_deref() != Some("virtual-kubelet.io/provider"))
    );
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert_eq!(
        pod_spec.image_pull_secrets.unwrap()[0].name,
        format!("{}-registry", spec.id)
    );
    let pod_json = serde_json::to_string(&pod).unwrap();
    assert!(
        !pod_json.contains(SECRET_VALUE),
        "a secret value reached the pod spec: {pod_json}"
    );
    let env = pod_spec.containers[0].env.clone().unwrap();
    let reference = env
        .iter()
        .find(|e| e.name == "DB_PASSWORD")
        .unwrap()
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(reference.name, spec.id);

    let secret = s.secrets.get(&spec.id).await.unwrap();
    assert_eq!(
        secret.data.as_ref().unwrap()[&reference.key].0,
        SECRET_VALUE.as_bytes()
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Pod", pod.metadata.uid.as_deref().unwrap())
    );
    let registry = s
        .secrets
        .get(&format!("{}-registry", spec.id))
        .await
        .unwrap();
    assert_eq!(
        registry.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );

    // A retried create (crash after the pod, before the Secret) finds the pod and restores the Secret.
    s.secrets
        .delete(&spec.id, &DeleteParams::default())
        .await
        .unwrap();
    let second = s.provider.create(&spec).await.unwrap();
    assert_eq!(second.id, first.id);
    let pods = s
        .pods
        .list(&ListParams::default().labels(&format!("{POD_UID}={uid}")))
        .await
        .unwrap();
    assert_eq!(
        pods.items.len(),
        1,
        "a second create of the same id makes no second pod"
    );
    assert_eq!(pods.items[0].metadata.uid, pod.metadata.uid);
    assert!(
        s.secrets.get_opt(&spec.id).await.unwrap().is_some(),
        "the retried create restored the Secret"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn status_reads_a_batch_and_follows_what_the_kubelet_reports() {
    let s = shadow("cp-status").await;
    let node = fake_node(&s.admin).await;
    let two = json!([{ "name": "app", "image": "registry.example/app:1" }, { "name": "side", "image": "registry.example/side:1" }]);
    let (ua, ub) = (uid(), uid());
    let a = workload(
        CLUSTER,
        &ua,
        virtual_pod(&ua, two.clone()),
        Resolved::default(),
    );
    let b = workload(CLUSTER, &ub, virtual_pod(&ub, two), Resolved::default());
    s.provider.create(&a).await.unwrap();
    s.provider.create(&b).await.unwrap();
    let missing = workload_id(&uid());

    kubelet_reports(&s, &a.id, &node, json!({
        "phase": "Running", "podIP": "10.44.0.7", "startTime": "2026-01-01T00:00:01Z",
        "containerStatuses": [
            { "name": "app", "ready": true, "restartCount": 1, "image": "x", "imageID": "x", "state": { "running": { "startedAt": "2026-01-01T00:00:02Z" } } },
            { "name": "side", "ready": false, "restartCount": 0, "image": "x", "imageID": "x", "state": { "waiting": { "reason": "ContainerCreating" } } }
        ]
    }))
    .await;
    let ids = vec![a.id.clone(), b.id.clone(), missing.clone()];
    let got = s.provider.status(&ids).await.unwrap();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![a.id.clone(), b.id.clone()];
            v.sort();
            v
        },
        "the missing id is absent"
    );
    let running = &got[&a.id];
    assert_eq!(
        (running.phase.clone(), running.ip.as_deref()),
        (WorkloadPhase::Running, Some("10.44.0.7"))
    );
    assert_eq!(running.started_at.as_deref(), Some("2026-01-01T00:00:01Z"));
    assert_eq!(
        (
            running.containers[0].ready,
            running.containers[0].restart_count
        ),
        (true, 1)
    );
    assert_eq!(
        running.containers[0].state,
        ContainerState::Running {
            started_at: "2026-01-01T00:00:02Z".into()
        }
    );
    assert!(
        matches!(&running.containers[1].state, ContainerState::Waiting { reason, .. } if reason == "ContainerCreating")
    );
    assert_eq!(got[&b.id].phase, WorkloadPhase::Pending);

    let terminated = |code: i32| json!({ "terminated": { "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": "2026-01-01T00:00:02Z", "finishedAt": "2026-01-01T00:01:00Z" } });
    let exited = |phase: &str, code: i32| {
        json!({
            "phase": phase,
            "containerStatuses": [
                { "name": "app", "ready": false, "restartCount": 1, "image": "x", "imageID": "x", "state": terminated(code) },
                { "name": "side", "ready": false, "restartCount": 0, "image": "x", "imageID": "x", "state": terminated(0) }
            ]
        })
    };
    kubelet_reports(&s, &a.id, &node, exited("Succeeded", 0)).await;
    kubelet_reports(&s, &b.id, &node, exited("Failed", 1)).await;
    let got = s.provider.status(&ids).await.unwrap();
    assert_eq!(got[&a.id].phase, WorkloadPhase::Succeeded);
    assert!(matches!(
        got[&a.id].containers[0].state,
        ContainerState::Terminated { exit_code: 0, .. }
    ));
    assert_eq!(got[&b.id].phase, WorkloadPhase::Failed);
    assert!(
        matches!(&got[&b.id].containers[0].state, ContainerState::Terminated { exit_code: 1, reason, .. } if reason == "Error")
    );

    s.cleanup().await;
    let _ = Api::<Node>::all(kube_admin().await)
        .delete(&node, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_shadow_pod_the_cluster_cannot_schedule_turns_into_a_cluster_full_target_rejection() {
    let s = shadow_with_grace("cp-full", Duration::ZERO).await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), Resolved::default());
    s.provider.create(&spec).await.unwrap();
    // The real scheduler finds no node for it and says so on the pod.
    let ws = eventually(
        "the scheduler to mark the shadow pod Unschedulable",
        WAIT,
        || async {
            s.provider
                .status(std::slice::from_ref(&spec.id))
                .await
                .unwrap()
                .remove(&spec.id)
                .filter(|w| matches!(w.phase, WorkloadPhase::Rejected(_)))
        },
    )
    .await;
    assert!(
        ws.message.as_deref().unwrap().starts_with("cluster full:"),
        "{ws:?}"
    );
    assert!(
        matches!(
            &ws.phase,
            WorkloadPhase::Rejected(TargetRejection::Unschedulable { .. })
        ),
        "{ws:?}"
    );

    // With a grace period the same pod is still only waiting.
    let patient = ClusterProvider::new(
        Settings {
            target: "onprem".into(),
            namespace: s.ns.clone(),
        },
        s.admin.clone(),
        Layers::unlimited(ProviderKind::Cluster, "onprem", "local"),
    );
    let waiting = patient
        .status(std::slice::from_ref(&spec.id))
        .await
        .unwrap()
        .remove(&spec.id)
        .unwrap();
    assert_eq!(waiting.phase, WorkloadPhase::Pending);
    assert!(
        matches!(&waiting.containers[0].state, ContainerState::Waiting { reason, .. } if reason == "Unschedulable")
    );
    s.cleanup().await;
}

#[tokio::test]
async fn delete_removes_the_shadow_pod_and_its_secrets_and_deleting_again_is_fine() {
    let s = shadow("cp-delete").await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), with_secret_env());
    s.provider.create(&spec).await.unwrap();
    assert!(s.secrets.get_opt(&spec.id).await.unwrap().is_some());

    s.provider.delete(&spec.id).await.unwrap();
    eventually("the shadow pod to be gone", WAIT, || async {
        s.pod(&spec.id).await.is_none().then_some(())
    })
    .await;
    let left = s
        .secrets
        .list(&ListParams::default().labels(&format!("{WORKLOAD}={}", spec.id)))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "Secrets left: {:?}",
        left.items
            .iter()
            .map(|x| x.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        s.provider
            .status(std::slice::from_ref(&spec.id))
            .await
            .unwrap()
            .is_empty()
    );
    s.provider.delete(&spec.id).await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn list_owned_finds_orphans_and_leftover_secrets_and_ignores_another_cluster_id() {
    let s = shadow("cp-owned").await;
    let (mine, theirs) = (uid(), uid());
    s.provider
        .create(&workload(
            CLUSTER,
            &mine,
            virtual_pod(&mine, app()),
            Resolved::default(),
        ))
        .await
        .unwrap();
    s.provider
        .create(&workload(
            "another-cluster",
            &theirs,
            virtual_pod(&theirs, app()),
            Resolved::default(),
        ))
        .await
        .unwrap();
    // What a delete that stopped after the pod leaves behind: a Secret alone.
    let leftover = uid();
    let leftover_id = workload_id(&leftover);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": leftover_id,
            "labels": { MANAGED_BY: "burstgate", CLUSTER_ID: CLUSTER, NODE: VIRTUAL_NODE, WORKLOAD: leftover_id },
            "annotations": { CLUSTER_ID: CLUSTER, NODE: VIRTUAL_NODE, WORKLOAD: leftover_id,
                "burstgate.io/pod-namespace": "shop", POD_NAME: "gone", POD_UID: leftover }
        },
        "stringData": { "k": "v" }
    }))
    .unwrap();
    s.secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let owned = s.provider.list_owned(CLUSTER, VIRTUAL_NODE).await.unwrap();
    let mut ids: Vec<_> = owned.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    let mut want = vec![workload_id(&mine), leftover_id.clone()];
    want.sort();
    assert_eq!(ids, want, "another cluster's workload must not be listed");
    let pod_owned = owned.iter().find(|o| o.id == workload_id(&mine)).unwrap();
    assert_eq!(
        (
            pod_owned.owner.pod_uid.as_str(),
            pod_owned.owner.pod.as_str()
        ),
        (mine.as_str(), format!("web-{mine}").as_str())
    );
    assert!(pod_owned.age < Duration::from_secs(600));

    s.provider.delete(&leftover_id).await.unwrap();
    assert!(
        s.secrets.get_opt(&leftover_id).await.unwrap().is_none(),
        "GC's delete removes a leftover Secret"
    );
    assert!(
        s.provider
            .list_owned("nobody", VIRTUAL_NODE)
            .await
            .unwrap()
            .is_empty()
    );
    s.cleanup().await;
}

#[tokio::test]
async fn a_pod_the_api_server_rejects_fails_with_the_api_servers_message() {
    let s = shadow("cp-invalid").await;
    let u = uid();
    let bad = json!([{ "name": "Not_A_DNS_Label", "image": "registry.example/app:1" }]);
    let err = s
        .provider
        .create(&workload(
            CLUSTER,
            &u,
            virtual_pod(&u, bad),
            Resolved::default(),
        ))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Pod(PodRejection::Cloud { code, message }) => {
            assert_eq!(code, "Invalid");
            assert!(
                message.contains("spec.containers[0].name") && message.contains("Not_A_DNS_Label"),
                "{message}"
            );
        }
        other => panic!("expected a Pod error, got {other:?}"),
    }
    // Refused before any call: a hostPath volume.
    let mut host_path = virtual_pod(&u, app());
    host_path.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({ "name": "h", "hostPath": { "path": "/etc" } })).unwrap(),
    ]);
    let err = s
        .provider
        .create(&workload(CLUSTER, &u, host_path, Resolved::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Pod(PodRejection::Unsupported { field, .. }) if field.contains("hostPath")),
        "{err:?}"
    );
    assert!(
        s.pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    s.cleanup().await;
}

async fn quota(s: &Shadow, hard: serde_json::Value) {
    let q: ResourceQuota = serde_json::from_value(
        json!({ "metadata": { "name": "shadow" }, "spec": { "hard": hard } }),
    )
    .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(s.admin.clone(), &s.ns);
    quotas.create(&PostParams::default(), &q).await.unwrap();
    // Admission enforces a quota once the quota controller has computed its status.
    eventually(
        "the quota controller to compute the quota",
        WAIT,
        || async {
            quotas
                .get("shadow")
                .await
                .unwrap()
                .status
                .and_then(|st| st.hard)
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn an_exceeded_namespace_quota_is_a_target_rejection() {
    let s = shadow("cp-quota").await;
    quota(&s, json!({ "pods": "0" })).await;
    let u = uid();
    let err = s
        .provider
        .create(&workload(
            CLUSTER,
            &u,
            virtual_pod(&u, app()),
            with_secret_env(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Quota { message, .. }) if message.contains("exceeded quota")),
        "{err:?}"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn a_secret_the_quota_refuses_takes_its_pod_back_and_is_a_target_rejection() {
    let s = shadow("cp-secret-quota").await;
    quota(&s, json!({ "secrets": "0" })).await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), with_secret_env());
    let err = s.provider.create(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Quota { .. })),
        "{err:?}"
    );
    eventually("the shadow pod to be taken back", WAIT, || async {
        s.pod(&spec.id).await.is_none().then_some(())
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_missing_shadow_namespace_is_a_target_rejection() {
    let admin = kube_admin().await;
    let settings = Settings {
        target: "onprem".into(),
        namespace: unique_name("cp-no-such-ns"),
    };
    let provider = ClusterProvider::new(
        settings,
        admin,
        Layers::unlimited(ProviderKind::Cluster, "onprem", "local"),
    );
    let u = uid();
    let err = provider
        .create(&workload(
            CLUSTER,
            &u,
            virtual_pod(&u, app()),
            Resolved::default(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Cloud { code, .. }) if code == "NamespaceUnavailable"),
        "{err:?}"
    );
}

#[tokio::test]
async fn exec_attach_and_logs_without_a_kubelet_say_why_clearly() {
    let s = shadow("cp-exec").await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), Resolved::default());
    s.provider.create(&spec).await.unwrap();
    assert!(s.provider.capabilities().exec && s.provider.capabilities().logs);
    let err = s
        .provider
        .exec(&spec.id, "app", &["ls".to_string()])
        .await
        .unwrap_err();
    match &err {
        ProviderError::Pod(rejection) => assert!(
            rejection
                .to_string()
                .contains("does not have a host assigned"),
            "{rejection}"
        ),
        other => panic!("expected the API server's reason as a Pod error, got {other:?}"),
    }
    // An interactive exec (stdin, a terminal) goes the same way and fails the same way.
    let request = burstgate::provider::ExecRequest {
        command: vec!["sh".into()],
        stdin: true,
        tty: Some(burstgate::provider::TerminalSize::default()),
    };
    let Err(err) = s.provider.exec_session(&spec.id, "app", &request).await else {
        panic!("an interactive exec started on a pod no node runs");
    };
    assert!(
        matches!(&err, ProviderError::Pod(r) if r.to_string().contains("does not have a host assigned")),
        "{err:?}"
    );
    // attach -i goes through the cluster's pods/attach: refused the same way, by the apiserver.
    assert!(s.provider.capabilities().attach);
    let Err(err) = s.provider.attach_session(&spec.id, "app", &request).await else {
        panic!("an interactive attach started on a pod no node runs");
    };
    assert!(
        matches!(&err, ProviderError::Pod(r) if r.to_string().contains("does not have a host assigned")),
        "{err:?}"
    );
    // The peers' cluster serves no metrics.k8s.io (no metrics-server): no usage, saying why.
    let err = s
        .provider
        .usage(std::slice::from_ref(&spec.id))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotSupported { what, .. } if what.contains("no metrics.k8s.io")),
        "{err:?}"
    );
    // The API server has no log location for an unscheduled pod: nothing, and no error.
    assert_eq!(
        s.provider
            .logs(&spec.id, "app", &Default::default())
            .await
            .unwrap(),
        ""
    );
    let missing = s
        .provider
        .logs(&workload_id(&uid()), "app", &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ProviderError::Pod(PodRejection::NotFound { .. })),
        "{missing:?}"
    );
    s.cleanup().await;
}

/// Counts the calls the layers make, by API.
#[derive(Default)]
struct Calls(std::sync::Mutex<Vec<(String, String)>>);

impl Calls {
    fn of(&self, api: &str) -> usize {
        self.results(api).len()
    }

    /// The request metric's result of each call of `api`, in order.
    fn results(&self, api: &str) -> Vec<String> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter(|(a, _)| a == api)
            .map(|(_, result)| result.clone())
            .collect()
    }
}

impl burstgate::provider::layers::Observer for Calls {
    fn request(&self, _: &str, _: &str, api: &str, result: &str, _: f64) {
        self.0
            .lock()
            .unwrap()
            .push((api.to_string(), result.to_string()));
    }
    fn waited(&self, _: &str, _: &str, _: &str, _: f64) {}
    fn circuit(&self, _: &str, _: burstgate::provider::layers::CircuitState) {}
}

/// A cluster target's real layers (its published read bucket) whose circuit opens at the first
/// target-level failure, reporting every call to `calls`.
fn hair_trigger_layers(calls: Arc<Calls>) -> Layers {
    use burstgate::provider::layers;
    let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: onprem, provider: cluster, region: local, cluster: {namespace: burstgate-shadow}}\n";
    let policy = burstgate::policy::load_files(&[("p.yaml".into(), yaml.into())])
        .expect("a one-target policy");
    let settings = layers::Settings {
        retry: Default::default(),
        circuit: layers::circuit::Settings {
            failures_to_open: 1,
            ..Default::default()
        },
    };
    Layers::new(
        &policy.targets[0],
        &layers::Buckets::default(),
        settings,
        calls,
    )
    .expect("layers")
}

/// A provider of target `onprem` (shadow namespace `ns`) through `client`, behind
/// [`hair_trigger_layers`], with those layers and the calls they saw.
fn on_hair_trigger(ns: &str, client: kube::Client) -> (ClusterProvider, Layers, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let layers = hair_trigger_layers(calls.clone());
    let settings = Settings {
        target: "onprem".into(),
        namespace: ns.into(),
    };
    (
        ClusterProvider::new(settings, client, layers.clone()),
        layers,
        calls,
    )
}

/// A client (and the configuration it was built from) for a ServiceAccount `name` of `ns` that
/// holds the ClusterRole `role` there and `get` on nodes (`system:node-proxier`), but not
/// `nodes/metrics`: with deploy/'s shadow role, what a gateway looks like when its RBAC lacks
/// the usage grant.
async fn without_node_metrics(
    admin: &kube::Client,
    ns: &str,
    name: &str,
    role: &str,
) -> (kube::Client, kube::Config) {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap();
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}]);
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": subject}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("{ns}-{name}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
                "subjects": subject}))
            .unwrap(),
        )
        .await
        .unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("the apiserver issues a token");
    let kubeconfig =
        kube::config::Kubeconfig::read_from(crate::common::peers().path("KUBECONFIG_ADMIN"))
            .unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(secrecy::SecretString::from(token)),
        ..Default::default()
    };
    (kube::Client::try_from(config.clone()).unwrap(), config)
}

#[tokio::test]
async fn a_kubelet_that_refuses_the_gateway_or_is_not_trusted_leaves_usage_not_reported_naming_the_fix()
 {
    let s = shadow("cp-usage").await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), Resolved::default());
    s.provider.create(&spec).await.unwrap();
    // The shadow pod "runs" on a Node of the test's own whose address and kubelet port are the
    // real test node's: the provider scrapes the real kubelet for it.
    let node = fake_node(&s.admin).await;
    let port: i32 = crate::common::peers().get("KUBELET_PORT").parse().unwrap();
    Api::<Node>::all(s.admin.clone())
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": crate::common::peers().get("KUBE_TEST_NODE_IP")}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}
            }})),
        )
        .await
        .unwrap();
    kubelet_reports(&s, &spec.id, &node, json!({ "phase": "Running" })).await;
    let (client, config) =
        without_node_metrics(&s.admin, &s.ns, "usage-reader", "burstgate-shadow").await;
    // RBAC applies within moments: wait until the identity may list the shadow pods and read
    // the node, so that only the kubelet's answer is left to refuse.
    let (pods, nodes) = (
        Api::<Pod>::namespaced(client.clone(), &s.ns),
        Api::<Node>::all(client.clone()),
    );
    eventually("the reader's RBAC in effect", WAIT, || async {
        let listed = pods.list(&ListParams::default()).await.is_ok();
        (listed && nodes.get(&node).await.is_ok()).then_some(())
    })
    .await;
    // Real layers whose circuit one target-level failure would open: the kubelet's refusal is its
    // node's, and must not take the target out of decisions.
    let (provider, layers, calls) = on_hair_trigger(&s.ns, client);
    let provider = provider.with_kubelet_access(config, None);
    let ids = std::slice::from_ref(&spec.id);
    let err = provider.usage(ids).await.unwrap_err();
    match &err {
        ProviderError::NotSupported { what, .. } => assert!(
            what.contains("refused the gateway (403")
                && what.contains("`get` on `nodes/metrics`")
                && what.contains("not nodes/proxy"),
            "{what}"
        ),
        other => panic!("expected usage not reported with the RBAC to grant, got {other:?}"),
    }
    // One scrape of the node, counted in the request metric as the refusal it was, not as `ok`.
    assert_eq!(
        calls.results("ScrapeKubelet"),
        ["refused"],
        "{:?}",
        calls.0.lock().unwrap()
    );
    assert_eq!(
        layers.circuit_state(),
        burstgate::provider::layers::CircuitState::Closed
    );
    // Asked again within the refresh: still no figure for the pod, never a zero, and no scrape.
    let again = provider.usage(ids).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(calls.of("ScrapeKubelet"), 1);
    // An identity the kubelet would serve (admin), but a kubelet CA that did not sign its serving
    // certificate (a self-signed one of the test's own): not reported either, naming the setting
    // to fix.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(crate::common::peers().path("KUBECONFIG_ADMIN"))
            .unwrap();
    let admin_config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let distrustful = ClusterProvider::new(
        Settings {
            target: "onprem".into(),
            namespace: s.ns.clone(),
        },
        s.admin.clone(),
        Layers::unlimited(ProviderKind::Cluster, "onprem", "local"),
    );
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["another-ca".to_string()]).unwrap();
    std::fs::write(other_ca.path(), ca.cert.pem()).unwrap();
    let distrustful = distrustful.with_kubelet_access(admin_config, Some(other_ca.path().into()));
    match distrustful.usage(ids).await.unwrap_err() {
        ProviderError::NotSupported { what, .. } => assert!(
            what.contains("serves a certificate the gateway does not trust")
                && what.contains("--cluster-kubelet-ca-file"),
            "{what}"
        ),
        other => panic!("expected usage not reported naming the kubelet CA, got {other:?}"),
    }
    let _ = Api::<Node>::all(s.admin.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(s.admin.clone())
        .delete(&format!("{}-usage-reader", s.ns), &DeleteParams::default())
        .await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_cluster_that_forbids_its_pod_metrics_leaves_usage_not_reported_and_the_circuit_closed() {
    let s = shadow("cp-forbidden").await;
    let u = uid();
    let spec = workload(CLUSTER, &u, virtual_pod(&u, app()), Resolved::default());
    s.provider.create(&spec).await.unwrap();
    // `view` reads pods but not pods.metrics.k8s.io (no metrics-server aggregates into it here):
    // the apiserver authorizes before it routes, so the gateway hears 403, not 404.
    let (client, _) = without_node_metrics(&s.admin, &s.ns, "metrics-less", "view").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &s.ns);
    eventually("the reader's RBAC in effect", WAIT, || async {
        pods.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    let (provider, layers, calls) = on_hair_trigger(&s.ns, client);
    let err = provider
        .usage(std::slice::from_ref(&spec.id))
        .await
        .unwrap_err();
    match &err {
        ProviderError::NotSupported { what, .. } => assert!(
            what.contains("pods.metrics.k8s.io") && what.contains("burstgate-shadow"),
            "{what}"
        ),
        other => panic!("expected usage not reported with the RBAC to grant, got {other:?}"),
    }
    assert_eq!(calls.results("ListPodMetrics"), ["forbidden"]);
    // A refusal about usage is not the target failing: it stays in decisions.
    assert_eq!(
        layers.circuit_state(),
        burstgate::provider::layers::CircuitState::Closed
    );
}
