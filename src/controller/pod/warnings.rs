//! Failed writes about a pod, logged once: the same failure at every status read (a status the
//! apiserver refuses, say) is one warning per pod, then debug lines until it changes or clears.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per pod UID, the failure last logged as a warning.
#[derive(Default)]
pub struct Warnings(Mutex<HashMap<String, String>>);

impl Warnings {
    /// Whether `failure` of pod `uid` is news (to be a warning): not the one last warned of.
    pub fn is_news(&self, uid: &str, failure: &str) -> bool {
        let mut warned = self.0.lock().expect("warnings lock");
        if warned.get(uid).is_some_and(|last| last == failure) {
            return false;
        }
        warned.insert(uid.to_string(), failure.to_string());
        true
    }

    /// Forgets pod `uid`'s failure: its write went through, or the pod is gone.
    pub fn clear(&self, uid: &str) {
        self.0.lock().expect("warnings lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_news_once_per_pod_until_it_changes_or_clears() {
        let w = Warnings::default();
        assert!(w.is_news("a", "422 podIPs invalid"));
        assert!(!w.is_news("a", "422 podIPs invalid"));
        assert!(
            w.is_news("b", "422 podIPs invalid"),
            "another pod's is its own"
        );
        assert!(w.is_news("a", "500 etcd timeout"), "a different failure");
        assert!(w.is_news("a", "422 podIPs invalid"), "and back again");
        w.clear("a");
        assert!(
            w.is_news("a", "422 podIPs invalid"),
            "after a success it is news again"
        );
    }
}
