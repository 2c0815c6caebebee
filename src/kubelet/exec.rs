//! `/exec/{namespace}/{pod}/{container}` and `/run/...`: `kubectl exec` over the Kubernetes
//! WebSocket channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`).
//!
//! The apiserver passes kubectl's upgrade request through unchanged. Each binary WebSocket
//! message starts with its channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a `metav1.Status`
//! JSON carrying the exit code), 4 resize; v5 adds 255, the client's "close this stream" signal.
//! Exec is non-interactive: the command runs at the provider before the upgrade (so a provider
//! that cannot exec answers HTTP 501), then its output and status are sent and the socket closed.
//! stdin and tty are refused on channel 3 with a message saying so. SPDY is not spoken.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::kubelet::error::{Error, Result};
use crate::kubelet::logs::parse_bool;
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::provider::{ExecOutput, ProviderError};

/// The newest channel protocol: v4 plus the client's close signal.
pub const V5: &str = "v5.channel.k8s.io";
/// The channel protocol with a `metav1.Status` on the error channel.
pub const V4: &str = "v4.channel.k8s.io";

/// Channel ids.
pub mod channel {
    /// Standard input (client to server).
    pub const STDIN: u8 = 0;
    /// Standard output.
    pub const STDOUT: u8 = 1;
    /// Standard error.
    pub const STDERR: u8 = 2;
    /// Errors and the final status.
    pub const ERROR: u8 = 3;
    /// Terminal resize (client to server).
    pub const RESIZE: u8 = 4;
    /// v5: the client closes the stream named in the next byte.
    pub const CLOSE: u8 = 255;
}

/// An exec query (the kubelet's `ExecOptions` parameters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecQuery {
    /// The command and its arguments (`command` repeated).
    pub command: Vec<String>,
    /// Attach stdin.
    pub stdin: bool,
    /// Send stdout.
    pub stdout: bool,
    /// Send stderr.
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
}

impl ExecQuery {
    /// Parses `command=echo&command=hi&stdout=1&stderr=1`; a missing command is a bad request.
    pub fn parse(query: &str) -> Result<ExecQuery> {
        let q = ExecQuery::parse_streams(query)?;
        if q.command.is_empty() {
            return Err(Error::BadRequest(
                "exec needs a command (query parameter command)".into(),
            ));
        }
        Ok(q)
    }

    /// Parses the query without requiring a command (`/attach` takes the same stream flags).
    pub fn parse_streams(query: &str) -> Result<ExecQuery> {
        let mut q = ExecQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => q.command.push(value.into_owned()),
                "input" | "stdin" => q.stdin = parse_bool(&key, &value)?,
                "output" | "stdout" => q.stdout = parse_bool(&key, &value)?,
                "error" | "stderr" => q.stderr = parse_bool(&key, &value)?,
                "tty" => q.tty = parse_bool(&key, &value)?,
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The channel protocol to speak: the first of the client's offers that is v5 or v4.
pub fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offer| [V5, V4].into_iter().find(|p| *p == offer))
}

/// One channel message: the channel byte, then the data.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// A message from the client, by channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Data for a stream (stdin, resize).
    Data(u8, &'a [u8]),
    /// v5: the client closed this stream.
    Close(u8),
}

/// Reads a client message; `None` for an empty one.
pub fn parse_frame(message: &[u8]) -> Option<Inbound<'_>> {
    match message {
        [] => None,
        [channel::CLOSE, stream, ..] => Some(Inbound::Close(*stream)),
        [channel, data @ ..] => Some(Inbound::Data(*channel, data)),
    }
}

/// The `metav1.Status` the error channel carries for an exit code (v4 and later).
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `metav1.Status` for a failure that is not the command's own exit.
pub fn failure_status(message: &str, reason: &str, code: u16) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// The `metav1.Status` for a request that failed at the provider or before it.
pub fn error_status(err: &Error) -> Value {
    let status = err.status();
    failure_status(
        &err.to_string(),
        status.canonical_reason().unwrap_or("InternalError"),
        status.as_u16(),
    )
}

