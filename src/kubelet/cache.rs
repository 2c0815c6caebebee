//! The kubelet API's review caches, kept as the kubelet keeps its webhook authenticator and
//! authorizer caches: an authenticated token for [`TOKEN_TTL`] (2 min), an allowed
//! SubjectAccessReview for [`ALLOWED_TTL`] (5 min), a denied one for [`DENIED_TTL`] (30 s).
//!
//! Keys are SHA-256 digests: a bearer token is never kept, only its hash. A failed review (the
//! apiserver unreachable) is never cached, nor is a token the apiserver did not authenticate.
//! Each cache holds at most its capacity of entries; when full, expired entries go first, then
//! the one closest to expiry. Time is tokio's clock, so tests can pause and advance it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::kubelet::auth::{Attributes, Identity};

/// How long an authenticated token's identity is reused (the kubelet's
/// `authentication.webhook.cacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed access is reused (the kubelet's `authorization.webhook.cacheAuthorizedTTL`).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied access is reused (the kubelet's
/// `authorization.webhook.cacheUnauthorizedTTL`).
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Most tokens remembered at once.
pub const TOKEN_CAPACITY: usize = 1024;
/// Most access decisions remembered at once.
pub const ACCESS_CAPACITY: usize = 4096;

/// A cache key: the SHA-256 digest of what it stands for.
pub type Key = [u8; 32];

/// The key of a bearer token: its digest, so the cache never holds the token.
pub fn token_key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// The key of one access question: who (user, uid, groups, extra) asks for what (verb,
/// subresource). Every field is length-prefixed, so no two questions share a key by
/// concatenation (`["ab", "c"]` and `["a", "bc"]` differ).
pub fn access_key(who: &Identity, attrs: &Attributes) -> Key {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(who.user.as_bytes());
    field(who.uid.as_deref().unwrap_or_default().as_bytes());
    field(&[u8::from(who.uid.is_some())]);
    field(&(who.groups.len() as u64).to_le_bytes());
    for group in &who.groups {
        field(group.as_bytes());
    }
    field(&(who.extra.len() as u64).to_le_bytes());
    for (name, values) in &who.extra {
        field(name.as_bytes());
        field(&(values.len() as u64).to_le_bytes());
        for value in values {
            field(value.as_bytes());
        }
    }
    field(attrs.verb.as_bytes());
    field(attrs.subresource.as_bytes());
    hash.finalize().into()
}

/// What a SubjectAccessReview answered, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Allowed.
    Allowed,
    /// Denied, with the authorizer's reason (`: ...`, or empty).
    Denied {
        /// The reason, ready to append to the message.
        reason: String,
    },
}

