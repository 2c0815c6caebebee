//! The request limits and regional capacity each cloud publishes, and how a target overrides them.
//!
//! One table serves both the real adapters (their rate-limit layers) and the simulator (its
//! virtual-clock buckets), so a simulation throttles exactly where production would. Each bucket
//! says which requests it limits ([`OperationClass`]), its size and refill rate, and who shares it
//! ([`Scope`]): ARM counts per subscription and principal, so every ACI target of the gateway
//! shares the ARM buckets; ECS, Fargate and ACI's own create limits count per region.
//!
//! A target's `rateLimits` in the policy replace the defaults of the classes they name (and only
//! those), for that target alone.
//!
//! Sources (2024/2025 documentation): ECS API throttling (RunTask/StopTask 100 burst 40/s,
//! DescribeTasks 100 burst 20/s, RegisterTaskDefinition 20 burst 1/s), Fargate task launch rate
//! (100 burst 20/s), ARM throttling (writes 200 burst 10/s, reads 250 burst 25/s, deletes 200
//! burst 10/s), ACI quotas (100 creates per 5 minutes, 300 per hour, 100 container groups and
//! 100 cores per region and subscription).

use crate::policy::Target;
use crate::policy::model::{OperationClass, ProviderKind, RateLimitSpec};

/// Who shares one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every target of the provider: one subscription or account, one principal (ARM's buckets).
    Account,
    /// The provider's targets in one region (ECS, Fargate, ACI's create limits).
    Region,
    /// One target alone: a `rateLimits` override written in the policy.
    Target,
}

/// A bucket as the provider documents it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedBucket {
    /// What the provider calls it, for reports (`ARM writes`, `ECS RunTask`).
    pub name: &'static str,
    /// Which requests it limits.
    pub operation: OperationClass,
    /// Requests that may go at once.
    pub burst: u32,
    /// Refill, requests per second.
    pub per_second: f64,
    /// Who shares it.
    pub scope: Scope,
}

const fn bucket(
    name: &'static str,
    operation: OperationClass,
    burst: u32,
    per_second: f64,
    scope: Scope,
) -> PublishedBucket {
    PublishedBucket {
        name,
        operation,
        burst,
        per_second,
        scope,
    }
}

/// Azure Container Instances over ARM: a create is an ARM write AND an ACI container-group create.
const ACI: &[PublishedBucket] = &[
    bucket(
        "ARM writes",
        OperationClass::Create,
        200,
        10.0,
        Scope::Account,
    ),
    bucket(
        "ACI creates per 5 minutes",
        OperationClass::Create,
        100,
        100.0 / 300.0,
        Scope::Region,
    ),
    bucket(
        "ACI creates per hour",
        OperationClass::Create,
        300,
        300.0 / 3600.0,
        Scope::Region,
    ),
    bucket(
        "ARM deletes",
        OperationClass::Delete,
        200,
        10.0,
        Scope::Account,
    ),
    bucket("ARM reads", OperationClass::Read, 250, 25.0, Scope::Account),
];

/// ECS on Fargate: a pod is one RunTask call (Create) launching one task (Launch).
const FARGATE: &[PublishedBucket] = &[
    bucket(
        "ECS RunTask",
        OperationClass::Create,
        100,
        40.0,
        Scope::Region,
    ),
    bucket(
        "ECS StopTask",
        OperationClass::Delete,
        100,
        40.0,
        Scope::Region,
    ),
    bucket(
        "ECS DescribeTasks",
        OperationClass::Read,
        100,
        20.0,
        Scope::Region,
    ),
    bucket(
        "ECS RegisterTaskDefinition",
        OperationClass::Register,
        20,
        1.0,
        Scope::Region,
    ),
    bucket(
        "Fargate task launches",
        OperationClass::Launch,
        100,
        20.0,
        Scope::Region,
    ),
];

/// The buckets a provider publishes. The cluster (the API server's own fairness applies) and the
/// simulated provider have none unless a target sets `rateLimits`.
pub fn published(provider: ProviderKind) -> &'static [PublishedBucket] {
    match provider {
        ProviderKind::Aci => ACI,
        ProviderKind::Fargate => FARGATE,
        ProviderKind::Cluster | ProviderKind::Sim => &[],
    }
}

/// The default buckets of `provider` for one class of requests.
pub fn default_buckets(provider: ProviderKind, operation: OperationClass) -> Vec<RateLimitSpec> {
    published(provider)
        .iter()
        .filter(|b| b.operation == operation)
        .map(|b| RateLimitSpec {
            operation,
            burst: b.burst,
            per_second: b.per_second,
        })
        .collect()
}

/// The buckets that limit `operation` requests to `target`: its `rateLimits` for that class when
/// it sets any (they replace the defaults of that class), else the provider's defaults.
pub fn effective_buckets(target: &Target, operation: OperationClass) -> Vec<RateLimitSpec> {
    effective(target, operation)
        .into_iter()
        .map(|b| RateLimitSpec {
            operation,
            burst: b.burst,
            per_second: b.per_second,
        })
        .collect()
}

/// One bucket instance a limiter keeps: the effective spec, a display name, and the key that
/// identifies it among all targets (targets with equal keys share the bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Display name (`ACI creates per hour`, `aci-eastus rateLimits[0]`).
    pub name: String,
    /// Which requests it limits.
    pub operation: OperationClass,
    /// Requests that may go at once.
    pub burst: u32,
    /// Refill, requests per second.
    pub per_second: f64,
    /// Who shares it.
    pub scope: Scope,
    /// Identity of the shared instance: `aci/ARM writes`, `aci/eastus/ACI creates per hour`,
    /// `target/aci-eastus/rateLimits[0]`.
    pub key: String,
}

