//! The Fargate adapter against moto (ECS, Secrets Manager and CloudWatch Logs on one endpoint):
//! create, idempotency, batched status, shared task definitions, secrets kept out of task
//! definitions, tags, delete, orphan listing, stopped tasks, logs, probes as health checks and
//! orphan GC of the secrets of a workload whose task stopped.
//!
//! Every request the adapter sends passes a recording HTTP client, so a test can count calls
//! (two DescribeTasks for 150 workloads) and read request bodies (no secret value in any
//! RunTask or RegisterTaskDefinition).
//!
//! The recording client also injects faults (a throttled RunTask, a RunTask whose answer is
//! lost after moto started the task), so the real `Layers` retry them against a real server.
//!
//! What moto cannot show: it reports exit code 0 for every container of a stopped task and has
//! no API to set another, so "STOPPED with a non-zero exit is Failed" is proven by the unit tests
//! of `provider::fargate::status`; here a stopped task must come back as a terminal phase with
//! ECS's reason. moto ignores RunTask's `clientToken`: "create twice = one task" here proves the
//! ListTasks `startedBy` lookup.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecs::types::{DesiredStatus, TaskDefinitionStatus, TaskField};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use burstgate::policy::model::ProviderKind;
use burstgate::policy::sizing::Size;
use burstgate::provider::contract::{EnvValue, EnvVar, Resolved, SecretString};
use burstgate::provider::fargate::{self, FargateProvider, Settings};
use burstgate::provider::kit::ownership::OwnerKeys;
use burstgate::provider::layers::{self, Buckets, CircuitState, Layers, Observer};
use burstgate::provider::{
    ContainerState, ContainerStatus, LogOptions, Owner, PodRejection, Provider, ProviderError,
    TargetRejection, WorkloadPhase, WorkloadSpec, workload_id,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, HostPathVolumeSource, Pod, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::common;

/// (API from `x-amz-target`, request body) of every request sent.
type Log = Arc<Mutex<Vec<(String, String)>>>;

/// A fault the recording client injects into the next request of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer `400 ThrottlingException` (`Retry-After: 0`) without forwarding the request.
    Throttle,
    /// Forward the request, then answer 500 instead of moto's answer (the answer was lost).
    LoseAnswer,
}

/// Faults still to inject, in order: (API, fault).
type Faults = Arc<Mutex<VecDeque<(&'static str, Fault)>>>;

#[derive(Debug, Clone)]
struct Recorder {
    inner: SharedHttpClient,
    log: Log,
    faults: Faults,
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    log: Log,
    faults: Faults,
}

fn answer(status: u16, body: &'static str) -> HttpResponse {
    let mut response =
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    response.headers_mut().insert("retry-after", "0");
    response
}

impl HttpClient for Recorder {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
            log: self.log.clone(),
            faults: self.faults.clone(),
        })
    }
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let api = target.rsplit('.').next().unwrap_or_default().to_string();
        let body = request
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let fault = {
            let mut faults = self.faults.lock().unwrap();
            match faults.front() {
                Some((a, _)) if *a == api => faults.pop_front().map(|(_, f)| f),
                _ => None,
            }
        };
        self.log.lock().unwrap().push((api, body));
        match fault {
            None => self.inner.call(request),
            Some(Fault::Throttle) => HttpConnectorFuture::ready(Ok(answer(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ))),
            Some(Fault::LoseAnswer) => {
                let inner = self.inner.clone();
                HttpConnectorFuture::new(async move {
                    inner.call(request).await?;
                    Ok(answer(
                        500,
                        r#"{"__type":"ServerException","message":"injected: the answer was lost"}"#,
                    ))
                })
            }
        }
    }
}

/// Records "api:result" of every call the layers make.
#[derive(Default)]
struct Outcomes(Mutex<Vec<String>>);

impl Observer for Outcomes {
    fn request(&self, _: &str, _: &str, api: &str, result: &str, _: f64) {
        self.0.lock().unwrap().push(format!("{api}:{result}"));
    }
    fn waited(&self, _: &str, _: &str, _: &str, _: f64) {}
    fn circuit(&self, _: &str, _: CircuitState) {}
}

