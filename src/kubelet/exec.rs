//! `/exec/{namespace}/{pod}/{container}` and `/run/...`: `kubectl exec`, over SPDY/3.1
//! ([`spdy`](crate::kubelet::spdy)) or the WebSocket channel protocol
//! ([`websocket`]), in any channel protocol the kubelet speaks there
//! ([`Protocol`]: v5, v4, v3, v2, `channel.k8s.io` over SPDY; v5, v4, `channel.k8s.io` over a
//! WebSocket).
//!
//! A provider that cannot exec at all answers HTTP 501 before any upgrade. Then the connection
//! is upgraded, the streams the client asked for are opened, and the provider's exec session
//! starts ([`Provider::exec_session`](crate::provider::Provider::exec_session)): with a terminal,
//! at the client's first size (it sends it right after opening its streams; 80x24 when none comes
//! within [`FIRST_SIZE_WITHIN`]). stdin, its end and resizes flow to the provider, output and the
//! exit status back ([`channels::relay`]). A provider that reports no exit code (ACI) ends with a
//! `Success` status whose message says the code is unknown; kubectl exits 0.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::kubelet::channels::{self, Protocol, Session, Wanted, error_status};
use crate::kubelet::error::{Error, Result};
use crate::kubelet::logs::parse_bool;
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::kubelet::spdy::upgrade::{NotSpdy, SpdyUpgrade};
use crate::kubelet::websocket;
use crate::provider::{ExecInput, ExecRequest, TerminalSize};

/// How long a terminal exec waits for the client's first size before starting at 80x24.
pub const FIRST_SIZE_WITHIN: Duration = Duration::from_secs(1);

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

/// What a session runs at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `kubectl exec`: a command ([`Provider::exec_session`](crate::provider::Provider::exec_session)).
    Exec,
    /// `kubectl attach`: the container's own process
    /// ([`Provider::attach_session`](crate::provider::Provider::attach_session)).
    Attach,
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

    /// The streams asked for.
    pub fn wanted(&self) -> Wanted {
        Wanted {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }
}

/// The channel protocol to speak over a WebSocket: the first of the client's offers the kubelet
/// serves there (v5, v4, `channel.k8s.io`); a client offering none gets `channel.k8s.io`, as
/// from the kubelet.
pub fn negotiate(headers: &HeaderMap) -> Option<Protocol> {
    let offered: Vec<&str> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Some(Protocol::V1);
    }
    Protocol::negotiate(offered, &Protocol::WEBSOCKET)
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

/// The `/exec` handler.
pub async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    spdy: std::result::Result<SpdyUpgrade, NotSpdy>,
) -> Result<Response> {
    let q = ExecQuery::parse(query.as_deref().unwrap_or_default())?;
    let placed = pods::find(shared.workloads.as_ref(), &namespace, &pod, &container).await?;
    if !placed.provider.capabilities().exec {
        return Err(placed.error(placed.provider.refusal("exec")));
    }
    let shutdown = shared.shutdown.clone();
    let wanted = q.wanted();
    websocket::respond("exec", &headers, ws, spdy, wanted, move |session| {
        run_session(Operation::Exec, placed, q, session, shutdown)
    })
}

/// Starts the command (or the attach) at the provider and relays until it ends; a provider that
/// refuses sends its reason as the status.
pub async fn run_session(
    operation: Operation,
    placed: pods::Placed,
    q: ExecQuery,
    mut session: Session,
    shutdown: CancellationToken,
) {
    let (tty, early) = if q.tty {
        first_size(&mut session).await
    } else {
        (None, None)
    };
    let request = ExecRequest {
        command: q.command.clone(),
        stdin: q.stdin,
        tty,
    };
    let (workload, container) = (&placed.workload, &placed.container);
    let opened = match operation {
        Operation::Exec => {
            placed
                .provider
                .exec_session(workload, container, &request)
                .await
        }
        Operation::Attach => {
            placed
                .provider
                .attach_session(workload, container, &request)
                .await
        }
    };
    tracing::info!(pod = %placed.key, container = %placed.container, ?operation, stdin = q.stdin, tty = q.tty, started = opened.is_ok(), "kubelet API: session");
    let provider = match opened {
        Ok(provider) => provider,
        Err(e) => return channels::refuse(session, error_status(&placed.error(e))).await,
    };
    // Without stdin the command's input ends at once (ACI's `cat` would wait for it otherwise);
    // an attach without stdin leaves the container's own stdin alone.
    let end = (!q.stdin && operation == Operation::Exec).then_some(ExecInput::EndOfInput);
    let early = early.or(end);
    if let Some(input) = early {
        let _ = provider.input.send(input).await;
    }
    let (key, target) = (placed.key.clone(), placed.target.clone());
    let describe = move |e| Error::provider(e, &key, &target);
    channels::relay(session, provider, q.wanted(), describe, shutdown).await;
}

/// The terminal's first size: the client's first resize within [`FIRST_SIZE_WITHIN`], else
/// 80x24; an input that came first instead is handed back to go to the provider once it runs.
async fn first_size(session: &mut Session) -> (Option<TerminalSize>, Option<ExecInput>) {
    let first = tokio::time::timeout(FIRST_SIZE_WITHIN, session.input.recv()).await;
    let early = match first {
        Ok(Some(ExecInput::Resize(size))) => return (Some(size), None),
        Ok(other) => other,
        Err(_) => None,
    };
    (Some(TerminalSize::default()), early)
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
    use crate::provider::ProviderError;
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
    fn a_websocket_speaks_the_clients_first_offer_of_v5_v4_and_channel_k8s_io() {
        let mut h = HeaderMap::new();
        assert_eq!(
            negotiate(&h),
            Some(Protocol::V1),
            "no offer: channel.k8s.io"
        );
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some(Protocol::V5));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v3.channel.k8s.io,v4.channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some(Protocol::V4));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some(Protocol::V1));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v3.channel.k8s.io, base64.channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), None, "v3 is SPDY only; base64 is not served");
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
}
