//! The ACI adapter against the project's ACI emulator, THROUGH Prism: every request the adapter
//! sends is validated against Microsoft's 2026-05-01 spec (a 422 would mean the adapter is
//! wrong), every answer too. Tokens come from the emulator's Entra-like endpoint over HTTPS via
//! azure_identity's real `ClientSecretCredential`. Each test works in its own random
//! subscription, so the emulator's faults, state and request log are the test's alone.

use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use burstgate::policy::model::ProviderKind;
use burstgate::policy::sizing::Size;
use burstgate::provider::aci::{AciProvider, Cadence, Settings};
use burstgate::provider::contract::{
    EnvValue, EnvVar, RegistryCredential, Resolved, SecretBox, SecretString, VolumeFile,
};
use burstgate::provider::kit::ownership::OwnerKeys;
use burstgate::provider::layers::Layers;
use burstgate::provider::{
    ContainerState, GaveUpCause, LogOptions, Owner, PodRejection, Provider, ProviderError,
    TargetRejection, WorkloadPhase, WorkloadSpec, workload_id,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HostPathVolumeSource, LocalObjectReference, Pod, PodSpec,
    ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use crate::common;

const CLUSTER: &str = "aci-it-cluster";
const NODE: &str = "burstgate-aci-it";

/// One test's view of the emulator: the provider under test, its subscription, the control API.
struct Emu {
    provider: AciProvider,
    subscription: String,
    control: String,
    http: reqwest::Client,
}

fn random_uuid() -> String {
    let n = common::unique_name("x");
    let digits: String = format!("{:032x}", sha(n.as_bytes()))
        .chars()
        .take(32)
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &digits[0..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..32]
    )
}

fn sha(bytes: &[u8]) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

/// A credential that fetches real tokens from the emulator's HTTPS token endpoint, trusting only
/// the peers' CA.
fn credential() -> Arc<dyn TokenCredential> {
    common::install_crypto_provider();
    let peers = common::peers();
    let ca = std::fs::read(peers.path("ACI_EMULATOR_CA")).expect("reading ACI_EMULATOR_CA");
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("the peers' CA is PEM")])
        .build()
        .expect("an HTTPS client");
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = peers.get("ACI_AUTHORITY_HOST").to_string();
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(tls))),
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            ..Default::default()
        },
    };
    ClientSecretCredential::new(
        "burstgate-test-tenant",
        "burstgate-aci-it".into(),
        Secret::new("burstgate-aci-it-secret"),
        Some(options),
    )
    .expect("a client secret credential")
}

async fn emu(tweak: impl FnOnce(&mut Settings)) -> Emu {
    let peers = common::peers();
    let subscription = random_uuid();
    let mut settings = Settings {
        target: "aci-eastus".into(),
        region: "eastus".into(),
        subscription_id: subscription.clone(),
        resource_group: "burstgate-it".into(),
        spot: false,
        subnet_ids: vec![],
        dns_name_label: false,
        arm_endpoint: peers.get("ACI_PRISM_URL").to_string(),
        // Azure Monitor is not in ACI's spec, so not behind Prism: the emulator directly.
        monitor_endpoint: peers.get("ACI_EMULATOR_URL").to_string(),
        usage_refresh: std::time::Duration::from_secs(60),
        cluster_dns: None,
        kube_proxy: None,
    };
    tweak(&mut settings);
    let layers = Layers::unlimited(ProviderKind::Aci, &settings.target, &settings.region);
    let provider = AciProvider::new(settings, credential(), layers).with_cadence(Cadence::eager());
    let e = Emu {
        provider,
        subscription,
        control: peers
            .get("ACI_EMULATOR_URL")
            .trim_end_matches('/')
            .to_string(),
        http: reqwest::Client::new(),
    };
    e.faults(json!({"provisioningDelaySeconds": 1})).await;
    e
}

impl Emu {
    async fn faults(&self, mut faults: Value) {
        faults["subscriptionId"] = json!(self.subscription);
        let res = self
            .http
            .post(format!("{}/_emulator/faults", self.control))
            .json(&faults)
            .send()
            .await
            .expect("emulator control API");
        assert!(
            res.status().is_success(),
            "setting faults {faults}: {}",
            res.status()
        );
    }

