//! What the pod cache keeps of each pod on the node: its metadata (without `managedFields`), its
//! status, and its spec as compact JSON, decoded into a whole [`Pod`] only when a reconcile or a
//! status read needs one. A decoded `PodSpec` costs ~17 KB however small the pod (k8s-openapi keeps
//! every optional part of a `Container` and a `Volume` inline), its JSON ~1-2 KB; at 10,000 pods
//! that is the difference between ~270 MB and ~20 MB (docs/performance.md, "Where the memory goes").

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

/// A pod as the cache holds it.
#[derive(Clone, Debug, Default)]
pub struct CachedPod {
    /// The pod's metadata, `managedFields` dropped.
    pub metadata: ObjectMeta,
    /// The pod's status.
    pub status: Option<PodStatus>,
    /// The pod's spec, serialized compactly.
    spec: Option<Box<str>>,
}

impl CachedPod {
    /// The whole pod (its spec decoded).
    pub fn pod(&self) -> Pod {
        Pod {
            metadata: self.metadata.clone(),
            spec: self.spec.as_deref().map(|json| {
                serde_json::from_str(json).expect("a spec this cache serialized decodes")
            }),
            status: self.status.clone(),
        }
    }

    /// What the cache keeps of `pod`.
    pub fn of(pod: Pod) -> Result<CachedPod, serde_json::Error> {
        let Pod {
            mut metadata,
            spec,
            status,
        } = pod;
        metadata.managed_fields = None;
        Ok(CachedPod {
            metadata,
            status,
            spec: spec
                .map(|s| serde_json::to_string(&s).map(String::into_boxed_str))
                .transpose()?,
        })
    }
}

impl<'de> Deserialize<'de> for CachedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: ObjectMeta,
            spec: Option<PodSpec>,
            status: Option<PodStatus>,
        }
        let w = Wire::deserialize(d)?;
        CachedPod::of(Pod {
            metadata: w.metadata,
            spec: w.spec,
            status: w.status,
        })
        .map_err(serde::de::Error::custom)
    }
}

impl kube::Resource for CachedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Pod {
        let path = format!("{}/tests/fixtures/pods/{name}", env!("CARGO_MANIFEST_DIR"));
        let json = std::fs::read_to_string(path).unwrap();
        let mut pod: Pod = serde_json::from_str(&json).unwrap();
        pod.metadata.managed_fields = Some(vec![Default::default()]);
        pod
    }

    #[test]
    fn every_fixture_pod_comes_back_whole_but_for_its_managed_fields() {
        for name in [
            "deployment-web.json",
            "downward-and-projected.json",
            "probes-every-kind.json",
            "sidecar-mesh.json",
            "statefulset-db.json",
        ] {
            let pod = fixture(name);
            let json = serde_json::to_string(&pod).unwrap();
            let cached: CachedPod = serde_json::from_str(&json).unwrap();
            let mut expected = pod.clone();
            expected.metadata.managed_fields = None;
            assert_eq!(cached.pod(), expected, "{name}");
            assert_eq!(CachedPod::of(pod).unwrap().pod(), expected, "{name}");
        }
    }

    #[test]
    fn the_cache_names_the_pod_resource() {
        use kube::Resource;
        assert_eq!(
            CachedPod::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
        assert_eq!(CachedPod::api_version(&()), "v1");
    }
}
