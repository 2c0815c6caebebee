//! The node's pods listed page by page and trimmed as they arrive, so a LIST of 10,000 pods never
//! holds 10,000 whole pods (with their specs and `managedFields`) at once: the kubelet API's
//! stats read the node's pods this way (the ledger's rebuild and orphan collection read the pod
//! cache instead).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

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