    async fn control(&self, what: &str) -> Value {
        self.http
            .get(format!(
                "{}/_emulator/{what}?subscriptionId={}",
                self.control, self.subscription
            ))
            .send()
            .await
            .expect("emulator control API")
            .json()
            .await
            .expect("JSON from the control API")
    }

    async fn requests(&self) -> Vec<Value> {
        self.control("requests").await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn groups(&self) -> Vec<Value> {
        self.control("state").await["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_phase(
        &self,
        id: &str,
        phase: WorkloadPhase,
    ) -> burstgate::provider::WorkloadStatus {
        common::eventually(
            &format!("{id} reaching {phase:?}"),
            Duration::from_secs(30),
            || async {
                let got = self
                    .provider
                    .status(&[id.to_string()])
                    .await
                    .expect("status");
                got.get(id).filter(|s| s.phase == phase).cloned()
            },
        )
        .await
    }
}

fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

fn spec(pod_spec: PodSpec, resolved: Resolved) -> WorkloadSpec {
    let uid = random_uuid();
    let name = common::unique_name("web");
    WorkloadSpec {
        id: workload_id(&uid),
        owner: Owner {
            cluster_id: CLUSTER.into(),
            node: NODE.into(),
            namespace: "team-a".into(),
            pod: name.clone(),
            pod_uid: uid.clone(),
        },
        target: "aci-eastus".into(),
        region: "eastus".into(),
        size: Size {
            milli_cpu: 500,
            memory_mib: 1024,
        },
        pod: Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                uid: Some(uid),
                ..Default::default()
            },
            spec: Some(pod_spec),
            ..Default::default()
        },
        resolved: Arc::new(resolved),
    }
}

fn plain_env(container: &str, vars: &[(&str, &str)]) -> Resolved {
    let mut r = Resolved::default();
    r.env.insert(
        container.into(),
        vars.iter()
            .map(|(k, v)| EnvVar {
                name: k.to_string(),
                value: EnvValue::Plain(v.to_string()),
            })
            .collect(),
    );
    r
}

fn env_container(name: &str, image: &str) -> Container {
    // Declares env so the adapter expects the resolved env for it.
    Container {
        env: Some(vec![]),
        ..container(name, image)
    }
}

