//! `/attach/{namespace}/{pod}/{container}`: `kubectl attach` over the same WebSocket channel
//! protocol as exec ([`exec`](crate::kubelet::exec): `v5.channel.k8s.io`, `v4.channel.k8s.io`).
//!
//! Output only: the provider's attach session is opened before the upgrade (so a provider that
//! cannot attach answers HTTP 501 naming it), then every chunk of the container's output is sent
//! on the stdout channel as it comes, until the provider ends the stream (a `Success` status on
//! the error channel), the client goes, or the gateway shuts down. stdin and tty (`-i`, `-t`)
//! are refused on the error channel with a message saying so: ACI's attach streams output and
//! takes no input.

use std::sync::Arc;

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::kubelet::error::{Error, Result};
use crate::kubelet::exec::{
    ExecQuery, Inbound, V4, V5, channel, deliver, error_status, failure_status, frame, negotiate,
    parse_frame, session_result,
};
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::provider::contract::OutputStream;

/// The channel the provider's output goes to: stdout when asked for, else stderr when asked
/// for, else none (the output is read and dropped).
pub fn output_channel(q: &ExecQuery) -> Option<u8> {
    if q.stdout {
        Some(channel::STDOUT)
    } else if q.stderr {
        Some(channel::STDERR)
    } else {
        None
    }
}

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
/// upgrade), other failures a status for the error channel.
pub async fn open(placed: &pods::Placed) -> Result<std::result::Result<OutputStream, Value>> {
    session_result(
        placed,
        placed
            .provider
            .attach(&placed.workload, &placed.container)
            .await,
    )
}

/// The `/attach` handler.
pub async fn attach(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
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
    let Ok(upgrade) = upgrade else {
        return Err(Error::BadRequest(format!(
            "attach needs a WebSocket upgrade with {V5} or {V4} (kubectl 1.30 or later); SPDY is not supported by burstgate's kubelet API"
        )));
    };
    let Some(protocol) = negotiate(&headers) else {
        return Err(Error::BadRequest(format!(
            "the WebSocket upgrade offers neither {V5} nor {V4}"
        )));
    };
    tracing::info!(pod = %placed.key, container = %placed.container, protocol, attached = outcome.is_ok(), "kubelet API: attach");
    let upgrade = upgrade.protocols([protocol]);
    Ok(match outcome {
        Ok(output) => {
            let (out, shutdown) = (output_channel(&q), shared.shutdown.clone());
            let context = (placed.key.clone(), placed.target.clone());
            upgrade.on_upgrade(move |socket| stream(socket, output, out, context, shutdown))
        }
        Err(status) => upgrade.on_upgrade(move |socket| {
            deliver(
                socket,
                vec![frame(channel::ERROR, status.to_string().as_bytes())],
            )
        }),
    }
    .into_response())
}

/// Relays `output` to the client on channel `out` until the provider ends it, the client goes,
/// or `shutdown`; then the final status on the error channel.
async fn stream(
    mut socket: WebSocket,
    mut output: OutputStream,
    out: Option<u8>,
    (pod, target): (String, String),
    shutdown: CancellationToken,
) {
    let status = loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(data)) => {
                    if let Some(ch) = out.filter(|_| !data.is_empty())
                        && socket.send(Message::Binary(frame(ch, &data).into())).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => break error_status(&Error::provider(e, &pod, &target)),
                None => break json!({"metadata": {}, "status": "Success"}),
            },
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                    tracing::debug!(%pod, "kubelet API: the attach client went");
                    return;
                }
                Some(Ok(Message::Binary(data))) => {
                    if let Some(Inbound::Close(stream)) = parse_frame(&data) {
                        tracing::debug!(%pod, stream, "kubelet API: the client closed a stream");
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = shutdown.cancelled() => break failure_status(
                "the kubelet API is shutting down",
                "ServiceUnavailable",
                StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            ),
        }
    };
    deliver(
        socket,
        vec![frame(channel::ERROR, status.to_string().as_bytes())],
    )
    .await;
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
    fn the_query_kubectl_attach_sends_needs_no_command_and_output_goes_to_stdout() {
        let q = ExecQuery::parse_streams("container=app&stderr=true&stdout=true").unwrap();
        assert_eq!(output_channel(&q), Some(channel::STDOUT));
        assert_eq!(refusal(&q, &placed()), None);
        let q = ExecQuery::parse_streams("stderr=1").unwrap();
        assert_eq!(output_channel(&q), Some(channel::STDERR));
        assert_eq!(output_channel(&ExecQuery::default()), None);
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
