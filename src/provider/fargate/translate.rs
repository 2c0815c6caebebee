//! Pod spec + resolved values -> an ECS task definition, the Secrets Manager secrets it
//! references, and the RunTask parameters (pure). Everything Fargate cannot run is refused here,
//! before any AWS call, with the field and the reason.
//!
//! Task definitions are named by content: the family is `bg-` + a hash of the whole definition
//! (sizes, containers, roles, log settings, secret references), so identical pods share one
//! family and a changed pod gets another. A pod with secret env or registry credentials references
//! its own secrets (by ARN), so its definition is its own.
//!
//! Refused first, from the features Fargate does not declare (`kit::declared`, worded by
//! `why_not`): host namespaces and ports, privileged containers, capabilities other than
//! SYS_PTRACE, subPath, SCTP ports, tmpfs and every volume kind but emptyDir (the automatic
//! token volume is left out, declared as ignored, as are lifecycle hooks, sysctls and
//! hostAliases, which a task definition has no place for). GPUs and sizes are refused below.
//!
//! Probes: a container's exec liveness or readiness probe becomes its ECS `healthCheck`
//! (`["CMD", ...]`, or `["CMD-SHELL", script]` for `sh -c script`), its timings clamped to the
//! ranges ECS accepts ([`HEALTH_INTERVAL`], [`HEALTH_TIMEOUT`], [`HEALTH_RETRIES`],
//! [`HEALTH_START_PERIOD`]). What ECS cannot run (httpGet, tcpSocket and gRPC probes, startup
//! probes, a liveness and a readiness probe with different commands) is refused for this target
//! ([`TranslateError::Elsewhere`]), so the pod goes to a target that runs its probes instead of
//! silently losing them.
//!
//! Secrets (one workload's, deleted with it):
//! - `<prefix><workload id>/env`: one JSON secret with every secret env var of the pod, keyed
//!   `<container>/<VAR>`; each container's `secrets` entry is `valueFrom = <arn>:<container>/<VAR>::`;
//! - `<prefix><workload id>/registry/<n>`: `{"username", "password"}` for the n-th registry the
//!   pod's images pull from with credentials, the container's `repositoryCredentials`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::provider::contract::{EnvValue, ExposeSecret, SecretString, WorkloadSpec};
use crate::provider::fargate::settings::Settings;
use crate::provider::kit::expansion::command_and_args;
use crate::provider::kit::features::is_automatic_token;
use crate::provider::kit::ownership::{OwnerKeys, Values, WORKLOAD};
use crate::provider::kit::{Feature, TranslateError, invalid, pod_spec, refusal, unsupported};

/// Tag: the task's containers that are the pod's init containers, comma-separated (absent when
/// none), so that status reports only the pod's containers and judges success by them.
pub(crate) const TAG_INIT_CONTAINERS: &str = "burstgate.io/init-containers";
/// Tag: the task's containers whose health check comes from a readiness probe, comma-separated
/// (absent when none): they are ready only once ECS reports them `HEALTHY`.
pub(crate) const TAG_READINESS: &str = "burstgate.io/readiness-checked";
/// ECS health check `interval`, seconds (documented range).
const HEALTH_INTERVAL: RangeInclusive<i32> = 5..=300;
/// ECS health check `timeout`, seconds (documented range); also kept below the interval.
const HEALTH_TIMEOUT: RangeInclusive<i32> = 2..=60;
/// ECS health check `retries` (documented range).
const HEALTH_RETRIES: RangeInclusive<i32> = 1..=10;
/// ECS health check `startPeriod`, seconds (documented range).
const HEALTH_START_PERIOD: RangeInclusive<i32> = 0..=300;
/// The awslogs stream prefix: a container's stream is `bg/<container>/<task id>`.
pub const LOG_STREAM_PREFIX: &str = "bg";
/// Family prefix of the task definitions burstgate registers.
pub(crate) const FAMILY_PREFIX: &str = "bg-";

/// A task definition as burstgate registers it; serialized (canonically, field order fixed) to
/// name its family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskDef {
    /// `bg-<hash>`; empty while hashing.
    pub(crate) family: String,
    /// CPU units (`256` = 0.25 vCPU).
    pub(crate) cpu: String,
    /// MiB.
    pub(crate) memory: String,
    /// Execution role.
    pub(crate) execution_role_arn: Option<String>,
    /// Task role.
    pub(crate) task_role_arn: Option<String>,
    /// Containers: init containers first, then the pod's containers.
    pub(crate) containers: Vec<ContainerDef>,
    /// Task-level volumes (from emptyDir): Fargate ephemeral storage.
    pub(crate) volumes: Vec<String>,
}

/// One container of the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerDef {
    /// Name (as in the pod).
    pub(crate) name: String,
    /// Image.
    pub(crate) image: String,
    /// Essential: the pod's containers; init containers are not.
    pub(crate) essential: bool,
    /// From the pod's `command`.
    pub(crate) entry_point: Option<Vec<String>>,
    /// From the pod's `args`.
    pub(crate) command: Option<Vec<String>>,
    /// Working directory.
    pub(crate) working_dir: Option<String>,
    /// `user` from runAsUser[:runAsGroup].
    pub(crate) user: Option<String>,
    /// Hard memory limit, MiB (container-level memory: moto needs it, Fargate accepts it).
    pub(crate) memory: i32,
    /// Plain env only, sorted by name, last definition wins.
    pub(crate) environment: Vec<(String, String)>,
    /// Secret env: (name, valueFrom).
    pub(crate) secrets: Vec<(String, String)>,
    /// Secret name, then ARN, of the registry credentials.
    pub(crate) repository_credentials: Option<String>,
    /// (containerPort, `tcp`/`udp`).
    pub(crate) port_mappings: Vec<(i32, String)>,
    /// (volume, container path, read only).
    pub(crate) mount_points: Vec<(String, String, bool)>,
    /// Init containers this one waits for (condition `SUCCESS`).
    pub(crate) depends_on: Vec<String>,
    /// Sidecars (init containers with `restartPolicy: Always`) this one waits to have started
    /// (condition `START`). Left out of the hash when empty, so pods without sidecars keep
    /// their families.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) depends_on_start: Vec<String>,
    /// awslogs (group, region, stream prefix).
    pub(crate) log: Option<(String, String, String)>,
    /// From the exec liveness / readiness probe. Left out of the hash when absent, so pods
    /// without probes keep the families they had before probes were mapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health_check: Option<HealthCheckDef>,
    /// Seconds between SIGTERM and SIGKILL on stop: the pod's `terminationGracePeriodSeconds`
    /// within Fargate's ceiling; absent for the 30 s Kubernetes and ECS share (so the hash of
    /// such pods is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_timeout: Option<i32>,
}

/// Fargate's ceiling for a container's stop timeout, seconds.
const MAX_STOP_TIMEOUT: i64 = 120;

/// The ECS stop timeout for a pod's grace period (`None`: the default 30 s on both sides).
fn stop_timeout(pod: &PodSpec) -> Option<i32> {
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    (grace != 30).then(|| grace.clamp(2, MAX_STOP_TIMEOUT) as i32)
}