impl Access {
    /// How long this answer is reused.
    pub fn ttl(&self) -> Duration {
        match self {
            Access::Allowed => ALLOWED_TTL,
            Access::Denied { .. } => DENIED_TTL,
        }
    }
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

/// A bounded map from [`Key`] to values that expire.
pub struct TtlCache<V> {
    capacity: usize,
    entries: Mutex<HashMap<Key, Entry<V>>>,
}

impl<V: Clone> TtlCache<V> {
    /// An empty cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value under `key` while it has not expired.
    pub fn get(&self, key: &Key) -> Option<V> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.expires > now => Some(entry.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` under `key` for `ttl`, making room when the cache is full.
    pub fn insert(&self, key: Key, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k)
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    /// How many entries are held (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry<V>>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The two caches of one kubelet API.
pub struct Caches {
    /// Identities of authenticated bearer tokens, by token digest.
    pub tokens: TtlCache<Identity>,
    /// Access decisions, by [`access_key`].
    pub access: TtlCache<Access>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            tokens: TtlCache::new(TOKEN_CAPACITY),
            access: TtlCache::new(ACCESS_CAPACITY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        [n; 32]
    }

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    const GET_PROXY: Attributes = Attributes {
        verb: "get",
        subresource: "proxy",
    };

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_served_until_its_ttl_and_not_after() {
        let cache = TtlCache::new(8);
        cache.insert(key(1), "alice", TOKEN_TTL);
        tokio::time::advance(TOKEN_TTL - Duration::from_millis(1)).await;
        assert_eq!(cache.get(&key(1)), Some("alice"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.get(&key(1)), None);
        assert!(
            cache.is_empty(),
            "an expired entry is dropped when looked up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_allowed_access_is_reused_for_five_minutes_and_a_denied_one_for_thirty_seconds() {
        let cache = TtlCache::new(8);
        let denied = Access::Denied {
            reason: String::new(),
        };
        cache.insert(key(1), Access::Allowed, Access::Allowed.ttl());
        cache.insert(key(2), denied.clone(), denied.ttl());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cache.get(&key(2)), Some(denied));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&key(2)), None);
        tokio::time::advance(Duration::from_secs(269)).await;
        assert_eq!(cache.get(&key(1)), Some(Access::Allowed));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&key(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_entries_first_then_the_one_closest_to_expiry() {
        let cache = TtlCache::new(3);
        cache.insert(key(1), 1, Duration::from_secs(10));
        cache.insert(key(2), 2, Duration::from_secs(300));
        cache.insert(key(3), 3, Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.insert(key(4), 4, Duration::from_secs(300));
        assert_eq!(cache.len(), 3, "the expired entry made room");
        assert_eq!(cache.get(&key(3)), Some(3));
        cache.insert(key(5), 5, Duration::from_secs(300));
        assert_eq!(cache.len(), 3, "never more than the capacity");
        assert_eq!(cache.get(&key(3)), None, "the soonest to expire went");
        assert_eq!(
            [cache.get(&key(2)), cache.get(&key(4)), cache.get(&key(5))],
            [Some(2), Some(4), Some(5)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_an_entry_in_a_full_cache_evicts_nothing_and_renews_it() {
        let cache = TtlCache::new(2);
        cache.insert(key(1), 1, Duration::from_secs(10));
        cache.insert(key(2), 2, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;
        cache.insert(key(1), 10, Duration::from_secs(10));
        assert_eq!(
            (cache.get(&key(1)), cache.get(&key(2))),
            (Some(10), Some(2))
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!((cache.get(&key(1)), cache.get(&key(2))), (Some(10), None));
    }

    #[test]
    fn a_token_is_kept_as_its_sha256_digest_only() {
        let k = token_key("secret-token");
        assert_eq!(k, <[u8; 32]>::from(Sha256::digest(b"secret-token")));
        assert_ne!(k, token_key("secret-token2"));
    }

    #[test]
    fn every_part_of_the_question_is_in_the_access_key() {
        let base = access_key(&who("alice", &["dev"]), &GET_PROXY);
        assert_eq!(base, access_key(&who("alice", &["dev"]), &GET_PROXY));
        let mut with_uid = who("alice", &["dev"]);
        with_uid.uid = Some(String::new());
        let mut with_extra = who("alice", &["dev"]);
        with_extra
            .extra
            .insert("scopes".into(), vec!["view".into()]);
        let others = [
            access_key(&who("bob", &["dev"]), &GET_PROXY),
            access_key(&who("alice", &["ops"]), &GET_PROXY),
            access_key(&who("alice", &[]), &GET_PROXY),
            access_key(&with_uid, &GET_PROXY),
            access_key(&with_extra, &GET_PROXY),
            access_key(
                &who("alice", &["dev"]),
                &Attributes {
                    verb: "create",
                    subresource: "proxy",
                },
            ),
            access_key(
                &who("alice", &["dev"]),
                &Attributes {
                    verb: "get",
                    subresource: "log",
                },
            ),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other_to_share_a_key() {
        assert_ne!(
            access_key(&who("ab", &["c"]), &GET_PROXY),
            access_key(&who("a", &["bc"]), &GET_PROXY)
        );
        assert_ne!(
            access_key(&who("u", &["a", "b"]), &GET_PROXY),
            access_key(&who("u", &["ab"]), &GET_PROXY)
        );
    }
}
