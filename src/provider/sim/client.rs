//! The simulated cloud itself (shared state, survives gateway restarts in one process) and the
//! `Provider` that talks to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::policy::model::OperationClass;
use crate::provider::contract::{
    Capabilities, EnvValue, ExecOutput, LogOptions, OwnedWorkload, Owner, Provider, ProviderError,
    RUNNING_POLL, WorkloadPhase, WorkloadSpec, WorkloadStatus,
};
use crate::provider::kit::cadence::status_interval;
use crate::provider::layers::whole::STATUS_BATCH;
use crate::provider::sim::retry::SimFault;
use crate::provider::sim::settings::Settings;
use crate::provider::sim::status::{log_lines, status_at};
use crate::provider::sim::translate::{SimWorkload, translate};

struct Entry {
    workload: SimWorkload,
    owner: Owner,
    created: DateTime<Utc>,
    created_instant: Instant,
    ip: String,
    /// Plain environment variables per container (secret values are never kept here).
    env: BTreeMap<String, Vec<(String, String)>>,
}

#[derive(Default)]
struct State {
    workloads: BTreeMap<String, Entry>,
    next_ip: u32,
    creates: u64,
    deletes: u64,
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// One bucket the cloud's API enforces.
struct ApiBucket {
    operation: OperationClass,
    /// As `create 100 + 20/s`.
    name: String,
    limiter: Limiter,
}

/// An in-process cloud: every workload with its creation time; state advances with wall time.
pub struct SimCloud {
    state: Mutex<State>,
    settings: Settings,
    buckets: Vec<ApiBucket>,
}

impl SimCloud {
    /// A cloud whose workloads start after `cold_start`, that holds at most `capacity` and
    /// never throttles.
    pub fn new(cold_start: Duration, capacity: usize) -> Arc<SimCloud> {
        SimCloud::with_settings(Settings {
            cold_start,
            capacity,
            rate_limits: Vec::new(),
        })
        .expect("no bucket to refuse")
    }

    /// A cloud with these knobs; refused when a bucket has a zero burst or a rate that is not
    /// positive.
    pub fn with_settings(settings: Settings) -> Result<Arc<SimCloud>, String> {
        let buckets = settings
            .rate_limits
            .iter()
            .map(|b| {
                let name = format!(
                    "{} {} + {}/s",
                    crate::provider::layers::target::class_label(b.operation),
                    b.burst,
                    b.per_second
                );
                let quota = crate::provider::layers::limiter::quota_of(b.burst, b.per_second)
                    .ok_or_else(|| {
                        format!("sim bucket {name}: burst must be at least 1 and the rate positive")
                    })?;
                Ok(ApiBucket {
                    operation: b.operation,
                    name,
                    limiter: governor::RateLimiter::direct(quota),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Arc::new(SimCloud {
            state: Mutex::new(State::default()),
            settings,
            buckets,
        }))
    }

    /// Takes a token of every bucket of `operation`, or answers as a throttled API does.
    fn admit(&self, operation: OperationClass) -> Result<(), ProviderError> {
        use governor::clock::{Clock as _, DefaultClock};
        for b in self.buckets.iter().filter(|b| b.operation == operation) {
            if let Err(not_until) = b.limiter.check() {
                return Err(SimFault::Throttled {
                    bucket: b.name.clone(),
                    wait: not_until.wait_time_from(DefaultClock::default().now()),
                }
                .into_error());
            }
        }
        Ok(())
    }

    /// The cloud's knobs.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim cloud lock")
    }

    /// Deletes a workload behind the gateway's back (what an operator or the cloud might do).
    pub fn remove_out_of_band(&self, id: &str) -> bool {
        self.lock().workloads.remove(id).is_some()
    }

    /// Ids of every workload.
    pub fn ids(&self) -> Vec<String> {
        self.lock().workloads.keys().cloned().collect()
    }

    /// Workloads actually created so far (a retried create of an existing id does not count).
    pub fn creates(&self) -> u64 {
        self.lock().creates
    }

    /// Workloads actually deleted so far.
    pub fn deletes(&self) -> u64 {
        self.lock().deletes
    }

    fn status_of(&self, id: &str, e: &Entry) -> WorkloadStatus {
        status_at(
            id,
            &e.workload,
            &e.ip,
            e.created,
            self.settings.cold_start,
            e.created_instant.elapsed(),
        )
    }
}

/// The IP of the `n`th workload: 10.244.0.2 onwards, one address each, past 64,000 workloads
/// too (a per-octet scheme ran past 255 there, and the apiserver refused the pods' status).
fn address(n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 244, 0, 2)).wrapping_add(n))
}