/// The messages that deliver `output` for `q`, status last.
pub fn messages(q: &ExecQuery, output: &ExecOutput) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if q.stdout && !output.stdout.is_empty() {
        out.push(frame(channel::STDOUT, output.stdout.as_bytes()));
    }
    if q.stderr && !output.stderr.is_empty() {
        out.push(frame(channel::STDERR, output.stderr.as_bytes()));
    }
    let status = match output.exit_code {
        Some(code) => exit_status(code),
        None => json!({"metadata": {}, "status": "Success"}),
    };
    out.push(frame(channel::ERROR, status.to_string().as_bytes()));
    out
}

/// Runs the command at the provider: `NotSupported` becomes an HTTP 501 (before any upgrade),
/// other failures a status for the error channel.
pub async fn run_command(
    placed: &pods::Placed,
    command: &[String],
) -> Result<std::result::Result<ExecOutput, Value>> {
    session_result(
        placed,
        placed
            .provider
            .exec(&placed.workload, &placed.container, command)
            .await,
    )
}

/// What a provider's exec or attach answered, for the kubelet API: `NotSupported` becomes an
/// HTTP 501 (before any upgrade), other failures a status for the error channel.
pub fn session_result<T>(
    placed: &pods::Placed,
    answer: std::result::Result<T, ProviderError>,
) -> Result<std::result::Result<T, Value>> {
    match answer {
        Ok(output) => Ok(Ok(output)),
        Err(e @ ProviderError::NotSupported { .. }) => Err(placed.error(e)),
        Err(e) => Ok(Err(error_status(&placed.error(e)))),
    }
}

/// The `/exec` handler.
pub async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let q = ExecQuery::parse(query.as_deref().unwrap_or_default())?;
    let placed = pods::find(shared.workloads.as_ref(), &namespace, &pod, &container).await?;
    let Ok(upgrade) = upgrade else {
        if !placed.provider.capabilities().exec {
            return Err(placed.error(ProviderError::NotSupported {
                provider: placed.provider.name().into(),
                what: "exec".into(),
            }));
        }
        return Err(Error::BadRequest(format!(
            "exec needs a WebSocket upgrade with {V5} or {V4} (kubectl 1.30 or later); SPDY is not supported by burstgate's kubelet API"
        )));
    };
    let Some(protocol) = negotiate(&headers) else {
        return Err(Error::BadRequest(format!(
            "the WebSocket upgrade offers neither {V5} nor {V4}"
        )));
    };
    let outcome = if q.stdin || q.tty {
        let what = if q.tty { "a terminal (tty)" } else { "stdin" };
        let message = format!(
            "burstgate runs exec non-interactively: {what} is not supported yet (pod {} on target {}); run without -i/-t",
            placed.key, placed.target
        );
        Err(failure_status(
            &message,
            "BadRequest",
            StatusCode::BAD_REQUEST.as_u16(),
        ))
    } else {
        run_command(&placed, &q.command).await?
    };
    let messages = match &outcome {
        Ok(output) => messages(&q, output),
        Err(status) => vec![frame(channel::ERROR, status.to_string().as_bytes())],
    };
    tracing::info!(pod = %placed.key, container = %placed.container, protocol, exit_code = ?outcome.as_ref().ok().and_then(|o| o.exit_code), "kubelet API: exec");
    Ok(upgrade
        .protocols([protocol])
        .on_upgrade(move |socket| deliver(socket, messages))
        .into_response())
}