#[tokio::test]
async fn a_pod_runs_on_aci_with_an_ip_sized_and_tagged_then_logs_exec_and_delete_work() {
    let e = emu(|_| {}).await;
    let mut web = container("app", "nginx:1.27");
    web.ports = Some(vec![ContainerPort {
        container_port: 80,
        ..Default::default()
    }]);
    web.resources = Some(ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("500m".into())),
                ("memory".to_string(), Quantity("1Gi".into())),
            ]
            .into(),
        ),
        limits: Some([("cpu".to_string(), Quantity("2".into()))].into()),
        ..Default::default()
    });
    let s = spec(
        PodSpec {
            containers: vec![web],
            ..Default::default()
        },
        Resolved::default(),
    );

    let created = e.provider.create(&s).await.expect("create");
    assert_eq!(created.phase, WorkloadPhase::Pending);
    let running = e.wait_phase(&s.id, WorkloadPhase::Running).await;
    assert!(
        running.ip.as_deref().is_some_and(|ip| !ip.is_empty()),
        "{running:?}"
    );
    assert!(
        matches!(running.containers[0].state, ContainerState::Running { .. }),
        "{running:?}"
    );

    // Sizing and tags as ACI received them.
    let groups = e.groups().await;
    let group = groups
        .iter()
        .find(|g| g["name"] == json!(s.id))
        .expect("the group exists");
    let resources = &group["spec"]["properties"]["containers"][0]["properties"]["resources"];
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    assert_eq!(
        (
            num(&resources["requests"]["cpu"]),
            num(&resources["requests"]["memoryInGB"])
        ),
        (0.5, 1.0),
        "{resources}"
    );
    assert_eq!(
        num(&resources["limits"]["cpu"]),
        0.5,
        "the 2-vCPU limit is clamped to the group request: {resources}"
    );
    assert!(
        resources["limits"].get("memoryInGB").is_none(),
        "{resources}"
    );
    let keys = OwnerKeys::ARM_TAGS;
    assert_eq!(group["tags"][keys.cluster_id], json!(CLUSTER));
    assert_eq!(group["tags"][keys.node], json!(NODE));
    assert_eq!(group["tags"][keys.pod_uid], json!(s.owner.pod_uid));
    assert_eq!(
        group["tags"]["burstgate.io-pod-uid"],
        json!(s.owner.pod_uid),
        "the wire key"
    );

    let logs = common::eventually("log lines", Duration::from_secs(20), || async {
        let text = e
            .provider
            .logs(
                &s.id,
                "app",
                &LogOptions {
                    tail_lines: Some(2),
                    ..Default::default()
                },
            )
            .await
            .expect("logs");
        text.contains("app: line").then_some(text)
    })
    .await;
    assert!(logs.lines().count() <= 2, "tail 2: {logs}");
    assert!(
        !logs.starts_with("20"),
        "no timestamps unless asked: {logs}"
    );
    let stamped = e
        .provider
        .logs(
            &s.id,
            "app",
            &LogOptions {
                timestamps: true,
                since_seconds: Some(3600),
                ..Default::default()
            },
        )
        .await
        .expect("logs");
    assert!(
        stamped.lines().all(|l| l.starts_with("20")),
        "timestamps: {stamped}"
    );

    let out = e
        .provider
        .exec(&s.id, "app", &["echo".into(), "hello-from-aci".into()])
        .await
        .expect("exec");
    assert!(out.stdout.contains("hello-from-aci"), "{out:?}");

    e.provider.delete(&s.id).await.expect("delete");
    assert!(
        e.provider
            .status(std::slice::from_ref(&s.id))
            .await
            .expect("status")
            .is_empty(),
        "deleted groups have no status"
    );
    e.provider
        .delete(&s.id)
        .await
        .expect("deleting a gone group is fine");
}

#[tokio::test]
async fn a_status_batch_is_one_list_and_reports_exits_and_restarts() {
    let e = emu(|_| {}).await;
    let mk = |exit_after: &str, code: &str, policy: &str| {
        let mut s = spec(
            PodSpec {
                containers: vec![env_container("app", "busybox:1.36")],
                restart_policy: Some(policy.into()),
                ..Default::default()
            },
            plain_env(
                "app",
                &[
                    ("EMULATOR_EXIT_AFTER_SECONDS", exit_after),
                    ("EMULATOR_EXIT_CODE", code),
                ],
            ),
        );
        s.size = Size {
            milli_cpu: 100,
            memory_mib: 512,
        };
        s
    };
    let restarting = mk("1", "1", "Always");
    let done = mk("1", "0", "Never");
    let failed = mk("1", "3", "Never");
    let pods = [&restarting, &done, &failed];
    for p in pods {
        e.provider.create(p).await.expect("create");
    }
    let mut ids: Vec<String> = pods.iter().map(|p| p.id.clone()).collect();
    ids.push(workload_id("00000000-0000-0000-0000-00000000dead"));

    let before = e.requests().await.len();
    let statuses = common::eventually("exits and restarts", Duration::from_secs(30), || async {
        let got = e.provider.status(&ids).await.expect("status");
        let ok = got
            .get(&done.id)
            .is_some_and(|s| s.phase == WorkloadPhase::Succeeded)
            && got
                .get(&failed.id)
                .is_some_and(|s| s.phase == WorkloadPhase::Failed)
            && got
                .get(&restarting.id)
                .is_some_and(|s| s.containers[0].restart_count >= 1);
        ok.then_some(got)
    })
    .await;
    assert!(!statuses.contains_key(&ids[3]), "an unknown id is absent");
    assert!(matches!(
        statuses[&failed.id].containers[0].state,
        ContainerState::Terminated { exit_code: 3, .. }
    ));
    assert_eq!(statuses[&restarting.id].phase, WorkloadPhase::Running);
    // The run before the restart, as ACI keeps it (`previousState`): exited with its code.
    assert!(
        matches!(
            statuses[&restarting.id].containers[0].last_state,
            Some(ContainerState::Terminated { exit_code: 1, .. })
        ),
        "{:?}",
        statuses[&restarting.id].containers[0]
    );

    // One status call: exactly one list of the resource group, at most one GET per asked-for group.
    let mark = e.requests().await.len();
    assert!(mark > before);
    e.provider.status(&ids).await.expect("status");
    let batch: Vec<Value> = e.requests().await.split_off(mark);
    let lists = batch
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/containerGroups"))
        })
        .count();
    let gets = batch
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/containerGroups/bg-"))
        })
        .count();
    assert_eq!(lists, 1, "{batch:#?}");
    assert!(gets <= 3, "{batch:#?}");
}

