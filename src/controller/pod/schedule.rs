//! When each placed pod is next looked at by the status loop: a queue ordered by time, so a
//! tick takes the pods that are due and touches no other (at 100,000 pods, a pass over every
//! pod each second was half of the gateway's steady CPU).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Keys (pod UIDs) with the instant each is next looked at, and a value carried with each (where
/// to find the pod). One entry per key: scheduling a key again moves it.
#[derive(Debug)]
pub struct Schedule<K, V> {
    /// By time, then by the order entries were made (two keys due at one instant).
    queue: BTreeMap<(Instant, u64), K>,
    entries: HashMap<K, Entry<V>>,
    made: u64,
}

#[derive(Debug)]
struct Entry<V> {
    at: (Instant, u64),
    value: V,
}

impl<K, V> Default for Schedule<K, V> {
    fn default() -> Self {
        Schedule {
            queue: BTreeMap::new(),
            entries: HashMap::new(),
            made: 0,
        }
    }
}

impl<K: Clone + Eq + Hash, V> Schedule<K, V> {
    /// Looks at `key` next at `at` (and no earlier, if it was due sooner).
    pub fn at(&mut self, key: K, at: Instant, value: V) {
        self.made += 1;
        let slot = (at, self.made);
        if let Some(old) = self.entries.insert(key.clone(), Entry { at: slot, value }) {
            self.queue.remove(&old.at);
        }
        self.queue.insert(slot, key);
    }

    /// Looks at `key` at `at` unless it is looked at sooner already.
    pub fn sooner(&mut self, key: K, at: Instant, value: V) {
        if self.entries.get(&key).is_none_or(|e| e.at.0 > at) {
            self.at(key, at, value);
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.entries.remove(key) {
            self.queue.remove(&old.at);
        }
    }

    /// Takes out every key due at `now`, earliest first: a key taken is not looked at again until
    /// scheduled again.
    pub fn take_due(&mut self, now: Instant) -> Vec<(K, V)> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(e) = self.entries.remove(&key) {
                due.push((key, e.value));
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

    #[test]
    fn only_the_keys_due_are_taken_earliest_first() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.at("late", t + secs(10), 3);
        s.at("first", t + secs(1), 1);
        s.at("second", t + secs(2), 2);
        assert_eq!(s.take_due(t), vec![]);
        assert_eq!(s.take_due(t + secs(2)), vec![("first", 1), ("second", 2)]);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.take_due(t + secs(60)), vec![("late", 3)]);
        assert_eq!(s.entries.len(), 0);
    }

    #[test]
    fn a_key_scheduled_again_moves_and_is_taken_once() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.at("pod", t + secs(1), "old");
        s.at("pod", t + secs(30), "new");
        assert_eq!(s.take_due(t + secs(5)), vec![]);
        assert_eq!(s.take_due(t + secs(30)), vec![("pod", "new")]);
        assert_eq!(s.take_due(t + secs(90)), vec![]);
        s.at("pod", t + secs(100), "later");
        s.at("pod", t + secs(95), "sooner");
        assert_eq!(s.take_due(t + secs(95)), vec![("pod", "sooner")]);
    }

    #[test]
    fn sooner_moves_a_key_earlier_never_later() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.sooner("new", t + secs(5), ());
        s.at("pod", t + secs(10), ());
        s.sooner("pod", t + secs(20), ());
        assert_eq!(s.take_due(t + secs(10)), vec![("new", ()), ("pod", ())]);
        s.at("pod", t + secs(30), ());
        s.sooner("pod", t + secs(15), ());
        assert_eq!(s.take_due(t + secs(15)), vec![("pod", ())]);
    }

    #[test]
    fn keys_due_at_one_instant_are_all_taken() {
        let t = Instant::now();
        let mut s = Schedule::default();
        for k in 0..1000 {
            s.at(k, t, ());
        }
        assert_eq!(s.take_due(t).len(), 1000);
    }

    #[test]
    fn a_removed_key_is_never_taken() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.at("gone", t, ());
        s.at("kept", t, ());
        s.remove(&"gone");
        s.remove(&"never scheduled");
        assert_eq!(s.take_due(t), vec![("kept", ())]);
    }
}
