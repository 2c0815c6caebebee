//! One SPDY/3.1 session of an exec or attach, server side, as the kubelet runs it: every
//! SYN_STREAM the client opens gets a SYN_REPLY and is known by its `streamtype` header (error,
//! stdin, stdout, stderr, resize); stdin's bytes and FIN and the resize messages go to the
//! session's input; output waits until the client has opened the streams it asked for (at most
//! [`STREAMS_WITHIN`]), then goes out as DATA frames; the status goes on the error stream, every
//! stream is closed with FIN, and the client's GOAWAY (or its going) ends the session. PINGs are
//! answered; a session with no frame either way for [`IDLE`] is closed with a GOAWAY.
//!
//! Flow control ([`flow`](super::flow)): output waits in a queue per stream and goes out within
//! the stream's and the session's send windows once the client shows it does flow control (a
//! SETTINGS or WINDOW_UPDATE frame; kubectl's moby/spdystream does neither and is not held to
//! windows); stdin's and resize's bytes are given back with WINDOW_UPDATEs to such a client. The
//! queue holds at most [`QUEUED_AT_MOST`] bytes before the provider's output is no longer read,
//! so a slow reader slows the provider's session, never the gateway's memory.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Error;
use super::flow::Flow;
use super::frame::{Frame, GOAWAY_OK, INVALID_STREAM};
use super::headers::{HeaderCodec, value};
use crate::kubelet::channels::{Ends, Output, Protocol, Wanted, parse_resize};
use crate::provider::ExecInput;

/// How long the client gets to open the streams it asked for (the kubelet's stream creation
/// timeout).
pub const STREAMS_WITHIN: Duration = Duration::from_secs(30);
/// A session with no frame in either direction for this long is closed (the kubelet's default
/// `--streaming-connection-idle-timeout`).
pub const IDLE: Duration = Duration::from_secs(4 * 60 * 60);
/// How long the client gets to say goodbye after the status.
const GOODBYE_WITHIN: Duration = Duration::from_secs(5);
/// The most bytes one DATA frame carries.
const CHUNK: usize = 32 * 1024;
/// Output bytes waiting for a window before the provider's output is no longer read.
pub const QUEUED_AT_MOST: usize = 256 * 1024;

/// What a stream is for (its `streamtype` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamType {
    /// The final status.
    Error,
    /// Client to server.
    Stdin,
    /// Server to client.
    Stdout,
    /// Server to client.
    Stderr,
    /// Terminal sizes, client to server.
    Resize,
}

impl StreamType {
    fn parse(name: &str) -> Option<StreamType> {
        Some(match name {
            "error" => StreamType::Error,
            "stdin" => StreamType::Stdin,
            "stdout" => StreamType::Stdout,
            "stderr" => StreamType::Stderr,
            "resize" => StreamType::Resize,
            _ => return None,
        })
    }

    /// The streams a client that asked for `wanted` opens in `protocol` (a resize stream from
    /// v3 on).
    pub fn expected(protocol: Protocol, wanted: Wanted) -> Vec<StreamType> {
        let mut types = vec![StreamType::Error];
        let with = [
            (wanted.stdin, StreamType::Stdin),
            (wanted.stdout, StreamType::Stdout),
            (wanted.stderr && !wanted.tty, StreamType::Stderr),
            (wanted.tty && protocol.resizes(), StreamType::Resize),
        ];
        types.extend(with.into_iter().filter(|(w, _)| *w).map(|(_, t)| t));
        types
    }
}

/// The session's state, apart from the socket.
struct State {
    protocol: Protocol,
    codec: HeaderCodec,
    /// Stream id by type, as the client opened them.
    streams: BTreeMap<StreamType, u32>,
    expected: Vec<StreamType>,
    /// Partial resize messages (JSON, one per line).
    resize: Vec<u8>,
    /// Frames to write.
    out: Vec<u8>,
    last_stream: u32,
    /// Send and receive windows.
    flow: Flow,
    /// Output waiting for its window, per stream: bytes, or the stream's end (FIN).
    queues: BTreeMap<u32, std::collections::VecDeque<Queued>>,
}

/// What waits to go out on a stream.
#[derive(Debug)]
enum Queued {
    Bytes(Vec<u8>),
    Fin,
}

/// What a client frame means for the session.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Go,
    Input(ExecInput),
    Gone,
}

