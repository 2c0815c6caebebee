//! The Kubernetes WebSocket channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`) for exec
//! and attach: each binary message starts with its channel byte (0 stdin, 1 stdout, 2 stderr,
//! 3 error: the final `metav1.Status`, 4 resize; v5 adds 255, the client's "close this stream"),
//! and [`serve`] moves one connection's messages to and from the session's ends. The upgrade
//! itself, WebSocket or SPDY, is chosen in [`respond`].

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::kubelet::channels::{Ends, Output, Protocol, Session, Wanted, pair, parse_resize};
use crate::kubelet::error::{Error, Result};
use crate::kubelet::exec::{Inbound, V4, V5, channel, frame, negotiate, parse_frame};
use crate::kubelet::spdy::session::IDLE;
use crate::kubelet::spdy::upgrade::{NotSpdy, SpdyUpgrade};
use crate::provider::ExecInput;

/// How long the client gets to close after the status.
pub const GOODBYE_WITHIN: Duration = Duration::from_secs(5);

/// What a client message means, if anything.
pub fn input_of(message: &[u8]) -> Option<ExecInput> {
    match parse_frame(message)? {
        Inbound::Data(channel::STDIN, data) => Some(ExecInput::Stdin(data.to_vec())),
        Inbound::Data(channel::RESIZE, data) => parse_resize(data).map(ExecInput::Resize),
        Inbound::Close(channel::STDIN) => Some(ExecInput::EndOfInput),
        _ => None,
    }
}

/// Serves one WebSocket connection until the status is sent and the client closes (or
/// [`GOODBYE_WITHIN`] passes), the client goes, or nothing moves either way for [`IDLE`] (the
/// same idle timeout as SPDY's; pings are answered by the WebSocket layer).
pub async fn serve(mut socket: WebSocket, protocol: Protocol, ends: Ends) {
    let Ends { input, mut output } = ends;
    // A message read but not yet taken: while it waits, the socket is not read, yet output
    // keeps flowing, so a full pipe one way never stops the other.
    let mut pending: Option<ExecInput> = None;
    loop {
        let idle = tokio::time::sleep(IDLE);
        tokio::select! {
            _ = idle => {
                tracing::info!("WebSocket: no message for {IDLE:?}; closing the session");
                break;
            }
            permit = input.reserve(), if pending.is_some() => {
                let next = pending.take().expect("pending");
                // After the exec has ended, input goes nowhere.
                if let Ok(permit) = permit {
                    permit.send(next);
                }
            }
            message = socket.recv(), if pending.is_none() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Binary(data))) => pending = input_of(&data),
                Some(Ok(_)) => {}
            },
            next = output.recv() => {
                let (ch, data, last) = match next {
                    Some(Output::Stdout(data)) => (channel::STDOUT, data, false),
                    Some(Output::Stderr(data)) => (channel::STDERR, data, false),
                    Some(Output::Status(status)) => match protocol.status_bytes(&status) {
                        Some(bytes) => (channel::ERROR, bytes, true),
                        None => break,
                    },
                    None => break,
                };
                if socket.send(Message::Binary(frame(ch, &data).into())).await.is_err() {
                    return;
                }
                if last {
                    break;
                }
            }
        }
    }
    goodbye(socket).await;
}

/// Closes normally and waits briefly for the client's close.
async fn goodbye(mut socket: WebSocket) {
    let close = Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }));
    if socket.send(close).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(GOODBYE_WITHIN, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Upgrades an exec or attach request to SPDY/3.1 or a WebSocket, whichever it asks for, and
/// runs `run` on the session's ends once it is upgraded. `what` names the request in errors.
pub fn respond<F, Fut>(
    what: &str,
    headers: &HeaderMap,
    websocket: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    spdy: std::result::Result<SpdyUpgrade, NotSpdy>,
    wanted: Wanted,
    run: F,
) -> Result<Response>
where
    F: FnOnce(Session) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Ok(spdy) = spdy {
        let protocol = spdy.protocol()?;
        return Ok(spdy.respond(protocol, wanted, run));
    }
    let Ok(websocket) = websocket else {
        return Err(Error::BadRequest(format!(
            "{what} needs an upgrade: SPDY/3.1 or a WebSocket, with {V5} or {V4}"
        )));
    };
    let Some(protocol) = negotiate(headers) else {
        return Err(Error::BadRequest(format!(
            "the WebSocket upgrade offers none of {V5}, {V4} or channel.k8s.io"
        )));
    };
    let offered = headers.contains_key(axum::http::header::SEC_WEBSOCKET_PROTOCOL);
    let websocket = if offered {
        websocket.protocols([protocol.name()])
    } else {
        websocket
    };
    Ok(websocket
        .on_upgrade(move |socket| async move {
            let (ends, session) = pair();
            let running = tokio::spawn(run(session));
            serve(socket, protocol, ends).await;
            let _ = running.await;
        })
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::TerminalSize;

    #[test]
    fn stdin_its_v5_close_and_resizes_are_the_client_messages_that_mean_something() {
        assert_eq!(input_of(b"\x00ab"), Some(ExecInput::Stdin(b"ab".to_vec())));
        assert_eq!(
            input_of(&[channel::CLOSE, channel::STDIN]),
            Some(ExecInput::EndOfInput)
        );
        assert_eq!(
            input_of(b"\x04{\"Width\":120,\"Height\":40}"),
            Some(ExecInput::Resize(TerminalSize {
                width: 120,
                height: 40
            }))
        );
        assert_eq!(input_of(b"\x01out"), None);
        assert_eq!(input_of(b""), None);
    }
}