#[tokio::test]
async fn a_settled_batch_is_answered_from_the_last_list_without_new_reads() {
    let e = emu(|_| {}).await;
    let cadence = Cadence {
        pending_refresh: Duration::from_secs(1),
        running_refresh: Duration::from_secs(600),
        list_reuse: Duration::from_secs(600),
        reads_per_second: None,
    };
    let provider = {
        let peers = common::peers();
        let settings = Settings {
            arm_endpoint: peers.get("ACI_PRISM_URL").to_string(),
            ..e.provider.settings().clone()
        };
        AciProvider::new(
            settings,
            credential(),
            Layers::unlimited(ProviderKind::Aci, "aci-eastus", "eastus"),
        )
        .with_cadence(cadence)
    };
    let pods: Vec<WorkloadSpec> = (0..3)
        .map(|_| {
            spec(
                PodSpec {
                    containers: vec![container("app", "nginx:1.27")],
                    ..Default::default()
                },
                Resolved::default(),
            )
        })
        .collect();
    for p in &pods {
        provider.create(p).await.expect("create");
    }
    let ids: Vec<String> = pods.iter().map(|p| p.id.clone()).collect();
    common::eventually("all running", Duration::from_secs(30), || async {
        let got = provider.status(&ids).await.expect("status");
        (got.len() == 3 && got.values().all(|s| s.phase == WorkloadPhase::Running)).then_some(())
    })
    .await;
    let before = e.requests().await.len();
    let got = provider.status(&ids).await.expect("status");
    assert!(
        got.len() == 3 && got.values().all(|s| s.phase == WorkloadPhase::Running),
        "{got:?}"
    );
    let after = e.requests().await;
    assert_eq!(
        after.len(),
        before,
        "a settled batch made new reads: {:#?}",
        &after[before..]
    );
}