/// Like [`effective_buckets`], with names, scopes and sharing keys.
pub fn effective(target: &Target, operation: OperationClass) -> Vec<Bucket> {
    let overrides: Vec<Bucket> = target
        .rate_limits
        .iter()
        .enumerate()
        .filter(|(_, r)| r.operation == operation)
        .map(|(i, r)| Bucket {
            name: format!("{} rateLimits[{i}]", target.name),
            operation,
            burst: r.burst,
            per_second: r.per_second,
            scope: Scope::Target,
            key: format!("target/{}/rateLimits[{i}]", target.name),
        })
        .collect();
    if !overrides.is_empty() {
        return overrides;
    }
    published(target.provider)
        .iter()
        .filter(|b| b.operation == operation)
        .map(|b| Bucket {
            name: b.name.to_string(),
            operation,
            burst: b.burst,
            per_second: b.per_second,
            scope: b.scope,
            key: match b.scope {
                Scope::Account => format!("{}/{}", target.provider, b.name),
                Scope::Region => format!("{}/{}/{}", target.provider, target.region, b.name),
                Scope::Target => format!("target/{}/{}", target.name, b.name),
            },
        })
        .collect()
}

/// What a provider lets one subscription or account run at once in one region; `None` is no
/// published limit. Spot and regular capacity are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// Workloads at once (ACI: container groups).
    pub pods: Option<u64>,
    /// Millicores at once (ACI: cores).
    pub milli_cpu: Option<u64>,
}

/// The published default capacity per region: ACI allows 100 container groups and 100 cores per
/// region and subscription; Fargate's vCPU quota depends on the account, so none is assumed.
pub fn capacity(provider: ProviderKind) -> Capacity {
    match provider {
        ProviderKind::Aci => Capacity {
            pods: Some(100),
            milli_cpu: Some(100_000),
        },
        ProviderKind::Fargate | ProviderKind::Cluster | ProviderKind::Sim => Capacity::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load_files;

    fn policy(extra: &str) -> crate::policy::Policy {
        let text = format!(
            "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: aci-eastus
      provider: aci
      region: eastus
{extra}
    - name: fargate-use1
      provider: fargate
      region: us-east-1
"
        );
        load_files(&[("p.yaml".into(), text)]).expect("test policy loads")
    }

    fn shape(buckets: &[RateLimitSpec]) -> Vec<(u32, f64)> {
        buckets.iter().map(|b| (b.burst, b.per_second)).collect()
    }

    #[test]
    fn an_aci_create_passes_arm_writes_and_both_aci_create_limits() {
        let p = policy("");
        let aci = p.target_by_name("aci-eastus").unwrap();
        assert_eq!(
            shape(&effective_buckets(aci, OperationClass::Create)),
            vec![(200, 10.0), (100, 100.0 / 300.0), (300, 300.0 / 3600.0)]
        );
        assert_eq!(
            shape(&effective_buckets(aci, OperationClass::Delete)),
            vec![(200, 10.0)]
        );
        assert_eq!(
            shape(&effective_buckets(aci, OperationClass::Read)),
            vec![(250, 25.0)]
        );
    }

    #[test]
    fn a_fargate_pod_is_a_runtask_call_and_a_task_launch() {
        let p = policy("");
        let f = p.target_by_name("fargate-use1").unwrap();
        assert_eq!(
            shape(&effective_buckets(f, OperationClass::Create)),
            vec![(100, 40.0)]
        );
        assert_eq!(
            shape(&effective_buckets(f, OperationClass::Launch)),
            vec![(100, 20.0)]
        );
        assert_eq!(
            shape(&effective_buckets(f, OperationClass::Register)),
            vec![(20, 1.0)]
        );
        assert_eq!(
            shape(&effective_buckets(f, OperationClass::Read)),
            vec![(100, 20.0)]
        );
    }

    #[test]
    fn an_override_replaces_the_defaults_of_its_class_only() {
        let p = policy("      rateLimits: [{operation: create, burst: 5, perSecond: 0.5}]");
        let aci = p.target_by_name("aci-eastus").unwrap();
        let create = effective(aci, OperationClass::Create);
        assert_eq!(create.len(), 1);
        assert_eq!(
            (create[0].burst, create[0].per_second, create[0].scope),
            (5, 0.5, Scope::Target)
        );
        assert_eq!(create[0].key, "target/aci-eastus/rateLimits[0]");
        assert_eq!(
            shape(&effective_buckets(aci, OperationClass::Delete)),
            vec![(200, 10.0)]
        );
    }

    #[test]
    fn arm_buckets_are_shared_by_every_aci_target_and_aci_create_limits_per_region() {
        let text = "apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - {name: aci-eastus, provider: aci, region: eastus}
    - {name: aci-westus, provider: aci, region: westus}
";
        let p = load_files(&[("p.yaml".into(), text.into())]).unwrap();
        let east = effective(&p.targets[0], OperationClass::Create);
        let west = effective(&p.targets[1], OperationClass::Create);
        assert_eq!(east[0].key, west[0].key, "ARM writes are per subscription");
        assert_ne!(east[1].key, west[1].key, "ACI create limits are per region");
    }

    #[test]
    fn only_aci_publishes_a_regional_capacity() {
        assert_eq!(
            capacity(ProviderKind::Aci),
            Capacity {
                pods: Some(100),
                milli_cpu: Some(100_000)
            }
        );
        assert_eq!(capacity(ProviderKind::Fargate), Capacity::default());
        assert!(
            published(ProviderKind::Cluster).is_empty() && published(ProviderKind::Sim).is_empty()
        );
    }
}