/// Sends `messages`, closes normally, and waits briefly for the client's close.
pub async fn deliver(mut socket: WebSocket, messages: Vec<Vec<u8>>) {
    for m in messages {
        if socket.send(Message::Binary(m.into())).await.is_err() {
            return;
        }
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(data) = &message
                && let Some(Inbound::Close(stream)) = parse_frame(data)
            {
                tracing::debug!(stream, "kubelet API: the client closed a stream");
            }
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The `/run` handler (`POST /run/{namespace}/{pod}/{container}?cmd=...`): runs the command and
/// answers its combined output; a non-zero exit is a 500 naming the code.
pub async fn run(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let cmd = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "cmd")
        .map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::BadRequest("run needs a command (query parameter cmd)".into()))?;
    let placed = pods::find(shared.workloads.as_ref(), &namespace, &pod, &container).await?;
    let output = placed
        .provider
        .exec(&placed.workload, &placed.container, &cmd)
        .await
        .map_err(|e| placed.error(e))?;
    let body = format!("{}{}", output.stdout, output.stderr);
    let status = match output.exit_code {
        Some(0) | None => StatusCode::OK,
        Some(code) => {
            return Ok((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("command exited with code {code}\n{body}"),
            )
                .into_response());
        }
    };
    Ok((status, body).into_response())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_query_kubectl_sends_through_the_apiserver_parses() {
        let q =
            ExecQuery::parse("command=echo&command=hi%20there&container=app&stderr=true&stdout=1")
                .unwrap();
        assert_eq!(
            q,
            ExecQuery {
                command: vec!["echo".into(), "hi there".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            }
        );
        assert!(matches!(
            ExecQuery::parse("stdout=1"),
            Err(Error::BadRequest(_))
        ));
        assert!(ExecQuery::parse("command=sh&stdin=1&tty=true").unwrap().tty);
    }

    #[test]
    fn v5_is_chosen_over_v4_and_older_protocols_are_not_spoken() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some(V5));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v3.channel.k8s.io,v4.channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some(V4));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), None);
    }

    #[test]
    fn every_message_starts_with_its_channel_byte() {
        assert_eq!(frame(channel::STDOUT, b"hi\n"), b"\x01hi\n");
        assert_eq!(
            parse_frame(b"\x00input"),
            Some(Inbound::Data(channel::STDIN, b"input"))
        );
        assert_eq!(
            parse_frame(&[channel::CLOSE, channel::STDIN]),
            Some(Inbound::Close(channel::STDIN))
        );
        assert_eq!(parse_frame(b""), None);
    }

    #[test]
    fn a_non_zero_exit_travels_as_a_status_kubectl_turns_into_its_exit_code() {
        let q = ExecQuery {
            command: vec!["x".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let out = ExecOutput {
            stdout: "hi\n".into(),
            stderr: "oops\n".into(),
            exit_code: Some(3),
        };
        let m = messages(&q, &out);
        assert_eq!(
            (m[0][0], m[1][0], m[2][0]),
            (channel::STDOUT, channel::STDERR, channel::ERROR)
        );
        let status: Value = serde_json::from_slice(&m[2][1..]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(
            status["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        let ok: Value = serde_json::from_slice(
            &messages(
                &q,
                &ExecOutput {
                    exit_code: Some(0),
                    ..out
                },
            )[2][1..],
        )
        .unwrap();
        assert_eq!(ok["status"], "Success");
    }

    #[test]
    fn streams_the_client_did_not_ask_for_are_not_sent() {
        let q = ExecQuery {
            command: vec!["x".into()],
            stdout: true,
            ..Default::default()
        };
        let m = messages(
            &q,
            &ExecOutput {
                stdout: "a".into(),
                stderr: "b".into(),
                exit_code: Some(0),
            },
        );
        assert_eq!(
            m.iter().map(|m| m[0]).collect::<Vec<_>>(),
            vec![channel::STDOUT, channel::ERROR]
        );
    }

    /// A provider that runs workloads but cannot exec or attach (as some clouds cannot); the
    /// attach tests use it too.
    pub(in crate::kubelet) struct NoExec;

    #[async_trait::async_trait]
    impl crate::provider::Provider for NoExec {
        fn name(&self) -> &'static str {
            "noexec"
        }
        fn capabilities(&self) -> crate::provider::Capabilities {
            crate::provider::Capabilities::default()
        }
        async fn create(
            &self,
            _: &crate::provider::WorkloadSpec,
        ) -> std::result::Result<crate::provider::WorkloadStatus, ProviderError> {
            unreachable!("not called")
        }
        async fn delete(&self, _: &str) -> std::result::Result<(), ProviderError> {
            Ok(())
        }
        async fn status(
            &self,
            _: &[String],
        ) -> std::result::Result<
            std::collections::BTreeMap<String, crate::provider::WorkloadStatus>,
            ProviderError,
        > {
            Ok(Default::default())
        }
        async fn list_owned(
            &self,
            _: &str,
            _: &str,
        ) -> std::result::Result<Vec<crate::provider::OwnedWorkload>, ProviderError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn a_provider_without_exec_answers_501_before_any_upgrade() {
        let placed = pods::Placed {
            key: "team/web".into(),
            pod: Default::default(),
            container: "app".into(),
            target: "edge".into(),
            workload: "bg-1".into(),
            provider: Arc::new(NoExec),
        };
        let err = run_command(&placed, &["ls".into()]).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            err.to_string(),
            "noexec does not support exec (pod team/web runs on target edge)"
        );
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    }
}