/// An ECS container health check, every value within ECS's ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthCheckDef {
    /// `["CMD", ...]` or `["CMD-SHELL", script]`.
    pub(crate) command: Vec<String>,
    /// Seconds between checks (periodSeconds).
    pub(crate) interval: i32,
    /// Seconds before a check counts as failed (timeoutSeconds).
    pub(crate) timeout: i32,
    /// Consecutive failures before UNHEALTHY (failureThreshold).
    pub(crate) retries: i32,
    /// Grace period in seconds (initialDelaySeconds).
    pub(crate) start_period: i32,
}

/// A secret to write before the task definition is registered.
#[derive(Debug, Clone)]
pub(crate) struct SecretWrite {
    /// Secret name.
    pub(crate) name: String,
    /// JSON value.
    pub(crate) value: SecretString,
}

/// Everything `create` needs, computed before any call.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The definition; `secrets` valueFrom and `repositoryCredentials` still hold secret
    /// NAMES until [`Plan::finish`] replaces them with ARNs.
    draft: TaskDef,
    /// Secrets to write (idempotently) first.
    pub(crate) secrets: Vec<SecretWrite>,
    /// Task tags (ownership).
    pub(crate) tags: Vec<(String, String)>,
    /// RunTask `startedBy` (the workload id).
    pub(crate) started_by: String,
    /// RunTask `clientToken` (the workload id: at most 64 characters; a restart's run has a
    /// token of its own, see `client.rs`).
    pub(crate) client_token: String,
}

impl Plan {
    /// The definition with secret names replaced by the ARNs Secrets Manager returned, and its
    /// content-hash family.
    pub(crate) fn finish(
        &self,
        arns: &BTreeMap<String, String>,
    ) -> Result<TaskDef, TranslateError> {
        let arn = |name: &str| {
            arns.get(name)
                .cloned()
                .ok_or_else(|| TranslateError::Invalid {
                    field: "secrets".into(),
                    reason: format!("secret {name} was not written"),
                })
        };
        let mut def = self.draft.clone();
        for c in &mut def.containers {
            for (_, value_from) in &mut c.secrets {
                // Drafts hold `<secret name>|<json key>`.
                let (name, key) = value_from.split_once('|').expect("draft secret reference");
                *value_from = format!("{}:{key}::", arn(name)?);
            }
            if let Some(creds) = &mut c.repository_credentials {
                *creds = arn(creds)?;
            }
        }
        def.family = family_of(&def);
        Ok(def)
    }
}

/// `bg-` + the first 32 hex digits of SHA-256 over the definition without its family.
fn family_of(def: &TaskDef) -> String {
    let mut unnamed = def.clone();
    unnamed.family.clear();
    let json = serde_json::to_vec(&unnamed).expect("a task definition serializes");
    let hex: String = Sha256::digest(&json)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{FAMILY_PREFIX}{hex}")
}

/// The secret holding a workload's secret env.
pub fn env_secret_name(settings: &Settings, workload_id: &str) -> String {
    format!("{}{workload_id}/env", settings.secrets_prefix)
}

/// The name prefix of every secret of a workload.
pub(crate) fn secrets_name_prefix(settings: &Settings, workload_id: &str) -> String {
    format!("{}{workload_id}/", settings.secrets_prefix)
}

/// Translates a pod, refusing what Fargate cannot run. The steps, in the order their refusals
/// are checked: the pod as a whole, its volumes, container memories, each container (in task
/// order), the execution role its secrets and logs need, the tags, the RunTask token.
pub(crate) fn plan(spec: &WorkloadSpec, settings: &Settings) -> Result<Plan, TranslateError> {
    let pod = checked_pod(spec)?;
    let (volumes, skipped_volumes) = volumes(pod.volumes.as_deref().unwrap_or_default())?;
    let inits = pod.init_containers.as_deref().unwrap_or_default();
    let all: Vec<(&Container, bool, &str)> = inits
        .iter()
        .map(|c| (c, true, "spec.initContainers"))
        .chain(pod.containers.iter().map(|c| (c, false, "spec.containers")))
        .collect();
    let memories = container_memories(&all, spec.size.memory_mib)?;
    let mut shared = Shared::default();
    let mut containers = Vec::new();
    for (i, ((c, init, path), memory)) in all.iter().zip(memories).enumerate() {
        // Init containers run one after the other; a sidecar (an init container with
        // `restartPolicy: Always`) only has to have started for the next one to go, and runs
        // beside the pod's containers: non-essential, so it never decides the pod's end and ECS
        // stops it when the pod's containers exit, as a kubelet does.
        let waits_for: Vec<&Container> = if *init {
            i.checked_sub(1)
                .map(|prev| all[prev].0)
                .into_iter()
                .collect()
        } else {
            inits.iter().collect()
        };
        let (sidecars, regular): (Vec<&Container>, Vec<&Container>) =
            waits_for.into_iter().partition(|c| is_sidecar(c));
        let names = |cs: Vec<&Container>| cs.iter().map(|c| c.name.clone()).collect();
        let (depends_on, depends_on_start): (Vec<String>, Vec<String>) =
            (names(regular), names(sidecars));
        let slot = Slot {
            c,
            init: *init,
            path,
            memory,
            depends_on,
            depends_on_start,
        };
        let mountable = (&volumes, &skipped_volumes);
        containers.push(container_def(
            slot,
            spec,
            pod,
            settings,
            mountable,
            &mut shared,
        )?);
    }
    let secrets = secret_writes(spec, settings, shared.secret_env, shared.registries)?;
    let tags = tags(spec, inits, &shared.readiness_checked)?;
    if spec.id.len() > 64 {
        return Err(TranslateError::Invalid {
            field: "id".into(),
            reason: format!(
                "workload id {} is longer than a RunTask clientToken (64)",
                spec.id
            ),
        });
    }
    Ok(Plan {
        draft: TaskDef {
            family: String::new(),
            cpu: (spec.size.milli_cpu * 1024 / 1000).to_string(),
            memory: spec.size.memory_mib.to_string(),
            execution_role_arn: settings.execution_role_arn.clone(),
            task_role_arn: settings.task_role_arn.clone(),
            containers,
            volumes: volumes.into_iter().collect(),
        },
        secrets,
        tags,
        started_by: spec.id.clone(),
        client_token: spec.id.clone(),
    })
}

