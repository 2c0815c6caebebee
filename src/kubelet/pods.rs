//! From a kubelet API path (`namespace/pod/container`) to the workload that runs it: the pod from
//! the apiserver, then [`Workloads::locate`] (its placement annotations, the provider of its
//! target).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::controller::workloads::{Location, Workloads};
use crate::kubelet::error::{Error, Result};
use crate::provider::Provider;

/// A pod of this node with a workload at a provider.
pub struct Placed {
    /// `namespace/name`, for messages.
    pub key: String,
    /// The pod as the apiserver has it.
    pub pod: Pod,
    /// The container asked for.
    pub container: String,
    /// The target it runs on.
    pub target: String,
    /// The workload id at the provider.
    pub workload: String,
    /// The target's provider.
    pub provider: Arc<dyn Provider>,
}

impl Placed {
    /// A provider failure, with this pod and target in the message.
    pub fn error(&self, source: crate::provider::ProviderError) -> Error {
        Error::provider(source, &self.key, &self.target)
    }
}

/// Finds `namespace/name` on this node and the provider of its target; 404 for a pod or
/// container that is not there, 503 while the pod waits for a target.
pub async fn find(
    workloads: &dyn Workloads,
    namespace: &str,
    name: &str,
    container: &str,
) -> Result<Placed> {
    find_any(workloads, namespace, name, Some(container)).await
}

/// As [`find`], for a request about the whole pod (port-forward): `container` is empty.
pub async fn find_pod(workloads: &dyn Workloads, namespace: &str, name: &str) -> Result<Placed> {
    find_any(workloads, namespace, name, None).await
}

async fn find_any(
    workloads: &dyn Workloads,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<Placed> {
    let key = format!("{namespace}/{name}");
    let api: Api<Pod> = Api::namespaced(workloads.client().clone(), namespace);
    let pod = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Api {
            pod: key.clone(),
            source,
        })?
        .ok_or_else(|| Error::NotFound(format!("pod {key} not found")))?;
    placed(workloads, key, pod, container)
}

