//! An exec into a shadow pod as a session (`kubectl exec -i`/`-t` through the gateway): the
//! cluster's `pods/exec` websocket (kube's `AttachedProcess`) with stdin, its end (kube sends the
//! v5 close signal once the writer is shut down), a terminal and its resizes, stdout and stderr as
//! they come, and the exit code from the final status.
//!
//! A cluster older than 1.30 speaks only `v4.channel.k8s.io`, which cannot close stdin alone:
//! kube then closes the whole connection, and the kubelet stops the command with it. Closed at
//! once, that cut `kubectl cp` into the pod short (tar killed before it read what was sent) and
//! lost the exit code; so on such a cluster the end of stdin waits [`V4_STDIN_GRACE`] first, in
//! which a command that does not wait for the end of its input (tar reading to its end-of-archive
//! blocks, a script) finishes with its exit code.

use std::time::Duration;

use futures::SinkExt;
use kube::api::AttachedProcess;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::provider::cluster::status::exec_exit_code;
use crate::provider::contract::{
    ExecEvent, ExecInput, ExecSession, ExitCode, ProviderError, TerminalSize,
};

/// How long the end of stdin waits on a cluster that cannot close stdin alone (v4).
pub(crate) const V4_STDIN_GRACE: Duration = Duration::from_secs(3);

/// `process` as a session: input pumped to it and its output read by tasks that end with it,
/// the terminal (if any) sized `size` first; `closes_stdin`: the cluster can close stdin alone.
pub(crate) fn session(
    mut process: AttachedProcess,
    size: Option<TerminalSize>,
    closes_stdin: bool,
) -> ExecSession {
    let (input, pending) = mpsc::channel::<ExecInput>(16);
    let (stdin, resize) = (process.stdin(), process.terminal_size());
    let grace = (!closes_stdin).then_some(V4_STDIN_GRACE);
    tokio::spawn(pump_input(pending, stdin, resize, size, grace));
    let (events, mut output) = mpsc::channel::<Result<ExecEvent, ProviderError>>(16);
    let (stdout, stderr, status) = (process.stdout(), process.stderr(), process.take_status());
    tokio::spawn(async move {
        tokio::join!(
            pump_output(stdout, &events, ExecEvent::Stdout),
            pump_output(stderr, &events, ExecEvent::Stderr)
        );
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let exit = match status.map(|s| exec_exit_code(&s)) {
            Some(Ok(code)) => Ok(ExecEvent::Exited(ExitCode::Code(code))),
            Some(Err(e)) => Err(e),
            None => Ok(ExecEvent::Exited(ExitCode::Unreported {
                why: "the cluster's exec ended without a status".into(),
            })),
        };
        let _ = events.send(exit).await;
        if let Err(e) = process.join().await {
            tracing::debug!(error = %e, "cluster exec: the stream ended with an error");
        }
    });
    let output = futures::stream::poll_fn(move |cx| output.poll_recv(cx));
    ExecSession {
        input,
        output: Box::pin(output),
    }
}

/// Writes the client's input to the process until the session ends.
async fn pump_input(
    mut pending: mpsc::Receiver<ExecInput>,
    mut stdin: Option<impl tokio::io::AsyncWrite + Unpin>,
    mut resize: Option<futures::channel::mpsc::Sender<kube::api::TerminalSize>>,
    size: Option<TerminalSize>,
    end_grace: Option<Duration>,
) {
    let sized = |s: TerminalSize| kube::api::TerminalSize {
        width: s.width,
        height: s.height,
    };
    if let (Some(size), Some(tx)) = (size, resize.as_mut()) {
        let _ = tx.send(sized(size)).await;
    }
    while let Some(next) = pending.recv().await {
        match next {
            ExecInput::Stdin(data) => {
                if let Some(w) = stdin.as_mut()
                    && w.write_all(&data).await.is_err()
                {
                    stdin = None;
                }
            }
            ExecInput::EndOfInput => {
                if let Some(mut w) = stdin.take() {
                    if let Some(grace) = end_grace {
                        // The command's own end (and its status) may come first.
                        tokio::time::sleep(grace).await;
                    }
                    let _ = w.shutdown().await;
                }
            }
            ExecInput::Resize(size) => {
                if let Some(tx) = resize.as_mut() {
                    let _ = tx.send(sized(size)).await;
                }
            }
        }
    }
}

/// Sends what `reader` yields as events made by `event`, until it ends.
async fn pump_output(
    reader: Option<impl AsyncRead + Unpin>,
    events: &mpsc::Sender<Result<ExecEvent, ProviderError>>,
    event: fn(Vec<u8>) -> ExecEvent,
) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 || events.send(Ok(event(buf[..n].to_vec()))).await.is_err() {
            return;
        }
    }
}
