//! What flows between a client's exec or attach connection and the session at the provider,
//! whatever carries it (WebSocket channels, [`websocket`](crate::kubelet::websocket), or SPDY
//! streams, [`spdy`](crate::kubelet::spdy)): the client's input (the provider's own
//! [`ExecInput`]: stdin, its end, resizes), the output and the final status,
//! and [`relay`], which moves them between the two ends until the command exits, the client goes
//! or the gateway shuts down.

use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::kubelet::error::Error;
use crate::provider::contract::{ExecEvent, ExecInput, ExecSession, ExitCode, TerminalSize};

/// A channel protocol version of exec and attach, as the kubelet negotiates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `channel.k8s.io`: streams error, stdin, stdout, stderr; the error stream carries a failure
    /// as plain text (nothing on success), so no exit code reaches the client.
    V1,
    /// `v2.channel.k8s.io`: as v1 (it fixed the client's stream handshake).
    V2,
    /// `v3.channel.k8s.io`: v2 plus the resize stream.
    V3,
    /// `v4.channel.k8s.io`: v3 with a `metav1.Status` (JSON, with the exit code) on the error
    /// stream.
    V4,
    /// `v5.channel.k8s.io`: v4 plus the client's close signal (WebSocket).
    V5,
}

impl Protocol {
    /// What SPDY serves, newest first (the kubelet's `SupportedStreamingProtocols`).
    pub const SPDY: [Protocol; 5] = [
        Protocol::V5,
        Protocol::V4,
        Protocol::V3,
        Protocol::V2,
        Protocol::V1,
    ];
    /// What WebSocket serves (the kubelet's binary WebSocket protocols: v5, v4 and the
    /// pre-v4 `channel.k8s.io`, which a client offering no protocol gets too).
    pub const WEBSOCKET: [Protocol; 3] = [Protocol::V5, Protocol::V4, Protocol::V1];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// The first of the client's `offered` protocols (in its order) that `served` has, as the
    /// kubelet's handshake picks.
    pub fn negotiate<'a>(
        offered: impl IntoIterator<Item = &'a str>,
        served: &[Protocol],
    ) -> Option<Protocol> {
        offered
            .into_iter()
            .map(str::trim)
            .find_map(|offer| served.iter().copied().find(|p| p.name() == offer))
    }

    /// Whether a terminal's sizes come on a resize stream (v3 and later).
    pub fn resizes(self) -> bool {
        self >= Protocol::V3
    }

    /// The bytes of the final `status` on the error stream: the JSON status from v4 on; before,
    /// a failure's message as text and nothing for a success.
    pub fn status_bytes(self, status: &Value) -> Option<Vec<u8>> {
        if self >= Protocol::V4 {
            return Some(status.to_string().into_bytes());
        }
        if status["status"] == "Success" {
            return None;
        }
        Some(
            status["message"]
                .as_str()
                .unwrap_or("the command failed")
                .as_bytes()
                .to_vec(),
        )
    }
}

/// What the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes of stdout.
    Stdout(Vec<u8>),
    /// Bytes of stderr.
    Stderr(Vec<u8>),
    /// The final `metav1.Status` (error channel/stream); nothing follows it.
    Status(Value),
}

/// The streams a client asked for (the kubelet's `stdin`, `stdout`, `stderr`, `tty` query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    /// stdin is attached.
    pub stdin: bool,
    /// stdout is sent.
    pub stdout: bool,
    /// stderr is sent (never with a terminal: it is merged into stdout).
    pub stderr: bool,
    /// A terminal: the client sends resizes.
    pub tty: bool,
}

/// How the client's connection ends on our side: the ends a transport driver holds.
pub struct Ends {
    /// What the client sends; dropped when the client has gone.
    pub input: mpsc::Sender<ExecInput>,
    /// What to send; the driver finishes after a [`Output::Status`] or when this closes.
    pub output: mpsc::Receiver<Output>,
}

/// The other ends, held by [`relay`].
pub struct Session {
    /// What the client sends; `None` once the client has gone.
    pub input: mpsc::Receiver<ExecInput>,
    /// What to send the client.
    pub output: mpsc::Sender<Output>,
}