/// Real layers for a Fargate target: the published buckets, retries with a short first backoff.
fn retrying_layers(outcomes: Arc<Outcomes>) -> Layers {
    let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: fargate-test, provider: fargate, region: us-east-1}\n";
    let policy = burstgate::policy::load_files(&[("p.yaml".into(), yaml.into())])
        .expect("a one-target policy");
    let settings = layers::Settings {
        retry: layers::retry::Settings {
            first_backoff: Duration::from_millis(10),
            ..Default::default()
        },
        circuit: Default::default(),
    };
    Layers::new(&policy.targets[0], &Buckets::default(), settings, outcomes).expect("layers")
}

struct Env {
    provider: FargateProvider,
    log: Log,
    faults: Faults,
    cluster: String,
    ecs: aws_sdk_ecs::Client,
    sdk: aws_types::SdkConfig,
    /// Unique per test: makes this test's pods (and so their task definition family) its own.
    run: String,
}

impl Env {
    fn calls(&self, api: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == api)
            .count()
    }

    fn bodies(&self, api: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == api)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn owner(&self, uid: &str, cluster_id: &str, node: &str) -> Owner {
        Owner {
            cluster_id: cluster_id.into(),
            node: node.into(),
            namespace: "default".into(),
            pod: format!("web-{uid}"),
            pod_uid: uid.into(),
        }
    }

    /// A one-container pod whose env carries this test's run id (plain) plus `secret` (secret).
    fn spec(&self, uid: &str, owner: Owner, secret: Option<&str>) -> WorkloadSpec {
        let mut env = vec![EnvVar {
            name: "RUN".into(),
            value: EnvValue::Plain(self.run.clone()),
        }];
        if let Some(s) = secret {
            env.push(EnvVar {
                name: "DB_PASSWORD".into(),
                value: EnvValue::Secret(SecretString::from(s.to_string())),
            });
        }
        let pod = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("nginx:1.27".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        WorkloadSpec {
            id: workload_id(uid),
            owner,
            target: "fargate-test".into(),
            region: common::peers().get("ECS_REGION").into(),
            size: Size {
                milli_cpu: 250,
                memory_mib: 512,
            },
            pod: Pod {
                spec: Some(pod),
                ..Default::default()
            },
            resolved: Arc::new(Resolved {
                env: [("app".to_string(), env)].into(),
                ..Default::default()
            }),
        }
    }
}

async fn sdk_config(log: Log, faults: Faults) -> aws_types::SdkConfig {
    let peers = common::peers();
    let credentials = aws_sdk_ecs::config::Credentials::new(
        peers.get("ECS_ACCESS_KEY_ID"),
        peers.get("ECS_SECRET_ACCESS_KEY"),
        None,
        None,
        "burstgate-test-peers",
    );
    let recorder = Recorder {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        log,
        faults,
    };
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new(
            peers.get("ECS_REGION").to_owned(),
        ))
        .credentials_provider(credentials)
        .endpoint_url(peers.get("ECS_ENDPOINT"))
        .http_client(recorder)
        .load()
        .await
}

fn settings(cluster: &str, log_group: Option<String>) -> Settings {
    let peers = common::peers();
    Settings {
        target: "fargate-test".into(),
        region: peers.get("ECS_REGION").into(),
        cluster: cluster.into(),
        subnets: vec![peers.get("ECS_TEST_SUBNET").into()],
        security_groups: vec![peers.get("ECS_TEST_SG").into()],
        assign_public_ip: false,
        spot: false,
        execution_role_arn: Some("arn:aws:iam::123456789012:role/burstgate-test-execution".into()),
        task_role_arn: None,
        log_group,
        secrets_prefix: "burstgate-test/".into(),
    }
}

/// A fresh ECS cluster and a provider on it.
async fn env(prefix: &str, log_group: Option<String>) -> Env {
    env_with(
        prefix,
        log_group,
        Layers::unlimited(ProviderKind::Fargate, "fargate-test", "us-east-1"),
    )
    .await
}

/// A fresh ECS cluster and a provider on it behind `layers`.
async fn env_with(prefix: &str, log_group: Option<String>, layers: Layers) -> Env {
    let log: Log = Arc::default();
    let faults: Faults = Arc::default();
    let sdk = sdk_config(log.clone(), faults.clone()).await;
    let cluster = common::unique_name(prefix);
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster");
    let provider = FargateProvider::new(settings(&cluster, log_group), &sdk, layers);
    log.lock().unwrap().clear();
    Env {
        provider,
        log,
        faults,
        run: cluster.clone(),
        cluster,
        ecs,
        sdk,
    }
}

