//! Who owns a workload, written on the cloud object and read back by orphan GC: the keys each
//! kind of metadata stores an [`Owner`] under, the (key, value) pairs to write, and the owner
//! read back from them (pure).
//!
//! The keys are what existing workloads carry, so they never change: a workload tagged by an
//! older gateway must still be found by GC. Three kinds of metadata, three sets of keys:
//! - [`OwnerKeys::AWS_TAGS`]: ECS task and Secrets Manager tags, `burstgate.io/cluster-id`,
//!   `burstgate.io/node`, `burstgate.io/namespace`, `burstgate.io/pod`, `burstgate.io/pod-uid`;
//! - [`OwnerKeys::ARM_TAGS`]: Azure tags, whose names may not contain `/`: `burstgate.io-...`
//!   with the AWS names;
//! - [`OwnerKeys::KUBERNETES`]: labels and annotations of shadow objects, `burstgate.io/...` with
//!   `pod-namespace` and `pod-name` for the pod's fields. Labels carry [`Values::LabelSafe`]
//!   values (see [`label_value`]); annotations of the same keys keep the full values, which are
//!   the ones read back.

use sha2::{Digest, Sha256};

use crate::provider::contract::Owner;

/// Label and tag: who manages the object (value [`MANAGED_BY_VALUE`]).
pub const MANAGED_BY: &str = "burstgate.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "burstgate";
/// Label, annotation and tag: the workload id an object belongs to.
pub const WORKLOAD: &str = "burstgate.io/workload";

/// The key of each owner field in one kind of metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerKeys {
    /// The gateway's cluster id.
    pub cluster_id: &'static str,
    /// The virtual node's name.
    pub node: &'static str,
    /// The virtual pod's namespace.
    pub namespace: &'static str,
    /// The virtual pod's name.
    pub pod: &'static str,
    /// The virtual pod's UID.
    pub pod_uid: &'static str,
}

/// How the values of written pairs are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// The owner's values as they are (tags, annotations).
    AsIs,
    /// Valid Kubernetes label values ([`label_value`]); lossy, so never read back.
    LabelSafe,
}

impl OwnerKeys {
    /// ECS task and Secrets Manager tags.
    pub const AWS_TAGS: OwnerKeys = OwnerKeys {
        cluster_id: "burstgate.io/cluster-id",
        node: "burstgate.io/node",
        namespace: "burstgate.io/namespace",
        pod: "burstgate.io/pod",
        pod_uid: "burstgate.io/pod-uid",
    };

    /// Azure resource tags (names without `/`).
    pub const ARM_TAGS: OwnerKeys = OwnerKeys {
        cluster_id: "burstgate.io-cluster-id",
        node: "burstgate.io-node",
        namespace: "burstgate.io-namespace",
        pod: "burstgate.io-pod",
        pod_uid: "burstgate.io-pod-uid",
    };

    /// Labels and annotations of Kubernetes objects (shadow pods and their Secrets).
    pub const KUBERNETES: OwnerKeys = OwnerKeys {
        cluster_id: "burstgate.io/cluster-id",
        node: "burstgate.io/node",
        namespace: "burstgate.io/pod-namespace",
        pod: "burstgate.io/pod-name",
        pod_uid: "burstgate.io/pod-uid",
    };

    /// The (key, value) pairs that record `owner`: cluster id, node, namespace, pod, pod UID.
    pub fn pairs(&self, owner: &Owner, values: Values) -> [(String, String); 5] {
        let value = |v: &str| match values {
            Values::AsIs => v.to_string(),
            Values::LabelSafe => label_value(v),
        };
        [
            (self.cluster_id, value(&owner.cluster_id)),
            (self.node, value(&owner.node)),
            (self.namespace, value(&owner.namespace)),
            (self.pod, value(&owner.pod)),
            (self.pod_uid, value(&owner.pod_uid)),
        ]
        .map(|(k, v)| (k.to_string(), v))
    }

    /// The owner that `get` (key -> value of one object) records, when every field is there.
    pub fn read<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Option<Owner> {
        Some(Owner {
            cluster_id: get(self.cluster_id)?.to_string(),
            node: get(self.node)?.to_string(),
            namespace: get(self.namespace)?.to_string(),
            pod: get(self.pod)?.to_string(),
            pod_uid: get(self.pod_uid)?.to_string(),
        })
    }

    /// The owner that `get` records when it names `cluster_id` and `node`, the pod fields read
    /// as empty when absent: a workload of this gateway whose pod is unknown is still listed,
    /// and GC takes it for an orphan (a running task costs money).
    pub fn read_owned_by<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        cluster_id: &str,
        node: &str,
    ) -> Option<Owner> {
        if get(self.cluster_id) != Some(cluster_id) || get(self.node) != Some(node) {
            return None;
        }
        let field = |key| get(key).unwrap_or_default().to_string();
        Some(Owner {
            cluster_id: cluster_id.to_string(),
            node: node.to_string(),
            namespace: field(self.namespace),
            pod: field(self.pod),
            pod_uid: field(self.pod_uid),
        })
    }
}

