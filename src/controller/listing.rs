//! The node's pods listed page by page and trimmed as they arrive, so a LIST of 10,000 pods never
//! holds 10,000 whole pods (with their specs and `managedFields`) at once: the kubelet API's
//! stats and every orphan-collection pass read the node's pods this way (the ledger's rebuild at
//! a leader's start reads the pod watch's cache instead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use kube::api::{Api, ListParams};
use serde::Deserialize;

use crate::controller::placement::Workload;

/// Pods per LIST page: the apiserver's own default chunk size for informers.
pub const PAGE: u32 = 500;

/// Every pod matching `selector` (a field selector) without its spec (nor `managedFields`):
/// metadata and status, what the kubelet API's stats read. A decoded
/// `PodSpec` is most of a decoded pod (~17 KB).
pub async fn statuses(api: &Api<Pod>, selector: &str) -> Result<Vec<Pod>, kube::Error> {
    listed(api, selector, |p| {
        trim(p);
        p.spec = None;
    })
    .await
}

/// Every pod matching `selector`, each shaped by `keep` as its page arrives.
async fn listed(
    api: &Api<Pod>,
    selector: &str,
    keep: impl Fn(&mut Pod),
) -> Result<Vec<Pod>, kube::Error> {
    let mut pods = Vec::new();
    let mut params = ListParams::default().fields(selector).limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        pods.extend(page.items.into_iter().map(|mut p| {
            keep(&mut p);
            p
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(pods),
        }
    }
}

/// Every pod matching `selector` as (uid, the target its annotations name), read from the pods'
/// metadata alone: what orphan collection needs to know which workloads have a pod. Each page is
/// parsed into the uid and annotations only ([`MetaPage`]): decoded whole, a page of 500 pods'
/// metadata (their `managedFields` as JSON maps) took ~7 MB of heap at once, the largest
/// transient of a 5,000-pod node (docs/performance.md, "Where the heap goes").
pub async fn placements(
    api: &Api<Pod>,
    selector: &str,
) -> Result<Vec<(String, Option<String>)>, kube::Error> {
    let mut placed = Vec::new();
    let mut params = ListParams::default().fields(selector).limit(PAGE);
    let client = api.clone().into_client();
    let request = kube::core::Request::new(api.resource_url());
    loop {
        let page: MetaPage = client
            .request(
                request
                    .list_metadata(&params)
                    .map_err(kube::Error::BuildRequest)?,
            )
            .await?;
        placed.extend(page.items.into_iter().flatten().filter_map(|p| {
            let meta = ObjectMeta {
                annotations: p.metadata.annotations,
                ..ObjectMeta::default()
            };
            Some((p.metadata.uid?, Workload::of_meta(&meta).map(|w| w.target)))
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(placed),
        }
    }
}

/// A page of a metadata LIST as [`placements`] reads it; every other field is skipped unparsed.
#[derive(Deserialize)]
struct MetaPage {
    metadata: ListMeta,
    /// `null` when nothing matches.
    items: Option<Vec<MetaItem>>,
}

#[derive(Deserialize)]
struct MetaItem {
    metadata: LeanMeta,
}

#[derive(Deserialize)]
struct LeanMeta {
    uid: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What the gateway keeps of a pod it reads: everything but `managedFields`, which nothing here
/// reads and which the API server sends with every pod (server-side apply's field owners, often
/// the largest part of a pod once its status is written; docs/performance.md, "Where the memory
/// goes"). The pod cache trims every watched pod with it too.
pub fn trim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn a_metadata_page_yields_uids_and_annotations_and_skips_the_rest() {
        let page: MetaPage = serde_json::from_value(serde_json::json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"continue": "next", "resourceVersion": "7"},
            "items": [
                {"metadata": {"name": "p", "uid": "u1", "labels": {"app": "web"},
                    "annotations": {"burstgate.io/target": "aci", "other": "x"},
                    "managedFields": [{"manager": "burstgate", "operation": "Update",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}]}},
                {"metadata": {"name": "q", "uid": "u2"}}
            ]
        }))
        .unwrap();
        assert_eq!(page.metadata.continue_.as_deref(), Some("next"));
        let items = page.items.unwrap();
        assert_eq!(items[0].metadata.uid.as_deref(), Some("u1"));
        let annotations = items[0].metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["burstgate.io/target"], "aci");
        assert_eq!(items[1].metadata.uid.as_deref(), Some("u2"));
        assert!(items[1].metadata.annotations.is_none());
        // What the API server answers when no pod matches.
        let empty: MetaPage = serde_json::from_value(serde_json::json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "7"}, "items": null
        }))
        .unwrap();
        assert!(empty.items.is_none());
    }

    #[test]
    fn trimming_drops_managed_fields_and_keeps_everything_else() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1", "annotations": {"a": "b"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let mut expected = pod.clone();
        expected.metadata.managed_fields = None;
        trim(&mut pod);
        assert_eq!(pod, expected);
        assert_eq!(pod.annotations().get("a").map(String::as_str), Some("b"));
    }
}