#[tokio::test]
async fn a_pod_runs_as_one_tagged_task_with_an_ip_and_its_secret_only_in_secrets_manager() {
    let env = env("bg-fargate-one", None).await;
    let uid = common::unique_name("uid");
    let secret = format!("s3cr3t-{}", env.run);
    let spec = env.spec(
        &uid,
        env.owner(&uid, "cluster-a", "burstgate"),
        Some(&secret),
    );

    let first = env.provider.create(&spec).await.expect("create");
    assert_eq!(first.phase, WorkloadPhase::Running, "{first:?}");
    let ip = first
        .ip
        .clone()
        .expect("a running task has its ENI's private IP");

    // A retried create (moto ignores clientToken) finds the task by startedBy.
    let again = env.provider.create(&spec).await.expect("second create");
    assert_eq!(again.ip.as_deref(), Some(ip.as_str()));
    assert_eq!(env.calls("RunTask"), 1, "the second create started nothing");
    let started = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .send()
        .await
        .unwrap();
    assert_eq!(started.task_arns().len(), 1, "one task for the workload");

    // Ownership tags on the task.
    let task_arn = started.task_arns()[0].clone();
    let described = env
        .ecs
        .describe_tasks()
        .cluster(&env.cluster)
        .tasks(&task_arn)
        .include(TaskField::Tags)
        .send()
        .await
        .unwrap();
    let task = &described.tasks()[0];
    let tag = |k: &str| {
        task.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(
        [
            "burstgate.io/cluster-id",
            "burstgate.io/node",
            "burstgate.io/namespace",
            "burstgate.io/pod",
            "burstgate.io/pod-uid"
        ]
        .map(tag),
        [
            Some("cluster-a".into()),
            Some("burstgate".into()),
            Some("default".into()),
            Some(format!("web-{uid}")),
            Some(uid.clone())
        ]
    );
    assert_eq!(task.started_by(), Some(spec.id.as_str()));

    // The secret is in Secrets Manager, referenced by the task definition, never in its env.
    let definition = env
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    let container = &definition
        .task_definition()
        .unwrap()
        .container_definitions()[0];
    assert!(
        container
            .environment()
            .iter()
            .all(|kv| kv.value() != Some(secret.as_str()))
    );
    assert!(
        container
            .environment()
            .iter()
            .any(|kv| kv.name() == Some("RUN"))
    );
    let reference = container
        .secrets()
        .iter()
        .find(|s| s.name() == "DB_PASSWORD")
        .expect("a secrets entry for DB_PASSWORD");
    let secret_name = fargate::env_secret_name(env.provider.settings(), &spec.id);
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let stored = sm
        .get_secret_value()
        .secret_id(&secret_name)
        .send()
        .await
        .expect("the secret exists");
    assert!(
        reference.value_from().starts_with(stored.arn().unwrap()),
        "{} references {:?}",
        reference.value_from(),
        stored.arn()
    );
    assert!(reference.value_from().ends_with(":app/DB_PASSWORD::"));
    assert!(stored.secret_string().unwrap().contains(&secret));
    for api in [
        "RunTask",
        "RegisterTaskDefinition",
        "DescribeTasks",
        "ListTasks",
    ] {
        assert!(
            env.bodies(api).iter().all(|b| !b.contains(&secret)),
            "a {api} request carried the secret value"
        );
    }
    assert_eq!(env.bodies("RegisterTaskDefinition").len(), 1);

    env.provider.delete(&spec.id).await.expect("delete");
    let running = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .desired_status(DesiredStatus::Running)
        .send()
        .await
        .unwrap();
    assert!(running.task_arns().is_empty(), "the task was stopped");
    let gone = sm.describe_secret().secret_id(&secret_name).send().await;
    assert!(
        gone.is_err_and(|e| e
            .as_service_error()
            .is_some_and(|s| s.is_resource_not_found_exception())),
        "the secret was deleted"
    );
    let definition = env
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        definition.task_definition().unwrap().status(),
        Some(&TaskDefinitionStatus::Inactive),
        "the unused definition was deregistered"
    );
    env.provider
        .delete(&spec.id)
        .await
        .expect("deleting a deleted workload is not an error");
}

