//! The simulated cloud itself (shared state, survives gateway restarts in one process) and the
//! `Provider` that talks to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::provider::contract::{
    Capabilities, LogOptions, OwnedWorkload, Owner, Provider, ProviderError, WorkloadSpec,
    WorkloadStatus,
};
use crate::provider::sim::retry::SimFault;
use crate::provider::sim::status::status_at;
use crate::provider::sim::translate::{SimWorkload, translate};

struct Entry {
    workload: SimWorkload,
    owner: Owner,
    created: DateTime<Utc>,
    created_instant: Instant,
    ip: String,
}

#[derive(Default)]
struct State {
    workloads: BTreeMap<String, Entry>,
    next_ip: u32,
    creates: u64,
    deletes: u64,
}

/// An in-process cloud: every workload with its creation time; state advances with wall time.
pub struct SimCloud {
    state: Mutex<State>,
    cold_start: Duration,
    capacity: usize,
}

impl SimCloud {
    /// A cloud whose workloads start after `cold_start` and that holds at most `capacity`.
    pub fn new(cold_start: Duration, capacity: usize) -> Arc<SimCloud> {
        Arc::new(SimCloud {
            state: Mutex::new(State::default()),
            cold_start,
            capacity,
        })
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
            self.cold_start,
            e.created_instant.elapsed(),
        )
    }
}

/// The `sim` provider.
pub struct SimProvider {
    cloud: Arc<SimCloud>,
}

impl SimProvider {
    /// A provider over `cloud`.
    pub fn new(cloud: Arc<SimCloud>) -> SimProvider {
        SimProvider { cloud }
    }
}

#[async_trait::async_trait]
impl Provider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            logs: true,
            exec: false,
            host_path: false,
            persistent_volumes: false,
            privileged: false,
        }
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let workload = translate(spec)?;
        let mut state = self.cloud.lock();
        if let Some(existing) = state.workloads.get(&spec.id) {
            return Ok(self.cloud.status_of(&spec.id, existing));
        }
        if state.workloads.len() >= self.cloud.capacity {
            return Err(SimFault::CapacityExceeded {
                running: state.workloads.len(),
                limit: self.cloud.capacity,
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
            ip: format!("10.244.{}.{}", n / 250, n % 250 + 2),
        };
        let status = self.cloud.status_of(&spec.id, &entry);
        state.workloads.insert(spec.id.clone(), entry);
        Ok(status)
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
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
        let state = self.cloud.lock();
        Ok(state
            .workloads
            .iter()
            .filter(|(_, e)| e.owner.cluster_id == cluster_id && e.owner.node == node)
            .map(|(id, e)| OwnedWorkload {
                id: id.clone(),
                owner: e.owner.clone(),
                age: e.created_instant.elapsed(),
            })
            .collect())
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        let state = self.cloud.lock();
        let Some(e) = state.workloads.get(id) else {
            return Err(ProviderError::Pod {
                code: "NotFound".into(),
                message: format!("workload {id} not found"),
            });
        };
        let status = self.cloud.status_of(id, e);
        let mut lines = vec![format!(
            "{} sim: container {container} of {id} created",
            status.started_at.unwrap_or_default()
        )];
        if let Some(c) = status.containers.iter().find(|c| c.name == container) {
            lines.push(format!(
                "sim: container {container} state {:?}, restarts {}",
                c.state, c.restart_count
            ));
        }
        let skip = opts
            .tail_lines
            .map_or(0, |n| lines.len().saturating_sub(n as usize));
        Ok(lines[skip..].join("\n") + "\n")
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

    #[tokio::test]
    async fn a_full_cloud_rejects_creates_as_a_target_problem() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 1));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let err = p.create(&spec("bg-2", "n")).await.unwrap_err();
        assert!(matches!(err, ProviderError::Target { .. }), "{err}");
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

    #[tokio::test]
    async fn exec_is_not_supported_and_says_by_whom() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        let err = p
            .exec("bg-1", "app", &["ls".to_string()])
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "sim does not support exec");
        assert!(!p.capabilities().exec);
    }

    #[tokio::test]
    async fn status_is_read_in_one_batch_and_omits_missing_ids() {
        let p = SimProvider::new(SimCloud::new(Duration::ZERO, 10));
        p.create(&spec("bg-1", "n")).await.unwrap();
        let got = p.status(&["bg-1".into(), "bg-9".into()]).await.unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["bg-1"]);
    }
}