/// A valid label value for `value`: itself when valid, else a readable prefix plus a hash
/// (at most 63 characters). Keep the full value in an annotation of the same key.
pub fn label_value(value: &str) -> String {
    if is_valid_label_value(value) {
        return value.to_string();
    }
    let digest = Sha256::digest(value.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix: String = clean
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(52)
        .collect();
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

fn is_valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn owner() -> Owner {
        Owner {
            cluster_id: "prod/eu west".into(),
            node: "burstgate".into(),
            namespace: "shop".into(),
            pod: "web-0".into(),
            pod_uid: "0d9a-11".into(),
        }
    }

    fn map(pairs: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
        pairs.into_iter().collect()
    }

    #[test]
    fn the_keys_are_the_ones_existing_workloads_carry() {
        let keys = |k: OwnerKeys| [k.cluster_id, k.node, k.namespace, k.pod, k.pod_uid];
        assert_eq!(
            keys(OwnerKeys::AWS_TAGS),
            [
                "burstgate.io/cluster-id",
                "burstgate.io/node",
                "burstgate.io/namespace",
                "burstgate.io/pod",
                "burstgate.io/pod-uid"
            ]
        );
        assert_eq!(
            keys(OwnerKeys::ARM_TAGS),
            [
                "burstgate.io-cluster-id",
                "burstgate.io-node",
                "burstgate.io-namespace",
                "burstgate.io-pod",
                "burstgate.io-pod-uid"
            ]
        );
        assert_eq!(
            keys(OwnerKeys::KUBERNETES),
            [
                "burstgate.io/cluster-id",
                "burstgate.io/node",
                "burstgate.io/pod-namespace",
                "burstgate.io/pod-name",
                "burstgate.io/pod-uid"
            ]
        );
        assert_eq!(
            (MANAGED_BY, MANAGED_BY_VALUE, WORKLOAD),
            (
                "burstgate.io/managed-by",
                "burstgate",
                "burstgate.io/workload"
            )
        );
    }

    #[test]
    fn an_owner_written_as_is_reads_back_the_same_in_every_key_style() {
        for keys in [
            OwnerKeys::AWS_TAGS,
            OwnerKeys::ARM_TAGS,
            OwnerKeys::KUBERNETES,
        ] {
            let written = map(keys.pairs(&owner(), Values::AsIs));
            let get = |k: &str| written.get(k).map(String::as_str);
            assert_eq!(keys.read(get), Some(owner()), "{keys:?}");
            assert_eq!(
                keys.read_owned_by(get, "prod/eu west", "burstgate"),
                Some(owner())
            );
        }
    }

    #[test]
    fn label_safe_pairs_are_valid_label_values_and_leave_valid_values_alone() {
        let labels = map(OwnerKeys::KUBERNETES.pairs(&owner(), Values::LabelSafe));
        assert!(
            labels.values().all(|v| is_valid_label_value(v)),
            "{labels:?}"
        );
        assert_eq!(labels["burstgate.io/pod-uid"], "0d9a-11");
        assert_ne!(labels["burstgate.io/cluster-id"], "prod/eu west");
        assert!(labels["burstgate.io/cluster-id"].starts_with("prod-eu-west-"));
    }

    #[test]
    fn an_incomplete_record_is_no_owner_but_a_record_of_this_node_is_owned_with_empty_pod_fields() {
        let keys = OwnerKeys::AWS_TAGS;
        let mine = map([
            (keys.cluster_id.to_string(), "c1".to_string()),
            (keys.node.to_string(), "n1".to_string()),
        ]);
        let get = |k: &str| mine.get(k).map(String::as_str);
        assert_eq!(keys.read(get), None);
        let owned = keys.read_owned_by(get, "c1", "n1").unwrap();
        assert_eq!(
            (
                owned.cluster_id.as_str(),
                owned.node.as_str(),
                owned.pod_uid.as_str()
            ),
            ("c1", "n1", "")
        );
        assert_eq!(keys.read_owned_by(get, "c1", "other-node"), None);
        assert_eq!(keys.read_owned_by(get, "other-cluster", "n1"), None);
    }

    #[test]
    fn a_long_label_value_is_truncated_with_a_stable_hash() {
        let v = label_value(&"x".repeat(200));
        assert!(v.len() <= 63 && is_valid_label_value(&v), "{v}");
        assert_eq!(v, label_value(&"x".repeat(200)));
        assert_ne!(v, label_value(&"x".repeat(201)));
        assert_eq!(label_value("web-1"), "web-1");
        assert!(is_valid_label_value(&label_value("--/--")));
    }
}