#[tokio::test]
async fn secrets_reach_aci_only_in_its_secret_fields() {
    let e = emu(|_| {}).await;
    let env_secret = "env-secret-7c1e";
    let file_secret = "file-secret-92ab";
    let registry_secret = "registry-secret-31fd";
    let mut app = env_container("app", "myreg.azurecr.io/team/app:1");
    app.volume_mounts = Some(vec![VolumeMount {
        name: "creds".into(),
        mount_path: "/etc/creds".into(),
        ..Default::default()
    }]);
    let mut resolved = Resolved::default();
    resolved.env.insert(
        "app".into(),
        vec![
            EnvVar {
                name: "MODE".into(),
                value: EnvValue::Plain("plain-mode".into()),
            },
            EnvVar {
                name: "API_TOKEN".into(),
                value: EnvValue::Secret(SecretString::from(env_secret)),
            },
        ],
    );
    resolved.volumes.insert(
        "creds".into(),
        vec![VolumeFile {
            path: "token".into(),
            content: SecretBox::new(Box::new(file_secret.as_bytes().to_vec())),
        }],
    );
    resolved.registry_credentials = vec![RegistryCredential {
        server: "myreg.azurecr.io".into(),
        username: "puller".into(),
        password: SecretString::from(registry_secret),
    }];
    let s = spec(
        PodSpec {
            containers: vec![app],
            image_pull_secrets: Some(vec![LocalObjectReference { name: "acr".into() }]),
            volumes: Some(vec![Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("creds".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        resolved,
    );
    e.provider
        .create(&s)
        .await
        .expect("create with a private registry and its credential");
    e.wait_phase(&s.id, WorkloadPhase::Running).await;

    use base64::Engine as _;
    let file_b64 = base64::engine::general_purpose::STANDARD.encode(file_secret);
    let requests = e.requests().await;
    let put = requests
        .iter()
        .find(|r| r["method"] == "PUT")
        .expect("the PUT was logged");
    let put_body: Value =
        serde_json::from_str(put["body"].as_str().unwrap_or_default()).expect("a JSON PUT body");
    let env = &put_body["properties"]["containers"][0]["properties"]["environmentVariables"];
    assert_eq!(
        env[1],
        json!({"name": "API_TOKEN", "secureValue": env_secret}),
        "{env}"
    );
    assert_eq!(
        put_body["properties"]["imageRegistryCredentials"][0]["password"],
        json!(registry_secret)
    );
    for r in &requests {
        let raw = r["body"].as_str().unwrap_or_default();
        if raw.is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let mut allowed_paths = Vec::new();
        common::find_strings(
            &body,
            "",
            &[env_secret, file_secret, &file_b64, registry_secret],
            &mut allowed_paths,
        );
        for (path, secret) in &allowed_paths {
            let ok = (secret == env_secret && path.ends_with("/secureValue"))
                || (secret == &file_b64 && path.contains("/volumes/0/secret/"))
                || (secret == registry_secret && path.ends_with("/password"));
            assert!(
                ok,
                "{secret} appears at {path} in {} {}",
                r["method"], r["path"]
            );
        }
        assert!(
            !raw.contains(file_secret),
            "a secret file's content travels only base64 in a secret volume"
        );
    }
    // The plain env of the running container holds no secret (the emulator's `env` lists plain vars).
    let env = e
        .provider
        .exec(&s.id, "app", &["env".into()])
        .await
        .expect("exec env");
    assert!(
        env.stdout.contains("MODE=plain-mode") && !env.stdout.contains(env_secret),
        "{env:?}"
    );
    let file = e
        .provider
        .exec(&s.id, "app", &["cat".into(), "/etc/creds/token".into()])
        .await
        .expect("exec cat");
    assert!(
        file.stdout.contains(file_secret),
        "the secret volume is mounted: {file:?}"
    );
}

#[tokio::test]
async fn an_inaccessible_image_fails_the_pod_with_acis_own_message() {
    let e = emu(|_| {}).await;
    let s = spec(
        PodSpec {
            containers: vec![container("app", "invalid.example/app:1")],
            ..Default::default()
        },
        Resolved::default(),
    );
    let err = e
        .provider
        .create(&s)
        .await
        .expect_err("ACI refuses the image");
    let ProviderError::Pod(PodRejection::Cloud { code, message }) = &err else {
        panic!("a pod-level error, got {err:?}")
    };
    assert_eq!(code, "InaccessibleImage");
    assert_eq!(
        message,
        &format!(
            "The image 'invalid.example/app:1' in container group '{}' is not accessible. Please check the image and registry credential.",
            s.id
        )
    );
}

#[tokio::test]
async fn a_region_without_quota_or_capacity_sends_the_pod_to_another_target() {
    let e = emu(|_| {}).await;
    e.faults(json!({"quota": {"eastus": {"cores": 1}}})).await;
    let mut s = spec(
        PodSpec {
            containers: vec![container("app", "nginx:1.27")],
            ..Default::default()
        },
        Resolved::default(),
    );
    s.size = Size {
        milli_cpu: 2000,
        memory_mib: 2048,
    };
    let err = e.provider.create(&s).await.expect_err("over quota");
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Quota { code, message }) if code == "ContainerGroupQuotaReached" && message.contains("StandardCores")),
        "{err:?}"
    );

    e.faults(json!({"quota": null, "regionDown": ["eastus"]}))
        .await;
    let err = e.provider.create(&s).await.expect_err("region down");
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::Capacity { code, .. }) if code == "ServiceUnavailable"),
        "{err:?}"
    );
}

