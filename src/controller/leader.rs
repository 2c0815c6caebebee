//! Leader election over a `coordination.k8s.io/v1` Lease: of the gateway's replicas exactly one
//! runs the controllers; a standby takes over within one lease period when the leader dies, and
//! at once when the leader shuts down gracefully (it releases the Lease).
//!
//! Every write is a replace conditioned on the `resourceVersion` just read, so of two replicas
//! racing for a free Lease one wins and the other gets 409 Conflict. Expiry is judged on the
//! local monotonic clock — how long this replica has seen the Lease unchanged — never by
//! comparing another machine's `renewTime` with this one's clock.
//!
//! No duplicate work: a leader that cannot renew for `renew_deadline` (two thirds of the lease)
//! cancels its controllers and waits for them to stop, while a standby waits a whole
//! `lease_duration` after the last renewal it saw before taking over. The wait is bounded: if
//! the controllers have not stopped within [`ElectionConfig::stop_budget`] (a call hung on a
//! partitioned apiserver, say), `run` returns [`Error::ControllersStuck`] and the process must
//! exit — a replica that cannot prove it stopped acting never overlaps the next leader.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use burstgate::controller::leader::{ElectionConfig, LeaderElector};
//! # async fn demo(client: kube::Client, config: burstgate::config::RunConfig, shutdown: tokio_util::sync::CancellationToken) {
//! let elector = LeaderElector::new(client, ElectionConfig::from_run_config(&config));
//! let leading = elector.subscribe(); // a watch::Receiver<bool> for health and metrics
//! let ran = elector
//!     .run(shutdown, |term| async move {
//!         // Start the controllers with `term`; return once they have all stopped after
//!         // `term` is cancelled (leadership lost, or shutdown).
//!         term.cancelled().await;
//!     })
//!     .await; // returns after shutdown, with the Lease released
//! if let Err(stuck) = ran {
//!     // Leadership lost and the controllers would not stop: end the process now.
//!     eprintln!("{stuck}");
//!     std::process::exit(1);
//! }
//! # drop(leading);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;

/// Name of the leader Lease in the gateway's namespace.
pub const LEADER_LEASE_NAME: &str = "burstgate-leader";

/// Why a Lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call. Retryable: the elector tries again every retry
    /// period (a missing namespace or RBAC rule is logged at each attempt until fixed).
    #[error("{action}: {source}")]
    Api {
        /// What the elector was doing.
        action: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A call did not answer in time. Retryable.
    #[error("{action}: no answer within {after:?}")]
    Timeout {
        /// What the elector was doing.
        action: &'static str,
        /// The bound.
        after: Duration,
    },
    /// Leadership was lost and the controllers did not stop before a standby may take over. Not
    /// retryable: the process must exit so that two leaders never act at once.
    #[error(
        "the controllers did not stop within {after:?} of losing the leadership; \
         exiting so that two leaders never act at once"
    )]
    ControllersStuck {
        /// The stop budget.
        after: Duration,
    },
}

impl Error {
    /// Whether trying again may succeed: always for the elector's calls, never for stuck
    /// controllers.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::ControllersStuck { .. })
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { .. } => "api",
            Error::Timeout { .. } => "timeout",
            Error::ControllersStuck { .. } => "controllers_stuck",
        }
    }
}

