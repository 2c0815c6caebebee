//! What the pod cache keeps of each pod on the node: the few fields the status loop, the metrics
//! and kube-runtime's index read every second (name, namespace, uid, resourceVersion, creation
//! and deletion times, the phase, the placed workload), and the whole pod (without
//! `managedFields`) as compact JSON deflated against a dictionary of a typical pod, decoded
//! only when a reconcile or a status read needs it, one pod at a time. A pod decoded into
//! k8s-openapi's structs costs ~20 KB of heap however small it is (every optional part of a
//! `Container` and a `Volume` is inline), its JSON ~2.7 KB, deflated ~0.5 KB: at 10,000 pods the
//! difference between ~200 MB, ~30 MB and ~6 MB (docs/performance.md, "Where the memory goes").

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde::{Deserialize, Deserializer};

use crate::controller::placement::Workload;
use crate::controller::pod::renewal;
use crate::controller::status::PodPhase;

/// Two typical pods as the cache serializes them (a Deployment's pod from
/// `tests/fixtures/pods/deployment-web.json`, and a bare pod the gateway placed and runs, with its
/// annotations and status): deflate finds most of any pod's field names and values in it.
const DICTIONARY: &[u8] = include_bytes!("cached_pod.dictionary.json");

thread_local! {
    // A deflate stream's state is ~256 KB: one per thread, reset per pod, not one per pod.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A pod as the cache holds it.
#[derive(Clone, Debug)]
pub struct CachedPod {
    /// The pod's name, namespace, uid, resourceVersion, creation and deletion times; nothing
    /// else (labels and annotations are in the packed pod: [`CachedPod::pod`]).
    pub metadata: ObjectMeta,
    /// The pod's phase.
    pub phase: PodPhase,
    /// The workload the placement annotations name, once the pod is placed.
    pub workload: Option<Workload>,
    /// When its service-account tokens are due for renewal, if they are renewed.
    pub renew_at: Option<std::time::SystemTime>,
    /// The whole pod: its JSON's length (4 bytes, little-endian), then the JSON deflated.
    packed: Box<[u8]>,
}

impl CachedPod {
    /// The whole pod, `managedFields` aside.
    pub fn pod(&self) -> Pod {
        serde_json::from_slice(&self.json()).expect("a pod this cache serialized decodes")
    }

    /// The pod's annotations alone (the rest of its JSON is skipped, not decoded): what the
    /// ledger's rebuild at a leader's start reads of every live pod.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        struct Annotated {
            metadata: Meta,
        }
        serde_json::from_slice::<Annotated>(&self.json())
            .expect("a pod this cache serialized decodes")
            .metadata
            .annotations
    }

    /// The pod's JSON, inflated.
    fn json(&self) -> Vec<u8> {
        let (len, deflated) = self.packed.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        INFLATE.with_borrow_mut(|inflate| {
            inflate.reset(false);
            inflate
                .set_dictionary(DICTIONARY)
                .expect("a raw inflate stream takes a dictionary");
            let mut json = Vec::with_capacity(len);
            let status = inflate
                .decompress_vec(deflated, &mut json, FlushDecompress::Finish)
                .expect("what this cache deflated inflates");
            debug_assert_eq!((status, json.len()), (Status::StreamEnd, len));
            json
        })
    }

    /// What the cache keeps of `pod`.
    pub fn of(mut pod: Pod) -> Result<CachedPod, serde_json::Error> {
        pod.metadata.managed_fields = None;
        let json = serde_json::to_vec(&pod)?;
        let m = &pod.metadata;
        Ok(CachedPod {
            metadata: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                creation_timestamp: m.creation_timestamp.clone(),
                deletion_timestamp: m.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            phase: PodPhase::of(&pod),
            workload: Workload::of_meta(m),
            renew_at: renewal::renew_at(pod.annotations()),
            packed: pack(&json),
        })
    }

    /// The target the pod is placed on, once placed.
    pub fn target(&self) -> Option<&str> {
        self.workload.as_ref().map(|w| w.target.as_str())
    }
}

/// `json`'s length, then `json` deflated against the dictionary.
fn pack(json: &[u8]) -> Box<[u8]> {
    DEFLATE.with_borrow_mut(|deflate| {
        deflate.reset();
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a raw deflate stream takes a dictionary");
        let mut out = Vec::with_capacity(4 + json.len() / 3 + 64);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        loop {
            let consumed = deflate.total_in() as usize;
            let status = deflate
                .compress_vec(&json[consumed..], &mut out, FlushCompress::Finish)
                .expect("deflating into memory cannot fail");
            if status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity());
        }
        out.into_boxed_slice()
    })
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
    fn the_cache_keeps_a_pod_in_a_fraction_of_its_json() {
        let pod = fixture("sidecar-mesh.json");
        let json = serde_json::to_vec(&pod).unwrap();
        let cached = CachedPod::of(pod).unwrap();
        assert!(
            cached.packed.len() * 3 < json.len(),
            "{} bytes packed of {} bytes of JSON",
            cached.packed.len(),
            json.len()
        );
    }

    #[test]
    fn the_fields_read_every_second_are_kept_beside_the_packed_pod() {
        let mut pod = fixture("deployment-web.json");
        pod.metadata.annotations = Some(
            [
                (crate::controller::placement::TARGET, "aci-eastus"),
                (crate::controller::placement::RESOURCE_ID, "bg-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        pod.status.get_or_insert_default().phase = Some("Running".into());
        let cached = CachedPod::of(pod.clone()).unwrap();
        assert_eq!(cached.phase, PodPhase::Running);
        assert_eq!(cached.target(), Some("aci-eastus"));
        assert_eq!(
            cached.workload.as_ref().map(|w| w.id.as_str()),
            Some("bg-1")
        );
        assert_eq!(cached.metadata.name, pod.metadata.name);
        assert_eq!(cached.metadata.uid, pod.metadata.uid);
        assert_eq!(
            cached.metadata.labels, None,
            "labels live in the packed pod"
        );
    }

    #[test]
    fn a_cached_pods_annotations_read_alone_are_the_pods_own() {
        for name in ["deployment-web.json", "sidecar-mesh.json"] {
            let mut pod = fixture(name);
            pod.annotations_mut().insert(
                crate::controller::placement::TARGET.into(),
                "aci-eastus".into(),
            );
            let cached = CachedPod::of(pod.clone()).unwrap();
            assert_eq!(&cached.annotations(), pod.annotations(), "{name}");
        }
        let mut bare = fixture("deployment-web.json");
        bare.metadata.annotations = None;
        assert!(CachedPod::of(bare).unwrap().annotations().is_empty());
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