/// Whether `c` is a sidecar: an init container with `restartPolicy: Always`.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Why Fargate cannot run `feature`, in its terms (the kit's [`refusal`] asks).
fn why_not(feature: Feature) -> Option<String> {
    const NO_COMMAND: &str =
        "an ECS health check only runs a command inside the container, so Fargate cannot run";
    Some(match feature {
        Feature::HostNetwork | Feature::HostPid | Feature::HostIpc => {
            "Fargate tasks run in their own network and process namespaces".into()
        }
        Feature::HostPort => "awsvpc tasks publish container ports only".into(),
        Feature::Privileged => "Fargate does not run privileged containers".into(),
        Feature::HostPathVolume | Feature::PersistentVolumeClaim => {
            "Fargate tasks mount no host paths or claims".into()
        }
        Feature::HttpGetProbe => format!("{NO_COMMAND} an httpGet probe"),
        Feature::TcpSocketProbe => format!("{NO_COMMAND} a tcpSocket probe"),
        Feature::GrpcProbe => format!("{NO_COMMAND} a gRPC probe"),
        Feature::StartupProbe => "an ECS health check has a start period but no separate startup check, so Fargate cannot run a startup probe".into(),
        Feature::InitContainerProbe => "Fargate runs init containers to completion before the pod's containers and does not probe them".into(),
        Feature::Sidecar | Feature::SidecarInEndingPod => {
            "Fargate runs sidecars as non-essential containers".into()
        }
        Feature::ServiceAccountToken => {
            "Fargate tasks mount no files, so a service-account token volume cannot be given".into()
        }
        Feature::SecretVolume
        | Feature::ConfigMapVolume
        | Feature::ProjectedVolume
        | Feature::DownwardApiVolume => "Fargate has no secret, configMap, projected or downwardAPI volume type; use env vars (secret env becomes a Secrets Manager reference) instead".into(),
        Feature::AzureFileVolume
        | Feature::GitRepoVolume
        | Feature::OtherVolume
        | Feature::VolumeDevice => "Fargate tasks mount emptyDir volumes only".into(),
        Feature::MemoryEmptyDir => "Fargate has no tmpfs volumes (medium: Memory)".into(),
        Feature::AddedCapability => "Fargate only allows adding SYS_PTRACE".into(),
        Feature::SubPath => "ECS mount points have no subPath".into(),
        Feature::SctpPort => "ECS maps only TCP and UDP ports".into(),
        Feature::HttpGetProbeHost => format!("{NO_COMMAND} an httpGet probe"),
        Feature::ExecProbe
        | Feature::AutomaticToken
        | Feature::SysPtrace
        | Feature::WorkingDir
        | Feature::ArgsWithoutEntrypoint
        | Feature::LifecycleHook
        | Feature::Sysctls
        | Feature::HostAliases
        | Feature::InitContainerPort
        | Feature::InitContainerAfterSidecar => return None,
    })
}

/// The pod's spec, when the pod as a whole can be a Fargate task.
fn checked_pod(spec: &WorkloadSpec) -> Result<&PodSpec, TranslateError> {
    let pod = pod_spec(&spec.pod)?;
    refusal(
        &spec.pod,
        crate::policy::model::ProviderKind::Fargate,
        why_not,
    )?;
    if spec.size.milli_cpu == 0 || spec.size.memory_mib == 0 {
        return Err(invalid(
            "size",
            format!("{:?} is not a Fargate size", spec.size),
        ));
    }
    Ok(pod)
}

/// What the containers of a pod add up to while they are translated one by one.
#[derive(Default)]
struct Shared {
    /// Every container's secret env, keyed `<container>/<VAR>`: the one env secret.
    secret_env: BTreeMap<String, String>,
    /// Registry host -> the secret with its credentials, in order of first use.
    registries: Vec<(String, SecretWrite)>,
    /// Containers whose health check stands for a readiness probe.
    readiness_checked: Vec<String>,
}

/// (name, value) pairs, sorted by name.
type Pairs = Vec<(String, String)>;

/// One container of the task, with what its place in the task decides.
struct Slot<'a> {
    c: &'a Container,
    /// An init container (not essential, not probed).
    init: bool,
    /// `spec.initContainers` or `spec.containers`.
    path: &'a str,
    /// Container-level hard memory, MiB.
    memory: i32,
    /// The init containers it waits for to complete.
    depends_on: Vec<String>,
    /// The sidecars it waits for to start.
    depends_on_start: Vec<String>,
}

impl Slot<'_> {
    /// The pod field `f` of this container (`spec.containers[app].image`).
    fn field(&self, f: &str) -> String {
        format!("{}[{}].{f}", self.path, self.c.name)
    }
}

/// One container's definition; its secrets and readiness go into `shared`.
fn container_def(
    slot: Slot<'_>,
    spec: &WorkloadSpec,
    pod: &PodSpec,
    settings: &Settings,
    (volumes, skipped): (&BTreeSet<String>, &BTreeSet<String>),
    shared: &mut Shared,
) -> Result<ContainerDef, TranslateError> {
    let c = slot.c;
    let field = |f: &str| slot.field(f);
    let image = checked_container(&slot)?;
    let (health_check, from_readiness) = health_check(c, slot.init, &field)?;
    if from_readiness {
        shared.readiness_checked.push(c.name.clone());
    }
    let (environment, secrets) = env(&slot, spec, settings, &mut shared.secret_env)?;
    // ECS does not expand $(VAR): the kubelet's expansion happens here.
    let resolved_env = spec
        .resolved
        .env
        .get(&c.name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (entry_point, command) = command_and_args(
        &format!("{}[{}]", slot.path, c.name),
        c,
        resolved_env,
        "Fargate",
    )?;
    let repository_credentials =
        repository_credentials(&image, spec, settings, &mut shared.registries);
    Ok(ContainerDef {
        name: c.name.clone(),
        image,
        essential: !slot.init,
        entry_point: Some(entry_point).filter(|v| !v.is_empty()),
        command: Some(command).filter(|v| !v.is_empty()),
        working_dir: c.working_dir.clone(),
        user: user(c, pod),
        memory: slot.memory,
        environment,
        secrets,
        repository_credentials,
        mount_points: mount_points(&slot, volumes, skipped)?,
        port_mappings: port_mappings(&slot)?,
        depends_on: slot.depends_on,
        depends_on_start: slot.depends_on_start,
        stop_timeout: stop_timeout(pod),
        log: settings.log_group.as_ref().map(|g| {
            (
                g.clone(),
                settings.region.clone(),
                LOG_STREAM_PREFIX.to_string(),
            )
        }),
        health_check,
    })
}

/// The container's image, when the container is one Fargate runs (no privileges, no added
/// capability but SYS_PTRACE, no GPU).
fn checked_container(slot: &Slot<'_>) -> Result<String, TranslateError> {
    let c = slot.c;
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid(slot.field("image"), "no image"))?;
    // Privileged containers and capabilities other than SYS_PTRACE are refused before, by the
    // kit's `refusal` (see `why_not`).
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(gpu) = limits.keys().find(|k| k.contains("gpu")) {
            return Err(unsupported(
                slot.field(&format!("resources.limits[{gpu}]")),
                "Fargate has no GPUs",
            ));
        }
    }
    Ok(image)
}