/// Where the Lease is, who this replica is, and the election's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Namespace of the Lease (the gateway's own).
    pub namespace: String,
    /// Lease name ([`LEADER_LEASE_NAME`]).
    pub lease_name: String,
    /// This replica's identity, written as `holderIdentity` while it leads.
    pub identity: String,
    /// How long a standby waits after the last renewal it saw before taking over.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops its controllers (shorter than the lease).
    pub renew_deadline: Duration,
    /// Pause between attempts, leading or standing by.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Timing derived from the lease duration as client-go's defaults are (15 s / 10 s / 2 s):
    /// renew deadline two thirds of it, retry period two fifteenths.
    pub fn new(
        namespace: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        ElectionConfig {
            namespace: namespace.into(),
            lease_name: LEADER_LEASE_NAME.to_owned(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }

    /// From `burstgate run`'s settings: `namespace`, `identity()`, `leader_lease()`.
    pub fn from_run_config(config: &RunConfig) -> Self {
        ElectionConfig::new(
            config.namespace.clone(),
            config.identity(),
            config.leader_lease(),
        )
    }

    /// How long a leader that lost the Lease may take to stop its controllers: it notices the
    /// loss `renew_deadline` after its last renewal, and a standby may take over `lease_duration`
    /// after it; one retry period stays as a margin (3 s with the 15 s default).
    pub fn stop_budget(&self) -> Duration {
        self.lease_duration
            .saturating_sub(self.renew_deadline + self.retry_period)
            .max(Duration::from_millis(100))
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// What this replica may do with the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It holds the Lease: renew it.
    Renew,
    /// Nobody holds it (never held, released, or expired): take it.
    Take,
    /// Another replica holds it and, as far as this replica has seen, renews it.
    HeldBy(String),
}

/// Decides from the Lease's spec, this replica's identity, and how long this replica has seen
/// the Lease's holder and renew time unchanged. A Lease without a duration expires after
/// `default_duration`.
pub fn claim(
    spec: &LeaseSpec,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Claim {
    match spec.holder_identity.as_deref() {
        None | Some("") => Claim::Take,
        Some(holder) if holder == me => Claim::Renew,
        Some(holder) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for >= duration {
                Claim::Take
            } else {
                Claim::HeldBy(holder.to_owned())
            }
        }
    }
}

/// The outcome of one attempt to take or renew the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease, renewed just now.
    Held,
    /// Another replica holds it.
    HeldBy(String),
    /// A concurrent write won (409): look again next time.
    Conflict,
}

/// The holder and renew time of the Lease as last seen, and since when (local clock).
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

/// Why a term of leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The work future returned by itself.
    WorkEnded,
    /// Another replica holds the Lease, or it could not be renewed within the deadline.
    Lost,
}

/// `call`, failing with [`Error::Timeout`] after `after`.
async fn bounded<T>(
    after: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(after, call)
        .await
        .unwrap_or(Err(Error::Timeout {
            action: "leader election",
            after,
        }))
}

/// Runs one replica's side of the election. See the module docs for an example.
pub struct LeaderElector {
    leases: Api<Lease>,
    config: ElectionConfig,
    leading: watch::Sender<bool>,
    observed: Option<Observation>,
    /// The Lease as this replica last wrote it while leading: a renewal is one write conditioned
    /// on its `resourceVersion`, read again only when that write conflicts (someone else wrote
    /// the Lease), so a renewal waits for one answer of a busy API server, not two.
    held: Option<Lease>,
}

