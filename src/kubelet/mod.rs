//! The virtual node's kubelet API (HTTPS, default port 10250): what the apiserver calls for
//! `kubectl logs` (`/containerLogs`, with `follow`), `kubectl exec` (`/exec`, `/run`), `kubectl attach` (`/attach`), `kubectl port-forward` (`/portForward`, [`portforward`]), all over SPDY/3.1 or
//! WebSocket ([`spdy`], [`websocket`], [`channels`]), metrics
//! pipelines (`/stats/summary`, `/metrics/resource`) and `/healthz`.
//!
//! TLS only, with the serving certificate reloaded when its files change ([`tls`]). Every request
//! is authenticated (a client certificate signed by the client CA, or a bearer token reviewed by
//! the apiserver) and authorized (a SubjectAccessReview with the kubelet's own mapping, see
//! [`auth`]); there is no allow-all fallback. A pod's requests go to the provider of the target
//! it was placed on; the API sees the gateway only through
//! [`Workloads`](crate::controller::workloads::Workloads) (node name, API client, metrics, and
//! pod -> workload -> provider), never its ledger, policy or health. A provider that cannot do
//! something answers 501.

pub mod attach;
pub mod auth;
pub mod cache;
pub mod channels;
pub mod error;
pub mod exec;
pub mod logs;
pub mod pods;
pub mod portforward;
pub mod server;
pub mod spdy;
pub mod stats;
pub mod tls;
pub mod websocket;

pub use error::{Error, Result};
pub use server::{Shared, router, serve, serve_on};