#[tokio::test]
async fn status_of_150_workloads_takes_two_describe_batches_and_they_share_one_task_definition() {
    let env = env("bg-fargate-many", None).await;
    let uids: Vec<String> = (0..150).map(|i| format!("{}-{i}", env.run)).collect();
    let specs: Vec<WorkloadSpec> = uids
        .iter()
        .map(|u| env.spec(u, env.owner(u, "cluster-a", "burstgate"), None))
        .collect();
    let created: Vec<_> = futures::stream::iter(&specs)
        .map(|s| env.provider.create(s))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        created
            .iter()
            .all(|c| c.as_ref().is_ok_and(|s| s.phase == WorkloadPhase::Running)),
        "{:?}",
        created.iter().find(|c| c.is_err())
    );
    assert_eq!(
        env.calls("RegisterTaskDefinition"),
        1,
        "identical pods register one task definition"
    );

    let before = env.calls("DescribeTasks");
    let mut ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    ids.push(workload_id("never-created"));
    let statuses = env.provider.status(&ids).await.expect("status");
    assert_eq!(
        env.calls("DescribeTasks") - before,
        2,
        "150 tasks are read in two batches of at most 100"
    );
    assert_eq!(statuses.len(), 150, "the unknown id is absent");
    assert!(
        statuses
            .values()
            .all(|s| s.phase == WorkloadPhase::Running && s.ip.is_some())
    );

    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = env
            .ecs
            .list_tasks()
            .cluster(&env.cluster)
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        all.extend(page.task_arns().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let mut definitions = std::collections::BTreeSet::new();
    assert_eq!(all.len(), 150);
    for chunk in all.chunks(100) {
        let d = env
            .ecs
            .describe_tasks()
            .cluster(&env.cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        definitions.extend(
            d.tasks()
                .iter()
                .filter_map(|t| t.task_definition_arn().map(str::to_string)),
        );
    }
    assert_eq!(
        definitions.len(),
        1,
        "every task runs the same definition: {definitions:?}"
    );

    let deleted: Vec<_> = futures::stream::iter(&ids)
        .map(|id| env.provider.delete(id))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        deleted.iter().all(Result::is_ok),
        "{:?}",
        deleted.iter().find(|d| d.is_err())
    );
    let definition = env
        .ecs
        .describe_task_definition()
        .task_definition(definitions.first().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        definition.task_definition().unwrap().status(),
        Some(&TaskDefinitionStatus::Inactive),
        "deregistered once the last task stopped"
    );
}

