//! The `fargate` provider: ECS RunTask/DescribeTasks/StopTask for one target (account, region,
//! cluster), task definitions registered once per pod shape, secret env in Secrets Manager, logs
//! from CloudWatch Logs. Every AWS call goes through the target's `Layers` (rate limits, retries,
//! circuit breaker); this file only says which class each call is and classifies its errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    ContainerCondition, ContainerDefinition, ContainerDependency, DesiredStatus, HealthCheck,
    KeyValuePair, LaunchType, LogConfiguration, LogDriver, MountPoint, NetworkConfiguration,
    NetworkMode, PortMapping, RepositoryCredentials, Secret, Tag, Task, TaskDefinitionStatus,
    TaskField, TransportProtocol, Volume,
};
use aws_sdk_secretsmanager::types::{
    Filter as SecretsFilter, FilterNameStringType, SecretListEntry,
};
use aws_smithy_types::retry::RetryConfig;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::policy::model::OperationClass;
use crate::provider::contract::{
    Capabilities, ExecOutput, ExposeSecret, LogOptions, OwnedWorkload, PodRejection, Provider,
    ProviderError, RUNNING_POLL, WorkloadSpec, WorkloadStatus,
};
use crate::provider::fargate::retry::{classify, classify_failure, is_inactive_definition};
use crate::provider::fargate::settings::Settings;
use crate::provider::fargate::status::{
    DELETED_REASON, ended_on_its_own, latest, relaunch, tag, workload_of, workload_status,
};
use crate::provider::fargate::translate::{self, LOG_STREAM_PREFIX, Plan, TaskDef};
use crate::provider::kit::cadence::{listing_interval, status_interval};
use crate::provider::kit::ownership::{MANAGED_BY, MANAGED_BY_VALUE, OwnerKeys, WORKLOAD};
use crate::provider::layers::Layers;

/// DescribeTasks takes at most this many tasks per call.
const DESCRIBE_BATCH: usize = 100;
/// Entries in a page of ListTasks or ListSecrets (their `maxResults` defaults).
const LIST_PAGE: usize = 100;
/// Concurrent per-workload lookups (ListTasks startedBy) when the task cache misses.
const LOOKUP_CONCURRENCY: usize = 8;

/// The ECS Fargate provider of one target.
pub struct FargateProvider {
    settings: Settings,
    ecs: aws_sdk_ecs::Client,
    secrets: aws_sdk_secretsmanager::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    layers: Layers,
    /// Task definition family -> ARN of its ACTIVE revision.
    definitions: Mutex<HashMap<String, String>>,
    /// Workload id -> task ARN, from create (and lookups); rebuilt from ListTasks after a restart.
    tasks: Mutex<HashMap<String, String>>,
    /// One registration at a time, so that a burst of identical pods registers its family once
    /// (RegisterTaskDefinition is limited to 1/s anyway).
    registering: tokio::sync::Mutex<()>,
    /// ListTasks, DescribeTasks and ListSecrets calls the last orphan listing made.
    listing_reads: AtomicUsize,
}

fn pod_error(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::cloud_pod("InvalidRequest", format!("{what}: {e}"))
}

/// The RunTask `clientToken` of run `restarts` (> 0) of workload `id`: `<id>-<run>`, the id cut
/// from its end when the whole would pass ECS's 64 characters.
fn run_token(id: &str, restarts: u32) -> String {
    let suffix = format!("-{restarts}");
    let keep = id.len().min(64 - suffix.len());
    format!("{}{suffix}", &id[..keep])
}

/// The family of a task definition ARN (`...:task-definition/bg-abc:3` -> `bg-abc`).
fn family_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once("task-definition/")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest))
}

impl FargateProvider {
    /// A provider for `settings`' cluster, with clients from `sdk` (the default credential chain;
    /// the region is the target's).
    pub fn new(settings: Settings, sdk: &aws_types::SdkConfig, layers: Layers) -> FargateProvider {
        // Retries are the Layers' job (with the target's budget and circuit): the SDK's are off.
        let sdk = sdk
            .to_builder()
            .region(aws_types::region::Region::new(settings.region.clone()))
            .retry_config(RetryConfig::disabled())
            .build();
        FargateProvider {
            ecs: aws_sdk_ecs::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            settings,
            layers,
            definitions: Mutex::default(),
            tasks: Mutex::default(),
            registering: tokio::sync::Mutex::new(()),
            listing_reads: AtomicUsize::new(0),
        }
    }