/// ECS `user`: runAsUser[:runAsGroup], the container's settings before the pod's.
fn user(c: &Container, pod: &PodSpec) -> Option<String> {
    let container = c.security_context.as_ref();
    let pod = pod.security_context.as_ref();
    let user = container
        .and_then(|sc| sc.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let group = container
        .and_then(|sc| sc.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    user.map(|u| match group {
        Some(g) => format!("{u}:{g}"),
        None => u.to_string(),
    })
}

/// The container's plain env and its secret env references (drafts: `<secret name>|<json key>`),
/// both sorted by name, the last definition of a name winning; secret values go into
/// `secret_env`.
fn env(
    slot: &Slot<'_>,
    spec: &WorkloadSpec,
    settings: &Settings,
    secret_env: &mut BTreeMap<String, String>,
) -> Result<(Pairs, Pairs), TranslateError> {
    let name = &slot.c.name;
    let mut plain: BTreeMap<String, String> = BTreeMap::new();
    let mut secret: BTreeMap<String, String> = BTreeMap::new();
    for var in spec
        .resolved
        .env
        .get(name)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        plain.remove(&var.name);
        secret.remove(&var.name);
        match &var.value {
            EnvValue::Plain(v) => {
                plain.insert(var.name.clone(), v.clone());
            }
            EnvValue::Secret(v) => {
                if var.name.contains(':') {
                    return Err(unsupported(
                        slot.field(&format!("env[{}]", var.name)),
                        "a secret env var name with ':' cannot be a Secrets Manager JSON key reference",
                    ));
                }
                let key = format!("{name}/{}", var.name);
                secret_env.insert(key.clone(), v.expose_secret().to_string());
                secret.insert(
                    var.name.clone(),
                    format!("{}|{key}", env_secret_name(settings, &spec.id)),
                );
            }
        }
    }
    Ok((plain.into_iter().collect(), secret.into_iter().collect()))
}

/// The name of the secret with the credentials of `image`'s registry, when the pod has them;
/// the first container pulling from a registry adds its secret to `registries`.
fn repository_credentials(
    image: &str,
    spec: &WorkloadSpec,
    settings: &Settings,
    registries: &mut Vec<(String, SecretWrite)>,
) -> Option<String> {
    let cred = registry_credential_for(image, spec)?;
    let server = normalize_registry(&cred.server);
    let n = registries
        .iter()
        .position(|(s, _)| *s == server)
        .unwrap_or_else(|| {
            let name = format!(
                "{}registry/{}",
                secrets_name_prefix(settings, &spec.id),
                registries.len()
            );
            let value = serde_json::json!({
                "username": cred.username,
                "password": cred.password.expose_secret(),
            })
            .to_string();
            registries.push((
                server.clone(),
                SecretWrite {
                    name,
                    value: SecretString::from(value),
                },
            ));
            registries.len() - 1
        });
    Some(registries[n].1.name.clone())
}

/// ECS mount points: (volume, container path, read only). Mounts of skipped volumes are left
/// out; subPath is refused.
fn mount_points(
    slot: &Slot<'_>,
    volumes: &BTreeSet<String>,
    skipped: &BTreeSet<String>,
) -> Result<Vec<(String, String, bool)>, TranslateError> {
    let mut out = Vec::new();
    for m in slot.c.volume_mounts.as_deref().unwrap_or_default() {
        if skipped.contains(&m.name) {
            continue;
        }
        if !volumes.contains(&m.name) {
            return Err(invalid(
                slot.field(&format!("volumeMounts[{}]", m.name)),
                "no such volume",
            ));
        }
        // subPath is refused before (Feature::SubPath).
        out.push((
            m.name.clone(),
            m.mount_path.clone(),
            m.read_only == Some(true),
        ));
    }
    Ok(out)
}

/// ECS port mappings: (containerPort, `tcp`/`udp`); other protocols are refused.
fn port_mappings(slot: &Slot<'_>) -> Result<Vec<(i32, String)>, TranslateError> {
    let mut out = Vec::new();
    for p in slot.c.ports.as_deref().unwrap_or_default() {
        let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        // SCTP is refused before (Feature::SctpPort); nothing else is a Kubernetes protocol.
        if protocol != "tcp" && protocol != "udp" {
            return Err(invalid(
                slot.field(&format!("ports[{}].protocol", p.container_port)),
                format!("{protocol} is not a port protocol"),
            ));
        }
        out.push((p.container_port, protocol));
    }
    Ok(out)
}

/// The secrets to write: the env secret (when any container has secret env), then each
/// registry's. Any of them, or logs, need the target's execution role.
fn secret_writes(
    spec: &WorkloadSpec,
    settings: &Settings,
    secret_env: BTreeMap<String, String>,
    registries: Vec<(String, SecretWrite)>,
) -> Result<Vec<SecretWrite>, TranslateError> {
    let needs_execution_role =
        !secret_env.is_empty() || !registries.is_empty() || settings.log_group.is_some();
    if needs_execution_role && settings.execution_role_arn.is_none() {
        return Err(TranslateError::Target {
            target: settings.target.clone(),
            reason: "the pod needs secrets, registry credentials or logs, which need a task execution role; the target has none".into(),
        });
    }
    let mut secrets = Vec::new();
    if !secret_env.is_empty() {
        let json = serde_json::to_string(&secret_env).expect("a string map serializes");
        secrets.push(SecretWrite {
            name: env_secret_name(settings, &spec.id),
            value: SecretString::from(json),
        });
    }
    secrets.extend(registries.into_iter().map(|(_, s)| s));
    Ok(secrets)
}

/// The task's tags: ownership ([`OwnerKeys::AWS_TAGS`]) and the workload id, then the init and
/// readiness-checked containers (each list within ECS's 256 characters of a tag value).
fn tags(
    spec: &WorkloadSpec,
    inits: &[Container],
    readiness_checked: &[String],
) -> Result<Vec<(String, String)>, TranslateError> {
    let mut tags: Vec<(String, String)> =
        OwnerKeys::AWS_TAGS.pairs(&spec.owner, Values::AsIs).into();
    tags.push((WORKLOAD.to_string(), spec.id.clone()));
    if !inits.is_empty() {
        let names = inits.iter().map(|c| c.name.as_str());
        let joined = tag_value_list(names, "spec.initContainers", "the init container names")?;
        tags.push((TAG_INIT_CONTAINERS.to_string(), joined));
    }
    if !readiness_checked.is_empty() {
        let joined = tag_value_list(
            readiness_checked.iter().map(String::as_str),
            "spec.containers",
            "the names of the containers with readiness probes",
        )?;
        tags.push((TAG_READINESS.to_string(), joined));
    }
    Ok(tags)
}

/// `names` comma-separated, refused (as `field`, naming `what`) beyond the 256 characters of an
/// ECS tag value.
fn tag_value_list<'a>(
    names: impl Iterator<Item = &'a str>,
    field: &str,
    what: &str,
) -> Result<String, TranslateError> {
    let joined = names.collect::<Vec<_>>().join(",");
    if joined.len() > 256 {
        return Err(unsupported(
            field,
            format!("{what} exceed the 256 characters of an ECS tag value"),
        ));
    }
    Ok(joined)
}