#[tokio::test]
async fn list_owned_finds_an_orphan_of_this_node_and_ignores_other_clusters_nodes_and_ecs_clusters()
{
    let env = env("bg-fargate-owned", None).await;
    let other = self::env("bg-fargate-other", None).await;
    let gw = format!("gw-{}", env.run);
    let mine = format!("{}-mine", env.run);
    let other_node = format!("{}-node2", env.run);
    let other_gw = format!("{}-gw2", env.run);
    let elsewhere = format!("{}-elsewhere", env.run);
    env.provider
        .create(&env.spec(&mine, env.owner(&mine, &gw, "burstgate"), None))
        .await
        .unwrap();
    env.provider
        .create(&env.spec(&other_node, env.owner(&other_node, &gw, "node-2"), None))
        .await
        .unwrap();
    env.provider
        .create(&env.spec(
            &other_gw,
            env.owner(&other_gw, "another-gateway", "burstgate"),
            None,
        ))
        .await
        .unwrap();
    other
        .provider
        .create(&other.spec(&elsewhere, other.owner(&elsewhere, &gw, "burstgate"), None))
        .await
        .unwrap();

    let owned = env
        .provider
        .list_owned(&gw, "burstgate")
        .await
        .expect("list_owned");
    assert_eq!(
        owned.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        vec![workload_id(&mine).as_str()]
    );
    assert_eq!(owned[0].owner, env.owner(&mine, &gw, "burstgate"));
    assert!(
        owned[0].age < Duration::from_secs(3600),
        "age from createdAt: {:?}",
        owned[0].age
    );
    let elsewhere_owned = other.provider.list_owned(&gw, "burstgate").await.unwrap();
    assert_eq!(
        elsewhere_owned
            .iter()
            .map(|o| o.id.clone())
            .collect::<Vec<_>>(),
        vec![workload_id(&elsewhere)]
    );

    for uid in [&mine, &other_node, &other_gw] {
        env.provider.delete(&workload_id(uid)).await.unwrap();
    }
    other
        .provider
        .delete(&workload_id(&elsewhere))
        .await
        .unwrap();
    assert!(
        env.provider
            .list_owned(&gw, "burstgate")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_task_stopped_behind_the_gateways_back_is_terminal_with_its_exit_codes_and_no_ip() {
    let env = env("bg-fargate-stop", None).await;
    let uid = common::unique_name("uid");
    let spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    env.provider.create(&spec).await.unwrap();
    let arn = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .send()
        .await
        .unwrap()
        .task_arns()[0]
        .clone();
    env.ecs
        .stop_task()
        .cluster(&env.cluster)
        .task(&arn)
        .reason("Essential container in task exited")
        .send()
        .await
        .unwrap();

    let status = env
        .provider
        .status(std::slice::from_ref(&spec.id))
        .await
        .unwrap()
        .remove(&spec.id)
        .expect("a stopped task is still reported");
    // moto reports exit code 0 for every container (and has no way to set another): so this
    // stop is a success; a non-zero exit being Failed is unit-tested in status.rs.
    assert_eq!(
        (status.phase.clone(), status.ip.as_deref()),
        (WorkloadPhase::Succeeded, None),
        "{status:?}"
    );
    assert!(
        matches!(
            &status.containers[..],
            [ContainerStatus {
                state: ContainerState::Terminated { exit_code: 0, .. },
                last_state: None,
                ..
            }]
        ),
        "{:?}",
        status.containers
    );
    env.provider
        .delete(&spec.id)
        .await
        .expect("deleting a stopped workload");
}

#[tokio::test]
async fn an_unsupported_volume_is_refused_before_any_aws_call() {
    let env = env("bg-fargate-refuse", None).await;
    let uid = common::unique_name("uid");
    let mut spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    // A hostPath volume no target runs: refused for the pod, wherever it would go. (A
    // configMap volume, which ACI and the cluster run, is refused for this target only.)
    spec.pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "host".into(),
        host_path: Some(HostPathVolumeSource {
            path: "/var/log".into(),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let err = env.provider.create(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Pod(PodRejection::Unsupported { field, .. }) if field.contains("spec.volumes[host]")),
        "{err:?}"
    );
    assert!(
        env.log.lock().unwrap().is_empty(),
        "no request was sent: {:?}",
        env.log.lock().unwrap()
    );
}

#[tokio::test]
async fn logs_come_from_the_tasks_cloudwatch_stream_and_exec_is_not_supported() {
    let group = common::unique_name("/burstgate-test/logs");
    let env = env("bg-fargate-logs", Some(group.clone())).await;
    let uid = common::unique_name("uid");
    let spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    env.provider.create(&spec).await.unwrap();
    let arn = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .send()
        .await
        .unwrap()
        .task_arns()[0]
        .clone();
    let definition = env
        .ecs
        .describe_tasks()
        .cluster(&env.cluster)
        .tasks(&arn)
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .task_definition_arn()
        .unwrap()
        .to_string();
    let options = env
        .ecs
        .describe_task_definition()
        .task_definition(&definition)
        .send()
        .await
        .unwrap();
    let log_config = options.task_definition().unwrap().container_definitions()[0]
        .log_configuration()
        .expect("awslogs configured")
        .clone();
    assert_eq!(
        log_config.options().and_then(|o| o.get("awslogs-group")),
        Some(&group)
    );

    // moto runs no containers: write what the awslogs driver would, to its stream.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&env.sdk);
    let stream = format!(
        "{}/app/{}",
        fargate::LOG_STREAM_PREFIX,
        arn.rsplit('/').next().unwrap()
    );
    logs.create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let events = ["starting", "listening on :80"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i as i64)
                .message(*m)
                .build()
                .unwrap()
        });
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .unwrap();

    let all = env
        .provider
        .logs(&spec.id, "app", &LogOptions::default())
        .await
        .expect("logs");
    assert_eq!(all, "starting\nlistening on :80\n");
    let tail = env
        .provider
        .logs(
            &spec.id,
            "app",
            &LogOptions {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "listening on :80\n");
    assert!(env.provider.capabilities().logs);

    let err = env
        .provider
        .exec(&spec.id, "app", &["ls".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::NotSupported { .. })
            && err.to_string().contains("fargate does not support exec")
            && err.to_string().contains("enableExecuteCommand")
            && err.to_string().contains("SSM agent"),
        "{err}"
    );
    // The kubelet API's refusal before any upgrade says the same, for attach too.
    assert!(!env.provider.capabilities().exec && !env.provider.capabilities().attach);
    assert!(
        env.provider
            .refusal("attach")
            .to_string()
            .contains("enableExecuteCommand")
    );
    env.provider.delete(&spec.id).await.unwrap();
    logs.delete_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();

    let without = self::env("bg-fargate-nologs", None).await;
    let err = without
        .provider
        .logs(&spec.id, "app", &LogOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotSupported { what, .. } if what.contains("logGroup")),
        "{err}"
    );
}

#[tokio::test]
async fn a_throttled_then_lost_run_task_is_retried_by_the_layers_and_starts_one_task() {
    let outcomes = Arc::new(Outcomes::default());
    let env = env_with("bg-fargate-faults", None, retrying_layers(outcomes.clone())).await;
    let uid = common::unique_name("uid");
    let spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    env.faults
        .lock()
        .unwrap()
        .extend([("RunTask", Fault::Throttle), ("RunTask", Fault::LoseAnswer)]);

    let status = env
        .provider
        .create(&spec)
        .await
        .expect("create succeeds after the retries");
    assert_eq!(status.phase, WorkloadPhase::Running, "{status:?}");
    assert!(
        env.faults.lock().unwrap().is_empty(),
        "both faults were injected"
    );
    let runs: Vec<String> = outcomes
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.starts_with("RunTask:"))
        .cloned()
        .collect();
    assert_eq!(
        runs,
        ["RunTask:throttled", "RunTask:transient", "RunTask:ok"],
        "the layers saw each fault classified"
    );
    assert_eq!(
        env.calls("RunTask"),
        2,
        "the third attempt found the task the lost answer had started"
    );
    let tasks = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tasks.task_arns().len(),
        1,
        "one task: the retry found the task of the lost answer instead of starting another"
    );
    env.provider.delete(&spec.id).await.unwrap();
}