impl State {
    fn new(protocol: Protocol, wanted: Wanted) -> State {
        State {
            protocol,
            codec: HeaderCodec::default(),
            streams: BTreeMap::new(),
            expected: StreamType::expected(protocol, wanted),
            resize: Vec::new(),
            out: Vec::new(),
            last_stream: 0,
            flow: Flow::default(),
            queues: BTreeMap::new(),
        }
    }

    /// Output bytes waiting for a window.
    fn queued(&self) -> usize {
        self.queues
            .values()
            .flatten()
            .map(|q| match q {
                Queued::Bytes(b) => b.len(),
                Queued::Fin => 0,
            })
            .sum()
    }

    /// Moves queued output into `out` as far as the windows allow.
    fn flush(&mut self) {
        for (stream, queue) in self.queues.iter_mut() {
            while let Some(next) = queue.front_mut() {
                match next {
                    Queued::Fin => {
                        Frame::Data {
                            stream: *stream,
                            fin: true,
                            data: Vec::new(),
                        }
                        .encode(&mut self.out);
                        queue.pop_front();
                        self.flow.closed(*stream);
                    }
                    Queued::Bytes(bytes) => {
                        let n = bytes.len().min(CHUNK).min(self.flow.sendable(*stream));
                        if n == 0 {
                            break;
                        }
                        let rest = bytes.split_off(n);
                        Frame::Data {
                            stream: *stream,
                            fin: false,
                            data: std::mem::replace(bytes, rest),
                        }
                        .encode(&mut self.out);
                        self.flow.sent(*stream, n);
                        if bytes.is_empty() {
                            queue.pop_front();
                        }
                    }
                }
            }
        }
    }

    fn ready(&self) -> bool {
        self.expected.iter().all(|t| self.streams.contains_key(t))
    }

    fn type_of(&self, stream: u32) -> Option<StreamType> {
        self.streams
            .iter()
            .find(|(_, id)| **id == stream)
            .map(|(t, _)| *t)
    }

    /// Handles one client frame: answers what needs an answer (into `out`) and says what it
    /// means for the session; resize lines beyond the first come back through `more`.
    fn on_frame(&mut self, frame: Frame, more: &mut Vec<ExecInput>) -> Result<Step, Error> {
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let headers = self.codec.decode(&headers)?;
                self.last_stream = self.last_stream.max(stream);
                let kind = value(&headers, "streamtype").and_then(StreamType::parse);
                let Some(kind) = kind else {
                    tracing::debug!(stream, ?headers, "SPDY: a stream of no known type");
                    Frame::RstStream {
                        stream,
                        status: INVALID_STREAM,
                    }
                    .encode(&mut self.out);
                    return Ok(Step::Go);
                };
                self.streams.insert(kind, stream);
                let headers = self.codec.encode(&[])?;
                Frame::SynReply {
                    stream,
                    fin: false,
                    headers,
                }
                .encode(&mut self.out);
                Ok(if fin && kind == StreamType::Stdin {
                    Step::Input(ExecInput::EndOfInput)
                } else {
                    Step::Go
                })
            }
            Frame::Data { stream, fin, data } => Ok(self.on_data(stream, fin, data, more)),
            Frame::RstStream { stream, .. } if self.type_of(stream) == Some(StreamType::Stdin) => {
                Ok(Step::Input(ExecInput::EndOfInput))
            }
            Frame::Ping { id } => {
                Frame::Ping { id }.encode(&mut self.out);
                Ok(Step::Go)
            }
            Frame::GoAway { .. } => Ok(Step::Gone),
            Frame::Settings { initial_window } => {
                self.flow.on_settings(initial_window);
                Ok(Step::Go)
            }
            Frame::WindowUpdate { stream, delta } => {
                self.flow.on_window_update(stream, delta);
                Ok(Step::Go)
            }
            _ => Ok(Step::Go),
        }
    }

    fn on_data(
        &mut self,
        stream: u32,
        fin: bool,
        data: Vec<u8>,
        more: &mut Vec<ExecInput>,
    ) -> Step {
        for update in self.flow.received(stream, data.len()) {
            update.encode(&mut self.out);
        }
        match self.type_of(stream) {
            Some(StreamType::Stdin) => {
                if !data.is_empty() {
                    more.push(ExecInput::Stdin(data));
                }
                if fin {
                    more.push(ExecInput::EndOfInput);
                }
            }
            Some(StreamType::Resize) => {
                self.resize.extend_from_slice(&data);
                while let Some(end) = self.resize.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.resize.drain(..=end).collect();
                    more.extend(parse_resize(&line).map(ExecInput::Resize));
                }
            }
            _ => {}
        }
        Step::Go
    }

    /// Queues `output` as DATA frames: bytes on their stream, the status on the error stream,
    /// then FIN on every stream.
    fn on_output(&mut self, output: Output) {
        let (kind, data) = match output {
            Output::Stdout(data) => (StreamType::Stdout, data),
            Output::Stderr(data) => (StreamType::Stderr, data),
            Output::Status(status) => match self.protocol.status_bytes(&status) {
                Some(bytes) => (StreamType::Error, bytes),
                None => return,
            },
        };
        let Some(stream) = self.streams.get(&kind).copied() else {
            return;
        };
        if !data.is_empty() {
            self.queues
                .entry(stream)
                .or_default()
                .push_back(Queued::Bytes(data));
        }
    }

    /// FIN on every stream this side has not closed, after what waits on it.
    fn close_all(&mut self) {
        for stream in self.streams.values() {
            self.queues
                .entry(*stream)
                .or_default()
                .push_back(Queued::Fin);
        }
    }
}