/// The `sim` provider.
pub struct SimProvider {
    cloud: Arc<SimCloud>,
    /// The rate of the target's read bucket, which the status cadence keeps within.
    reads_per_second: Option<f64>,
}

impl SimProvider {
    /// A provider over `cloud`, reading Running workloads every
    /// [`RUNNING_POLL`](crate::provider::contract::RUNNING_POLL).
    pub fn new(cloud: Arc<SimCloud>) -> SimProvider {
        SimProvider {
            cloud,
            reads_per_second: None,
        }
    }

    /// The same provider, reading Running workloads no faster than half a read bucket
    /// refilling `reads_per_second` allows at [`STATUS_BATCH`] workloads a read (the target's
    /// layers take a token per read; `None`: no bucket).
    pub fn reading_within(self, reads_per_second: Option<f64>) -> SimProvider {
        SimProvider {
            reads_per_second,
            ..self
        }
    }
}

#[async_trait::async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    /// [`RUNNING_POLL`](crate::provider::contract::RUNNING_POLL), or longer once the cloud's
    /// workloads (of every `sim` target: they share the cloud, so this over-counts when there
    /// are several) would spend more than half the read bucket.
    fn running_poll(&self) -> Duration {
        status_interval(
            RUNNING_POLL,
            self.reads_per_second,
            STATUS_BATCH,
            self.cloud.lock().workloads.len(),
        )
    }

    fn capabilities(&self) -> Capabilities {
        crate::provider::kit::declared(crate::policy::model::ProviderKind::Sim)
            .serving(true, true, false)
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let workload = translate(spec)?;
        self.cloud.admit(OperationClass::Create)?;
        let mut state = self.cloud.lock();
        if let Some(existing) = state.workloads.get(&spec.id) {
            return Ok(self.cloud.status_of(&spec.id, existing));
        }
        if state.workloads.len() >= self.cloud.settings.capacity {
            return Err(SimFault::CapacityExceeded {
                running: state.workloads.len(),
                limit: self.cloud.settings.capacity,
            }
            .into_error());
        }
        let n = state.next_ip;
        state.next_ip += 1;
        state.creates += 1;
        let entry = Entry {
            workload,
            owner: spec.owner.clone(),
            created: Utc::now(),
            created_instant: Instant::now(),
            ip: address(n).to_string(),
            env: spec
                .resolved
                .env
                .iter()
                .map(|(container, vars)| {
                    let plain = vars.iter().filter_map(|v| match &v.value {
                        EnvValue::Plain(value) => Some((v.name.clone(), value.clone())),
                        EnvValue::Secret(_) => None,
                    });
                    (container.clone(), plain.collect())
                })
                .collect(),
        };
        let status = self.cloud.status_of(&spec.id, &entry);
        state.workloads.insert(spec.id.clone(), entry);
        Ok(status)
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        self.cloud.admit(OperationClass::Delete)?;
        let mut state = self.cloud.lock();
        if state.workloads.remove(id).is_some() {
            state.deletes += 1;
        }
        Ok(())
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        // One read per STATUS_BATCH workloads, as a cloud's batched describe charges.
        for _ in ids.chunks(STATUS_BATCH) {
            self.cloud.admit(OperationClass::Read)?;
        }
        let state = self.cloud.lock();
        Ok(ids
            .iter()
            .filter_map(|id| {
                state
                    .workloads
                    .get(id)
                    .map(|e| (id.clone(), self.cloud.status_of(id, e)))
            })
            .collect())
    }

    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        self.cloud.admit(OperationClass::Read)?;
        let state = self.cloud.lock();
        Ok(state
            .workloads
            .iter()
            .filter(|(_, e)| e.owner.cluster_id == cluster_id && e.owner.node == node)
            .map(|(id, e)| OwnedWorkload {
                id: id.clone(),
                owner: e.owner.clone(),
                age: e.created_instant.elapsed(),
                leftover: false,
            })
            .collect())
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        if opts.previous {
            return Err(crate::provider::contract::previous_not_kept(self.name()));
        }
        let state = self.cloud.lock();
        let e = state.with_container(id, container)?;
        let elapsed = e.created_instant.elapsed();
        let now = e.created + elapsed;
        let lines = log_lines(
            &e.workload,
            container,
            e.created,
            self.cloud.settings.cold_start,
            elapsed,
        );
        let since = opts.since_seconds.map(|s| now - Duration::from_secs(s));
        let lines: Vec<_> = lines
            .into_iter()
            .filter(|l| since.is_none_or(|since| l.at >= since))
            .collect();
        let skip = opts.tail_lines.map_or(0, |n| {
            lines
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
        });
        Ok(lines[skip..]
            .iter()
            .map(|l| match opts.timestamps {
                true => format!(
                    "{} {}\n",
                    l.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                    l.text
                ),
                false => format!("{}\n", l.text),
            })
            .collect())
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        let state = self.cloud.lock();
        let e = state.with_container(id, container)?;
        let status = self.cloud.status_of(id, e);
        let running = status.phase == WorkloadPhase::Running
            && status.containers.iter().any(|c| {
                c.name == container
                    && matches!(c.state, crate::provider::ContainerState::Running { .. })
            });
        if !running {
            return Err(ProviderError::Pod(
                crate::provider::PodRejection::NotRunning {
                    message: format!("container {container} of {id} is not running"),
                },
            ));
        }
        let env = e.env.get(container).map(Vec::as_slice).unwrap_or_default();
        Ok(run_builtin(command, &e.owner.pod, env))
    }
}