/// A pair of connected ends.
pub fn pair() -> (Ends, Session) {
    let (input_tx, input_rx) = mpsc::channel(64);
    let (output_tx, output_rx) = mpsc::channel(64);
    (
        Ends {
            input: input_tx,
            output: output_rx,
        },
        Session {
            input: input_rx,
            output: output_tx,
        },
    )
}

/// Reads a resize message: the kubelet's `{"Width":..,"Height":..}` JSON.
pub fn parse_resize(json: &[u8]) -> Option<TerminalSize> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    serde_json::from_slice::<Size>(json)
        .ok()
        .map(|s| TerminalSize {
            width: s.width,
            height: s.height,
        })
}

/// The `metav1.Status` the error channel carries for an exit (v4 and later).
pub fn exit_status(code: &ExitCode) -> Value {
    match code {
        ExitCode::Code(0) => json!({"metadata": {}, "status": "Success"}),
        ExitCode::Code(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        // kubectl exits 0 on Success and prints no message; the message is there for API
        // clients that read it, and docs/operations.md says so for each provider.
        ExitCode::Unreported { why } => json!({
            "metadata": {},
            "status": "Success",
            "message": format!("the exit code is unknown: {why}"),
        }),
    }
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

/// Sends `status` as the only output (a session that never started).
pub async fn refuse(session: Session, status: Value) {
    let _ = session.output.send(Output::Status(status)).await;
}

/// Moves the client's input to the provider's session and its output back, until the command
/// exits (its status last), the client goes (the provider session is dropped, which ends it), or
/// `shutdown`. `describe` turns a provider failure mid-stream into a kubelet API error.
pub async fn relay(
    client: Session,
    provider: ExecSession,
    wanted: Wanted,
    describe: impl Fn(crate::provider::ProviderError) -> Error,
    shutdown: CancellationToken,
) {
    let Session {
        input: mut from_client,
        output: to_client,
    } = client;
    let ExecSession {
        input: to_provider,
        output: mut from_provider,
    } = provider;
    // The two directions run side by side, so a full pipe one way never stops the other.
    let input = async move {
        while let Some(input) = from_client.recv().await {
            // A provider that takes no more input has dropped its receiver: the rest of the
            // client's input goes nowhere, as on a closed pipe.
            let _ = to_provider.send(input).await;
        }
    };
    let output = async {
        while let Some(event) = from_provider.next().await {
            let (out, status) = match event {
                Ok(ExecEvent::Stdout(data)) => {
                    (wanted.stdout.then_some(Output::Stdout(data)), None)
                }
                Ok(ExecEvent::Stderr(data)) => {
                    (wanted.stderr.then_some(Output::Stderr(data)), None)
                }
                Ok(ExecEvent::Exited(code)) => (None, Some(exit_status(&code))),
                Err(e) => (None, Some(error_status(&describe(e)))),
            };
            if let Some(status) = status {
                return Some(status);
            }
            if let Some(out) = out
                && to_client.send(out).await.is_err()
            {
                return None;
            }
        }
        Some(exit_status(&ExitCode::Unreported {
            why: "the provider's session ended without one".into(),
        }))
    };
    let status = tokio::select! {
        _ = input => return,
        status = output => status,
        _ = shutdown.cancelled() => Some(failure_status(
            "the kubelet API is shutting down",
            "ServiceUnavailable",
            StatusCode::SERVICE_UNAVAILABLE.as_u16(),
        )),
    };
    if let Some(status) = status {
        let _ = to_client.send(Output::Status(status)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(events: Vec<ExecEvent>) -> (ExecSession, mpsc::Receiver<ExecInput>) {
        let (tx, rx) = mpsc::channel(8);
        let output = futures::stream::iter(events.into_iter().map(Ok)).boxed();
        (ExecSession { input: tx, output }, rx)
    }

    async fn outputs(mut ends: Ends) -> Vec<Output> {
        let mut seen = Vec::new();
        while let Some(o) = ends.output.recv().await {
            seen.push(o);
        }
        seen
    }

    #[tokio::test]
    async fn output_flows_to_the_client_and_the_exit_code_comes_last() {
        let (ends, session) = pair();
        let (p, _input) = provider(vec![
            ExecEvent::Stdout(b"hi\n".to_vec()),
            ExecEvent::Stderr(b"oops\n".to_vec()),
            ExecEvent::Exited(ExitCode::Code(3)),
        ]);
        let wanted = Wanted {
            stdout: true,
            ..Default::default()
        };
        relay(
            session,
            p,
            wanted,
            |_| unreachable!(),
            CancellationToken::new(),
        )
        .await;
        let seen = outputs(ends).await;
        assert_eq!(seen[0], Output::Stdout(b"hi\n".to_vec()));
        let Output::Status(status) = &seen[1] else {
            panic!("{seen:?}")
        };
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(
            status["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(seen.len(), 2, "stderr was not asked for: {seen:?}");
    }

    #[tokio::test]
    async fn stdin_and_its_end_and_resizes_reach_the_provider_in_order() {
        let (ends, session) = pair();
        let (tx, mut rx) = mpsc::channel(8);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let output = futures::stream::once(async move {
            let _ = exit_rx.await;
            Ok(ExecEvent::Exited(ExitCode::Code(0)))
        })
        .boxed();
        let task = tokio::spawn(relay(
            session,
            ExecSession { input: tx, output },
            Wanted::default(),
            |_| unreachable!(),
            CancellationToken::new(),
        ));
        let size = TerminalSize {
            width: 100,
            height: 30,
        };
        ends.input.send(ExecInput::Resize(size)).await.unwrap();
        ends.input
            .send(ExecInput::Stdin(b"ab".to_vec()))
            .await
            .unwrap();
        ends.input.send(ExecInput::EndOfInput).await.unwrap();
        assert_eq!(rx.recv().await, Some(ExecInput::Resize(size)));
        assert_eq!(rx.recv().await, Some(ExecInput::Stdin(b"ab".to_vec())));
        assert_eq!(rx.recv().await, Some(ExecInput::EndOfInput));
        exit_tx.send(()).unwrap();
        task.await.unwrap();
        let Output::Status(status) = &outputs(ends).await[0] else {
            panic!()
        };
        assert_eq!(status["status"], "Success");
    }

    #[test]
    fn an_exit_the_provider_does_not_report_is_a_success_that_says_so() {
        let status = exit_status(&ExitCode::Unreported {
            why: "ACI's exec API reports no exit code".into(),
        });
        assert_eq!(status["status"], "Success");
        assert_eq!(
            status["message"],
            "the exit code is unknown: ACI's exec API reports no exit code"
        );
    }

    #[test]
    fn the_clients_first_offer_the_server_speaks_wins_as_in_the_kubelets_handshake() {
        let offers = ["v4.channel.k8s.io", "v5.channel.k8s.io"];
        assert_eq!(
            Protocol::negotiate(offers, &Protocol::SPDY),
            Some(Protocol::V4)
        );
        let old = ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
        assert_eq!(
            Protocol::negotiate(old, &Protocol::SPDY),
            Some(Protocol::V3)
        );
        assert_eq!(
            Protocol::negotiate(["channel.k8s.io"], &Protocol::SPDY),
            Some(Protocol::V1)
        );
        assert_eq!(
            Protocol::negotiate(["v3.channel.k8s.io"], &Protocol::WEBSOCKET),
            None
        );
        assert_eq!(
            Protocol::negotiate(["base64.channel.k8s.io"], &Protocol::WEBSOCKET),
            None
        );
    }

    #[test]
    fn before_v4_the_error_stream_carries_a_failures_text_and_nothing_for_a_success() {
        let failed = exit_status(&ExitCode::Code(3));
        for old in [Protocol::V1, Protocol::V2, Protocol::V3] {
            assert_eq!(
                old.status_bytes(&failed).unwrap(),
                b"command terminated with non-zero exit code: exit status 3"
            );
            assert_eq!(old.status_bytes(&exit_status(&ExitCode::Code(0))), None);
        }
        let json: Value =
            serde_json::from_slice(&Protocol::V4.status_bytes(&failed).unwrap()).unwrap();
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert!(!Protocol::V2.resizes() && Protocol::V3.resizes());
    }

    #[test]
    fn the_resize_message_kubectl_sends_parses() {
        assert_eq!(
            parse_resize(br#"{"Width":100,"Height":30}"#),
            Some(TerminalSize {
                width: 100,
                height: 30
            })
        );
        assert_eq!(parse_resize(b"junk"), None);
    }
}
