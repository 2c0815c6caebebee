//! The layers of one target: [`Layers::call`] runs a cloud call through the rate limiter, the
//! per-attempt timeout, retries with backoff and the circuit breaker, and reports to the
//! [`Observer`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::policy::Target;
use crate::policy::model::{OperationClass, ProviderKind};
use crate::provider::layers::{
    Buckets, CircuitState, Observer, Unobserved, circuit, limiter, retry,
};
use crate::provider::{GaveUpCause, ProviderError, TargetRejection};

/// How one target's layers behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// Backoff, attempts, deadline, per-attempt timeout.
    pub retry: retry::Settings,
    /// When the circuit opens and for how long.
    pub circuit: circuit::Settings,
}

struct Inner {
    provider: ProviderKind,
    target: String,
    region: String,
    buckets: BTreeMap<OperationClass, Vec<limiter::SharedBucket>>,
    settings: Settings,
    breaker: Mutex<circuit::Breaker>,
    /// The circuit state last told to the observer.
    announced: Mutex<CircuitState>,
    observer: Arc<dyn Observer>,
}

/// The layers of one target; cheap to clone.
#[derive(Clone)]
pub struct Layers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("target", &self.inner.target)
            .finish()
    }
}

const CLASSES: [OperationClass; 5] = [
    OperationClass::Create,
    OperationClass::Delete,
    OperationClass::Read,
    OperationClass::Launch,
    OperationClass::Register,
];

/// The class's name in metrics (and in the simulated cloud's throttle messages).
pub(crate) fn class_label(class: OperationClass) -> &'static str {
    match class {
        OperationClass::Create => "create",
        OperationClass::Delete => "delete",
        OperationClass::Read => "read",
        OperationClass::Launch => "launch",
        OperationClass::Register => "register",
    }
}

impl Layers {
    /// The layers of `target`: its effective buckets (published limits or its `rateLimits`),
    /// taken from `buckets` so shared limits are shared.
    pub fn new(
        target: &Target,
        buckets: &Buckets,
        settings: Settings,
        observer: Arc<dyn Observer>,
    ) -> Result<Layers, limiter::Error> {
        let mut by_class = BTreeMap::new();
        for class in CLASSES {
            by_class.insert(class, buckets.for_target(target, class)?);
        }
        Ok(Layers::build(
            target.provider,
            &target.name,
            &target.region,
            by_class,
            settings,
            observer,
        ))
    }

    /// No limits, no retries, no circuit: for unit tests and quick checks.
    pub fn unlimited(provider: ProviderKind, target: &str, region: &str) -> Layers {
        let settings = Settings {
            retry: retry::Settings {
                max_attempts: 1,
                ..Default::default()
            },
            circuit: circuit::Settings {
                failures_to_open: u32::MAX,
                ..Default::default()
            },
        };
        Layers::build(
            provider,
            target,
            region,
            BTreeMap::new(),
            settings,
            Arc::new(Unobserved),
        )
    }

    fn build(
        provider: ProviderKind,
        target: &str,
        region: &str,
        buckets: BTreeMap<OperationClass, Vec<limiter::SharedBucket>>,
        settings: Settings,
        observer: Arc<dyn Observer>,
    ) -> Layers {
        Layers {
            inner: Arc::new(Inner {
                provider,
                target: target.into(),
                region: region.into(),
                buckets,
                breaker: Mutex::new(circuit::Breaker::new(settings.circuit)),
                announced: Mutex::new(CircuitState::Closed),
                settings,
                observer,
            }),
        }
    }

    /// The target these layers guard.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The circuit's state now.
    pub fn circuit_state(&self) -> CircuitState {
        self.inner
            .breaker
            .lock()
            .expect("breaker lock")
            .state(Instant::now())
    }

    /// The sustained rate `class` requests may go at: the slowest refill of its buckets;
    /// `None` when nothing limits them.
    pub fn per_second(&self, class: OperationClass) -> Option<f64> {
        self.inner
            .buckets
            .get(&class)?
            .iter()
            .map(|b| b.spec.per_second)
            .reduce(f64::min)
    }

    /// Takes `n` tokens of every bucket of `class`, waiting as long as needed.
    pub async fn take(&self, class: OperationClass, n: u32) {
        let Some(buckets) = self.inner.buckets.get(&class) else {
            return;
        };
        if buckets.is_empty() || n == 0 {
            return;
        }
        let started = Instant::now();
        for b in buckets {
            b.take(n).await;
        }
        let waited = started.elapsed().as_secs_f64();
        self.inner.observer.waited(
            self.inner.provider.as_str(),
            &self.inner.region,
            class_label(class),
            waited,
        );
    }

