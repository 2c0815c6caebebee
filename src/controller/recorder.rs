//! Pod Events, published as kube-runtime's `Recorder` does (`events.k8s.io/v1`; a repeat of the
//! same type and reason about the same pod within six minutes counts in the first one's series)
//! but remembering a few words per series instead of a copy of every Event, and sweeping expired
//! series once a minute instead of on every publish. The Recorder keeps each Event whole and scans
//! all of them on each publish: a burst of 10,000 pods held ~15 MB and cost O(n^2) there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;

/// How long a repeat still counts in an earlier Event's series (kube-runtime's `CACHE_TTL`).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// How often expired series are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One Event to publish about an object.
pub struct Publication<'a> {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason (`Placed`, `BurstFailed`, ...).
    pub reason: &'a str,
    /// The action (`Burst`).
    pub action: &'a str,
    /// Human-readable, at most 1 kB.
    pub note: String,
    /// The object the Event is about (a pod).
    pub regarding: ObjectReference,
}

/// What is remembered of one published Event: its name and how often it happened.
struct Series {
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes Events and counts repeats.
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
    series: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_key: HashMap<(String, String, bool), Series>,
    swept: Option<Instant>,
}

impl Remembered {
    /// Forgets the series expired at `now`, if the last sweep is a [`SWEEP_EVERY`] ago; a map
    /// left mostly empty gives its memory back (a burst's thousands of series, say).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.by_key
            .retain(|_, s| now.duration_since(s.last) < SERIES_TTL);
        if self.by_key.len() < self.by_key.capacity() / 4 {
            self.by_key.shrink_to_fit();
        }
        self.swept = Some(now);
    }
}

impl Recorder {
    /// A recorder reporting as `controller` / `instance`.
    pub fn new(client: kube::Client, controller: &str, instance: String) -> Self {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance,
            series: Mutex::default(),
        }
    }

    /// Publishes `p`: a new Event, or the next count of the series it repeats.
    pub async fn publish(&self, p: Publication<'_>) -> Result<(), kube::Error> {
        let ns = p
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = (
            p.regarding.uid.clone().unwrap_or_default(),
            p.reason.to_owned(),
            matches!(p.type_, EventType::Warning),
        );
        let now = Instant::now();
        let repeat = self.remember(&key, now);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        if let Some((name, count)) = repeat {
            let series = json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => return Ok(()),
                // Expired or deleted meanwhile: start a new series.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(&p, ns);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        self.series.lock().expect("series lock").by_key.insert(
            key,
            Series {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// The name and next count of the live series `key` repeats, counting this one; forgets
    /// expired series at most once a [`SWEEP_EVERY`].
    fn remember(&self, key: &(String, String, bool), now: Instant) -> Option<(String, i32)> {
        let mut r = self.series.lock().expect("series lock");
        r.sweep(now);
        let s = r.by_key.get_mut(key)?;
        if now.duration_since(s.last) >= SERIES_TTL {
            return None;
        }
        s.count += 1;
        s.last = now;
        Some((s.name.clone(), s.count))
    }

    /// Forgets expired series, at most once a [`SWEEP_EVERY`]: also when nothing is published
    /// (the status loop calls it every tick), so a burst's series go six minutes after it, not at
    /// the next Event.
    pub fn sweep(&self, now: Instant) {
        self.series.lock().expect("series lock").sweep(now);
    }

    /// Series remembered now (for tests and the memory benchmark).
    pub fn remembered(&self) -> usize {
        self.series.lock().expect("series lock").by_key.len()
    }

    fn event(&self, p: &Publication<'_>, ns: String) -> K8sEvent {
        let now = Timestamp::now();
        let object = p.regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            action: Some(p.action.to_owned()),
            reason: Some(p.reason.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(p.regarding.clone()),
            note: Some(p.note.clone()),
            metadata: ObjectMeta {
                namespace: Some(ns),
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match p.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        // Never contacted: these tests exercise the bookkeeping only.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Recorder::new(client, "burstgate", "test".into())
    }

    fn key(uid: &str, reason: &str) -> (String, String, bool) {
        (uid.into(), reason.into(), false)
    }

    fn insert(r: &Recorder, k: (String, String, bool), at: Instant) {
        r.series.lock().unwrap().by_key.insert(
            k,
            Series {
                name: "p.1".into(),
                count: 1,
                last: at,
            },
        );
    }

    #[tokio::test]
    async fn a_repeat_within_the_ttl_counts_in_the_first_events_series() {
        let r = recorder();
        let t0 = Instant::now();
        insert(&r, key("u1", "Placed"), t0);
        assert_eq!(
            r.remember(&key("u1", "Placed"), t0 + Duration::from_secs(10)),
            Some(("p.1".into(), 2))
        );
        assert_eq!(
            r.remember(&key("u1", "Placed"), t0 + Duration::from_secs(20)),
            Some(("p.1".into(), 3))
        );
        assert_eq!(r.remember(&key("u2", "Placed"), t0), None);
        assert_eq!(r.remember(&key("u1", "BurstFailed"), t0), None);
    }

    #[tokio::test]
    async fn series_older_than_the_ttl_are_new_events_and_are_swept_once_a_minute() {
        let r = recorder();
        let t0 = Instant::now();
        for i in 0..1000 {
            insert(&r, key(&format!("u{i}"), "Placed"), t0);
        }
        assert_eq!(r.remember(&key("u0", "Placed"), t0 + SERIES_TTL), None);
        // The sweep ran with that call: every series had expired.
        assert_eq!(r.remembered(), 0);
        insert(&r, key("late", "Placed"), t0 + SERIES_TTL);
        // Within a minute of the last sweep nothing is scanned, nothing forgotten.
        r.remember(
            &key("x", "Placed"),
            t0 + SERIES_TTL + Duration::from_secs(30),
        );
        assert_eq!(r.remembered(), 1);
    }

    #[tokio::test]
    async fn a_sweep_without_a_publish_forgets_a_bursts_expired_series_and_their_memory() {
        let r = recorder();
        let t0 = Instant::now();
        for i in 0..10_000 {
            insert(&r, key(&format!("u{i}"), "Placed"), t0);
        }
        r.sweep(t0 + Duration::from_secs(60));
        assert_eq!(r.remembered(), 10_000, "not expired yet");
        r.sweep(t0 + SERIES_TTL);
        assert_eq!(r.remembered(), 0);
        let capacity = r.series.lock().unwrap().by_key.capacity();
        assert!(capacity < 10_000, "kept room for {capacity}");
    }
}