#[tokio::test]
async fn throttling_is_retryable_and_carries_retry_after_and_the_arm_budget_is_read() {
    let e = emu(|_| {}).await;
    e.faults(json!({"throttle": {"count": 1, "retryAfterSeconds": 7, "method": "PUT"}}))
        .await;
    let s = spec(
        PodSpec {
            containers: vec![container("app", "nginx:1.27")],
            ..Default::default()
        },
        Resolved::default(),
    );
    // The adapter classifies the 429 as `Throttled` (with its Retry-After, see retry.rs); the
    // no-retry layers of this test hand it back, wrapped, once their single attempt is spent.
    let err = e.provider.create(&s).await.expect_err("throttled");
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::GaveUp { cause: GaveUpCause::Throttled, last, .. })
            if last.contains("HTTP 429 SubscriptionRequestsThrottled")),
        "{err:?}"
    );
    // The same call goes through afterwards (what the layers' retry does).
    e.provider
        .create(&s)
        .await
        .expect("create after the throttle");
    let budget = e.provider.arm_budget();
    assert!(
        budget.reads.is_some() && budget.writes.is_some(),
        "{budget:?}"
    );

    e.faults(json!({"errors": {"count": 1, "status": 503, "method": "GET"}}))
        .await;
    let err = e
        .provider
        .status(std::slice::from_ref(&s.id))
        .await
        .expect_err("a 503");
    // Retryable for the layers, and a refusal (ARM answered 503: nothing was done, so a
    // create refused this way is not in doubt); spent after this test's single attempt.
    assert!(
        matches!(&err, ProviderError::Target(TargetRejection::GaveUp { cause: GaveUpCause::Refused, last, .. })
            if last.contains("HTTP 503")),
        "{err:?}"
    );
    assert!(!err.outcome_unknown(), "{err:?}");
}

#[tokio::test]
async fn creating_twice_puts_once_and_returns_the_existing_group() {
    let e = emu(|_| {}).await;
    let s = spec(
        PodSpec {
            containers: vec![container("app", "nginx:1.27")],
            ..Default::default()
        },
        Resolved::default(),
    );
    e.provider.create(&s).await.expect("create");
    e.wait_phase(&s.id, WorkloadPhase::Running).await;
    let again = e.provider.create(&s).await.expect("create again");
    assert_eq!(
        again.phase,
        WorkloadPhase::Running,
        "the second create reports the running group: {again:?}"
    );
    let puts = e
        .requests()
        .await
        .iter()
        .filter(|r| r["method"] == "PUT")
        .count();
    assert_eq!(puts, 1);

    let mut other = spec(
        PodSpec {
            containers: vec![container("app", "nginx:1.27")],
            ..Default::default()
        },
        Resolved::default(),
    );
    other.id = s.id.clone();
    let err = e
        .provider
        .create(&other)
        .await
        .expect_err("someone else's group");
    assert!(
        matches!(&err, ProviderError::Pod(PodRejection::Cloud { code, .. }) if code == "NameConflict"),
        "{err:?}"
    );
}