    /// The target's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn remember(&self, id: &str, arn: &str) {
        self.tasks
            .lock()
            .expect("task cache lock")
            .insert(id.to_string(), arn.to_string());
    }

    fn cached(&self, id: &str) -> Option<String> {
        self.tasks.lock().expect("task cache lock").get(id).cloned()
    }

    /// Task ARNs in the cluster, all pages (`ListTasks`, a Read each).
    async fn list_tasks(
        &self,
        started_by: Option<&str>,
        family: Option<&str>,
        desired: DesiredStatus,
    ) -> Result<Vec<String>, ProviderError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .ecs
                .list_tasks()
                .cluster(&self.settings.cluster)
                .set_started_by(started_by.map(str::to_string))
                .set_family(family.map(str::to_string))
                .desired_status(desired.clone())
                .set_next_token(token.clone());
            let out = self
                .layers
                .call(OperationClass::Read, "ListTasks", || {
                    let req = req.clone();
                    async move { req.send().await.map_err(|e| classify("ListTasks", &e)) }
                })
                .await?;
            arns.extend(out.task_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// Tasks by ARN, with tags, in batches of [`DESCRIBE_BATCH`]; unknown ARNs are left out
    /// (ECS lists them as `failures` with reason `MISSING`).
    async fn describe(&self, arns: &[String]) -> Result<Vec<Task>, ProviderError> {
        let batches = arns.chunks(DESCRIBE_BATCH).map(|chunk| {
            let req = self
                .ecs
                .describe_tasks()
                .cluster(&self.settings.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags);
            async move {
                self.layers
                    .call(OperationClass::Read, "DescribeTasks", || {
                        let req = req.clone();
                        async move { req.send().await.map_err(|e| classify("DescribeTasks", &e)) }
                    })
                    .await
                    .map(|out| out.tasks().to_vec())
            }
        });
        let pages: Vec<Vec<Task>> = futures::future::try_join_all(batches).await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// The task ARN of workload `id`: cached, else its running task, else its latest stopped one
    /// (the one with the most runs before it: a restarted pod has several).
    async fn find_task_arn(&self, id: &str) -> Result<Option<String>, ProviderError> {
        if let Some(arn) = self.cached(id) {
            return Ok(Some(arn));
        }
        if let Some(arn) = self
            .list_tasks(Some(id), None, DesiredStatus::Running)
            .await?
            .into_iter()
            .next()
        {
            self.remember(id, &arn);
            return Ok(Some(arn));
        }
        let stopped = self
            .list_tasks(Some(id), None, DesiredStatus::Stopped)
            .await?;
        let found = match stopped.len() {
            0 => None,
            1 => stopped.into_iter().next(),
            _ => latest(&self.describe(&stopped).await?)
                .and_then(|t| t.task_arn())
                .map(str::to_string),
        };
        if let Some(arn) = &found {
            self.remember(id, arn);
        }
        Ok(found)
    }

    /// Every task of workload `id` ECS knows: the ones it runs and the stopped ones it still
    /// keeps (about an hour on AWS), described.
    async fn tasks_of(&self, id: &str) -> Result<Vec<Task>, ProviderError> {
        let mut arns: BTreeSet<String> = BTreeSet::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            arns.extend(self.list_tasks(Some(id), None, desired).await?);
        }
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let arns: Vec<String> = arns.into_iter().collect();
        self.describe(&arns).await
    }

    /// A task of `id` that ECS still runs (desired status RUNNING), if any.
    async fn running_task(&self, id: &str) -> Result<Option<Task>, ProviderError> {
        let arns = self
            .list_tasks(Some(id), None, DesiredStatus::Running)
            .await?;
        if arns.is_empty() {
            return Ok(None);
        }
        Ok(self.describe(&arns).await?.into_iter().next())
    }

    /// Writes the plan's secrets (create, or put a new value when it exists: idempotent) and
    /// returns name -> ARN. Values go only into `SecretString`.
    async fn write_secrets(
        &self,
        plan: &Plan,
        spec: &WorkloadSpec,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let tags: Vec<aws_sdk_secretsmanager::types::Tag> = plan
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
            })
            .collect();
        let mut arns = BTreeMap::new();
        for secret in &plan.secrets {
            let created = self
                .layers
                .call(OperationClass::Create, "CreateSecret", || {
                    let req = self
                        .secrets
                        .create_secret()
                        .name(&secret.name)
                        .description(format!("burstgate: secret values of workload {}", spec.id))
                        .secret_string(secret.value.expose_secret())
                        .set_tags(Some(tags.clone()));
                    async move {
                        match req.send().await {
                            Ok(out) => Ok(out.arn().map(str::to_string)),
                            Err(e)
                                if e.as_service_error()
                                    .is_some_and(|s| s.is_resource_exists_exception()) =>
                            {
                                Ok(None)
                            }
                            Err(e) => Err(classify("CreateSecret", &e)),
                        }
                    }
                })
                .await?;
            let arn = match created {
                Some(arn) => arn,
                None => self
                    .layers
                    .call(OperationClass::Create, "PutSecretValue", || {
                        let req = self
                            .secrets
                            .put_secret_value()
                            .secret_id(&secret.name)
                            .secret_string(secret.value.expose_secret());
                        async move {
                            req.send()
                                .await
                                .map(|o| o.arn().map(str::to_string))
                                .map_err(|e| classify("PutSecretValue", &e))
                        }
                    })
                    .await?
                    .ok_or_else(|| {
                        pod_error(
                            "PutSecretValue",
                            format!("no ARN for secret {}", secret.name),
                        )
                    })?,
            };
            arns.insert(secret.name.clone(), arn);
        }
        Ok(arns)
    }

    /// The ARN of `def`'s family: cached, else its ACTIVE revision, else a new registration.
    async fn definition_arn(&self, def: &TaskDef) -> Result<String, ProviderError> {
        let cached = || {
            self.definitions
                .lock()
                .expect("definition cache lock")
                .get(&def.family)
                .cloned()
        };
        if let Some(arn) = cached() {
            return Ok(arn);
        }
        let _one_at_a_time = self.registering.lock().await;
        if let Some(arn) = cached() {
            return Ok(arn);
        }
        let found = self
            .layers
            .call(OperationClass::Read, "DescribeTaskDefinition", || {
                let req = self
                    .ecs
                    .describe_task_definition()
                    .task_definition(&def.family);
                async move {
                    match req.send().await {
                        Ok(out) => Ok(out
                            .task_definition()
                            .filter(|d| d.status() == Some(&TaskDefinitionStatus::Active))
                            .and_then(|d| d.task_definition_arn())
                            .map(str::to_string)),
                        // ClientException "Unable to describe task definition": not registered yet.
                        Err(e) => match classify("DescribeTaskDefinition", &e) {
                            ProviderError::Pod(_) => Ok(None),
                            other => Err(other),
                        },
                    }
                }
            })
            .await?;
        let arn = match found {
            Some(arn) => arn,
            None => self.register(def).await?,
        };
        self.definitions
            .lock()
            .expect("definition cache lock")
            .insert(def.family.clone(), arn.clone());
        Ok(arn)
    }

    async fn register(&self, def: &TaskDef) -> Result<String, ProviderError> {
        let containers = def
            .containers
            .iter()
            .map(container_definition)
            .collect::<Result<Vec<_>, _>>()?;
        let volumes: Vec<Volume> = def
            .volumes
            .iter()
            .map(|v| Volume::builder().name(v).build())
            .collect();
        let req = self
            .ecs
            .register_task_definition()
            .family(&def.family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(&def.cpu)
            .memory(&def.memory)
            .set_execution_role_arn(def.execution_role_arn.clone())
            .set_task_role_arn(def.task_role_arn.clone())
            .set_container_definitions(Some(containers))
            .set_volumes(Some(volumes))
            .tags(
                Tag::builder()
                    .key(MANAGED_BY)
                    .value(MANAGED_BY_VALUE)
                    .build(),
            );
        let out = self
            .layers
            .call(OperationClass::Register, "RegisterTaskDefinition", || {
                let req = req.clone();
                async move {
                    req.send()
                        .await
                        .map_err(|e| classify("RegisterTaskDefinition", &e))
                }
            })
            .await?;
        out.task_definition()
            .and_then(|d| d.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| {
                pod_error(
                    "RegisterTaskDefinition",
                    "the answer has no task definition ARN",
                )
            })
    }

    /// One RunTask for one pod.
    ///
    /// RunTask can start up to 10 tasks per call, but only as copies: one task definition, one
    /// `startedBy`, one set of tags and one `clientToken` for all of them. Every pod needs its
    /// own ownership tags, `startedBy` and idempotency token, so burstgate starts one task per
    /// call; the Create bucket (40/s) is above Fargate's launch rate (20/s) anyway.
    async fn run_task(&self, plan: &Plan, definition_arn: &str) -> Result<Task, ProviderError> {
        let s = &self.settings;
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(s.subnets.clone()))
            .set_security_groups(Some(s.security_groups.clone()))
            .assign_public_ip(if s.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| pod_error("awsvpcConfiguration", e))?;
        let tags: Vec<Tag> = plan
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let mut req = self
            .ecs
            .run_task()
            .cluster(&s.cluster)
            .task_definition(definition_arn)
            .count(1)
            .started_by(&plan.started_by)
            .client_token(&plan.client_token)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .set_tags(Some(tags));
        req = if s.spot {
            let spot = CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .map_err(|e| pod_error("capacityProviderStrategy", e))?;
            req.capacity_provider_strategy(spot)
        } else {
            req.launch_type(LaunchType::Fargate)
        };
        self.layers.take(OperationClass::Launch, 1).await;
        let attempts = AtomicU32::new(0);
        self.layers
            .call(OperationClass::Create, "RunTask", || {
                let req = req.clone();
                let retry = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                async move {
                    // A retry may follow a RunTask whose answer was lost after the task started.
                    // AWS answers the same clientToken with that task, but moto ignores the
                    // token: look for it first.
                    if retry {
                        if let Some(task) = self.running_task(&plan.started_by).await? {
                            return Ok(task);
                        }
                    }
                    let out = req.send().await.map_err(|e| classify("RunTask", &e))?;
                    if let Some(task) = out.tasks().first() {
                        return Ok(task.clone());
                    }
                    Err(match out.failures().first() {
                        Some(f) => classify_failure(f.reason(), f.detail(), f.arn()),
                        None => ProviderError::Transient {
                            message: "RunTask started no task and reported no failure".into(),
                            retry_after: None,
                        },
                    })
                }
            })
            .await
    }

    /// Writes the secrets, finds (or registers) the task definition and starts the task of
    /// `plan`: the workload's first run when `before` (its tasks ECS knows) is empty, else the
    /// run after them, tagged as such and with a `clientToken` of its own.
    async fn launch(
        &self,
        spec: &WorkloadSpec,
        mut plan: Plan,
        before: &[Task],
    ) -> Result<WorkloadStatus, ProviderError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(next) = relaunch(before, &now) {
            plan.client_token = run_token(&spec.id, next.restarts);
            plan.tags.extend(next.tags);
        }
        let secret_arns = self.write_secrets(&plan, spec).await?;
        let def = plan.finish(&secret_arns)?;
        let definition = self.definition_arn(&def).await?;
        let task = match self.run_task(&plan, &definition).await {
            // Deregistered by a sweep (here or in another target of the region): register again.
            Err(e) if is_inactive_definition(&e) => {
                self.definitions
                    .lock()
                    .expect("definition cache lock")
                    .remove(&def.family);
                let definition = self.register(&def).await?;
                self.definitions
                    .lock()
                    .expect("definition cache lock")
                    .insert(def.family.clone(), definition.clone());
                self.run_task(&plan, &definition).await?
            }
            other => other?,
        };
        if let Some(arn) = task.task_arn() {
            self.remember(&spec.id, arn);
        }
        Ok(workload_status(&spec.id, &task))
    }

    /// Stops `arn`; a task ECS does not know (moto answers 500 for it) or that is already
    /// stopped counts as stopped.
    async fn stop(&self, arn: &str) -> Result<(), ProviderError> {
        let result = self
            .layers
            .call(OperationClass::Delete, "StopTask", || {
                let req = self
                    .ecs
                    .stop_task()
                    .cluster(&self.settings.cluster)
                    .task(arn)
                    .reason(DELETED_REASON);
                async move {
                    match req.send().await {
                        Ok(_) => Ok(()),
                        Err(e) => match classify("StopTask", &e) {
                            ProviderError::Pod(PodRejection::NotFound { .. }) => Ok(()),
                            other => Err(other),
                        },
                    }
                }
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(err) => {
                // After the layers gave up (moto's 500 for an unknown task): look again.
                let tasks = self.describe(&[arn.to_string()]).await?;
                if tasks.iter().all(|t| {
                    t.last_status() == Some("STOPPED") || t.desired_status() == Some("STOPPED")
                }) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The secrets whose name starts with `prefix` and that match `filters`, all pages. The name
    /// filter matches prefixes (and, on AWS, words): only exact prefixes are kept.
    async fn list_secrets(
        &self,
        prefix: &str,
        filters: Vec<SecretsFilter>,
    ) -> Result<Vec<SecretListEntry>, ProviderError> {
        let name = SecretsFilter::builder()
            .key(FilterNameStringType::Name)
            .values(prefix)
            .build();
        let filters: Vec<SecretsFilter> = std::iter::once(name).chain(filters).collect();
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .secrets
                .list_secrets()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.clone());
            let out = self
                .layers
                .call(OperationClass::Read, "ListSecrets", || {
                    let req = req.clone();
                    async move { req.send().await.map_err(|e| classify("ListSecrets", &e)) }
                })
                .await?;
            found.extend(
                out.secret_list()
                    .iter()
                    .filter(|s| s.name().is_some_and(|n| n.starts_with(prefix)))
                    .cloned(),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// Workloads that still have secrets under this target's prefix, tagged with this cluster id
    /// and node, with the age of their youngest secret. A workload's secrets outlive its task
    /// when the task stopped (or was never started) and the pod vanished while the gateway was
    /// not watching: listing them lets orphan GC delete them.
    async fn secret_workloads(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<BTreeMap<String, OwnedWorkload>, ProviderError> {
        let by_tag = [
            SecretsFilter::builder()
                .key(FilterNameStringType::TagKey)
                .values(OwnerKeys::AWS_TAGS.cluster_id)
                .build(),
            SecretsFilter::builder()
                .key(FilterNameStringType::TagValue)
                .values(cluster_id)
                .build(),
        ];
        let secrets = self
            .list_secrets(&self.settings.secrets_prefix, by_tag.into())
            .await?;
        let now = std::time::SystemTime::now();
        let mut out: BTreeMap<String, OwnedWorkload> = BTreeMap::new();
        for s in &secrets {
            let tag = |k: &str| {
                s.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            };
            let Some(owner) = OwnerKeys::AWS_TAGS.read_owned_by(tag, cluster_id, node) else {
                continue;
            };
            let Some(id) = tag(WORKLOAD) else {
                continue;
            };
            // Only a secret this adapter names for that workload (the prefix is a target setting).
            let prefix = translate::secrets_name_prefix(&self.settings, id);
            if !s.name().is_some_and(|n| n.starts_with(&prefix)) {
                continue;
            }
            let age = s
                .created_date()
                .and_then(|c| std::time::SystemTime::try_from(*c).ok())
                .and_then(|c| now.duration_since(c).ok())
                .unwrap_or(Duration::ZERO);
            out.entry(id.to_string())
                .and_modify(|w| w.age = w.age.min(age))
                .or_insert(OwnedWorkload {
                    id: id.to_string(),
                    owner,
                    age,
                    leftover: true,
                });
        }
        Ok(out)
    }

    /// Deletes every secret of workload `id` (found by name prefix; idempotent).
    async fn delete_secrets(&self, id: &str) -> Result<(), ProviderError> {
        let prefix = translate::secrets_name_prefix(&self.settings, id);
        let names: Vec<String> = self
            .list_secrets(&prefix, Vec::new())
            .await?
            .iter()
            .filter_map(|s| s.name().map(str::to_string))
            .collect();
        for name in names {
            self.layers
                .call(OperationClass::Delete, "DeleteSecret", || {
                    let req = self
                        .secrets
                        .delete_secret()
                        .secret_id(&name)
                        .force_delete_without_recovery(true);
                    async move {
                        match req.send().await {
                            Ok(_) => Ok(()),
                            Err(e)
                                if e.as_service_error()
                                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
                            {
                                Ok(())
                            }
                            Err(e) => Err(classify("DeleteSecret", &e)),
                        }
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// Deregisters the task definitions in `arns` that no task of the cluster still runs.
    ///
    /// Families are shared by the targets of one region; a task running elsewhere keeps running
    /// (ECS never stops tasks of an INACTIVE definition), and a later RunTask with a deregistered
    /// ARN is answered with an INACTIVE error, on which `create` registers the family again.
    async fn sweep_definitions(&self, arns: BTreeSet<String>) -> Result<(), ProviderError> {
        for arn in arns {
            let Some(family) =
                family_of_arn(&arn).filter(|f| f.starts_with(translate::FAMILY_PREFIX))
            else {
                continue;
            };
            if !self
                .list_tasks(None, Some(family), DesiredStatus::Running)
                .await?
                .is_empty()
            {
                continue;
            }
            self.definitions
                .lock()
                .expect("definition cache lock")
                .remove(family);
            self.layers
                .call(OperationClass::Delete, "DeregisterTaskDefinition", || {
                    let req = self.ecs.deregister_task_definition().task_definition(&arn);
                    async move {
                        match req.send().await {
                            Ok(_) => Ok(()),
                            Err(e) => match classify("DeregisterTaskDefinition", &e) {
                                // Already INACTIVE, or gone.
                                ProviderError::Pod(_) => Ok(()),
                                other => Err(other),
                            },
                        }
                    }
                })
                .await?;
        }
        Ok(())
    }
}

/// The ECS wire form of one container. About 80 lines, kept whole on purpose: one flat builder
/// that maps each field of [`translate::ContainerDef`] once, in order.
fn container_definition(c: &translate::ContainerDef) -> Result<ContainerDefinition, ProviderError> {
    let mut b = ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(c.essential)
        .memory(c.memory)
        .set_entry_point(c.entry_point.clone())
        .set_command(c.command.clone())
        .set_working_directory(c.working_dir.clone())
        .set_user(c.user.clone())
        .set_stop_timeout(c.stop_timeout);
    for (name, value) in &c.environment {
        b = b.environment(KeyValuePair::builder().name(name).value(value).build());
    }
    for (name, value_from) in &c.secrets {
        b = b.secrets(
            Secret::builder()
                .name(name)
                .value_from(value_from)
                .build()
                .map_err(|e| pod_error("secrets", e))?,
        );
    }
    if let Some(arn) = &c.repository_credentials {
        b = b.repository_credentials(
            RepositoryCredentials::builder()
                .credentials_parameter(arn)
                .build()
                .map_err(|e| pod_error("repositoryCredentials", e))?,
        );
    }
    for (port, protocol) in &c.port_mappings {
        b = b.port_mappings(
            PortMapping::builder()
                .container_port(*port)
                .protocol(TransportProtocol::from(protocol.as_str()))
                .build(),
        );
    }
    for (volume, path, read_only) in &c.mount_points {
        b = b.mount_points(
            MountPoint::builder()
                .source_volume(volume)
                .container_path(path)
                .read_only(*read_only)
                .build(),
        );
    }
    for dep in &c.depends_on {
        b = b.depends_on(
            ContainerDependency::builder()
                .container_name(dep)
                .condition(ContainerCondition::Success)
                .build()
                .map_err(|e| pod_error("dependsOn", e))?,
        );
    }
    for dep in &c.depends_on_start {
        b = b.depends_on(
            ContainerDependency::builder()
                .container_name(dep)
                .condition(ContainerCondition::Start)
                .build()
                .map_err(|e| pod_error("dependsOn", e))?,
        );
    }
    if let Some(h) = &c.health_check {
        b = b.health_check(
            HealthCheck::builder()
                .set_command(Some(h.command.clone()))
                .interval(h.interval)
                .timeout(h.timeout)
                .retries(h.retries)
                .start_period(h.start_period)
                .build()
                .map_err(|e| pod_error("healthCheck", e))?,
        );
    }
    if let Some((group, region, prefix)) = &c.log {
        b = b.log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", group)
                .options("awslogs-region", region)
                .options("awslogs-stream-prefix", prefix)
                .build()
                .map_err(|e| pod_error("logConfiguration", e))?,
        );
    }
    Ok(b.build())
}

#[async_trait::async_trait]
impl Provider for FargateProvider {
    fn name(&self) -> &'static str {
        "fargate"
    }

    /// [`RUNNING_POLL`], or longer once the tasks this
    /// adapter knows (created or looked up, until deleted) would spend more than half the
    /// target's read bucket on DescribeTasks at 100 a call: 100 s at 100,000 tasks with ECS's
    /// published 20/s.
    fn running_poll(&self) -> Duration {
        let tasks = self.tasks.lock().expect("task cache lock").len();
        status_interval(
            RUNNING_POLL,
            self.layers.per_second(OperationClass::Read),
            DESCRIBE_BATCH,
            tasks,
        )
    }

    /// The last listing's ListTasks and ListSecrets pages and DescribeTasks calls (100 each),
    /// Reads of the target's bucket: every minute up to ~5,000 tasks at ECS's 20/s, ~1,000 s at
    /// 100,000.
    fn listing_interval(&self, floor: Duration) -> Duration {
        listing_interval(
            floor,
            self.layers.per_second(OperationClass::Read),
            self.listing_reads.load(Ordering::Relaxed),
        )
    }

    fn capabilities(&self) -> Capabilities {
        crate::provider::kit::declared(crate::policy::model::ProviderKind::Fargate).serving(
            self.settings.log_group.is_some(),
            false,
            false,
        )
    }

    /// Idempotent twice over: RunTask carries `clientToken` = the workload id (AWS answers a
    /// retried call with the task it already started), and before any RunTask, ListTasks
    /// `startedBy=<workload id>` finds a task a previous attempt started (moto ignores
    /// `clientToken`; and a crash between RunTask and recording it leaves nothing else).
    /// A workload whose task ended on its own is answered with that stopped task: only
    /// [`Provider::restart`] starts it again (after the controller's back-off), so a create after
    /// a gateway restart never runs a pod a second time behind the restart policy's back.
    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let plan = translate::plan(spec, &self.settings)?;
        if let Some(task) = self.running_task(&spec.id).await? {
            if let Some(arn) = task.task_arn() {
                self.remember(&spec.id, arn);
            }
            return Ok(workload_status(&spec.id, &task));
        }
        let tasks = self.tasks_of(&spec.id).await?;
        if let Some(task) = latest(tasks.iter().filter(|t| ended_on_its_own(t))) {
            if let Some(arn) = task.task_arn() {
                self.remember(&spec.id, arn);
            }
            return Ok(workload_status(&spec.id, task));
        }
        // Only tasks burstgate itself stopped (a workload withdrawn, then placed here again): a
        // new run, with a token of its own.
        self.launch(spec, plan, &tasks).await
    }

    fn restarts_containers(&self) -> bool {
        false
    }

    /// A new task for a pod whose task stopped: never while one of its tasks is still alive
    /// (one still stopping is stopped and the call answers `Transient`, to be tried again once it
    /// is STOPPED), and never a second one: a task of the workload that ECS runs is the restart
    /// an earlier call (or a gateway that died) already made, and is answered. The new task
    /// carries the run's number and the previous run's exits in its tags
    /// (`status::relaunch`) and a `clientToken` of its own (`<workload id>-<run>`).
    async fn restart(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let plan = translate::plan(spec, &self.settings)?;
        let tasks = self.tasks_of(&spec.id).await?;
        if let Some(task) = tasks
            .iter()
            .find(|t| t.desired_status() == Some("RUNNING") && t.last_status() != Some("STOPPED"))
        {
            if let Some(arn) = task.task_arn() {
                self.remember(&spec.id, arn);
            }
            return Ok(workload_status(&spec.id, task));
        }
        if let Some(stopping) = tasks.iter().find(|t| t.last_status() != Some("STOPPED")) {
            return Err(ProviderError::Transient {
                message: format!(
                    "task {} of workload {} is still stopping ({}): its restart waits until it is STOPPED",
                    stopping.task_arn().unwrap_or_default(),
                    spec.id,
                    stopping.last_status().unwrap_or("?")
                ),
                retry_after: Some(Duration::from_secs(5)),
            });
        }
        self.launch(spec, plan, &tasks).await
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let mut arns: BTreeSet<String> = self
            .list_tasks(Some(id), None, DesiredStatus::Running)
            .await?
            .into_iter()
            .collect();
        arns.extend(self.cached(id));
        let arns: Vec<String> = arns.into_iter().collect();
        let tasks = if arns.is_empty() {
            Vec::new()
        } else {
            self.describe(&arns).await?
        };
        let mut definitions = BTreeSet::new();
        for task in &tasks {
            definitions.extend(task.task_definition_arn().map(str::to_string));
            if task.last_status() != Some("STOPPED") && task.desired_status() != Some("STOPPED") {
                self.stop(task.task_arn().unwrap_or_default()).await?;
            }
        }
        self.tasks.lock().expect("task cache lock").remove(id);
        self.delete_secrets(id).await?;
        self.sweep_definitions(definitions).await
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        let mut by_arn: HashMap<String, String> = HashMap::new();
        let mut misses = Vec::new();
        for id in ids {
            match self.cached(id) {
                Some(arn) => {
                    by_arn.insert(arn, id.clone());
                }
                None => misses.push(id.clone()),
            }
        }
        let found: Vec<(String, Option<String>)> = stream::iter(misses)
            .map(|id| async move { self.find_task_arn(&id).await.map(|arn| (id, arn)) })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await?;
        by_arn.extend(
            found
                .into_iter()
                .filter_map(|(id, arn)| arn.map(|a| (a, id))),
        );
        let arns: Vec<String> = by_arn.keys().cloned().collect();
        let tasks = if arns.is_empty() {
            Vec::new()
        } else {
            self.describe(&arns).await?
        };
        let mut out = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for task in &tasks {
            let Some(id) = task.task_arn().and_then(|a| by_arn.get(a)) else {
                continue;
            };
            seen.insert(id.clone());
            out.insert(id.clone(), workload_status(id, task));
        }
        // Cached tasks ECS no longer knows: forget them (the workload is absent).
        let mut cache = self.tasks.lock().expect("task cache lock");
        for id in by_arn.values().filter(|id| !seen.contains(*id)) {
            cache.remove(id);
        }
        Ok(out)
    }

    /// The cluster's running tasks tagged with this cluster id and node, plus the workloads
    /// that only have secrets left (their task stopped or never started): delete on any of them
    /// stops what runs and deletes the secrets.
    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        let arns = self.list_tasks(None, None, DesiredStatus::Running).await?;
        let tasks = if arns.is_empty() {
            Vec::new()
        } else {
            self.describe(&arns).await?
        };
        let now = std::time::SystemTime::now();
        let mut owned: Vec<OwnedWorkload> = tasks
            .iter()
            .filter_map(|t| {
                let owner = OwnerKeys::AWS_TAGS.read_owned_by(|k| tag(t, k), cluster_id, node)?;
                let id = workload_of(t)?.to_string();
                let created = t
                    .created_at()
                    .and_then(|c| std::time::SystemTime::try_from(*c).ok());
                let age = created
                    .and_then(|c| now.duration_since(c).ok())
                    .unwrap_or(Duration::ZERO);
                Some(OwnedWorkload {
                    id,
                    owner,
                    age,
                    leftover: false,
                })
            })
            .collect();
        // Tasks cost money: a failed secrets listing must not keep GC from stopping them.
        let mut secret_only = match self.secret_workloads(cluster_id, node).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(target_name = %self.settings.target, error = %e, "could not list Secrets Manager secrets; listing only tasks this time");
                BTreeMap::new()
            }
        };
        // ListTasks and ListSecrets pages and DescribeTasks calls, each a Read.
        self.listing_reads.store(
            arns.len().div_ceil(LIST_PAGE).max(1)
                + arns.len().div_ceil(DESCRIBE_BATCH)
                + secret_only.len().div_ceil(LIST_PAGE).max(1),
            Ordering::Relaxed,
        );
        for w in &owned {
            secret_only.remove(&w.id);
        }
        owned.extend(secret_only.into_values());
        Ok(owned)
    }

    /// From CloudWatch Logs: the awslogs stream `bg/<container>/<task id>` of the target's group.
    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        if opts.previous {
            return Err(crate::provider::contract::previous_not_kept(self.name()));
        }
        let Some(group) = &self.settings.log_group else {
            return Err(ProviderError::NotSupported {
                provider: self.name().into(),
                what: format!(
                    "logs on target {}: it has no CloudWatch Logs group (set logGroup in the policy)",
                    self.settings.target
                ),
            });
        };
        let Some(arn) = self.find_task_arn(id).await? else {
            return Err(ProviderError::not_found(format!(
                "workload {id} has no task in cluster {}",
                self.settings.cluster
            )));
        };
        let task_id = arn.rsplit('/').next().unwrap_or(&arn);
        let stream = format!("{LOG_STREAM_PREFIX}/{container}/{task_id}");
        let start = opts
            .since_seconds
            .map(|s| chrono::Utc::now().timestamp_millis() - (s as i64) * 1000);
        let tail = opts.tail_lines.map(|n| n.min(10_000) as i32);
        let req = self
            .logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(&stream)
            .set_start_time(start)
            .set_limit(tail)
            // Without a tail, read forward from the start; with one, the newest lines.
            .start_from_head(tail.is_none());
        let out = self
            .layers
            .call(OperationClass::Read, "GetLogEvents", || {
                let req = req.clone();
                async move {
                    match req.send().await {
                        Ok(out) => Ok(Some(out)),
                        // No stream yet: the container has not logged (or started).
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_resource_not_found_exception()) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(classify("GetLogEvents", &e)),
                    }
                }
            })
            .await?;
        let mut text = String::new();
        for event in out.iter().flat_map(|o| o.events()) {
            if opts.timestamps {
                let ts =
                    chrono::DateTime::from_timestamp_millis(event.timestamp().unwrap_or_default())
                        .unwrap_or_default();
                text.push_str(&ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                text.push(' ');
            }
            text.push_str(event.message().unwrap_or_default().trim_end_matches('\n'));
            text.push('\n');
        }
        Ok(text)
    }

    async fn exec(
        &self,
        _id: &str,
        _container: &str,
        _command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        Err(self.refusal("exec"))
    }

    /// exec and attach: ECS Exec (ExecuteCommand) needs the task run with
    /// `enableExecuteCommand`, a task role allowing `ssmmessages:*` and the SSM agent's Session
    /// Manager channel, which burstgate does not drive (and moto cannot exercise).
    fn refusal(&self, what: &str) -> ProviderError {
        let why = match what {
            "exec" | "attach" => {
                ": ECS Exec (ExecuteCommand) needs tasks run with enableExecuteCommand, a task role allowing ssmmessages and the SSM agent's Session Manager channel, which burstgate does not drive"
            }
            _ => "",
        };
        ProviderError::NotSupported {
            provider: self.name().into(),
            what: format!("{what}{why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_of_a_workload_has_a_client_token_of_its_own_within_64_characters() {
        assert_eq!(run_token("bg-u1", 1), "bg-u1-1");
        assert_ne!(run_token("bg-u1", 1), run_token("bg-u1", 2));
        let long = format!("bg-{}", "x".repeat(61));
        assert_eq!(run_token(&long, 12).len(), 64);
        assert!(run_token(&long, 12).ends_with("-12"));
    }

    #[test]
    fn running_tasks_are_read_within_half_of_ecs_published_describe_bucket() {
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: f, provider: fargate, region: us-east-1}\n";
        let policy = crate::policy::load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let layers = Layers::new(
            &policy.targets[0],
            &crate::provider::layers::Buckets::default(),
            Default::default(),
            std::sync::Arc::new(crate::provider::layers::Unobserved),
        )
        .unwrap();
        assert_eq!(layers.per_second(OperationClass::Read), Some(20.0));
        let settings = Settings {
            target: "f".into(),
            region: "us-east-1".into(),
            cluster: "c".into(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            assign_public_ip: false,
            spot: false,
            execution_role_arn: None,
            task_role_arn: None,
            log_group: None,
            secrets_prefix: "burstgate/".into(),
        };
        let p = FargateProvider::new(
            settings,
            &aws_types::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .build(),
            layers,
        );
        let remember = |n: usize| {
            let known = p.tasks.lock().unwrap().len();
            for i in known..n {
                p.remember(
                    &format!("bg-{i}"),
                    &format!("arn:aws:ecs:us-east-1:1:task/c/{i}"),
                );
            }
        };
        remember(1_000);
        assert_eq!(p.running_poll(), RUNNING_POLL);
        // 100,000 tasks are 1,000 DescribeTasks; at 10/s (half of 20/s), 100 s.
        remember(100_000);
        assert_eq!(p.running_poll(), Duration::from_secs(100));
    }

    #[test]
    fn the_family_of_a_task_definition_arn_drops_the_revision() {
        assert_eq!(
            family_of_arn("arn:aws:ecs:us-east-1:1:task-definition/bg-abc:3"),
            Some("bg-abc")
        );
        assert_eq!(family_of_arn("nonsense"), None);
    }
}