impl LeaderElector {
    /// An elector for the Lease `config` names.
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        LeaderElector {
            leases: Api::namespaced(client, &config.namespace),
            config,
            leading: watch::Sender::new(false),
            observed: None,
            held: None,
        }
    }

    /// `true` while this replica leads (from just after acquiring the Lease until its
    /// controllers have stopped); for health endpoints and metrics.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Stands by until this replica acquires the Lease, then runs `lead(term)` while renewing it.
    ///
    /// `term` is a child of `shutdown`; it is cancelled when leadership is lost (renewal failed
    /// for `renew_deadline`, or another replica holds the Lease). `lead`'s future must then stop
    /// its controllers and return; the elector waits for it, then stands by again and calls
    /// `lead` anew when it wins again. On shutdown the term is cancelled, the future awaited and
    /// the Lease released so a standby takes over at once. If the future returns by itself, the
    /// Lease is released and `run` returns. If, leadership lost, the future does not return
    /// within [`ElectionConfig::stop_budget`], `run` returns [`Error::ControllersStuck`] at once
    /// (the future dropped): the caller must exit the process without waiting for anything.
    pub async fn run<F, Fut>(
        mut self,
        shutdown: CancellationToken,
        mut lead: F,
    ) -> Result<(), Error>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            if !self.stand_by(&shutdown).await {
                return Ok(());
            }
            tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "became the leader");
            self.leading.send_replace(true);
            let term = shutdown.child_token();
            let work = lead(term.clone());
            tokio::pin!(work);
            let end = tokio::select! {
                () = &mut work => TermEnd::WorkEnded,
                () = shutdown.cancelled() => TermEnd::Shutdown,
                () = self.keep_renewing() => TermEnd::Lost,
            };
            term.cancel();
            match end {
                TermEnd::Lost => {
                    let budget = self.config.stop_budget();
                    if tokio::time::timeout(budget, &mut work).await.is_err() {
                        return Err(Error::ControllersStuck { after: budget });
                    }
                    self.leading.send_replace(false);
                    tracing::warn!(identity = %self.config.identity, "lost the leadership; controllers stopped, standing by");
                }
                TermEnd::Shutdown => {
                    work.await;
                    self.leading.send_replace(false);
                    self.release().await;
                    return Ok(());
                }
                TermEnd::WorkEnded => {
                    self.leading.send_replace(false);
                    self.release().await;
                    return Ok(());
                }
            }
        }
    }

    /// Tries every retry period until this replica holds the Lease (`true`) or shutdown (`false`).
    async fn stand_by(&mut self, shutdown: &CancellationToken) -> bool {
        self.held = None;
        let mut last_holder: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            match bounded(self.config.renew_deadline, self.attempt()).await {
                Ok(Attempt::Held) => return true,
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(identity = %self.config.identity, leader = %holder, "standing by");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {}
                Err(err) => {
                    tracing::warn!(identity = %self.config.identity, error = %err, "leader election attempt failed")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews every retry period; returns when leadership is lost.
    async fn keep_renewing(&mut self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let started = Instant::now();
            let left = (renewed + self.config.renew_deadline).saturating_duration_since(started);
            match bounded(left.max(Duration::from_millis(50)), self.renew()).await {
                Ok(Attempt::Held) => renewed = started,
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::warn!(identity = %self.config.identity, leader = %holder, "another replica holds the leader lease");
                    return;
                }
                Ok(Attempt::Conflict) => {}
                Err(err) => {
                    tracing::warn!(identity = %self.config.identity, error = %err, "renewing the leader lease failed")
                }
            }
            if renewed.elapsed() >= self.config.renew_deadline {
                tracing::warn!(identity = %self.config.identity, deadline = ?self.config.renew_deadline, "could not renew the leader lease in time");
                return;
            }
        }
    }

    /// Renews the Lease this replica holds with one write conditioned on the version it last
    /// wrote; when someone else wrote it since (409), reads it and decides as [`Self::attempt`]
    /// does. Any other failure keeps that version for the next try (if the failed write did
    /// land, the next one conflicts and reads).
    async fn renew(&mut self) -> Result<Attempt, Error> {
        let Some(mut lease) = self.held.clone() else {
            return self.attempt().await;
        };
        let now = Instant::now();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            spec.lease_duration_seconds = Some(self.config.lease_seconds());
        }
        match self
            .leases
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => Ok(self.wrote(updated, now)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.held = None;
                self.attempt().await
            }
            Err(source) => Err(Error::Api {
                action: "renewing the leader lease",
                source,
            }),
        }
    }

    /// Keeps the Lease as this replica just wrote it: the version its next renewal is
    /// conditioned on, and the holder and renew time seen.
    fn wrote(&mut self, lease: Lease, now: Instant) -> Attempt {
        self.observe(&lease.spec.clone().unwrap_or_default(), now);
        self.held = Some(lease);
        Attempt::Held
    }

    /// Notes the Lease's holder and renew time; returns how long they have been unchanged.
    fn observe(&mut self, spec: &LeaseSpec, now: Instant) -> Duration {
        let seen = Observation {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            since: now,
        };
        match &self.observed {
            Some(o) if o.holder == seen.holder && o.renew_time == seen.renew_time => {
                now.saturating_duration_since(o.since)
            }
            _ => {
                self.observed = Some(seen);
                Duration::ZERO
            }
        }
    }

    /// Reads the Lease, and takes or renews it when [`claim`] allows, conditioned on the
    /// `resourceVersion` read.
    // Long on purpose: one read-decide-write of the Lease; split, the resourceVersion that makes
    // the write conditional would travel between functions.
    async fn attempt(&mut self) -> Result<Attempt, Error> {
        let api = |action| move |source| Error::Api { action, source };
        let now = Instant::now();
        let stamp = MicroTime(Timestamp::now());
        let Some(mut lease) = self
            .leases
            .get_opt(&self.config.lease_name)
            .await
            .map_err(api("reading the leader lease"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.config.lease_seconds()),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.wrote(created, now)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
                Err(source) => Err(Error::Api {
                    action: "creating the leader lease",
                    source,
                }),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let unchanged_for = self.observe(&spec, now);
        let claim = claim(
            &spec,
            &self.config.identity,
            unchanged_for,
            self.config.lease_duration,
        );
        let renewing = match claim {
            Claim::HeldBy(holder) => return Ok(Attempt::HeldBy(holder)),
            Claim::Renew => true,
            Claim::Take => false,
        };
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_seconds()),
            renew_time: Some(stamp.clone()),
            acquire_time: if renewing {
                spec.acquire_time.clone()
            } else {
                Some(stamp)
            },
            lease_transitions: if renewing {
                spec.lease_transitions
            } else {
                Some(spec.lease_transitions.unwrap_or(0) + 1)
            },
            ..spec
        });
        match self
            .leases
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => Ok(self.wrote(updated, now)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(source) => Err(Error::Api {
                action: "updating the leader lease",
                source,
            }),
        }
    }

    /// Hands the Lease over: clears the holder (a standby takes it at its next attempt), if this
    /// replica still holds it. Failures are logged; the Lease then expires on its own.
    async fn release(&mut self) {
        let identity = self.config.identity.clone();
        let release = async {
            let mut lease = self
                .leases
                .get(&self.config.lease_name)
                .await
                .map_err(|source| Error::Api {
                    action: "reading the leader lease",
                    source,
                })?;
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..spec
            });
            self.leases
                .replace(&self.config.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
                .map_err(|source| Error::Api {
                    action: "releasing the leader lease",
                    source,
                })
        };
        match bounded(self.config.renew_deadline, release).await {
            Ok(true) => tracing::info!(identity = %identity, "released the leader lease"),
            Ok(false) => {
                tracing::info!(identity = %identity, "the leader lease is no longer ours; nothing to release")
            }
            Err(err) => {
                tracing::warn!(identity = %identity, error = %err, "could not release the leader lease; it expires on its own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    const DEFAULT: Duration = Duration::from_secs(15);

    #[test]
    fn a_lost_leader_must_stop_before_a_standby_may_take_over_with_a_retry_period_to_spare() {
        let config = ElectionConfig::new("ns", "me", Duration::from_secs(15));
        assert_eq!(config.stop_budget(), Duration::from_secs(3));
        assert!(
            config.renew_deadline + config.stop_budget() + config.retry_period
                <= config.lease_duration
        );
        let tiny = ElectionConfig::new("ns", "me", Duration::from_millis(300));
        assert_eq!(tiny.stop_budget(), Duration::from_millis(100));
    }

    #[test]
    fn a_lease_nobody_holds_is_taken() {
        assert_eq!(
            claim(&spec(None, Some(15)), "a", Duration::ZERO, DEFAULT),
            Claim::Take
        );
        assert_eq!(
            claim(&spec(Some(""), Some(1)), "a", Duration::ZERO, DEFAULT),
            Claim::Take,
            "released"
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        assert_eq!(
            claim(
                &spec(Some("a"), Some(15)),
                "a",
                Duration::from_secs(100),
                DEFAULT
            ),
            Claim::Renew
        );
    }

    #[test]
    fn another_holders_lease_is_respected_until_it_went_unrenewed_for_its_whole_duration() {
        let held = spec(Some("b"), Some(15));
        assert_eq!(
            claim(&held, "a", Duration::from_secs(14), DEFAULT),
            Claim::HeldBy("b".into())
        );
        assert_eq!(
            claim(&held, "a", Duration::from_secs(15), DEFAULT),
            Claim::Take
        );
    }

    #[test]
    fn a_lease_without_a_duration_expires_after_the_configured_one() {
        let held = spec(Some("b"), None);
        assert_eq!(
            claim(&held, "a", Duration::from_secs(14), DEFAULT),
            Claim::HeldBy("b".into())
        );
        assert_eq!(
            claim(&held, "a", Duration::from_secs(15), DEFAULT),
            Claim::Take
        );
    }

    #[test]
    fn timing_follows_client_go_proportions() {
        let c = ElectionConfig::new("ns", "me", Duration::from_secs(15));
        assert_eq!(
            (c.renew_deadline, c.retry_period),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        assert!(
            c.renew_deadline < c.lease_duration,
            "a leader gives up before a standby may take over"
        );
        assert_eq!(c.lease_name, LEADER_LEASE_NAME);
    }
}
