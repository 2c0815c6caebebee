//! The on-cluster provider: each pod runs as a "shadow pod" on the real nodes of a cluster (this
//! one, or another one by kubeconfig), in one configured namespace, owner-labelled; the
//! controller mirrors its status back onto the virtual-node pod.
//!
//! - Create (`translate.rs`, then the API): the shadow pod is named like the workload
//!   (`bg-<pod UID>`), labelled `burstgate.io/managed-by=burstgate` plus cluster id, node, pod
//!   namespace, name and UID (the kit's
//!   [`OwnerKeys::KUBERNETES`](crate::provider::kit::ownership::OwnerKeys::KUBERNETES):
//!   label-safe values, full values in annotations). Secret env values and volume files go into
//!   ONE Secret `<id>`, registry credentials into
//!   `<id>-registry` (`kubernetes.io/dockerconfigjson`). The pod is created first; the Secrets
//!   are then server-side applied with an ownerReference to it, so no Secret ever exists without
//!   its owner, and a retried create (pod already there: 409) re-applies them and returns the
//!   existing pod's status. When the target refuses a Secret (quota), the pod is deleted again.
//! - Status: one list call per batch of up to 500 ids, by label selector
//!   `burstgate.io/managed-by=burstgate,burstgate.io/pod-uid in (...)`: only the pods asked for
//!   come back, and no node or cluster identity is needed to read them.
//! - Cluster full: see `status.rs` — an unschedulable shadow pod's phase turns
//!   `Rejected(TargetRejection::Unschedulable)` after a grace period (60 s by default,
//!   [`ClusterProvider::with_unschedulable_grace`]); the controller takes it back and the pod
//!   runs elsewhere.
//! - Delete: the pod with its own grace period (gone is fine), then its Secrets by label
//!   (`burstgate.io/workload=<id>`), explicitly, since not every setup runs a garbage collector.
//! - List owned: pods AND Secrets labelled with the cluster id and node (a Secret left by a
//!   half-done delete is an owned workload too), checked against the full annotation values.
//! - Logs through `pods/log`; exec through `pods/exec` (websocket), stdout, stderr, exit code;
//!   interactive exec (stdin, a terminal and its resizes) as a session (`streams.rs`); attach,
//!   with stdin and a terminal too, through `pods/attach` the same way; port-forward through
//!   `pods/portforward`.
//! - Usage (`usage.rs`): the shadow pods' PodMetrics from the target cluster's metrics.k8s.io
//!   (one list of the namespace per refresh); when it serves none (404: no metrics-server),
//!   what their nodes' kubelets measured (`kubelets.rs`, `scrape.rs`: `/metrics/resource`, one
//!   scrape per node per refresh, CPU as the counter's rate between two scrapes, as
//!   metrics-server computes it). A kubelet that refuses or cannot be reached leaves its pods
//!   without usage, with a logged reason naming the fix, never zeros.
//! - Errors: `retry.rs` maps API answers to retry / next target / fail the pod.
//!
//! The target's RBAC in the shadow namespace: pods (create, get, list, delete), pods/log (get),
//! pods/exec, pods/attach and pods/portforward (create), metrics.k8s.io pods (list), secrets (patch, create, list, deletecollection);
//! cluster-wide, for usage without metrics-server: nodes (get) and nodes/metrics (get), never
//! nodes/proxy. The client should be built without kube-rs' own retry layer: retries belong to
//! the target's `Layers`.

mod client;
mod kubelets;
// `retry`, `status` and `translate` are pub(crate) for `crate::fuzzing` (the fuzz targets) only.
pub(crate) mod retry;
mod scrape;
mod settings;
pub(crate) mod status;
mod streams;
pub(crate) mod translate;
mod usage;

pub use client::ClusterProvider;
pub use kubelets::Error as KubeletError;
pub use scrape::ParseError as ResourceMetricsParseError;
pub use settings::Settings;