#[tokio::test]
async fn an_exec_liveness_probe_is_registered_as_the_task_definitions_health_check() {
    let env = env("bg-fargate-probe", None).await;
    let uid = common::unique_name("uid");
    let mut spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    let container = &mut spec.pod.spec.as_mut().unwrap().containers[0];
    container.liveness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "test -f /tmp/healthy".into(),
            ]),
        }),
        period_seconds: Some(20),
        timeout_seconds: Some(1),
        failure_threshold: Some(20),
        initial_delay_seconds: Some(15),
        ..Default::default()
    });

    let created = env.provider.create(&spec).await.expect("create");
    assert_eq!(created.phase, WorkloadPhase::Running, "{created:?}");
    let arn = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(&spec.id)
        .send()
        .await
        .unwrap()
        .task_arns()[0]
        .clone();
    let task = env
        .ecs
        .describe_tasks()
        .cluster(&env.cluster)
        .tasks(&arn)
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .clone();
    let definition = env
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    let check = definition
        .task_definition()
        .unwrap()
        .container_definitions()[0]
        .health_check()
        .expect("the registered container has a healthCheck")
        .clone();
    assert_eq!(
        (
            check.command(),
            check.interval(),
            check.timeout(),
            check.retries(),
            check.start_period()
        ),
        (
            &["CMD-SHELL".to_string(), "test -f /tmp/healthy".to_string()][..],
            Some(20),
            Some(2),
            Some(10),
            Some(15)
        ),
        "sh -c becomes CMD-SHELL; the 1 s timeout and 20 failures are clamped to ECS's 2 s and 10"
    );

    env.provider.delete(&spec.id).await.expect("delete");
}

#[tokio::test]
async fn an_http_probe_is_refused_for_the_fargate_target_before_any_aws_call() {
    let env = env("bg-fargate-http-probe", None).await;
    let uid = common::unique_name("uid");
    let mut spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    spec.pod.spec.as_mut().unwrap().containers[0].readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/ready".into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = env.provider.create(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Unsupported { field, .. }) if field.contains("readinessProbe.httpGet")),
        "the pod goes to another target, told why: {err:?}"
    );
    assert!(env.log.lock().unwrap().is_empty(), "no AWS call was made");
}