#[tokio::test]
async fn list_owned_finds_orphans_of_this_node_across_pages() {
    let e = emu(|_| {}).await;
    e.faults(json!({"pageSize": 2})).await;
    let mut ours = Vec::new();
    for _ in 0..3 {
        let s = spec(
            PodSpec {
                containers: vec![container("app", "nginx:1.27")],
                ..Default::default()
            },
            Resolved::default(),
        );
        e.provider.create(&s).await.expect("create");
        ours.push(s);
    }
    let mut elsewhere = spec(
        PodSpec {
            containers: vec![container("app", "nginx:1.27")],
            ..Default::default()
        },
        Resolved::default(),
    );
    elsewhere.owner.node = "another-node".into();
    e.provider.create(&elsewhere).await.expect("create");

    let owned = e
        .provider
        .list_owned(CLUSTER, NODE)
        .await
        .expect("list owned");
    let mut ids: Vec<&str> = owned.iter().map(|o| o.id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = ours.iter().map(|s| s.id.as_str()).collect();
    want.sort();
    assert_eq!(
        ids, want,
        "all three pages read, the other node's group left out"
    );
    let first = owned.iter().find(|o| o.id == ours[0].id).unwrap();
    assert_eq!(first.owner, ours[0].owner, "ownership read back from tags");
    assert!(first.age < Duration::from_secs(600));
    let pages = e
        .requests()
        .await
        .iter()
        .filter(|r| {
            r["method"] == "GET" && r["query"].as_str().is_some_and(|q| q.contains("skiptoken"))
        })
        .count();
    assert!(pages >= 1, "nextLink was followed");
}

#[tokio::test]
async fn an_unsupported_pod_is_refused_before_any_call() {
    let e = emu(|_| {}).await;
    let mut app = container("app", "nginx:1.27");
    app.volume_mounts = Some(vec![VolumeMount {
        name: "host".into(),
        mount_path: "/host".into(),
        ..Default::default()
    }]);
    let s = spec(
        PodSpec {
            containers: vec![app],
            volumes: Some(vec![Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        Resolved::default(),
    );
    let err = e.provider.create(&s).await.expect_err("hostPath");
    assert!(
        matches!(&err, ProviderError::Pod(PodRejection::Unsupported { field, .. }) if field == "spec.volumes[host].hostPath"),
        "{err:?}"
    );
    assert!(e.requests().await.is_empty(), "no ARM call was made");
}

/// `dnsPolicy: ClusterFirst` in a delegated subnet: the group Prism lets through (Microsoft's
/// `DnsConfiguration` and `DeploymentExtensionSpec`) resolves with the cluster DNS, the pod's
/// search domains and `ndots:5`, and runs the kube-proxy extension with its kubeconfig only in
/// the protected settings.
#[tokio::test]
async fn a_group_in_a_delegated_subnet_resolves_cluster_first_and_runs_kube_proxy() {
    use base64::Engine as _;
    let subnet = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/aks-vnet/subnets/virtual-node-aci";
    let e = emu(|s| {
        s.subnet_ids = vec![subnet.into()];
        s.cluster_dns = Some(burstgate::provider::aci::ClusterDns {
            servers: vec!["10.96.0.10".into()],
            domain: "cluster.local".into(),
        });
        s.kube_proxy = Some(burstgate::provider::aci::KubeProxy {
            cluster_cidr: "10.244.0.0/16".into(),
            kube_version: "v1.30.4".into(),
            kubeconfig: "apiVersion: v1\nkind: Config\nusers: [{name: kube-proxy, user: {token: kp-s3cret}}]\n".into(),
        });
    })
    .await;
    let mut app = container("app", "nginx:1.27");
    app.ports = Some(vec![
        serde_json::from_value(json!({"containerPort": 80})).unwrap(),
    ]);
    let s = spec(
        PodSpec {
            containers: vec![app],
            dns_config: Some(
                serde_json::from_value(json!({"options": [{"name": "edns0"}]})).unwrap(),
            ),
            ..Default::default()
        },
        Resolved::default(),
    );
    e.provider.create(&s).await.expect("create through Prism");
    let groups = e.groups().await;
    let dns = &groups[0]["spec"]["properties"]["dnsConfig"];
    assert_eq!(
        dns,
        &json!({
            "nameServers": ["10.96.0.10"],
            "searchDomains": "team-a.svc.cluster.local svc.cluster.local cluster.local",
            "options": "ndots:5 edns0",
        }),
        "{:#}",
        groups[0]
    );
    let ext = &groups[0]["spec"]["properties"]["extensions"][0];
    assert_eq!(ext["name"], "kube-proxy");
    assert_eq!(ext["properties"]["extensionType"], "kube-proxy");
    assert_eq!(
        ext["properties"]["settings"],
        json!({"clusterCidr": "10.244.0.0/16", "kubeVersion": "v1.30.4"})
    );
    let kubeconfig = ext["properties"]["protectedSettings"]["kubeConfig"]
        .as_str()
        .unwrap();
    let kubeconfig = base64::engine::general_purpose::STANDARD
        .decode(kubeconfig)
        .unwrap();
    assert!(String::from_utf8(kubeconfig).unwrap().contains("kp-s3cret"));
}