/// Serves one session on `io` (the upgraded connection) for a client that asked for `wanted`,
/// until the output ends and the client says goodbye, or the client goes.
// Long on purpose: one select loop over the socket, the output and two timers, whose arms are
// each a line or two; split, the state they share would travel through every piece.
pub async fn serve<IO>(io: IO, protocol: Protocol, wanted: Wanted, ends: Ends) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Ends { input, mut output } = ends;
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut state = State::new(protocol, wanted);
    let (mut buf, mut read) = (Vec::new(), vec![0u8; 16 * 1024]);
    let streams_deadline = tokio::time::Instant::now() + STREAMS_WITHIN;
    let mut finished: Option<tokio::time::Instant> = None;
    // Input read but not yet taken: while any waits, the socket is not read (backpressure on the
    // client), yet output keeps flowing, so a full pipe one way never stops the other.
    let mut pending: std::collections::VecDeque<ExecInput> = Default::default();
    loop {
        let ready = state.ready() || tokio::time::Instant::now() >= streams_deadline;
        let idle = tokio::time::sleep(IDLE);
        let goodbye = tokio::time::sleep_until(finished.unwrap_or(streams_deadline));
        let mut more = Vec::new();
        tokio::select! {
            permit = input.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => permit.send(pending.pop_front().expect("not empty")),
                // The exec has ended: input after it goes nowhere.
                Err(_) => pending.clear(),
            },
            n = reader.read(&mut read), if pending.is_empty() => {
                let n = n.map_err(Error::Io)?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&read[..n]);
                while let Some(frame) = Frame::decode(&mut buf)? {
                    match state.on_frame(frame, &mut more)? {
                        Step::Go => {}
                        Step::Input(i) => more.push(i),
                        Step::Gone => finished = Some(tokio::time::Instant::now()),
                    }
                }
            }
            next = output.recv(), if ready && finished.is_none() && state.queued() < QUEUED_AT_MOST => match next {
                Some(Output::Status(status)) => {
                    state.on_output(Output::Status(status));
                    state.close_all();
                    finished = Some(tokio::time::Instant::now() + GOODBYE_WITHIN);
                }
                Some(o) => state.on_output(o),
                None => {
                    state.close_all();
                    finished = Some(tokio::time::Instant::now() + GOODBYE_WITHIN);
                }
            },
            _ = goodbye, if finished.is_some() || !ready => {
                if finished.is_some() {
                    break;
                }
                tracing::info!(expected = ?state.expected, opened = ?state.streams.keys().collect::<Vec<_>>(), "SPDY: the client did not open every stream it asked for in time");
            }
            _ = idle => {
                tracing::info!("SPDY: no frame for {IDLE:?}; closing the session");
                break;
            }
        }
        pending.extend(more);
        state.flush();
        if !state.out.is_empty() {
            writer.write_all(&state.out).await.map_err(Error::Io)?;
            state.out.clear();
        }
    }
    Frame::GoAway {
        last_stream: state.last_stream,
        status: GOAWAY_OK,
    }
    .encode(&mut state.out);
    writer.write_all(&state.out).await.map_err(Error::Io)?;
    let _ = writer.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::channels::pair;
    use crate::kubelet::spdy::frame::tests::all;
    use crate::provider::{ExecEvent, ExitCode};

    #[test]
    fn the_streams_expected_follow_the_query_and_a_terminal_has_no_stderr() {
        let tty = Wanted {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        assert_eq!(
            StreamType::expected(Protocol::V4, tty),
            vec![
                StreamType::Error,
                StreamType::Stdin,
                StreamType::Stdout,
                StreamType::Resize
            ]
        );
        let plain = Wanted {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        assert_eq!(
            StreamType::expected(Protocol::V4, plain),
            vec![StreamType::Error, StreamType::Stdout, StreamType::Stderr]
        );
        // Before v3 there is no resize stream, terminal or not.
        assert_eq!(
            StreamType::expected(Protocol::V2, tty),
            vec![StreamType::Error, StreamType::Stdin, StreamType::Stdout]
        );
    }

    #[tokio::test]
    async fn kubectls_captured_exec_gets_replies_its_stdin_and_the_status_then_fins() {
        let wanted = Wanted {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let (ends, mut session) = pair();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve(server, Protocol::V4, wanted, ends));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        // kubectl's frames up to its stdin's FIN now, its goodbye (RST_STREAMs, GOAWAY) after
        // the status, as it sent them.
        let frames = all(include_bytes!("testdata/kubectl-1.37.1-exec-i-cat.bin"));
        let end_of_stdin = frames
            .iter()
            .position(|f| {
                matches!(
                    f,
                    Frame::Data {
                        stream: 3,
                        fin: true,
                        ..
                    }
                )
            })
            .unwrap();
        let (mut hello, mut goodbye) = (Vec::new(), Vec::new());
        frames[..=end_of_stdin]
            .iter()
            .for_each(|f| f.encode(&mut hello));
        frames[end_of_stdin + 1..]
            .iter()
            .for_each(|f| f.encode(&mut goodbye));
        client_write.write_all(&hello).await.unwrap();
        assert_eq!(
            session.input.recv().await,
            Some(ExecInput::Stdin(b"hello-stdin".to_vec()))
        );
        assert_eq!(session.input.recv().await, Some(ExecInput::EndOfInput));
        session
            .output
            .send(Output::Stdout(b"hello-stdin".to_vec()))
            .await
            .unwrap();
        let status = serde_json::json!({"metadata": {}, "status": "Success"});
        session
            .output
            .send(Output::Status(status.clone()))
            .await
            .unwrap();
        let mut wire = Vec::new();
        let error_fin = |wire: &[u8]| {
            all(wire).contains(&Frame::Data {
                stream: 1,
                fin: true,
                data: vec![],
            })
        };
        while !error_fin(&wire) {
            let mut chunk = [0u8; 4096];
            let n = client_read.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "the session ended before closing the error stream");
            wire.extend_from_slice(&chunk[..n]);
        }
        client_write.write_all(&goodbye).await.unwrap();
        served.await.unwrap().unwrap();
        client_read.read_to_end(&mut wire).await.unwrap();
        let frames = all(&wire);
        assert!(frames.contains(&Frame::Data {
            stream: 5,
            fin: false,
            data: b"hello-stdin".to_vec()
        }));
        assert!(frames.contains(&Frame::Data {
            stream: 1,
            fin: false,
            data: status.to_string().into_bytes()
        }));
        let replies: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { stream, .. } => Some(*stream),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![1, 3, 5, 7]);
        assert!(frames.contains(&Frame::GoAway {
            last_stream: 7,
            status: GOAWAY_OK
        }));
        drop(session);
    }

    /// The SYN_STREAMs a client opens `streams` (id, streamtype) with.
    fn opening(streams: &[(u32, &str)]) -> Vec<u8> {
        let mut codec = HeaderCodec::default();
        let mut wire = Vec::new();
        for (stream, kind) in streams {
            let headers = codec.encode(&[("streamtype", kind)]).unwrap();
            Frame::SynStream {
                stream: *stream,
                fin: false,
                headers,
            }
            .encode(&mut wire);
        }
        wire
    }

    /// A provider that echoes stdin on stdout through a one-slot pipe, and exits 0 at its end.
    fn echo() -> crate::provider::ExecSession {
        use futures::StreamExt;
        let (input, mut from_client) = tokio::sync::mpsc::channel(1);
        let (to_client, output) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(ExecInput::Stdin(data)) = from_client.recv().await {
                let _ = to_client.send(ExecEvent::Stdout(data)).await;
            }
            let _ = to_client.send(ExecEvent::Exited(ExitCode::Code(0))).await;
        });
        let output = tokio_stream_of(output).map(Ok).boxed();
        crate::provider::ExecSession { input, output }
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test]
    async fn a_megabyte_echoed_both_ways_at_once_never_stalls_the_session() {
        let wanted = Wanted {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        let (ends, session) = crate::kubelet::channels::pair();
        let (client, server) = tokio::io::duplex(16 * 1024);
        tokio::spawn(serve(server, Protocol::V4, wanted, ends));
        tokio::spawn(crate::kubelet::channels::relay(
            session,
            echo(),
            wanted,
            |_| unreachable!(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let wire = opening(&[(1, "error"), (3, "stdin"), (5, "stdout")]);
            client_write.write_all(&wire).await.unwrap();
            for _ in 0..2048 {
                let mut frame = Vec::new();
                let data = vec![b'x'; 512];
                Frame::Data {
                    stream: 3,
                    fin: false,
                    data,
                }
                .encode(&mut frame);
                client_write.write_all(&frame).await.unwrap();
            }
            let mut fin = Vec::new();
            Frame::Data {
                stream: 3,
                fin: true,
                data: vec![],
            }
            .encode(&mut fin);
            client_write.write_all(&fin).await.unwrap();
            client_write
        });
        let mut buf = Vec::new();
        let (mut echoed, mut status) = (0, Vec::new());
        let read = async {
            while status.is_empty() || !status.ends_with(b"}") {
                let mut chunk = [0u8; 8192];
                let n = client_read.read(&mut chunk).await.unwrap();
                assert_ne!(n, 0, "the session ended early");
                buf.extend_from_slice(&chunk[..n]);
                while let Some(frame) = Frame::decode(&mut buf).unwrap() {
                    match frame {
                        Frame::Data {
                            stream: 5, data, ..
                        } => echoed += data.len(),
                        Frame::Data {
                            stream: 1, data, ..
                        } => status.extend(data),
                        _ => {}
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the echo stalled");
        assert_eq!(echoed, 2048 * 512);
        assert!(String::from_utf8_lossy(&status).contains("Success"));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_without_a_frame_for_the_idle_timeout_is_closed_with_a_goaway() {
        let (ends, _session) = pair();
        let (client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve(server, Protocol::V4, Wanted::default(), ends));
        let (mut client_read, _client_write) = tokio::io::split(client);
        let started = tokio::time::Instant::now();
        let mut wire = Vec::new();
        client_read.read_to_end(&mut wire).await.unwrap();
        assert!(
            started.elapsed() >= IDLE,
            "closed after {:?}",
            started.elapsed()
        );
        assert_eq!(
            all(&wire),
            vec![Frame::GoAway {
                last_stream: 0,
                status: GOAWAY_OK
            }]
        );
        served.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn output_waits_for_the_streams_asked_for_and_goes_out_after_the_creation_timeout() {
        let wanted = Wanted {
            stdout: true,
            ..Default::default()
        };
        let (ends, session) = pair();
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(serve(server, Protocol::V4, wanted, ends));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        // Only the error stream: stdout never comes.
        client_write
            .write_all(&opening(&[(1, "error")]))
            .await
            .unwrap();
        let status = serde_json::json!({"metadata": {}, "status": "Success"});
        session
            .output
            .send(Output::Status(status.clone()))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut seen = Vec::new();
        while !all(&seen)
            .iter()
            .any(|f| matches!(f, Frame::Data { stream: 1, .. }))
        {
            let mut chunk = [0u8; 1024];
            let n = client_read.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        assert!(
            started.elapsed() >= STREAMS_WITHIN,
            "{:?}",
            started.elapsed()
        );
        assert!(all(&seen).contains(&Frame::Data {
            stream: 1,
            fin: false,
            data: status.to_string().into_bytes()
        }));
    }

    #[tokio::test]
    async fn resize_lines_become_terminal_sizes_and_pings_are_answered() {
        let mut state = State::new(
            Protocol::V4,
            Wanted {
                tty: true,
                ..Default::default()
            },
        );
        let frames = all(include_bytes!("testdata/kubectl-1.37.1-exec-it-sh.bin"));
        let mut more = Vec::new();
        for frame in frames {
            assert_eq!(state.on_frame(frame, &mut more).unwrap(), Step::Go);
        }
        assert_eq!(
            more.first(),
            Some(&ExecInput::Resize(crate::provider::TerminalSize {
                width: 100,
                height: 30
            }))
        );
        assert!(
            more.contains(&ExecInput::Stdin(b"abc\x04".to_vec())),
            "{more:?}"
        );
        state.out.clear();
        state.on_frame(Frame::Ping { id: 9 }, &mut more).unwrap();
        assert_eq!(all(&state.out), vec![Frame::Ping { id: 9 }]);
    }

    /// Reads from `client` until `done` holds of every frame so far, or nothing comes for a
    /// while (then `None`).
    async fn frames_until(
        client: &mut (impl AsyncRead + Unpin),
        wire: &mut Vec<u8>,
        done: impl Fn(&[Frame]) -> bool,
    ) -> bool {
        loop {
            if done(&crate::kubelet::spdy::frame::tests::complete(wire)) {
                return true;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(Duration::from_millis(300), client.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => wire.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
    }

    fn stdout_bytes(frames: &[Frame]) -> usize {
        frames
            .iter()
            .map(|f| match f {
                Frame::Data {
                    stream: 3, data, ..
                } => data.len(),
                _ => 0,
            })
            .sum()
    }

    #[tokio::test]
    async fn a_client_that_does_flow_control_gets_output_only_within_its_windows() {
        let wanted = Wanted {
            stdout: true,
            ..Default::default()
        };
        let (ends, session) = crate::kubelet::channels::pair();
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(serve(server, Protocol::V4, wanted, ends));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut hello = Vec::new();
        Frame::Settings {
            initial_window: Some(40_000),
        }
        .encode(&mut hello);
        hello.extend(opening(&[(1, "error"), (3, "stdout")]));
        client_write.write_all(&hello).await.unwrap();
        session
            .output
            .send(Output::Stdout(vec![b'x'; 100_000]))
            .await
            .unwrap();
        let mut wire = Vec::new();
        frames_until(&mut client_read, &mut wire, |f| stdout_bytes(f) >= 40_000).await;
        assert!(
            !frames_until(&mut client_read, &mut wire, |f| stdout_bytes(f) > 40_000).await,
            "more than the stream's 40,000-byte window went out"
        );
        // The stream's window grows, but the session's (64 KiB) caps it.
        let mut update = Vec::new();
        Frame::WindowUpdate {
            stream: 3,
            delta: 100_000,
        }
        .encode(&mut update);
        client_write.write_all(&update).await.unwrap();
        frames_until(&mut client_read, &mut wire, |f| stdout_bytes(f) >= 65_536).await;
        assert!(
            !frames_until(&mut client_read, &mut wire, |f| stdout_bytes(f) > 65_536).await,
            "more than the session's window went out"
        );
        let mut update = Vec::new();
        Frame::WindowUpdate {
            stream: 0,
            delta: 100_000,
        }
        .encode(&mut update);
        client_write.write_all(&update).await.unwrap();
        assert!(frames_until(&mut client_read, &mut wire, |f| stdout_bytes(f) == 100_000).await);
    }

    #[tokio::test]
    async fn stdin_taken_in_is_given_back_to_a_client_that_does_flow_control() {
        let wanted = Wanted {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        let (ends, mut session) = crate::kubelet::channels::pair();
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(serve(server, Protocol::V4, wanted, ends));
        tokio::spawn(async move { while session.input.recv().await.is_some() {} });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut wire = opening(&[(1, "error"), (3, "stdin"), (5, "stdout")]);
        Frame::WindowUpdate {
            stream: 0,
            delta: 1,
        }
        .encode(&mut wire);
        Frame::Data {
            stream: 3,
            fin: false,
            data: vec![b'x'; 32_768],
        }
        .encode(&mut wire);
        client_write.write_all(&wire).await.unwrap();
        let mut seen = Vec::new();
        let updated = frames_until(&mut client_read, &mut seen, |f| {
            f.contains(&Frame::WindowUpdate {
                stream: 3,
                delta: 32_768,
            }) && f.contains(&Frame::WindowUpdate {
                stream: 0,
                delta: 32_768,
            })
        })
        .await;
        assert!(
            updated,
            "{:?}",
            crate::kubelet::spdy::frame::tests::complete(&seen)
        );
    }
}
