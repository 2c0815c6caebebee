//! When each tracked pod is next looked at by the status loop: a queue ordered by time, so a
//! tick takes the pods that are due and touches no other (at 100,000 pods, a pass over every
//! pod each second was half of the gateway's steady CPU). Each pod's key is stored once, shared
//! by its entry and the queue; a pod scheduled again or forgotten leaves a stale queue entry
//! that is skipped when it comes up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Tracked keys (pod UIDs), each with a value and the instant it is next due, if any.
#[derive(Debug)]
pub struct Schedule<V> {
    queue: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    slots: HashMap<Arc<str>, Slot<V>>,
}

#[derive(Debug)]
struct Slot<V> {
    next: Option<Instant>,
    value: V,
}

impl<V> Default for Schedule<V> {
    fn default() -> Self {
        Schedule {
            queue: BinaryHeap::new(),
            slots: HashMap::new(),
        }
    }
}

impl<V> Schedule<V> {
    /// The value of `key`, tracked from now on with `value()` if it was not (and not due).
    pub fn track(&mut self, key: &str, value: impl FnOnce() -> V) -> &mut V {
        if !self.slots.contains_key(key) {
            let slot = Slot {
                next: None,
                value: value(),
            };
            self.slots.insert(Arc::from(key), slot);
        }
        &mut self.slots.get_mut(key).expect("just tracked").value
    }

    /// The value of `key`, if tracked.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.slots.get(key).map(|s| &s.value)
    }

    /// The value of `key`, if tracked, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.slots.get_mut(key).map(|s| &mut s.value)
    }

    /// Makes the tracked `key` due at `at` (and not sooner, if it was).
    pub fn at(&mut self, key: &str, at: Instant) {
        let Some(shared) = self.slots.get_key_value(key).map(|(k, _)| k.clone()) else {
            return;
        };
        self.slots.get_mut(key).expect("tracked").next = Some(at);
        self.queue.push(Reverse((at, shared)));
    }

    /// Makes the tracked `key` due at `at` unless it is due sooner already.
    pub fn sooner(&mut self, key: &str, at: Instant) {
        if self
            .slots
            .get(key)
            .is_some_and(|s| s.next.is_none_or(|next| next > at))
        {
            self.at(key, at);
        }
    }

    /// Stops tracking `key`.
    pub fn forget(&mut self, key: &str) {
        self.slots.remove(key);
    }

    /// Takes out every key due at `now`, earliest first: each stays tracked, and is not due
    /// again until scheduled again.
    pub fn take_due(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.queue.pop() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&key)
                && slot.next == Some(at)
            {
                slot.next = None;
                due.push(key);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn keys(due: Vec<Arc<str>>) -> Vec<String> {
        due.iter().map(|k| k.to_string()).collect()
    }

    fn tracking(keys: &[&str]) -> Schedule<u32> {
        let mut s = Schedule::default();
        for (i, k) in keys.iter().enumerate() {
            s.track(k, || i as u32);
        }
        s
    }

    #[test]
    fn only_the_keys_due_are_taken_earliest_first() {
        let t = Instant::now();
        let mut s = tracking(&["late", "first", "second"]);
        s.at("late", t + secs(10));
        s.at("first", t + secs(1));
        s.at("second", t + secs(2));
        assert!(s.take_due(t).is_empty());
        assert_eq!(keys(s.take_due(t + secs(2))), ["first", "second"]);
        assert_eq!(keys(s.take_due(t + secs(60))), ["late"]);
        assert!(s.take_due(t + secs(600)).is_empty());
    }

    #[test]
    fn a_key_taken_stays_tracked_with_its_value_until_forgotten() {
        let t = Instant::now();
        let mut s = tracking(&["pod"]);
        *s.get_mut("pod").unwrap() = 7;
        s.at("pod", t);
        assert_eq!(keys(s.take_due(t)), ["pod"]);
        assert_eq!(s.get("pod"), Some(&7));
        assert_eq!(*s.track("pod", || 0), 7);
        s.forget("pod");
        assert_eq!(s.get("pod"), None);
    }

    #[test]
    fn a_key_scheduled_again_moves_and_is_taken_once() {
        let t = Instant::now();
        let mut s = tracking(&["pod"]);
        s.at("pod", t + secs(1));
        s.at("pod", t + secs(30));
        assert!(s.take_due(t + secs(5)).is_empty());
        assert_eq!(keys(s.take_due(t + secs(30))), ["pod"]);
        assert!(s.take_due(t + secs(90)).is_empty());
        s.at("pod", t + secs(100));
        s.at("pod", t + secs(100));
        assert_eq!(keys(s.take_due(t + secs(100))), ["pod"]);
    }

    #[test]
    fn sooner_moves_a_key_earlier_never_later() {
        let t = Instant::now();
        let mut s = tracking(&["new", "pod"]);
        s.sooner("new", t + secs(5));
        s.at("pod", t + secs(10));
        s.sooner("pod", t + secs(20));
        assert_eq!(keys(s.take_due(t + secs(10))), ["new", "pod"]);
        assert!(s.take_due(t + secs(20)).is_empty());
        s.at("pod", t + secs(30));
        s.sooner("pod", t + secs(15));
        assert_eq!(keys(s.take_due(t + secs(15))), ["pod"]);
        assert!(s.take_due(t + secs(30)).is_empty());
    }

    #[test]
    fn keys_due_at_one_instant_are_all_taken() {
        let t = Instant::now();
        let names: Vec<String> = (0..1000).map(|i| format!("pod-{i}")).collect();
        let mut s = Schedule::default();
        for n in &names {
            s.track(n, || ());
            s.at(n, t);
        }
        assert_eq!(s.take_due(t).len(), 1000);
    }

    #[test]
    fn a_forgotten_or_untracked_key_is_never_taken() {
        let t = Instant::now();
        let mut s = tracking(&["gone", "kept"]);
        s.at("gone", t);
        s.at("kept", t);
        s.at("never tracked", t);
        s.forget("gone");
        assert_eq!(keys(s.take_due(t)), ["kept"]);
    }
}
