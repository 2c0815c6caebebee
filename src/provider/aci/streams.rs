//! The exec and attach websockets of a container: the command line ACI accepts, the session
//! password sent only over TLS (or to a loopback address), the output collected or streamed, and
//! an interactive exec's stdin (binary messages; its end is the websocket's close, after which
//! the output still comes until ACI closes). ACI takes the terminal size when the exec starts
//! and has no resize message, so later resizes are dropped; it reports no exit code.

use std::time::Duration;

use azure_core::http::Url;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::provider::PodRejection;
use crate::provider::aci::arm::Session;
use crate::provider::aci::credentials::is_loopback;
use crate::provider::aci::retry::AciError;
use crate::provider::contract::{
    ExecEvent, ExecInput, ExecSession, ExitCode, OutputStream, ProviderError,
};

/// An exec session ends after this long, whatever the command does.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an ACI exec ends without an exit code.
pub(crate) const NO_EXIT_CODE: &str =
    "ACI's exec API reports no exit code, so burstgate reports 0 (see docs/operations.md)";

/// The output of the exec `session`, collected until the server closes, within [`EXEC_TIMEOUT`].
pub(crate) async fn exec_output(session: Session) -> Result<String, AciError> {
    tokio::time::timeout(EXEC_TIMEOUT, async {
        let ws = connect_exec(&session.uri, session.password).await?;
        let mut output = chunks(ws, AciError::Exec);
        let mut out = Vec::new();
        while let Some(chunk) = output.next().await {
            out.extend_from_slice(&chunk.map_err(|e| AciError::Exec(e.to_string()))?);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .map_err(|_| AciError::Exec(format!("no end of output within {EXEC_TIMEOUT:?}")))?
}

/// The exec `session` as it runs: input pumped to the websocket by a task that ends with the
/// session (its sender dropped), output as it comes, then the exit, unknown.
pub(crate) async fn exec_session(session: Session) -> Result<ExecSession, AciError> {
    let ws = connect_exec(&session.uri, session.password).await?;
    let (mut sink, stream) = ws.split();
    let (input, mut pending) = tokio::sync::mpsc::channel::<ExecInput>(16);
    tokio::spawn(async move {
        while let Some(next) = pending.recv().await {
            let sent = match next {
                ExecInput::Stdin(data) => sink.send(Message::Binary(data.into())).await,
                ExecInput::EndOfInput => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
                ExecInput::Resize(size) => {
                    tracing::debug!(?size, "ACI exec: a resize after the start is dropped");
                    Ok(())
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let exit = futures::stream::once(async {
        Ok(ExecEvent::Exited(ExitCode::Unreported {
            why: NO_EXIT_CODE.into(),
        }))
    });
    let output = chunks(stream, AciError::Exec)
        .map(|chunk| chunk.map(ExecEvent::Stdout))
        .chain(exit)
        .boxed();
    Ok(ExecSession { input, output })
}

/// The output of the attach `session`, as it comes.
pub(crate) async fn attach_output(session: Session) -> Result<OutputStream, AciError> {
    attach_session(&session.uri, &session.password).await
}

/// Refuses to send a session password in clear text anywhere but a loopback address.
fn check_session_uri(uri: &str, what: fn(String) -> AciError) -> Result<(), AciError> {
    let parsed = Url::parse(uri).map_err(|e| what(format!("webSocketUri: {e}")))?;
    if parsed.scheme() != "wss" && !is_loopback(&parsed) {
        return Err(what(
            "the session password is only sent over TLS (or to a loopback address)".into(),
        ));
    }
    Ok(())
}

/// Connects to the attach websocket with the password as its `Authorization` header (as the
/// spec's `ContainerAttachResponse` says), and streams the messages as they come; the stream ends
/// when the server closes (the container stopped) and the socket closes when it is dropped.
async fn attach_session(uri: &str, password: &str) -> Result<OutputStream, AciError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    check_session_uri(uri, AciError::Attach)?;
    let mut request = uri
        .into_client_request()
        .map_err(|e| AciError::Attach(format!("webSocketUri: {e}")))?;
    request.headers_mut().insert(
        "Authorization",
        password
            .parse()
            .map_err(|_| AciError::Attach("the password is not a header value".into()))?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| AciError::Attach(format!("connecting: {e}")))?;
    Ok(chunks(ws, AciError::Attach))
}

/// The data messages of a websocket as chunks of bytes, until the server closes.
fn chunks<S>(messages: S, what: fn(String) -> AciError) -> OutputStream
where
    S: futures::Stream<Item = Result<Message, WsError>> + Send + 'static,
{
    messages
        .take_while(|m| {
            std::future::ready(!matches!(
                m,
                Ok(Message::Close(_)) | Err(WsError::ConnectionClosed | WsError::Protocol(_))
            ))
        })
        .filter_map(move |m| {
            std::future::ready(match m {
                Ok(Message::Text(t)) => Some(Ok(t.as_bytes().to_vec())),
                Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                Ok(_) => None,
                Err(e) => Some(Err(ProviderError::from(what(format!("reading: {e}"))))),
            })
        })
        .boxed()
}

/// ACI's exec takes one string and splits it on spaces itself, with no quoting: an argument with
/// whitespace cannot be passed.
pub(crate) fn exec_command_line(command: &[String]) -> Result<String, ProviderError> {
    if command.is_empty() {
        return Err(ProviderError::Pod(PodRejection::Invalid {
            field: "command".into(),
            reason: "exec needs a command".into(),
        }));
    }
    if let Some((i, arg)) = command
        .iter()
        .enumerate()
        .find(|(_, a)| a.is_empty() || a.chars().any(char::is_whitespace))
    {
        return Err(ProviderError::Pod(PodRejection::Unsupported {
            field: format!("command[{i}]"),
            reason: format!(
                "exec argument {i} ({arg:?}) is empty or contains whitespace: ACI splits the command line on spaces and has no quoting"
            ),
        }));
    }
    Ok(command.join(" "))
}

/// Connects to the exec websocket and authenticates with the password (the first message, as
/// ACI wants).
async fn connect_exec(
    uri: &str,
    password: String,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    AciError,
> {
    check_session_uri(uri, AciError::Exec)?;
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .map_err(|e| AciError::Exec(format!("connecting: {e}")))?;
    ws.send(Message::Text(password.into()))
        .await
        .map_err(|e| AciError::Exec(format!("authenticating: {e}")))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_argument_with_whitespace_is_refused_because_aci_splits_on_spaces() {
        assert_eq!(
            exec_command_line(&["ls".into(), "-l".into()]).unwrap(),
            "ls -l"
        );
        let e = exec_command_line(&["sh".into(), "-c".into(), "echo hi".into()]).unwrap_err();
        assert!(
            matches!(&e, ProviderError::Pod(PodRejection::Unsupported { field, .. }) if field == "command[2]"),
            "{e:?}"
        );
    }

    #[test]
    fn a_session_password_is_only_sent_over_tls_or_to_a_loopback_address() {
        let check = |uri| check_session_uri(uri, AciError::Attach);
        assert!(check("wss://aci.example/attach/1").is_ok());
        assert!(check("ws://127.0.0.1:4012/_attach/1").is_ok());
        let err = check("ws://aci.example/attach/1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("attach websocket: the session password is only sent over TLS"),
            "{err}"
        );
        assert!(check("not a uri").is_err());
    }
}
