//! `/attach/{namespace}/{pod}/{container}`: `kubectl attach`, over the same SPDY/3.1 or
//! WebSocket channel protocols as exec ([`websocket::respond`]).
//!
//! Output only: the provider's attach session is opened before the upgrade (so a provider that
//! cannot attach answers HTTP 501 naming it), then every chunk of the container's output is sent
//! on stdout as it comes, until the provider ends the stream (a `Success` status), the client
//! goes, or the gateway shuts down. stdin and tty (`-i`, `-t`) are refused with a status saying
//! so: ACI's attach streams output and takes no input.

use std::sync::Arc;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::kubelet::channels::{self, error_status, failure_status};
use crate::kubelet::error::{Error, Result};
use crate::kubelet::exec::ExecQuery;
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::kubelet::spdy::upgrade::{NotSpdy, SpdyUpgrade};
use crate::kubelet::websocket;
use crate::provider::contract::OutputStream;
use crate::provider::{ExecSession, ProviderError};

/// Why an interactive attach is refused, or `None` for an output-only one.
pub fn refusal(q: &ExecQuery, placed: &pods::Placed) -> Option<String> {
    let what = if q.tty {
        "a terminal (tty)"
    } else if q.stdin {
        "stdin"
    } else {
        return None;
    };
    Some(format!(
        "burstgate attaches to a container's output only: {what} is not supported (pod {} on target {}); run kubectl attach without -i/-t",
        placed.key, placed.target
    ))
}

/// Opens the provider's attach session: `NotSupported` becomes an HTTP 501 (before any
/// upgrade), other failures a status for the client.
pub async fn open(placed: &pods::Placed) -> Result<std::result::Result<OutputStream, Value>> {
    match placed
        .provider
        .attach(&placed.workload, &placed.container)
        .await
    {
        Ok(output) => Ok(Ok(output)),
        Err(e @ ProviderError::NotSupported { .. }) => Err(placed.error(e)),
        Err(e) => Ok(Err(error_status(&placed.error(e)))),
    }
}

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
    let outcome = match refusal(&q, &placed) {
        Some(message) => Err(failure_status(
            &message,
            "BadRequest",
            StatusCode::BAD_REQUEST.as_u16(),
        )),
        None => open(&placed).await?,
    };
    tracing::info!(pod = %placed.key, container = %placed.container, attached = outcome.is_ok(), "kubelet API: attach");
    let shutdown = shared.shutdown.clone();
    let (key, target) = (placed.key.clone(), placed.target.clone());
    let wanted = q.wanted();
    websocket::respond(
        "attach",
        &headers,
        ws,
        spdy,
        wanted,
        move |session| async move {
            match outcome {
                Ok(output) => {
                    let describe = move |e| Error::provider(e, &key, &target);
                    let provider = ExecSession::output_only(output);
                    channels::relay(session, provider, wanted, describe, shutdown).await
                }
                Err(status) => channels::refuse(session, status).await,
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::exec::tests::NoExec;

    fn placed() -> pods::Placed {
        pods::Placed {
            key: "team/web".into(),
            pod: Default::default(),
            container: "app".into(),
            target: "edge".into(),
            workload: "bg-1".into(),
            provider: Arc::new(NoExec),
        }
    }

    #[tokio::test]
    async fn a_provider_without_attach_answers_501_naming_it_before_any_upgrade() {
        let Err(err) = open(&placed()).await else {
            panic!("attached to a provider that cannot attach");
        };
        assert_eq!(err.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            err.to_string(),
            "noexec does not support attach (pod team/web runs on target edge)"
        );
    }

    #[test]
    fn the_query_kubectl_attach_sends_needs_no_command_and_is_not_refused() {
        let q = ExecQuery::parse_streams("container=app&stderr=true&stdout=true").unwrap();
        assert_eq!(refusal(&q, &placed()), None);
        assert!(q.wanted().stdout);
    }

    #[test]
    fn stdin_and_tty_are_refused_with_a_message_saying_attach_is_output_only() {
        let q = ExecQuery::parse_streams("stdin=true&stdout=true").unwrap();
        let message = refusal(&q, &placed()).unwrap();
        assert!(
            message.contains("output only: stdin is not supported"),
            "{message}"
        );
        assert!(message.contains("pod team/web on target edge"), "{message}");
        let q = ExecQuery::parse_streams("stdin=true&tty=true&stdout=true").unwrap();
        assert!(refusal(&q, &placed()).unwrap().contains("a terminal (tty)"));
    }
}