/// The placement of `pod` (pure but for the provider lookup in the live policy); `container`,
/// when given, must be one of its containers.
fn placed(
    workloads: &dyn Workloads,
    key: String,
    pod: Pod,
    container: Option<&str>,
) -> Result<Placed> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node != Some(workloads.node_name()) {
        return Err(Error::NotFound(format!(
            "pod {key} is not on node {}",
            workloads.node_name()
        )));
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(container) = container
        && !containers.contains(&container)
    {
        return Err(Error::NotFound(format!(
            "container {container} is not in pod {key} (it has: {})",
            containers.join(", ")
        )));
    }
    let (target, workload, provider) = match workloads.locate(&pod) {
        Location::Found {
            target,
            workload,
            provider,
        } => (target, workload, provider),
        Location::Unplaced => {
            return Err(Error::Unavailable(format!(
                "pod {key} has no target yet: {} waiting to start",
                container.map_or("it is".to_string(), |c| format!("container {c} is"))
            )));
        }
        Location::NoProvider { target } => {
            return Err(Error::Unavailable(format!(
                "pod {key} runs on target {target}, which the current policy does not have"
            )));
        }
    };
    Ok(Placed {
        key,
        container: container.unwrap_or_default().to_string(),
        target,
        workload,
        provider,
        pod,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::controller::placement::{RESOURCE_ID, TARGET};
    use crate::kubelet::exec::tests::NoExec;
    use crate::metrics::Metrics;

    /// The node the fakes serve.
    pub(in crate::kubelet) const NODE: &str = "node-1";

    /// `team/<name>` with one container `app`, bound to `node`, with `annotations`.
    pub(in crate::kubelet) fn pod(name: &str, node: &str, annotations: &[(&str, &str)]) -> Pod {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team", "uid": format!("u-{name}"), "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]}
        }))
        .unwrap()
    }

    /// `team/<name>` on [`NODE`], placed as workload `bg-<name>` on `target`.
    pub(in crate::kubelet) fn placed_on(name: &str, target: &str) -> Pod {
        pod(
            name,
            NODE,
            &[(TARGET, target), (RESOURCE_ID, &format!("bg-{name}"))],
        )
    }

    /// The gateway as the kubelet API sees it: an in-process apiserver holding `pods` (GET one,
    /// LIST by `spec.nodeName` field selector, recording the selectors it was asked for) and
    /// the providers of the live policy, by target.
    pub(in crate::kubelet) struct FakeGateway {
        client: kube::Client,
        metrics: Arc<Metrics>,
        providers: BTreeMap<String, Arc<dyn Provider>>,
        /// The field selectors of the pod LISTs the apiserver answered.
        pub selectors: Arc<Mutex<Vec<String>>>,
    }

    impl FakeGateway {
        /// Must run inside a tokio runtime (the client spawns its buffer).
        pub(in crate::kubelet) fn new(pods: Vec<Pod>, providers: &[&str]) -> FakeGateway {
            let selectors = Arc::new(Mutex::new(Vec::new()));
            let (pods, seen) = (Arc::new(pods), selectors.clone());
            let service =
                tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
                    let answer = answer(&pods, &seen, request.uri());
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
            FakeGateway {
                client: kube::Client::new(service, "default"),
                metrics: Arc::new(Metrics::new()),
                providers: providers
                    .iter()
                    .map(|t| (t.to_string(), Arc::new(NoExec) as Arc<dyn Provider>))
                    .collect(),
                selectors,
            }
        }
    }

    impl Workloads for FakeGateway {
        fn node_name(&self) -> &str {
            NODE
        }
        fn client(&self) -> &kube::Client {
            &self.client
        }
        fn metrics(&self) -> &Arc<Metrics> {
            &self.metrics
        }
        fn provider(&self, target: &str) -> Option<Arc<dyn Provider>> {
            self.providers.get(target).cloned()
        }
    }

    /// The fake apiserver's answer to a GET of `uri`.
    fn answer(
        pods: &[Pod],
        selectors: &Mutex<Vec<String>>,
        uri: &axum::http::Uri,
    ) -> axum::http::Response<http_body_util::Full<bytes::Bytes>> {
        let (status, body) = if uri.path() == "/api/v1/pods" {
            let selector = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "fieldSelector")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            selectors.lock().unwrap().push(selector.clone());
            let node = selector.strip_prefix("spec.nodeName=");
            let items: Vec<&Pod> = pods
                .iter()
                .filter(|p| node.is_none() || p.spec.as_ref().unwrap().node_name.as_deref() == node)
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
            )
        } else {
            let name = uri.path().rsplit('/').next().unwrap_or_default();
            match pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
            {
                Some(pod) => (200, serde_json::to_value(pod).unwrap()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("pods \"{name}\" not found"), "reason": "NotFound", "code": 404}),
                ),
            }
        };
        axum::http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(body.to_string().into()))
            .unwrap()
    }

    async fn find_web(pods: Vec<Pod>, container: &str) -> Result<Placed> {
        let gateway = FakeGateway::new(pods, &["edge"]);
        find(&gateway, "team", "web", container).await
    }

    #[tokio::test]
    async fn a_placed_pod_of_this_node_is_found_with_its_target_workload_and_provider() {
        let placed = find_web(vec![placed_on("web", "edge")], "app")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (placed.key.as_str(), placed.container.as_str()),
            ("team/web", "app")
        );
        assert_eq!(
            (placed.target.as_str(), placed.workload.as_str()),
            ("edge", "bg-web")
        );
        assert_eq!(placed.provider.name(), "noexec");
        assert_eq!(placed.pod.metadata.uid.as_deref(), Some("u-web"));
    }

    fn refused(result: Result<Placed>) -> (u16, String) {
        match result {
            Ok(p) => panic!("{} was found", p.key),
            Err(e) => (e.status().as_u16(), e.to_string()),
        }
    }

    #[tokio::test]
    async fn a_pod_the_apiserver_does_not_have_is_not_found() {
        let (status, message) = refused(find_web(vec![], "app").await);
        assert_eq!(status, 404);
        assert!(message.contains("pod team/web not found"), "{message}");
    }

    #[tokio::test]
    async fn a_pod_of_another_node_is_not_found_naming_this_node() {
        let elsewhere = pod(
            "web",
            "node-2",
            &[(TARGET, "edge"), (RESOURCE_ID, "bg-web")],
        );
        let (status, message) = refused(find_web(vec![elsewhere], "app").await);
        assert_eq!(status, 404);
        assert!(
            message.contains("pod team/web is not on node node-1"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_container_the_pod_does_not_have_is_not_found_naming_those_it_has() {
        let (status, message) = refused(find_web(vec![placed_on("web", "edge")], "db").await);
        assert_eq!(status, 404);
        assert!(
            message.contains("container db is not in pod team/web (it has: app)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_pod_without_a_target_yet_is_unavailable_while_it_waits() {
        let (status, message) = refused(find_web(vec![pod("web", NODE, &[])], "app").await);
        assert_eq!(status, 503);
        assert!(
            message.contains("pod team/web has no target yet"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_pod_whose_target_left_the_policy_is_unavailable_naming_the_target() {
        let (status, message) = refused(find_web(vec![placed_on("web", "gone")], "app").await);
        assert_eq!(status, 503);
        assert!(
            message.contains("runs on target gone, which the current policy does not have"),
            "{message}"
        );
    }
}
