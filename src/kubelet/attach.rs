//! `/attach/{namespace}/{pod}/{container}`: `kubectl attach`, over the same SPDY/3.1 or
//! WebSocket channel protocols as exec ([`websocket::respond`]).
//!
//! A provider that cannot attach at all answers HTTP 501 naming it, before any upgrade. Then the
//! provider's attach session starts ([`Provider::attach_session`](crate::provider::Provider::attach_session)),
//! with a terminal at the client's first size as for exec: the container's output is sent as it
//! comes until the provider ends the stream (a `Success` status), the client goes, or the gateway
//! shuts down. stdin and tty (`-i`, `-t`) reach the container where the provider takes them
//! (on-cluster, through the cluster's `pods/attach`); a provider whose attach streams output
//! only (ACI) refuses them with a status naming it.

use std::sync::Arc;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::kubelet::error::Result;
use crate::kubelet::exec::{self, ExecQuery, Operation};
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::kubelet::spdy::upgrade::{NotSpdy, SpdyUpgrade};
use crate::kubelet::websocket;

/// The `/attach` handler.
pub async fn attach(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    spdy: std::result::Result<SpdyUpgrade, NotSpdy>,
) -> Result<Response> {
    let q = ExecQuery::parse_streams(query.as_deref().unwrap_or_default())?;
    let placed = pods::find(shared.workloads.as_ref(), &namespace, &pod, &container).await?;
    if !placed.provider.capabilities().attach {
        return Err(placed.error(placed.provider.refusal("attach")));
    }
    let shutdown = shared.shutdown.clone();
    let wanted = q.wanted();
    websocket::respond("attach", &headers, ws, spdy, wanted, move |session| {
        exec::run_session(Operation::Attach, placed, q, session, shutdown)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_kubectl_attach_sends_needs_no_command() {
        let q = ExecQuery::parse_streams("container=app&stderr=true&stdout=true").unwrap();
        assert!(q.wanted().stdout && !q.wanted().stdin);
        let q = ExecQuery::parse_streams("stdin=true&stdout=true&tty=true").unwrap();
        assert!(q.wanted().stdin && q.wanted().tty);
    }
}