    /// Runs one cloud call of `class` (named `api` in metrics) through every layer.
    pub async fn call<T, F, Fut>(
        &self,
        class: OperationClass,
        api: &'static str,
        f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        self.call_labelled(class, api, |_| "ok", f).await
    }

    /// [`Layers::call`] for a call whose answer may be a refusal that is not the target's
    /// failure (a node's kubelet that refuses a scrape, an API the cluster does not serve): such
    /// an answer is an `Ok` value, neither retried nor counted by the circuit, and `label` names
    /// it in the request metric, so that it is not counted as `ok` there.
    pub async fn call_labelled<T, F, Fut>(
        &self,
        class: OperationClass,
        api: &'static str,
        label: impl Fn(&T) -> &'static str + Send,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        let inner = &self.inner;
        if self.admit() == circuit::Admit::No {
            return Err(ProviderError::Target(TargetRejection::CircuitOpen {
                target: inner.target.clone(),
            }));
        }
        let first = Instant::now();
        let mut attempt = 0u32;
        // Whether every failed attempt so far was throttled, or refused as unavailable (then
        // none was carried out).
        let mut only_throttled = true;
        let mut only_refused = true;
        loop {
            attempt += 1;
            self.take(class, 1).await;
            let started = Instant::now();
            let after = inner.settings.retry.call_timeout;
            let result = tokio::time::timeout(after, f())
                .await
                .unwrap_or(Err(ProviderError::TimedOut { api, after }));
            let result_label = match &result {
                Ok(v) => label(v),
                Err(e) => e.metric_label(),
            };
            inner.observer.request(
                inner.provider.as_str(),
                &inner.region,
                api,
                result_label,
                started.elapsed().as_secs_f64(),
            );
            let err = match result {
                Ok(v) => {
                    self.record(api, true);
                    return Ok(v);
                }
                Err(e) if !e.is_retryable() => {
                    self.record(api, !matches!(e, ProviderError::Target(_)));
                    return Err(e);
                }
                Err(e) => e,
            };
            only_throttled &= matches!(err, ProviderError::Throttled { .. });
            only_refused &= matches!(
                err,
                ProviderError::Throttled { .. } | ProviderError::Unavailable { .. }
            );
            let wait = retry::backoff(
                &inner.settings.retry,
                attempt,
                err.retry_after(),
                rand::random::<f64>(),
            );
            if !retry::may_retry(&inner.settings.retry, attempt, first.elapsed(), wait) {
                self.record(api, false);
                let cause = if only_throttled {
                    GaveUpCause::Throttled
                } else if only_refused {
                    GaveUpCause::Refused
                } else {
                    GaveUpCause::Unavailable
                };
                return Err(ProviderError::Target(TargetRejection::GaveUp {
                    cause,
                    api,
                    target: inner.target.clone(),
                    attempts: attempt,
                    elapsed: first.elapsed(),
                    last: err.to_string(),
                }));
            }
            tracing::debug!(target_name = %inner.target, api, attempt, ?wait, error = %err, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn admit(&self) -> circuit::Admit {
        let admit = self
            .inner
            .breaker
            .lock()
            .expect("breaker lock")
            .admit(Instant::now());
        if admit == circuit::Admit::Probe {
            tracing::info!(target_name = %self.inner.target, "circuit half-open: sending one probe call");
            // The probe may go before the status loop's tick announced the half-open state:
            // announce it now, so every open -> half-open -> closed/open is heard in order.
            self.announce_half_open();
        }
        admit
    }

    fn record(&self, api: &'static str, served: bool) {
        let now = Instant::now();
        let changed = {
            let mut b = self.inner.breaker.lock().expect("breaker lock");
            if served {
                b.success(now, api)
            } else {
                b.failure(now, api)
            }
        };
        let Some(state) = changed else { return };
        tracing::warn!(target_name = %self.inner.target, state = state.as_str(), "circuit changed state");
        self.inner.observer.circuit(&self.inner.target, state);
        *self.inner.announced.lock().expect("announced lock") = state;
    }

    /// Tells the observer when an open circuit's cool-down has passed (it is half-open: a probe
    /// may go), so the target is offered to the engine again. Called on the status loop's tick;
    /// no timer task of its own.
    pub fn tick(&self) {
        if self.circuit_state() == CircuitState::HalfOpen {
            self.announce_half_open();
        }
    }

    /// Tells the observer the circuit is half-open, unless it heard so already.
    fn announce_half_open(&self) {
        let mut announced = self.inner.announced.lock().expect("announced lock");
        if *announced == CircuitState::Open {
            *announced = CircuitState::HalfOpen;
            drop(announced);
            self.inner
                .observer
                .circuit(&self.inner.target, CircuitState::HalfOpen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[derive(Default)]
    struct Recorder {
        results: Mutex<Vec<String>>,
        circuits: Mutex<Vec<CircuitState>>,
    }

    impl Observer for Recorder {
        fn request(&self, _: &str, _: &str, api: &str, result: &str, _: f64) {
            self.results.lock().unwrap().push(format!("{api}:{result}"));
        }
        fn waited(&self, _: &str, _: &str, _: &str, _: f64) {}
        fn circuit(&self, _: &str, state: CircuitState) {
            self.circuits.lock().unwrap().push(state);
        }
    }

    fn layers(failures_to_open: u32, observer: Arc<Recorder>) -> Layers {
        let settings = Settings {
            retry: retry::Settings {
                first_backoff: Duration::from_millis(10),
                ..Default::default()
            },
            circuit: circuit::Settings {
                failures_to_open,
                cool_down: Duration::from_secs(30),
            },
        };
        Layers::build(
            ProviderKind::Sim,
            "t",
            "r",
            BTreeMap::new(),
            settings,
            observer,
        )
    }

    fn throttled() -> ProviderError {
        ProviderError::Throttled {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_is_retried_after_retry_after_and_then_succeeds() {
        let rec = Arc::new(Recorder::default());
        let l = layers(5, rec.clone());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let r = l
            .call(OperationClass::Create, "Put", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(throttled()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(r, Ok(2));
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(
            *rec.results.lock().unwrap(),
            ["Put:throttled", "Put:throttled", "Put:ok"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_answered_as_a_value_is_counted_under_its_label_once_and_leaves_the_circuit_closed()
     {
        let rec = Arc::new(Recorder::default());
        let l = layers(1, rec.clone());
        for _ in 0..3 {
            let r = l
                .call_labelled(
                    OperationClass::Read,
                    "Scrape",
                    |r: &Result<u32, &str>| if r.is_ok() { "ok" } else { "refused" },
                    || async { Ok(Err("403")) },
                )
                .await;
            assert_eq!(r, Ok(Err("403")));
        }
        assert_eq!(
            *rec.results.lock().unwrap(),
            ["Scrape:refused", "Scrape:refused", "Scrape:refused"]
        );
        assert_eq!(l.circuit_state(), CircuitState::Closed);
        assert!(rec.circuits.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_past_the_deadline_becomes_a_target_error() {
        let l = layers(5, Arc::default());
        let r: Result<(), _> = l
            .call(OperationClass::Create, "Put", || async { Err(throttled()) })
            .await;
        match r {
            Err(ProviderError::Target(TargetRejection::GaveUp {
                cause, attempts, ..
            })) => {
                assert_eq!(cause, GaveUpCause::Throttled);
                assert!(attempts > 1, "{attempts}");
            }
            other => panic!("expected a target error, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_answers_unavailable_to_every_attempt_refused_them_all() {
        let l = layers(5, Arc::default());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = l
            .call(OperationClass::Create, "RunTask", || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if n % 2 == 0 {
                        Err(ProviderError::Unavailable {
                            message: "503 ServiceUnavailableException".into(),
                            retry_after: None,
                        })
                    } else {
                        Err(throttled())
                    }
                }
            })
            .await;
        let err = r.unwrap_err();
        assert!(
            matches!(
                &err,
                ProviderError::Target(TargetRejection::GaveUp {
                    cause: GaveUpCause::Refused,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(
            !err.outcome_unknown(),
            "nothing was carried out: the pod may move"
        );
        assert!(
            calls.load(std::sync::atomic::Ordering::Relaxed) > 1,
            "retried first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_throttled_after_a_failed_attempt_may_have_landed() {
        let l = layers(5, Arc::default());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = l
            .call(OperationClass::Create, "Put", || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if n == 0 {
                        Err(ProviderError::Transient {
                            message: "503".into(),
                            retry_after: None,
                        })
                    } else {
                        Err(throttled())
                    }
                }
            })
            .await;
        let err = r.unwrap_err();
        assert!(
            matches!(
                &err,
                ProviderError::Target(TargetRejection::GaveUp {
                    cause: GaveUpCause::Unavailable,
                    ..
                })
            ),
            "the first attempt may have been carried out: {err:?}"
        );
        assert!(err.outcome_unknown());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_error_is_returned_at_once_and_never_opens_the_circuit() {
        let rec = Arc::new(Recorder::default());
        let l = layers(1, rec.clone());
        let bad = || async { Err::<(), _>(ProviderError::cloud_pod("InaccessibleImage", "no")) };
        for _ in 0..3 {
            assert!(matches!(
                l.call(OperationClass::Create, "Put", bad).await,
                Err(ProviderError::Pod(_))
            ));
        }
        assert_eq!(l.circuit_state(), CircuitState::Closed);
        assert_eq!(rec.results.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_target_errors_open_the_circuit_and_later_calls_are_refused_without_a_request()
    {
        let rec = Arc::new(Recorder::default());
        let l = layers(2, rec.clone());
        let quota = || async {
            Err::<(), _>(ProviderError::Target(TargetRejection::Quota {
                code: "QuotaExceeded".into(),
                message: "full".into(),
            }))
        };
        l.call(OperationClass::Create, "Put", quota)
            .await
            .unwrap_err();
        l.call(OperationClass::Create, "Put", quota)
            .await
            .unwrap_err();
        assert_eq!(*rec.circuits.lock().unwrap(), [CircuitState::Open]);
        let r = l
            .call(OperationClass::Create, "Put", || async { Ok(()) })
            .await;
        assert!(
            matches!(
                r,
                Err(ProviderError::Target(TargetRejection::CircuitOpen { .. }))
            ),
            "{r:?}"
        );
        assert_eq!(
            rec.results.lock().unwrap().len(),
            2,
            "no request while open"
        );
    }

    /// Layers whose circuit one quota refusal opened, 31 s later (past the 30 s cool-down).
    async fn opened_and_cooled_down() -> (Layers, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let l = layers(1, rec.clone());
        let quota = || async {
            Err::<(), _>(ProviderError::Target(TargetRejection::Quota {
                code: "QuotaExceeded".into(),
                message: "full".into(),
            }))
        };
        l.call(OperationClass::Create, "Put", quota)
            .await
            .unwrap_err();
        tokio::time::sleep(Duration::from_secs(31)).await;
        (l, rec)
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_the_observer_hears_half_open_and_a_good_probe_closes_it() {
        let (l, rec) = opened_and_cooled_down().await;
        l.tick();
        l.tick();
        assert_eq!(
            *rec.circuits.lock().unwrap(),
            [CircuitState::Open, CircuitState::HalfOpen]
        );
        l.call(OperationClass::Read, "List", || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(
            *rec.circuits.lock().unwrap(),
            [
                CircuitState::Open,
                CircuitState::HalfOpen,
                CircuitState::Closed
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_sent_before_any_tick_is_announced_half_open_before_it_closes_the_circuit() {
        let (l, rec) = opened_and_cooled_down().await;
        l.call(OperationClass::Delete, "Delete", || async { Ok(()) })
            .await
            .unwrap();
        l.tick();
        assert_eq!(
            *rec.circuits.lock().unwrap(),
            [
                CircuitState::Open,
                CircuitState::HalfOpen,
                CircuitState::Closed
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_over_its_time_limit_counts_as_a_timeout_and_is_retried() {
        let rec = Arc::new(Recorder::default());
        let l = layers(5, rec.clone());
        let calls = AtomicU32::new(0);
        let r = l
            .call(OperationClass::Read, "Get", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Ok(n)
                }
            })
            .await;
        assert_eq!(r, Ok(1));
        assert_eq!(*rec.results.lock().unwrap(), ["Get:timeout", "Get:ok"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_gives_up_as_unavailable_with_an_unknown_outcome() {
        let rec = Arc::new(Recorder::default());
        let l = layers(5, rec.clone());
        let r: Result<(), _> = l
            .call(OperationClass::Create, "Put", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await;
        let err = r.unwrap_err();
        assert!(
            matches!(
                &err,
                ProviderError::Target(TargetRejection::GaveUp {
                    cause: GaveUpCause::Unavailable,
                    api: "Put",
                    attempts: 2,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(err.outcome_unknown(), "an attempt may have landed");
        assert_eq!(*rec.results.lock().unwrap(), ["Put:timeout", "Put:timeout"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_refuses_with_its_own_variant_naming_the_target() {
        let l = layers(1, Arc::default());
        let quota = || async {
            Err::<(), _>(ProviderError::Target(TargetRejection::Quota {
                code: "QuotaExceeded".into(),
                message: "full".into(),
            }))
        };
        let first = l
            .call(OperationClass::Create, "Put", quota)
            .await
            .unwrap_err();
        assert!(
            !first.outcome_unknown(),
            "a quota answer is a known outcome"
        );
        let refused = l
            .call(OperationClass::Create, "Put", || async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            ProviderError::Target(TargetRejection::CircuitOpen { target: "t".into() })
        );
        assert!(
            !refused.outcome_unknown(),
            "an open circuit made no attempt: this call did nothing"
        );
    }
}