impl State {
    /// The workload `id`, when it exists and has `container`.
    fn with_container(&self, id: &str, container: &str) -> Result<&Entry, ProviderError> {
        let e = self.workloads.get(id).ok_or_else(|| not_found(id))?;
        if !e
            .workload
            .containers
            .iter()
            .any(|(name, _)| name == container)
        {
            return Err(no_container(id, container));
        }
        Ok(e)
    }
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::not_found(format!("workload {id} not found"))
}

fn no_container(id: &str, container: &str) -> ProviderError {
    ProviderError::not_found(format!("workload {id} has no container {container}"))
}

/// The simulated container's tiny command set: `echo ARGS...`, `hostname` (the pod name), `env`
/// (plain variables only), `true`, `false` and `exit N`; anything else is "command not found"
/// (127), as a shell would say.
fn run_builtin(command: &[String], hostname: &str, env: &[(String, String)]) -> ExecOutput {
    let ok = |stdout: String| ExecOutput {
        stdout,
        stderr: String::new(),
        exit_code: Some(0),
    };
    let Some((name, args)) = command.split_first() else {
        return ExecOutput {
            stdout: String::new(),
            stderr: "sim: no command given\n".into(),
            exit_code: Some(126),
        };
    };
    match name.as_str() {
        "echo" => ok(format!("{}\n", args.join(" "))),
        "hostname" => ok(format!("{hostname}\n")),
        "env" => ok(env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()),
        "true" => ok(String::new()),
        "false" => ExecOutput {
            exit_code: Some(1),
            ..ok(String::new())
        },
        "exit" => match args.first().map(|a| a.parse::<i32>()) {
            None => ok(String::new()),
            Some(Ok(code)) => ExecOutput {
                exit_code: Some(code),
                ..ok(String::new())
            },
            Some(Err(_)) => ExecOutput {
                stdout: String::new(),
                stderr: format!("sim: exit: {}: numeric argument required\n", args[0]),
                exit_code: Some(2),
            },
        },
        other => ExecOutput {
            stdout: String::new(),
            stderr: format!("sim: {other}: command not found\n"),
            exit_code: Some(127),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sizing::Size;
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

    fn spec(id: &str, node: &str) -> WorkloadSpec {
        WorkloadSpec {
            id: id.into(),
            owner: Owner {
                cluster_id: "c1".into(),
                node: node.into(),
                namespace: "d".into(),
                pod: "p".into(),
                pod_uid: id.into(),
            },
            target: "sim".into(),
            region: "local".into(),
            size: Size::default(),
            pod: Pod {
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("nginx".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            resolved: Default::default(),
        }
    }

    #[tokio::test]
    async fn creating_the_same_id_twice_makes_one_workload() {
        let cloud = SimCloud::new(Duration::ZERO, 10);
        let p = SimProvider::new(cloud.clone());
        let a = p.create(&spec("bg-1", "n")).await.unwrap();
        let b = p.create(&spec("bg-1", "n")).await.unwrap();
        assert_eq!(cloud.creates(), 1);
        assert_eq!(a.ip, b.ip);
    }

    /// A cloud whose API lets creates through at `burst` + `per_second`.
    fn create_bucket(burst: u32, per_second: f64) -> Arc<SimCloud> {
        SimCloud::with_settings(Settings {
            cold_start: Duration::ZERO,
            capacity: 1000,
            rate_limits: vec![crate::policy::model::RateLimitSpec {
                operation: OperationClass::Create,
                burst,
                per_second,
            }],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_caller_outrunning_the_clouds_create_bucket_is_throttled_with_the_wait() {
        let cloud = create_bucket(5, 50.0);
        let p = SimProvider::new(cloud.clone());
        let mut waits = Vec::new();
        for i in 0..10 {
            match p.create(&spec(&format!("bg-{i}"), "n")).await {
                Ok(_) => {}
                Err(ProviderError::Throttled {
                    retry_after: Some(wait),
                    message,
                }) => {
                    assert!(message.contains("create 5 + 50/s"), "{message}");
                    waits.push(wait);
                }
                Err(e) => panic!("expected a create or a 429, got {e:?}"),
            }
        }
        assert!(waits.len() >= 4, "the burst is 5 of 10 at once: {waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(20)),
            "{waits:?}"
        );
        assert_eq!(cloud.creates() as usize, 10 - waits.len());
        // A delete or a read is not a create: no bucket of theirs, never throttled.
        p.delete("bg-0").await.unwrap();
        p.status(&["bg-1".into()]).await.unwrap();
    }

    #[tokio::test]
    async fn layers_holding_the_clouds_own_bucket_are_never_throttled() {
        use crate::provider::layers::{Buckets, Layers, Unobserved};
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: s, provider: sim, region: local, rateLimits: [{operation: create, burst: 5, perSecond: 50}]}\n";
        let policy = crate::policy::load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let cloud = create_bucket(5, 50.0);
        let p = SimProvider::new(cloud.clone());
        let layers = Layers::new(
            &policy.targets[0],
            &Buckets::default(),
            Default::default(),
            Arc::new(Unobserved),
        )
        .unwrap();
        for i in 0..30 {
            let spec = spec(&format!("bg-{i}"), "n");
            let (p, spec) = (&p, &spec);
            // `call` retries a 429; the first attempt's answer is what the cloud said.
            let first = std::sync::atomic::AtomicBool::new(true);
            layers
                .call(OperationClass::Create, "Create", || {
                    let first = &first;
                    async move {
                        let r = p.create(spec).await;
                        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            assert!(
                                !matches!(r, Err(ProviderError::Throttled { .. })),
                                "create {i} throttled: {r:?}"
                            );
                        }
                        r
                    }
                })
                .await
                .unwrap();
        }
        assert_eq!(cloud.creates(), 30);
    }

    /// Counts the attempts of each cloud call.
    #[derive(Default)]
    struct Calls(Mutex<BTreeMap<String, u32>>);

    impl crate::provider::layers::Observer for Calls {
        fn request(&self, _: &str, _: &str, api: &str, _: &str, _: f64) {
            *self.0.lock().unwrap().entry(api.into()).or_default() += 1;
        }
        fn waited(&self, _: &str, _: &str, _: &str, _: f64) {}
        fn circuit(&self, _: &str, _: crate::provider::layers::CircuitState) {}
    }

    #[tokio::test]
    async fn a_status_read_of_250_workloads_is_three_reads_of_the_layers_and_of_the_cloud() {
        use crate::provider::layers::{Buckets, Layered, Layers};
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: s, provider: sim, region: local}\n";
        let policy = crate::policy::load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        // The cloud answers three reads, then throttles for a long while.
        let cloud = SimCloud::with_settings(Settings {
            cold_start: Duration::ZERO,
            capacity: 1000,
            rate_limits: vec![crate::policy::model::RateLimitSpec {
                operation: OperationClass::Read,
                burst: 3,
                per_second: 0.001,
            }],
        })
        .unwrap();
        let calls = Arc::new(Calls::default());
        let layers = Layers::new(
            &policy.targets[0],
            &Buckets::default(),
            Default::default(),
            calls.clone(),
        )
        .unwrap();
        let p = Layered::new(Arc::new(SimProvider::new(cloud.clone())), layers);
        let ids: Vec<String> = (0..250).map(|i| format!("bg-{i}")).collect();
        for id in &ids {
            p.create(&spec(id, "n")).await.unwrap();
        }
        assert_eq!(p.status(&ids).await.unwrap().len(), 250);
        assert_eq!(calls.0.lock().unwrap().get("Status"), Some(&3));
        let err = SimProvider::new(cloud).status(&ids[..1]).await.unwrap_err();
        assert!(matches!(err, ProviderError::Throttled { .. }), "{err}");
    }

    #[tokio::test]
    async fn running_workloads_are_read_less_often_once_the_read_bucket_would_run_short() {
        let cloud = SimCloud::new(Duration::ZERO, 1000);
        for i in 0..300 {
            SimProvider::new(cloud.clone())
                .create(&spec(&format!("bg-{i}"), "n"))
                .await
                .unwrap();
        }
        // No bucket, or one with room: the 10 s floor.
        assert_eq!(SimProvider::new(cloud.clone()).running_poll(), RUNNING_POLL);
        let roomy = SimProvider::new(cloud.clone()).reading_within(Some(20.0));
        assert_eq!(roomy.running_poll(), RUNNING_POLL);
        // 300 workloads are 3 reads; half of 0.1 read/s spends them in 60 s.
        let tight = SimProvider::new(cloud).reading_within(Some(0.1));
        assert_eq!(tight.running_poll(), Duration::from_secs(60));
    }

    #[test]
    fn every_workload_gets_its_own_address_past_64000_workloads_too() {
        assert_eq!(address(0).to_string(), "10.244.0.2");
        assert_eq!(address(254).to_string(), "10.244.1.0");
        let many: std::collections::BTreeSet<_> = (0..200_000).map(address).collect();
        assert_eq!(many.len(), 200_000);
        assert_eq!(address(99_999).to_string(), "10.245.134.161");
    }

    #[tokio::test]
    async fn a_full_cloud_rejects_creates_as_a_target_problem() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 1));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let err = p.create(&spec("bg-2", "n")).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Target(crate::provider::TargetRejection::Capacity { .. })
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn list_owned_returns_only_this_clusters_node() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        p.create(&spec("bg-1", "n1")).await.unwrap();
        p.create(&spec("bg-2", "n2")).await.unwrap();
        let owned = p.list_owned("c1", "n1").await.unwrap();
        assert_eq!(
            owned.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            vec!["bg-1"]
        );
    }

    fn cmd(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[tokio::test]
    async fn exec_runs_the_builtin_commands_with_their_exit_codes() {
        use crate::provider::contract::{EnvVar, Resolved, SecretString};
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        let mut s = spec("bg-1", "n");
        let env = vec![
            EnvVar {
                name: "MODE".into(),
                value: EnvValue::Plain("fast".into()),
            },
            EnvVar {
                name: "TOKEN".into(),
                value: EnvValue::Secret(SecretString::from("hunter2")),
            },
        ];
        s.resolved = Arc::new(Resolved {
            env: BTreeMap::from([("app".to_string(), env)]),
            ..Default::default()
        });
        p.create(&s).await.unwrap();
        assert_eq!(
            p.exec("bg-1", "app", &cmd(&["echo", "hi", "there"]))
                .await
                .unwrap()
                .stdout,
            "hi there\n"
        );
        assert_eq!(
            p.exec("bg-1", "app", &cmd(&["hostname"]))
                .await
                .unwrap()
                .stdout,
            "p\n"
        );
        assert_eq!(
            p.exec("bg-1", "app", &cmd(&["env"])).await.unwrap().stdout,
            "MODE=fast\n",
            "secret values never appear"
        );
        assert_eq!(
            p.exec("bg-1", "app", &cmd(&["exit", "3"]))
                .await
                .unwrap()
                .exit_code,
            Some(3)
        );
        let missing = p.exec("bg-1", "app", &cmd(&["ls"])).await.unwrap();
        assert_eq!(
            (missing.exit_code, missing.stderr.as_str()),
            (Some(127), "sim: ls: command not found\n")
        );
        assert!(p.capabilities().exec);
    }

    #[tokio::test]
    async fn exec_into_a_container_that_is_not_running_is_refused() {
        let p = SimProvider::new(SimCloud::new(Duration::from_secs(60), 10));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let err = p.exec("bg-1", "app", &cmd(&["echo"])).await.unwrap_err();
        assert!(
            matches!(
                &err,
                ProviderError::Pod(crate::provider::PodRejection::NotRunning { .. })
            ),
            "{err}"
        );
        let err = p.exec("bg-1", "db", &cmd(&["echo"])).await.unwrap_err();
        assert!(err.to_string().contains("has no container db"), "{err}");
    }

    #[tokio::test]
    async fn logs_honour_tail_since_and_timestamps() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let all = p.logs("bg-1", "app", &LogOptions::default()).await.unwrap();
        assert!(
            all.starts_with("sim: container app created\nsim: container app started\n"),
            "{all}"
        );
        let tail = p
            .logs(
                "bg-1",
                "app",
                &LogOptions {
                    tail_lines: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(tail, "sim: container app started\n");
        let stamped = p
            .logs(
                "bg-1",
                "app",
                &LogOptions {
                    timestamps: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let (ts, text) = stamped.lines().next().unwrap().split_once(' ').unwrap();
        assert!(DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(text, "sim: container app created");
        let recent = p
            .logs(
                "bg-1",
                "app",
                &LogOptions {
                    since_seconds: Some(3600),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(recent, all);
        assert!(
            p.logs("bg-1", "nope", &LogOptions::default())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn status_is_read_in_one_batch_and_omits_missing_ids() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let got = p.status(&["bg-1".into(), "bg-9".into()]).await.unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["bg-1"]);
    }
}