/// The secrets tagged with `cluster_id` under the test prefix, by ListSecrets with the ownership
/// tag filter: (name, pod-uid tag).
async fn tagged_secrets(
    sm: &aws_sdk_secretsmanager::Client,
    cluster_id: &str,
) -> Vec<(String, String)> {
    use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
    let out = sm
        .list_secrets()
        .filters(
            Filter::builder()
                .key(FilterNameStringType::TagKey)
                .values(OwnerKeys::AWS_TAGS.cluster_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .key(FilterNameStringType::TagValue)
                .values(cluster_id)
                .build(),
        )
        .send()
        .await
        .expect("ListSecrets");
    let mut found: Vec<(String, String)> = out
        .secret_list()
        .iter()
        .filter(|s| {
            s.tags().iter().any(|t| {
                t.key() == Some(OwnerKeys::AWS_TAGS.cluster_id) && t.value() == Some(cluster_id)
            })
        })
        .map(|s| {
            let uid = s
                .tags()
                .iter()
                .find(|t| t.key() == Some(OwnerKeys::AWS_TAGS.pod_uid))
                .and_then(|t| t.value())
                .unwrap_or_default();
            (s.name().unwrap_or_default().to_string(), uid.to_string())
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn orphan_gc_deletes_the_secret_of_a_workload_whose_task_stopped_while_the_gateway_was_down_and_keeps_a_live_ones()
 {
    let env = env("bg-fargate-gc-secrets", None).await;
    let gw = format!("gw-{}", env.run);
    let vanished = format!("{}-vanished", env.run);
    let live = format!("{}-live", env.run);
    let secret = format!("s3cr3t-{}", env.run);
    for uid in [&vanished, &live] {
        let spec = env.spec(uid, env.owner(uid, &gw, "burstgate"), Some(&secret));
        env.provider.create(&spec).await.expect("create");
    }
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let name = |uid: &str| fargate::env_secret_name(env.provider.settings(), &workload_id(uid));
    assert_eq!(
        tagged_secrets(&sm, &gw).await,
        vec![
            (name(&live), live.clone()),
            (name(&vanished), vanished.clone())
        ]
    );

    // While the gateway is down, the vanished pod's task stops (and its pod is deleted).
    let arn = env
        .ecs
        .list_tasks()
        .cluster(&env.cluster)
        .started_by(workload_id(&vanished))
        .send()
        .await
        .unwrap()
        .task_arns()[0]
        .clone();
    env.ecs
        .stop_task()
        .cluster(&env.cluster)
        .task(&arn)
        .reason("Essential container in task exited")
        .send()
        .await
        .unwrap();

    // The gateway comes back: a fresh adapter (no caches) and one orphan GC pass, as
    // controller::gc::collect does it for this target, with only the live pod's UID alive.
    let restarted = FargateProvider::new(
        settings(&env.cluster, None),
        &env.sdk,
        Layers::unlimited(ProviderKind::Fargate, "fargate-test", "us-east-1"),
    );
    let owned = restarted
        .list_owned(&gw, "burstgate")
        .await
        .expect("list_owned");
    let mut ids: Vec<&str> = owned.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    let (live_id, vanished_id) = (workload_id(&live), workload_id(&vanished));
    let mut expected = vec![live_id.as_str(), vanished_id.as_str()];
    expected.sort();
    assert_eq!(
        ids, expected,
        "the stopped workload is listed by its secret"
    );
    let orphan = owned.iter().find(|w| w.id == vanished_id).unwrap();
    assert_eq!(orphan.owner, env.owner(&vanished, &gw, "burstgate"));
    assert!(orphan.age < Duration::from_secs(3600), "{:?}", orphan.age);

    assert!(
        orphan.leftover,
        "only the stopped workload's secret remains"
    );
    assert!(!owned.iter().find(|w| w.id == live_id).unwrap().leftover);
    let placed =
        std::collections::HashMap::from([(live.clone(), Some("fargate-test".to_string()))]);
    let listed = std::collections::HashMap::from([(
        "fargate-test".to_string(),
        owned.iter().map(|w| w.id.clone()).collect(),
    )]);
    let garbage = burstgate::controller::gc::garbage(
        "fargate-test",
        &owned,
        &placed,
        &listed,
        Duration::ZERO,
    );
    assert_eq!(
        garbage
            .iter()
            .map(|(w, why)| (w.id.as_str(), why.clone()))
            .collect::<Vec<_>>(),
        vec![(
            vanished_id.as_str(),
            burstgate::controller::gc::Garbage::Orphan
        )]
    );
    for (w, _) in garbage {
        restarted.delete(&w.id).await.expect("GC delete");
    }

    assert_eq!(
        tagged_secrets(&sm, &gw).await,
        vec![(name(&live), live.clone())],
        "the orphan's secret is gone, the live workload's is kept"
    );
    assert_eq!(
        restarted
            .list_owned(&gw, "burstgate")
            .await
            .unwrap()
            .iter()
            .map(|w| w.id.clone())
            .collect::<Vec<_>>(),
        vec![live_id.clone()]
    );
    let running = restarted
        .status(std::slice::from_ref(&live_id))
        .await
        .unwrap();
    assert_eq!(
        running.get(&live_id).map(|s| s.phase.clone()),
        Some(WorkloadPhase::Running),
        "the live workload keeps running"
    );

    restarted.delete(&live_id).await.expect("delete");
    assert!(tagged_secrets(&sm, &gw).await.is_empty());
    let leaks: Vec<String> = env
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(api, body)| api != "CreateSecret" && body.contains(&secret))
        .map(|(api, _)| api.clone())
        .collect();
    assert!(
        leaks.is_empty(),
        "only CreateSecret carries the value: {leaks:?}"
    );
}

/// The `clientToken` of every RunTask the adapter sent.
fn client_tokens(env: &Env) -> Vec<String> {
    env.bodies("RunTask")
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter_map(|b| b["clientToken"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_stopped_task_is_restarted_as_a_new_tagged_task_with_a_token_of_its_own_and_only_once() {
    let env = env("bg-fargate-restart", None).await;
    let uid = common::unique_name("uid");
    let spec = env.spec(&uid, env.owner(&uid, "cluster-a", "burstgate"), None);
    assert!(!env.provider.restarts_containers());
    let first = env.provider.create(&spec).await.unwrap();
    let tasks = |status: DesiredStatus| {
        let env = &env;
        let id = spec.id.clone();
        async move {
            env.ecs
                .list_tasks()
                .cluster(&env.cluster)
                .started_by(&id)
                .desired_status(status)
                .send()
                .await
                .unwrap()
                .task_arns()
                .to_vec()
        }
    };
    // A restart while the task runs answers that task: nothing is started beside it.
    let same = env.provider.restart(&spec).await.unwrap();
    assert_eq!(same.containers[0].restart_count, 0);
    assert_eq!(env.calls("RunTask"), 1);
    let old = tasks(DesiredStatus::Running).await;
    env.ecs
        .stop_task()
        .cluster(&env.cluster)
        .task(&old[0])
        .reason("Essential container in task exited")
        .send()
        .await
        .unwrap();
    // A create now answers the task that ended (only a restart starts the pod again).
    let ended = env.provider.create(&spec).await.unwrap();
    assert_eq!(ended.phase, WorkloadPhase::Succeeded, "{ended:?}");
    assert_eq!(env.calls("RunTask"), 1, "create started nothing");

    let restarted = env.provider.restart(&spec).await.unwrap();
    let again = env.provider.restart(&spec).await.unwrap();
    assert_eq!(env.calls("RunTask"), 2, "one new task for two restarts");
    for s in [&restarted, &again] {
        let c = &s.containers[0];
        assert_eq!(c.restart_count, 1, "{s:?}");
        assert!(
            matches!(
                &c.last_state,
                Some(ContainerState::Terminated { exit_code: 0, reason, .. }) if reason == "Completed"
            ),
            "{c:?}"
        );
    }
    let running = tasks(DesiredStatus::Running).await;
    assert_eq!(running.len(), 1);
    assert_ne!(running, old);
    let tokens = client_tokens(&env);
    assert_eq!(tokens, vec![spec.id.clone(), format!("{}-1", spec.id)]);
    // The status read finds the new run (the latest), and a delete stops it.
    let status = env
        .provider
        .status(std::slice::from_ref(&spec.id))
        .await
        .unwrap()
        .remove(&spec.id)
        .unwrap();
    assert_eq!(
        (status.phase, status.containers[0].restart_count),
        (WorkloadPhase::Running, 1)
    );
    drop(first);
    env.provider.delete(&spec.id).await.unwrap();
    assert!(tasks(DesiredStatus::Running).await.is_empty());
}