fn elsewhere(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Elsewhere {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The container's ECS health check from its exec liveness / readiness probe, and whether it
/// stands for a readiness probe (the container is ready only while HEALTHY). ECS runs one
/// command per container and nothing else: every other probe kind, startup probes and probes on
/// init containers were refused for this target before, by the kit's `refusal` (see `why_not`).
fn health_check(
    c: &Container,
    init: bool,
    field: &dyn Fn(&str) -> String,
) -> Result<(Option<HealthCheckDef>, bool), TranslateError> {
    if init {
        return Ok((None, false));
    }
    let liveness = c
        .liveness_probe
        .as_ref()
        .map(|p| exec_check(&field("livenessProbe"), p))
        .transpose()?;
    let readiness = c
        .readiness_probe
        .as_ref()
        .map(|p| exec_check(&field("readinessProbe"), p))
        .transpose()?;
    Ok(match (liveness, readiness) {
        (None, None) => (None, false),
        (Some(l), None) => (Some(l), false),
        (None, Some(r)) => (Some(r), true),
        // One check serves both when they run the same command; the liveness timings win.
        (Some(l), Some(r)) if l.command == r.command => (Some(l), true),
        (Some(_), Some(_)) => {
            return Err(elsewhere(
                field("readinessProbe"),
                "ECS runs one health check per container, and the liveness and readiness probes run different commands",
            ));
        }
    })
}

/// An exec probe as an ECS health check, its timings clamped to ECS's ranges (Kubernetes'
/// defaults where unset: period 10 s, timeout 1 s, 3 failures, no initial delay).
fn exec_check(field: &str, p: &Probe) -> Result<HealthCheckDef, TranslateError> {
    let command = p
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| TranslateError::Invalid {
            field: format!("{field}.exec.command"),
            reason: "a probe needs a command".into(),
        })?;
    let command = match command.as_slice() {
        [sh, dash_c, script] if (sh == "sh" || sh == "/bin/sh") && dash_c == "-c" => {
            vec!["CMD-SHELL".to_string(), script.clone()]
        }
        _ => std::iter::once("CMD".to_string()).chain(command).collect(),
    };
    let clamp = |v: i32, r: &RangeInclusive<i32>| v.clamp(*r.start(), *r.end());
    let interval = clamp(p.period_seconds.unwrap_or(10), &HEALTH_INTERVAL);
    let timeout = clamp(p.timeout_seconds.unwrap_or(1), &HEALTH_TIMEOUT).min(interval - 1);
    Ok(HealthCheckDef {
        command,
        interval,
        timeout,
        retries: clamp(p.failure_threshold.unwrap_or(3), &HEALTH_RETRIES),
        start_period: clamp(p.initial_delay_seconds.unwrap_or(0), &HEALTH_START_PERIOD),
    })
}

/// emptyDir volumes become task volumes (Fargate ephemeral storage); the automatic token volume
/// admission adds (`kube-api-access-*`) is left out (tasks mount no files; declared as ignored,
/// so the placement Event says so); every other kind, and a tmpfs, is refused before by the
/// kit's `refusal` (declared features). Returns (task volumes, skipped volumes).
fn volumes(volumes: &[Volume]) -> Result<(BTreeSet<String>, BTreeSet<String>), TranslateError> {
    let mut task = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for v in volumes {
        if v.empty_dir.is_some() {
            task.insert(v.name.clone());
        } else if is_automatic_token(v) {
            // Declared as ignored (kit::declared): the placement Event says it is left out.
            skipped.insert(v.name.clone());
        } else {
            return Err(unsupported(
                format!("spec.volumes[{}]", v.name),
                "Fargate tasks mount emptyDir volumes only",
            ));
        }
    }
    Ok((task, skipped))
}

/// Container-level hard memory (MiB) for each container: its limit (else request) capped at the
/// task's memory; containers without either share what is left equally. When the sum exceeds
/// the task, every container gets an equal share.
fn container_memories(
    all: &[(&Container, bool, &str)],
    task_memory: u64,
) -> Result<Vec<i32>, TranslateError> {
    let mut explicit = Vec::new();
    for (c, _, path) in all {
        let res = c.resources.as_ref();
        let q = res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .or_else(|| {
                res.and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("memory"))
            });
        explicit.push(match q {
            Some(q) => Some(
                mib(q)
                    .ok_or_else(|| TranslateError::Invalid {
                        field: format!("{path}[{}].resources.memory", c.name),
                        reason: format!("{:?} is not a quantity", q.0),
                    })?
                    .min(task_memory),
            ),
            None => None,
        });
    }
    let n = all.len() as u64;
    let used: u64 = explicit.iter().flatten().sum();
    let unset = explicit.iter().filter(|e| e.is_none()).count() as u64;
    let share = task_memory
        .saturating_sub(used)
        .checked_div(unset)
        .unwrap_or(0);
    let mut out: Vec<u64> = explicit.iter().map(|e| e.unwrap_or(share)).collect();
    if used > task_memory || out.iter().any(|m| *m < 6) {
        out = vec![task_memory / n; all.len()];
    }
    Ok(out.into_iter().map(|m| m.max(6) as i32).collect())
}

/// A memory quantity in MiB, rounded up.
fn mib(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((n * factor / (1024.0 * 1024.0)).ceil() as u64)
}

/// The registry host of an image reference (`docker.io` for Docker Hub short names).
fn image_registry(image: &str) -> String {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            normalize_registry(host)
        }
        _ => "docker.io".into(),
    }
}

