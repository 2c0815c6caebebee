//! The placement annotations written on a pod BEFORE any provider call, and the ledger
//! reservation they describe (pure). They are the only record of a placement: the ledger is
//! rebuilt from them when the gateway starts, so a placed pod is never decided twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::policy::checked::micros_to_usd;
use crate::policy::sizing::Size;
use crate::policy::{Placement, Policy, Reservation, Usage};
use crate::provider::workload_id;

/// Target name.
pub const TARGET: &str = "burstgate.io/target";
/// Provider kind.
pub const PROVIDER: &str = "burstgate.io/provider";
/// Region.
pub const REGION: &str = "burstgate.io/region";
/// This pod's hourly cost there, USD.
pub const HOURLY_COST: &str = "burstgate.io/hourly-cost";
/// The workload id at the provider.
pub const RESOURCE_ID: &str = "burstgate.io/resource-id";
/// Billed size, `<millicores>m,<MiB>Mi`.
pub const SIZE: &str = "burstgate.io/size";
/// Budgets the pod counts against, comma-separated.
pub const BUDGETS: &str = "burstgate.io/budgets";
/// Hash of the policy that decided.
pub const POLICY_HASH: &str = "burstgate.io/policy-hash";

/// Every placement annotation key (removed together when a pod is re-decided).
pub const ALL: [&str; 8] = [
    TARGET,
    PROVIDER,
    REGION,
    HOURLY_COST,
    RESOURCE_ID,
    SIZE,
    BUDGETS,
    POLICY_HASH,
];

/// The annotations recording `placement` of the pod with `pod_uid`.
pub fn annotations(
    policy: &Policy,
    placement: &Placement,
    pod_uid: &str,
) -> BTreeMap<String, String> {
    let t = policy.target(placement.target);
    let budgets: Vec<&str> = policy
        .budgets
        .iter()
        .enumerate()
        .filter(|(i, _)| placement.budgets.contains(*i))
        .map(|(_, b)| b.name.as_str())
        .collect();
    BTreeMap::from([
        (TARGET.into(), t.name.clone()),
        (PROVIDER.into(), t.provider.as_str().into()),
        (REGION.into(), t.region.clone()),
        (
            HOURLY_COST.into(),
            format!("{:.6}", micros_to_usd(placement.hourly_micros)),
        ),
        (RESOURCE_ID.into(), workload_id(pod_uid)),
        (
            SIZE.into(),
            format!(
                "{}m,{}Mi",
                placement.size.milli_cpu, placement.size.memory_mib
            ),
        ),
        (BUDGETS.into(), budgets.join(",")),
        (POLICY_HASH.into(), policy.hash.clone()),
    ])
}

/// The workload a placed pod's annotations name: the target it runs on and its id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The target's name (`burstgate.io/target`).
    pub target: String,
    /// The workload id at the target's provider (`burstgate.io/resource-id`).
    pub id: String,
}

impl Workload {
    /// `pod`'s workload; `None` until the pod is placed (both annotations written).
    pub fn of(pod: &Pod) -> Option<Workload> {
        Self::of_meta(&pod.metadata)
    }

    /// The same, from a pod's metadata alone (a metadata-only LIST).
    pub fn of_meta(meta: &ObjectMeta) -> Option<Workload> {
        let annotations = meta.annotations.as_ref()?;
        Some(Workload {
            target: annotations.get(TARGET)?.clone(),
            id: annotations.get(RESOURCE_ID)?.clone(),
        })
    }
}

/// The reservation a placed pod's annotations describe; `None` when the pod is not placed or
/// the annotations were tampered with.
pub fn reservation(annotations: &BTreeMap<String, String>) -> Option<Reservation> {
    let target = annotations.get(TARGET)?.clone();
    let (cpu, mem) = annotations.get(SIZE)?.split_once(',')?;
    let size = Size {
        milli_cpu: cpu.strip_suffix('m')?.parse().ok()?,
        memory_mib: mem.strip_suffix("Mi")?.parse().ok()?,
    };
    let cost: f64 = annotations.get(HOURLY_COST)?.parse().ok()?;
    let budgets = annotations
        .get(BUDGETS)
        .map(|b| {
            b.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(Reservation {
        target,
        budgets,
        usage: Usage::of_pod(size, crate::policy::checked::usd_to_micros(cost)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::engine::BudgetSet;
    use crate::policy::{TargetId, load_files};

    #[test]
    fn annotations_round_trip_into_the_same_reservation() {
        let yaml = "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nspec:\n  targets:\n    - {name: t, provider: sim, region: r, pricing: {vcpuHour: 0.04}}\n  budgets:\n    - {name: team-a, maxVcpu: 10}\n";
        let p = load_files(&[("p.yaml".into(), yaml.into())]).unwrap();
        let placement = Placement {
            target: TargetId(0),
            size: Size {
                milli_cpu: 1500,
                memory_mib: 2048,
            },
            hourly_micros: 60_000,
            budgets: BudgetSet(1),
            via_fallback: false,
        };
        let a = annotations(&p, &placement, "uid-1");
        assert_eq!(a[RESOURCE_ID], "bg-uid-1");
        let r = reservation(&a).unwrap();
        assert_eq!(r.target, "t");
        assert_eq!(r.budgets, vec!["team-a"]);
        assert_eq!(
            r.usage,
            Usage {
                milli_cpu: 1500,
                memory_mib: 2048,
                pods: 1,
                hourly_micros: 60_000
            }
        );
    }

    #[test]
    fn a_pod_without_placement_annotations_has_no_reservation() {
        assert_eq!(reservation(&BTreeMap::new()), None);
    }

    fn annotated(annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    #[test]
    fn a_placed_pod_names_its_target_and_workload_id() {
        let pod = annotated(&[
            (TARGET, "aci-east"),
            (RESOURCE_ID, "bg-u1"),
            (REGION, "eastus"),
        ]);
        assert_eq!(
            Workload::of(&pod),
            Some(Workload {
                target: "aci-east".into(),
                id: "bg-u1".into()
            })
        );
    }

    #[test]
    fn a_pod_is_not_placed_until_both_its_target_and_workload_id_are_written() {
        assert_eq!(Workload::of(&Pod::default()), None);
        assert_eq!(Workload::of(&annotated(&[(TARGET, "aci-east")])), None);
        assert_eq!(Workload::of(&annotated(&[(RESOURCE_ID, "bg-u1")])), None);
    }
}
