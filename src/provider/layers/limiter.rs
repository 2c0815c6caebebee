//! Token buckets (governor) per published limit, shared between targets that share the limit.
//!
//! A request waits in every bucket of its operation class before it goes; it never goes early.
//! Each bucket keeps one token in reserve (it grants `burst - 1` at once, at least 1, then refills
//! at the published rate): the cloud counts a request when it arrives, not when the gateway sent
//! it, and the reserve absorbs up to one refill period of that jitter, so that a gateway running
//! at the bucket's ceiling is not answered 429 by a cloud enforcing the same bucket (the sim
//! cloud's `--sim-rate-limit` checks this; `scripts/scale.py`'s `bucket` and `aci` modes count
//! its 429s).
//! Buckets with the same key (`aci/ARM writes` for every ACI target of the gateway,
//! `fargate/us-east-1/ECS RunTask` per region) are one instance, so two targets in one account
//! cannot together exceed what the account may send.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::policy::Target;
use crate::policy::model::OperationClass;
use crate::provider::limits::{Bucket, effective};

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// One bucket: its spec and the live limiter.
#[derive(Clone)]
pub struct SharedBucket {
    /// The effective spec.
    pub spec: Bucket,
    /// Tokens granted at once: the burst less the reserve.
    capacity: u32,
    limiter: Arc<Direct>,
}

impl std::fmt::Debug for SharedBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBucket")
            .field("key", &self.spec.key)
            .finish()
    }
}

/// Why a bucket cannot be built. Not retryable: the policy must change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A bucket with a zero size or a rate that is not a positive finite number.
    #[error("bucket {0}: burst must be at least 1 and perSecond a positive number")]
    InvalidBucket(String),
}

/// The tokens a bucket of `burst` grants at once: one kept in reserve, at least one.
fn capacity(burst: u32) -> u32 {
    burst.saturating_sub(1).max(1)
}

fn quota(b: &Bucket) -> Result<Quota, Error> {
    if b.burst == 0 {
        return Err(Error::InvalidBucket(b.key.clone()));
    }
    quota_of(capacity(b.burst), b.per_second).ok_or_else(|| Error::InvalidBucket(b.key.clone()))
}

/// A governor quota of `burst` refilled at `per_second`; `None` for a zero burst or a rate that
/// is not a positive finite number.
pub(crate) fn quota_of(burst: u32, per_second: f64) -> Option<Quota> {
    let burst = NonZeroU32::new(burst)?;
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    Some(Quota::with_period(Duration::from_secs_f64(1.0 / per_second))?.allow_burst(burst))
}

/// Every bucket instance of one gateway, by sharing key. A reload that keeps a bucket's spec
/// keeps its state (tokens already spent stay spent).
#[derive(Default, Clone)]
pub struct Buckets {
    by_key: Arc<Mutex<BTreeMap<String, SharedBucket>>>,
}

impl Buckets {
    /// The buckets limiting `class` requests to `target`.
    pub fn for_target(
        &self,
        target: &Target,
        class: OperationClass,
    ) -> Result<Vec<SharedBucket>, Error> {
        let mut by_key = self.by_key.lock().expect("buckets lock");
        effective(target, class)
            .into_iter()
            .map(|spec| {
                if let Some(b) = by_key.get(&spec.key).filter(|b| b.spec == spec) {
                    return Ok(b.clone());
                }
                let b = SharedBucket {
                    limiter: Arc::new(RateLimiter::direct(quota(&spec)?)),
                    capacity: capacity(spec.burst),
                    spec,
                };
                by_key.insert(b.spec.key.clone(), b.clone());
                Ok(b)
            })
            .collect()
    }
}

impl SharedBucket {
    /// Waits until `n` tokens are free and takes them. More than the capacity can never be free
    /// at once, so larger requests take the capacity repeatedly.
    pub async fn take(&self, n: u32) {
        let mut left = n;
        while left > 0 {
            let step = left.min(self.capacity);
            let step_nz = NonZeroU32::new(step).expect("step is at least 1");
            // Cannot fail: step <= capacity.
            let _ = self.limiter.until_n_ready(step_nz).await;
            left -= step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    fn target(yaml_target: &str) -> Target {
        let yaml = format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {yaml_target}\n"
        );
        load_files(&[("p.yaml".into(), yaml)]).unwrap().targets[0].clone()
    }

    #[test]
    fn two_aci_targets_share_the_arm_write_bucket_but_not_the_regional_create_buckets() {
        let buckets = Buckets::default();
        let east = target("{name: e, provider: aci, region: eastus}");
        let west = target("{name: w, provider: aci, region: westus}");
        let a = buckets.for_target(&east, OperationClass::Create).unwrap();
        let b = buckets.for_target(&west, OperationClass::Create).unwrap();
        let arm = |v: &[SharedBucket]| {
            v.iter()
                .find(|b| b.spec.name == "ARM writes")
                .unwrap()
                .limiter
                .clone()
        };
        assert!(Arc::ptr_eq(&arm(&a), &arm(&b)));
        let regional = |v: &[SharedBucket]| {
            v.iter()
                .find(|b| b.spec.name == "ACI creates per hour")
                .unwrap()
                .limiter
                .clone()
        };
        assert!(!Arc::ptr_eq(&regional(&a), &regional(&b)));
    }

    #[test]
    fn a_bucket_grants_its_burst_less_one_token_of_reserve_at_once() {
        let buckets = Buckets::default();
        let t = target(
            "{name: t, provider: sim, region: r, rateLimits: [{operation: create, burst: 3, perSecond: 0.001}, {operation: read, burst: 1, perSecond: 0.001}]}",
        );
        let b = &buckets.for_target(&t, OperationClass::Create).unwrap()[0];
        let granted = (0..10).filter(|_| b.limiter.check().is_ok()).count();
        assert_eq!(granted, 2);
        // A bucket of one keeps no reserve: it would grant nothing.
        let one = &buckets.for_target(&t, OperationClass::Read).unwrap()[0];
        let granted = (0..10).filter(|_| one.limiter.check().is_ok()).count();
        assert_eq!(granted, 1);
    }

    #[tokio::test]
    async fn taking_more_than_the_burst_completes_and_leaves_the_bucket_empty() {
        let buckets = Buckets::default();
        let t = target(
            "{name: t, provider: sim, region: r, rateLimits: [{operation: launch, burst: 2, perSecond: 20}]}",
        );
        let b = buckets
            .for_target(&t, OperationClass::Launch)
            .unwrap()
            .remove(0);
        b.take(5).await;
        assert!(b.limiter.check().is_err());
    }
}