/// A registry server as written in a dockerconfigjson (`https://index.docker.io/v1/`) -> host.
fn normalize_registry(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

fn registry_credential_for<'a>(
    image: &str,
    spec: &'a WorkloadSpec,
) -> Option<&'a crate::provider::contract::RegistryCredential> {
    let registry = image_registry(image);
    spec.resolved
        .registry_credentials
        .iter()
        .find(|c| normalize_registry(&c.server) == registry)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::sizing::Size;
    use crate::provider::ProviderError;
    use crate::provider::TargetRejection;
    use crate::provider::contract::{EnvVar, Owner, RegistryCredential, Resolved};
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, ExecAction, GRPCAction, HTTPGetAction,
        HostPathVolumeSource, Pod, PodSpec, ProjectedVolumeSource, ResourceRequirements,
        SecurityContext, ServiceAccountTokenProjection, TCPSocketAction, VolumeMount,
        VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn the_grace_period_becomes_the_stop_timeout_within_fargates_ceiling() {
        let pod = |grace: Option<i64>| PodSpec {
            termination_grace_period_seconds: grace,
            ..Default::default()
        };
        assert_eq!(stop_timeout(&pod(None)), None);
        assert_eq!(stop_timeout(&pod(Some(30))), None);
        assert_eq!(stop_timeout(&pod(Some(60))), Some(60));
        assert_eq!(stop_timeout(&pod(Some(600))), Some(120));
        assert_eq!(stop_timeout(&pod(Some(0))), Some(2));
    }

    #[test]
    fn every_pod_of_the_corpus_translates_unless_it_uses_a_feature_fargate_does_not_run() {
        let translated =
            crate::provider::kit::corpus::check(crate::policy::model::ProviderKind::Fargate, |w| {
                plan(w, &settings())
            });
        assert!(translated >= 2, "{translated}");
    }

    #[test]
    fn every_field_feature_fargate_lacks_is_refused_naming_it_and_the_others_translate() {
        use crate::provider::kit::Feature;
        let translated = crate::provider::kit::corpus::check_features(
            crate::policy::model::ProviderKind::Fargate,
            |w| plan(w, &settings()),
        );
        assert_eq!(
            translated,
            [
                Feature::SysPtrace,
                Feature::WorkingDir,
                Feature::ArgsWithoutEntrypoint,
                Feature::LifecycleHook,
                Feature::Sysctls,
                Feature::HostAliases,
                Feature::InitContainerPort,
                Feature::InitContainerAfterSidecar,
            ]
        );
    }

    fn settings() -> Settings {
        Settings {
            target: "fargate-use1".into(),
            region: "us-east-1".into(),
            cluster: "c".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            assign_public_ip: false,
            spot: false,
            execution_role_arn: Some("arn:aws:iam::1:role/exec".into()),
            task_role_arn: None,
            log_group: None,
            secrets_prefix: "burstgate/".into(),
        }
    }

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn spec_with(uid: &str, pod: PodSpec, resolved: Resolved) -> WorkloadSpec {
        WorkloadSpec {
            id: format!("bg-{uid}"),
            owner: Owner {
                cluster_id: "c1".into(),
                node: "burstgate".into(),
                namespace: "default".into(),
                pod: "web".into(),
                pod_uid: uid.into(),
            },
            target: "fargate-use1".into(),
            region: "us-east-1".into(),
            size: Size {
                milli_cpu: 250,
                memory_mib: 512,
            },
            pod: Pod {
                spec: Some(pod),
                ..Default::default()
            },
            resolved: Arc::new(resolved),
        }
    }

    fn one(c: Container) -> PodSpec {
        PodSpec {
            containers: vec![c],
            ..Default::default()
        }
    }

    fn env(container: &str, vars: Vec<(&str, EnvValue)>) -> Resolved {
        Resolved {
            env: [(
                container.to_string(),
                vars.into_iter()
                    .map(|(n, value)| EnvVar {
                        name: n.into(),
                        value,
                    })
                    .collect(),
            )]
            .into(),
            ..Default::default()
        }
    }

    fn arns(plan: &Plan) -> BTreeMap<String, String> {
        plan.secrets
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    format!(
                        "arn:aws:secretsmanager:us-east-1:1:secret:{}-AbCdEf",
                        s.name
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn a_secret_env_var_becomes_a_secrets_reference_and_never_environment() {
        let resolved = env(
            "app",
            vec![
                ("MODE", EnvValue::Plain("prod".into())),
                ("DB_PASSWORD", EnvValue::Secret("hunter2".into())),
            ],
        );
        let plan = plan(
            &spec_with("u1", one(container("app", "nginx")), resolved),
            &settings(),
        )
        .unwrap();
        let def = plan.finish(&arns(&plan)).unwrap();
        let c = &def.containers[0];
        assert_eq!(
            c.environment,
            vec![("MODE".to_string(), "prod".to_string())]
        );
        assert_eq!(
            c.secrets,
            vec![("DB_PASSWORD".to_string(), "arn:aws:secretsmanager:us-east-1:1:secret:burstgate/bg-u1/env-AbCdEf:app/DB_PASSWORD::".to_string())]
        );
        assert!(
            !serde_json::to_string(&def).unwrap().contains("hunter2"),
            "the task definition carries no secret value"
        );
        assert_eq!(plan.secrets.len(), 1);
        assert_eq!(plan.secrets[0].name, "burstgate/bg-u1/env");
        assert!(plan.secrets[0].value.expose_secret().contains("hunter2"));
        assert!(
            !format!("{plan:?}").contains("hunter2"),
            "Debug of the plan redacts secret values"
        );
    }

    #[test]
    fn a_later_env_definition_of_the_same_name_wins() {
        let resolved = env(
            "app",
            vec![
                ("X", EnvValue::Secret("s".into())),
                ("X", EnvValue::Plain("p".into())),
            ],
        );
        let plan = plan(
            &spec_with("u1", one(container("app", "nginx")), resolved),
            &settings(),
        )
        .unwrap();
        let def = plan.finish(&arns(&plan)).unwrap();
        assert_eq!(
            (
                def.containers[0].environment.len(),
                def.containers[0].secrets.len()
            ),
            (1, 0)
        );
    }

    #[test]
    fn identical_pods_share_one_task_definition_family() {
        let a = plan(
            &spec_with(
                "u1",
                one(container("app", "nginx:1.27")),
                Resolved::default(),
            ),
            &settings(),
        )
        .unwrap();
        let b = plan(
            &spec_with(
                "u2",
                one(container("app", "nginx:1.27")),
                Resolved::default(),
            ),
            &settings(),
        )
        .unwrap();
        let c = plan(
            &spec_with(
                "u3",
                one(container("app", "nginx:1.28")),
                Resolved::default(),
            ),
            &settings(),
        )
        .unwrap();
        let fam = |p: &Plan| p.finish(&BTreeMap::new()).unwrap().family;
        assert_eq!(fam(&a), fam(&b));
        assert_ne!(fam(&a), fam(&c));
        assert!(
            fam(&a).starts_with("bg-") && fam(&a).len() == 35,
            "{}",
            fam(&a)
        );
    }

    #[test]
    fn sizes_become_cpu_units_and_every_container_gets_memory() {
        let mut spec = spec_with(
            "u1",
            PodSpec {
                containers: vec![container("a", "x"), container("b", "y")],
                ..Default::default()
            },
            Resolved::default(),
        );
        spec.size = Size {
            milli_cpu: 1000,
            memory_mib: 2048,
        };
        let def = plan(&spec, &settings())
            .unwrap()
            .finish(&BTreeMap::new())
            .unwrap();
        assert_eq!((def.cpu.as_str(), def.memory.as_str()), ("1024", "2048"));
        assert_eq!(
            def.containers.iter().map(|c| c.memory).collect::<Vec<_>>(),
            vec![1024, 1024]
        );
    }

    #[test]
    fn a_container_memory_limit_is_its_hard_limit_and_the_rest_share_the_remainder() {
        let mut a = container("a", "x");
        a.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("256Mi".into()))].into()),
            ..Default::default()
        });
        let mut spec = spec_with(
            "u1",
            PodSpec {
                containers: vec![a, container("b", "y")],
                ..Default::default()
            },
            Resolved::default(),
        );
        spec.size = Size {
            milli_cpu: 500,
            memory_mib: 1024,
        };
        let def = plan(&spec, &settings())
            .unwrap()
            .finish(&BTreeMap::new())
            .unwrap();
        assert_eq!(
            def.containers.iter().map(|c| c.memory).collect::<Vec<_>>(),
            vec![256, 768]
        );
    }

    #[test]
    fn a_config_map_volume_is_refused_for_this_target_before_any_call_so_the_pod_goes_elsewhere() {
        let mut pod = one(container("app", "nginx"));
        pod.volumes = Some(vec![Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "c".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let err: ProviderError = plan(&spec_with("u1", pod, Resolved::default()), &settings())
            .unwrap_err()
            .into();
        assert!(
            matches!(&err, ProviderError::Target(TargetRejection::Unsupported { field, reason })
                if field == "spec.volumes[cfg].configMap" && reason.ends_with("aci, cluster can")),
            "{err:?}"
        );
    }

    #[test]
    fn a_host_path_volume_is_refused_naming_its_type() {
        let mut pod = one(container("app", "nginx"));
        pod.volumes = Some(vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                type_: None,
            }),
            ..Default::default()
        }]);
        let err = plan(&spec_with("u1", pod, Resolved::default()), &settings()).unwrap_err();
        assert!(err.to_string().contains("hostPath"), "{err}");
    }

    #[test]
    fn an_empty_dir_becomes_a_task_volume_mounted_where_the_pod_mounts_it() {
        let mut c = container("app", "nginx");
        c.volume_mounts = Some(vec![VolumeMount {
            name: "scratch".into(),
            mount_path: "/tmp/s".into(),
            ..Default::default()
        }]);
        let mut pod = one(c);
        pod.volumes = Some(vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]);
        let def = plan(&spec_with("u1", pod, Resolved::default()), &settings())
            .unwrap()
            .finish(&BTreeMap::new())
            .unwrap();
        assert_eq!(def.volumes, vec!["scratch".to_string()]);
        assert_eq!(
            def.containers[0].mount_points,
            vec![("scratch".to_string(), "/tmp/s".to_string(), false)]
        );
    }

    #[test]
    fn the_api_access_token_volume_is_left_out_with_its_mounts() {
        let mut c = container("app", "nginx");
        c.volume_mounts = Some(vec![VolumeMount {
            name: "kube-api-access-abcde".into(),
            mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            ..Default::default()
        }]);
        let mut pod = one(c);
        pod.volumes = Some(vec![Volume {
            name: "kube-api-access-abcde".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let def = plan(&spec_with("u1", pod, Resolved::default()), &settings())
            .unwrap()
            .finish(&BTreeMap::new())
            .unwrap();
        assert!(def.volumes.is_empty() && def.containers[0].mount_points.is_empty());
    }

    #[test]
    fn a_privileged_container_is_refused() {
        let mut c = container("app", "nginx");
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let err = plan(&spec_with("u1", one(c), Resolved::default()), &settings()).unwrap_err();
        assert!(
            matches!(err, TranslateError::Unsupported { ref field, .. } if field.contains("privileged")),
            "{err}"
        );
    }

    #[test]
    fn a_sidecar_starts_beside_the_pods_containers_and_never_decides_the_pods_end() {
        // A native sidecar (the 1.20 apiserver drops `restartPolicy` on init containers, so this
        // is unit-tested only; the corpus' sidecar-mesh pod goes through `corpus::check`).
        let mut proxy = container("proxy", "envoy");
        proxy.restart_policy = Some("Always".into());
        let pod = PodSpec {
            init_containers: Some(vec![
                container("setup", "busybox"),
                proxy,
                container("late", "busybox"),
            ]),
            ..one(container("app", "nginx"))
        };
        let plan = plan(&spec_with("u1", pod, Resolved::default()), &settings()).unwrap();
        let def = plan.finish(&BTreeMap::new()).unwrap();
        let by = |n: &str| def.containers.iter().find(|c| c.name == n).unwrap();
        assert!(!by("proxy").essential, "a sidecar never ends the task");
        assert_eq!(by("proxy").depends_on, vec!["setup".to_string()]);
        // What follows a sidecar waits for it to start, not to complete.
        assert_eq!(
            (
                by("late").depends_on.clone(),
                by("late").depends_on_start.clone()
            ),
            (Vec::<String>::new(), vec!["proxy".to_string()])
        );
        assert_eq!(
            (
                by("app").depends_on.clone(),
                by("app").depends_on_start.clone()
            ),
            (
                vec!["setup".to_string(), "late".to_string()],
                vec!["proxy".to_string()]
            )
        );
        // Reported as an init container, so the pod's success is judged without it.
        assert!(plan.tags.contains(&(
            TAG_INIT_CONTAINERS.to_string(),
            "setup,proxy,late".to_string()
        )));
    }

    #[test]
    fn init_containers_are_not_essential_run_in_order_and_gate_the_pods_containers() {
        let pod = PodSpec {
            init_containers: Some(vec![container("i1", "busybox"), container("i2", "busybox")]),
            ..one(container("app", "nginx"))
        };
        let plan = plan(&spec_with("u1", pod, Resolved::default()), &settings()).unwrap();
        let def = plan.finish(&BTreeMap::new()).unwrap();
        let by = |n: &str| def.containers.iter().find(|c| c.name == n).unwrap();
        assert_eq!(
            (by("i1").essential, by("i2").essential, by("app").essential),
            (false, false, true)
        );
        assert_eq!(by("i2").depends_on, vec!["i1".to_string()]);
        assert_eq!(
            by("app").depends_on,
            vec!["i1".to_string(), "i2".to_string()]
        );
        assert!(
            plan.tags
                .contains(&(TAG_INIT_CONTAINERS.to_string(), "i1,i2".to_string()))
        );
    }

    #[test]
    fn tags_carry_the_whole_ownership_and_started_by_is_the_workload_id() {
        let plan = plan(
            &spec_with("u1", one(container("app", "nginx")), Resolved::default()),
            &settings(),
        )
        .unwrap();
        let tag = |k: &str| {
            plan.tags
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            (
                tag("burstgate.io/cluster-id"),
                tag("burstgate.io/node"),
                tag("burstgate.io/namespace"),
                tag("burstgate.io/pod"),
                tag("burstgate.io/pod-uid")
            ),
            (
                Some("c1"),
                Some("burstgate"),
                Some("default"),
                Some("web"),
                Some("u1")
            )
        );
        assert_eq!(
            (plan.started_by.as_str(), plan.client_token.as_str()),
            ("bg-u1", "bg-u1")
        );
    }

    #[test]
    fn an_image_pull_secret_becomes_repository_credentials_in_its_own_secret() {
        let resolved = Resolved {
            registry_credentials: vec![RegistryCredential {
                server: "https://ghcr.io".into(),
                username: "me".into(),
                password: "tok3n".into(),
            }],
            ..Default::default()
        };
        let pod = PodSpec {
            containers: vec![
                container("app", "ghcr.io/me/app:1"),
                container("side", "nginx"),
            ],
            ..Default::default()
        };
        let plan = plan(&spec_with("u1", pod, resolved), &settings()).unwrap();
        assert_eq!(
            plan.secrets
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            vec!["burstgate/bg-u1/registry/0"]
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(plan.secrets[0].value.expose_secret())
                .unwrap(),
            serde_json::json!({"username": "me", "password": "tok3n"})
        );
        let def = plan.finish(&arns(&plan)).unwrap();
        assert_eq!(
            def.containers[0].repository_credentials.as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:1:secret:burstgate/bg-u1/registry/0-AbCdEf")
        );
        assert_eq!(
            def.containers[1].repository_credentials, None,
            "Docker Hub has no credential here"
        );
    }

    #[test]
    fn secrets_without_an_execution_role_are_a_target_problem() {
        let mut s = settings();
        s.execution_role_arn = None;
        let resolved = env("app", vec![("T", EnvValue::Secret("x".into()))]);
        let err: ProviderError = plan(
            &spec_with("u1", one(container("app", "nginx")), resolved),
            &s,
        )
        .unwrap_err()
        .into();
        assert!(
            matches!(
                err,
                ProviderError::Target(TargetRejection::Misconfigured { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn docker_hub_names_and_config_servers_normalize_to_one_registry() {
        assert_eq!(image_registry("nginx:1.27"), "docker.io");
        assert_eq!(image_registry("library/nginx"), "docker.io");
        assert_eq!(
            image_registry("123.dkr.ecr.us-east-1.amazonaws.com/app:1"),
            "123.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
    }

    #[test]
    fn log_settings_go_to_every_container_when_the_target_has_a_group() {
        let mut s = settings();
        s.log_group = Some("/burstgate/pods".into());
        let def = plan(
            &spec_with("u1", one(container("app", "nginx")), Resolved::default()),
            &s,
        )
        .unwrap()
        .finish(&BTreeMap::new())
        .unwrap();
        assert_eq!(
            def.containers[0].log,
            Some(("/burstgate/pods".into(), "us-east-1".into(), "bg".into()))
        );
    }

    fn exec_probe(command: &[&str]) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(command.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    fn with_probes(
        liveness: Option<Probe>,
        readiness: Option<Probe>,
    ) -> Result<Plan, TranslateError> {
        let mut c = container("app", "nginx");
        c.liveness_probe = liveness;
        c.readiness_probe = readiness;
        plan(&spec_with("u1", one(c), Resolved::default()), &settings())
    }

    fn check_of(plan: &Plan) -> Option<HealthCheckDef> {
        plan.finish(&BTreeMap::new()).unwrap().containers[0]
            .health_check
            .clone()
    }

    #[test]
    fn an_exec_liveness_probe_becomes_the_containers_health_check_with_its_timings() {
        let probe = Probe {
            period_seconds: Some(15),
            timeout_seconds: Some(3),
            failure_threshold: Some(4),
            initial_delay_seconds: Some(20),
            ..exec_probe(&["/bin/check", "--quick"])
        };
        let plan = with_probes(Some(probe), None).unwrap();
        assert_eq!(
            check_of(&plan),
            Some(HealthCheckDef {
                command: vec!["CMD".into(), "/bin/check".into(), "--quick".into()],
                interval: 15,
                timeout: 3,
                retries: 4,
                start_period: 20,
            })
        );
        assert!(
            !plan.tags.iter().any(|(k, _)| k == TAG_READINESS),
            "a liveness-only check does not gate readiness"
        );
    }

    #[test]
    fn a_sh_dash_c_probe_becomes_cmd_shell_with_its_script() {
        for sh in ["sh", "/bin/sh"] {
            let plan = with_probes(
                Some(exec_probe(&[sh, "-c", "test -f /tmp/ok || exit 1"])),
                None,
            )
            .unwrap();
            assert_eq!(
                check_of(&plan).unwrap().command,
                vec![
                    "CMD-SHELL".to_string(),
                    "test -f /tmp/ok || exit 1".to_string()
                ]
            );
        }
        let plan = with_probes(Some(exec_probe(&["bash", "-c", "true"])), None).unwrap();
        assert_eq!(
            check_of(&plan).unwrap().command,
            vec!["CMD", "bash", "-c", "true"],
            "only sh -c is the container's default shell"
        );
    }

    #[test]
    fn probe_timings_are_clamped_to_the_ranges_ecs_accepts_and_kubernetes_defaults_fill_gaps() {
        let defaults = check_of(&with_probes(Some(exec_probe(&["true"])), None).unwrap()).unwrap();
        assert_eq!(
            (
                defaults.interval,
                defaults.timeout,
                defaults.retries,
                defaults.start_period
            ),
            (10, 2, 3, 0),
            "Kubernetes' 10 s period, 3 failures; its 1 s timeout raised to ECS's 2 s"
        );
        let low = Probe {
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(-5),
            ..exec_probe(&["true"])
        };
        let low = check_of(&with_probes(Some(low), None).unwrap()).unwrap();
        assert_eq!(
            (low.interval, low.timeout, low.retries, low.start_period),
            (5, 2, 1, 0)
        );
        let high = Probe {
            period_seconds: Some(600),
            timeout_seconds: Some(500),
            failure_threshold: Some(30),
            initial_delay_seconds: Some(900),
            ..exec_probe(&["true"])
        };
        let high = check_of(&with_probes(Some(high), None).unwrap()).unwrap();
        assert_eq!(
            (high.interval, high.timeout, high.retries, high.start_period),
            (300, 60, 10, 300)
        );
        let slow = Probe {
            period_seconds: Some(5),
            timeout_seconds: Some(30),
            ..exec_probe(&["true"])
        };
        let slow = check_of(&with_probes(Some(slow), None).unwrap()).unwrap();
        assert_eq!(
            (slow.interval, slow.timeout),
            (5, 4),
            "the timeout stays below the interval"
        );
    }

    #[test]
    fn a_readiness_probe_is_the_health_check_and_its_container_is_tagged_readiness_checked() {
        let plan = with_probes(None, Some(exec_probe(&["cat", "/tmp/ready"]))).unwrap();
        assert_eq!(
            check_of(&plan).unwrap().command,
            vec!["CMD", "cat", "/tmp/ready"]
        );
        assert!(
            plan.tags
                .contains(&(TAG_READINESS.to_string(), "app".to_string()))
        );
    }

    #[test]
    fn liveness_and_readiness_with_one_command_share_one_check_with_the_liveness_timings() {
        let liveness = Probe {
            period_seconds: Some(30),
            ..exec_probe(&["true"])
        };
        let readiness = Probe {
            period_seconds: Some(5),
            ..exec_probe(&["true"])
        };
        let plan = with_probes(Some(liveness), Some(readiness)).unwrap();
        assert_eq!(check_of(&plan).unwrap().interval, 30);
        assert!(
            plan.tags
                .contains(&(TAG_READINESS.to_string(), "app".to_string()))
        );
    }

    #[test]
    fn liveness_and_readiness_with_different_commands_send_the_pod_to_another_target() {
        let err: ProviderError =
            with_probes(Some(exec_probe(&["live"])), Some(exec_probe(&["ready"])))
                .unwrap_err()
                .into();
        assert!(
            matches!(&err, ProviderError::Target(TargetRejection::Unsupported { field, reason }) if field.contains("spec.containers[app].readinessProbe") && reason.contains("one health check per container")),
            "{err:?}"
        );
    }

    #[test]
    fn http_tcp_and_grpc_probes_are_refused_for_this_target_before_any_call_naming_the_probe() {
        let http = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(5432),
                ..Default::default()
            }),
            ..Default::default()
        };
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9090,
                ..Default::default()
            }),
            ..Default::default()
        };
        for (probe, field) in [
            (http, "spec.containers[app].livenessProbe.httpGet"),
            (tcp, "spec.containers[app].livenessProbe.tcpSocket"),
            (grpc, "spec.containers[app].livenessProbe.grpc"),
        ] {
            let err = with_probes(Some(probe), None).unwrap_err();
            assert!(
                matches!(&err, TranslateError::Elsewhere { field: f, reason } if f == field && reason.contains("only runs a command inside the container")),
                "{err:?}"
            );
            assert!(
                matches!(
                    ProviderError::from(err),
                    ProviderError::Target(TargetRejection::Unsupported { .. })
                ),
                "another target may run the probe: the pod is not failed"
            );
        }
    }

    #[test]
    fn a_startup_probe_is_refused_for_this_target() {
        let mut c = container("app", "nginx");
        c.startup_probe = Some(exec_probe(&["true"]));
        let err = plan(&spec_with("u1", one(c), Resolved::default()), &settings()).unwrap_err();
        assert!(
            matches!(&err, TranslateError::Elsewhere { field, .. } if field == "spec.containers[app].startupProbe"),
            "{err:?}"
        );
    }

    #[test]
    fn an_exec_probe_without_a_command_is_an_invalid_pod() {
        let err = with_probes(Some(exec_probe(&[])), None).unwrap_err();
        assert!(
            matches!(&err, TranslateError::Invalid { field, .. } if field == "spec.containers[app].livenessProbe.exec.command"),
            "{err:?}"
        );
    }

    #[test]
    fn a_pod_without_probes_keeps_the_family_it_had_before_probes_were_mapped() {
        let plan = with_probes(None, None).unwrap();
        let def = plan.finish(&BTreeMap::new()).unwrap();
        assert!(
            !serde_json::to_string(&def).unwrap().contains("healthCheck"),
            "no healthCheck key in the hashed definition"
        );
        let probed = with_probes(Some(exec_probe(&["true"])), None).unwrap();
        assert_ne!(def.family, probed.finish(&BTreeMap::new()).unwrap().family);
    }
}
