//! `/portForward/{namespace}/{pod}`: `kubectl port-forward`, as the kubelet serves it, relayed
//! to the provider's [`Provider::port_forward`](crate::provider::Provider::port_forward) (the
//! on-cluster target: the shadow pod's `pods/portforward`).
//!
//! Three ways in:
//! - SPDY/3.1 with `portforward.k8s.io` (what apiservers from 1.30 on and kubectl with
//!   `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` speak): the client opens an `error` and a `data`
//!   stream per connection, both with headers `port` and `requestID`; once both are there the
//!   port is dialled and bytes flow on the data stream, a failure is written on the error stream
//!   ([`spdy_session`]).
//! - SPDY/3.1 tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl's default since
//!   1.31, which an apiserver older than 1.31 passes through): the same session on the
//!   WebSocket's binary messages ([`tunnel`]).
//! - The WebSocket channel protocol `v4.channel.k8s.io` (ports in the query, `port=80`): per
//!   port i, channel 2i carries data and 2i+1 errors, each first carrying the port (2 bytes,
//!   little endian) from the server ([`websocket_session`]).
//!
//! A provider that forwards no ports answers 501 naming it, before any upgrade.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::kubelet::error::{Error, Result};
use crate::kubelet::pods;
use crate::kubelet::server::Shared;
use crate::kubelet::spdy::frame::{Frame, GOAWAY_OK, INVALID_STREAM};
use crate::kubelet::spdy::headers::{HeaderCodec, value};
use crate::kubelet::spdy::session::IDLE;
use crate::kubelet::spdy::upgrade::{NotSpdy, SpdyUpgrade};
use crate::provider::PortConnection;

/// The SPDY port-forward protocol.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// SPDY tunnelled in a WebSocket (kubectl 1.31+).
pub const TUNNELED: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel protocol of port-forward.
pub const V4: &str = "v4.channel.k8s.io";
/// The most bytes one message or DATA frame carries.
const CHUNK: usize = 32 * 1024;

/// Connects to a port of the pod: the provider's [`PortConnection`], or why not.
pub type Dial = Arc<
    dyn Fn(u16) -> BoxFuture<'static, std::result::Result<PortConnection, String>> + Send + Sync,
>;

/// What a forwarded connection sends the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fwd {
    /// Bytes from the port.
    Data(Vec<u8>),
    /// The port closed its side.
    End,
    /// Forwarding failed: the message for the error stream.
    Error(String),
    /// The connection is over (the error stream closes).
    Done,
}

/// Dials `port` and moves bytes until the port closes: the client's bytes (`None`: its side
/// closed) go in, [`Fwd`]s come out tagged with `tag`, [`Fwd::Done`] last.
pub async fn forward<T: Copy + Send + 'static>(
    dial: Dial,
    port: u16,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    to_client: mpsc::Sender<(T, Fwd)>,
    tag: T,
    describe: impl Fn(String) -> String,
) {
    let conn = match dial(port).await {
        Ok(conn) => conn,
        Err(message) => {
            let _ = to_client.send((tag, Fwd::Error(describe(message)))).await;
            let _ = to_client.send((tag, Fwd::End)).await;
            let _ = to_client.send((tag, Fwd::Done)).await;
            return;
        }
    };
    let PortConnection { stream, error } = conn;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let inbound = tokio::spawn(async move {
        while let Some(data) = from_client.recv().await {
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let out = to_client.clone();
    let outbound = async move {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 || out.send((tag, Fwd::Data(buf[..n].to_vec()))).await.is_err() {
                break;
            }
        }
        let _ = out.send((tag, Fwd::End)).await;
    };
    let errors = async {
        if let Some(message) = error.await {
            let _ = to_client.send((tag, Fwd::Error(describe(message)))).await;
        }
    };
    tokio::join!(outbound, errors);
    inbound.abort();
    let _ = to_client.send((tag, Fwd::Done)).await;
}

/// One client connection's streams in a SPDY session.
#[derive(Debug, Default)]
struct Pair {
    port: Option<u16>,
    error: Option<u32>,
    data: Option<u32>,
    /// The client's bytes to the port, once dialled.
    to_port: Option<mpsc::Sender<Vec<u8>>>,
}

/// Serves port-forward's SPDY session on `io`, dialling with `dial`, until the client goes.
// One select loop over the socket, the connections' output and the idle timer, as the exec
// session's; split, the state they share would travel through every piece.
pub async fn spdy_session<IO>(
    io: IO,
    dial: Dial,
    describe: Arc<dyn Fn(u16, String) -> String + Send + Sync>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut codec = HeaderCodec::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    let (events_tx, mut events) = mpsc::channel::<(u32, Fwd)>(64);
    let (mut buf, mut read) = (Vec::new(), vec![0u8; 16 * 1024]);
    let mut last_stream = 0;
    let mut out = Vec::new();
    'session: loop {
        tokio::select! {
            n = reader.read(&mut read) => {
                let n = match n {
                    Ok(0) | Err(_) => break 'session,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&read[..n]);
                loop {
                    let frame = match Frame::decode(&mut buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(error = %e, "SPDY port-forward: a bad frame; closing the session");
                            break 'session;
                        }
                    };
                    match frame {
                        Frame::SynStream { stream, headers, .. } => {
                            last_stream = last_stream.max(stream);
                            let Ok(headers) = codec.decode(&headers) else { break 'session };
                            let kind = value(&headers, "streamtype").map(str::to_string);
                            let port = value(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                            // Clients before requestID pair streams by id: error n, data n+2.
                            let request = value(&headers, "requestid").map(str::to_string).unwrap_or_else(|| {
                                let first = if kind.as_deref() == Some("data") { stream.saturating_sub(2) } else { stream };
                                format!("stream-{first}")
                            });
                            let (Some(kind @ ("error" | "data")), Some(port)) = (kind.as_deref(), port) else {
                                Frame::RstStream { stream, status: INVALID_STREAM }.encode(&mut out);
                                continue;
                            };
                            let Ok(reply) = codec.encode(&[]) else { break 'session };
                            Frame::SynReply { stream, fin: false, headers: reply }.encode(&mut out);
                            by_stream.insert(stream, request.clone());
                            let pair = pairs.entry(request).or_default();
                            pair.port = Some(port);
                            if kind == "error" { pair.error = Some(stream) } else { pair.data = Some(stream) }
                            if let (Some(data), Some(_), None) = (pair.data, pair.error, &pair.to_port) {
                                let (tx, rx) = mpsc::channel(16);
                                pair.to_port = Some(tx);
                                let describe = describe.clone();
                                tokio::spawn(forward(dial.clone(), port, rx, events_tx.clone(), data, move |m| describe(port, m)));
                            }
                        }
                        Frame::Data { stream, fin, data } => {
                            let Some(pair) = by_stream.get(&stream).and_then(|r| pairs.get_mut(r)) else { continue };
                            if pair.data != Some(stream) {
                                continue;
                            }
                            if !data.is_empty() && let Some(tx) = &pair.to_port {
                                let _ = tx.send(data).await;
                            }
                            if fin {
                                pair.to_port = None;
                            }
                        }
                        Frame::RstStream { stream, .. } => {
                            if let Some(pair) = by_stream.get(&stream).and_then(|r| pairs.get_mut(r)) {
                                pair.to_port = None;
                            }
                        }
                        Frame::Ping { id } => Frame::Ping { id }.encode(&mut out),
                        Frame::GoAway { .. } => break 'session,
                        _ => {}
                    }
                }
            }
            Some((data_stream, fwd)) = events.recv() => {
                let Some(pair) = by_stream.get(&data_stream).and_then(|r| pairs.get(r)) else { continue };
                let error_stream = pair.error.unwrap_or(data_stream);
                match fwd {
                    Fwd::Data(bytes) => Frame::Data { stream: data_stream, fin: false, data: bytes }.encode(&mut out),
                    Fwd::End => Frame::Data { stream: data_stream, fin: true, data: Vec::new() }.encode(&mut out),
                    Fwd::Error(message) => Frame::Data { stream: error_stream, fin: false, data: message.into_bytes() }.encode(&mut out),
                    Fwd::Done => {
                        Frame::Data { stream: error_stream, fin: true, data: Vec::new() }.encode(&mut out);
                        let request = by_stream.get(&data_stream).cloned().unwrap_or_default();
                        pairs.remove(&request);
                        by_stream.retain(|_, r| *r != request);
                    }
                }
            }
            _ = tokio::time::sleep(IDLE) => {
                tracing::info!("SPDY port-forward: no frame for {IDLE:?}; closing the session");
                break 'session;
            }
        }
        if !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
    Frame::GoAway {
        last_stream,
        status: GOAWAY_OK,
    }
    .encode(&mut out);
    let _ = writer.write_all(&out).await;
    let _ = writer.shutdown().await;
}

/// Runs `session` on the bytes of `socket`'s binary messages (SPDY tunnelled in a WebSocket).
pub async fn tunnel<F, Fut>(mut socket: WebSocket, session: F)
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(ours);
    let pump = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if to_session.write_all(&data).await.is_err() { break }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                n = from_session.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() { break },
                },
            }
        }
        let _ = to_session.shutdown().await;
        let _ = socket.send(Message::Close(None)).await;
    };
    tokio::join!(pump, session(theirs));
}

/// The ports of a WebSocket port-forward (`port=80&port=8080`, or comma separated).
pub fn ports(query: &str) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "port" || key == "ports" {
            for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let port =
                    p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        Error::BadRequest(format!("unable to parse {p:?} as a port"))
                    })?;
                ports.push(port);
            }
        }
    }
    if ports.is_empty() {
        return Err(Error::BadRequest(
            "query parameter \"port\" is required".into(),
        ));
    }
    Ok(ports)
}

/// Serves the WebSocket channel protocol for `ports` on `socket`: each port dialled at once, its
/// data on channel 2i and errors on 2i+1, each channel's first message the port.
pub async fn websocket_session(
    mut socket: WebSocket,
    ports: Vec<u16>,
    dial: Dial,
    describe: Arc<dyn Fn(u16, String) -> String + Send + Sync>,
) {
    let (events_tx, mut events) = mpsc::channel::<(usize, Fwd)>(64);
    let mut to_ports = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let mut first = vec![channel as u8];
            first.extend_from_slice(&port.to_le_bytes());
            if socket.send(Message::Binary(first.into())).await.is_err() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel(16);
        to_ports.push(Some(tx));
        let describe = describe.clone();
        tokio::spawn(forward(
            dial.clone(),
            port,
            rx,
            events_tx.clone(),
            i,
            move |m| describe(port, m),
        ));
    }
    drop(events_tx);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&channel, bytes)) = data.split_first() else { continue };
                    let i = channel as usize / 2;
                    if channel % 2 == 0 && !bytes.is_empty() && let Some(Some(tx)) = to_ports.get(i) {
                        let _ = tx.send(bytes.to_vec()).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            event = events.recv() => {
                let Some((i, fwd)) = event else { break };
                let message = match fwd {
                    Fwd::Data(bytes) => [&[(2 * i) as u8][..], &bytes].concat(),
                    Fwd::Error(text) => [&[(2 * i + 1) as u8][..], text.as_bytes()].concat(),
                    Fwd::End | Fwd::Done => continue,
                };
                if socket.send(Message::Binary(message.into())).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(IDLE) => break,
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// The `/portForward` handler.
pub async fn port_forward(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    spdy: std::result::Result<SpdyUpgrade, NotSpdy>,
) -> Result<Response> {
    let placed = pods::find_pod(shared.workloads.as_ref(), &namespace, &pod).await?;
    if !placed.provider.forwards_ports() {
        return Err(placed.error(placed.provider.refusal(
            "port-forward: its workloads run at a cloud provider that forwards no ports",
        )));
    }
    tracing::info!(pod = %placed.key, target = %placed.target, "kubelet API: port-forward");
    let (provider, workload) = (placed.provider.clone(), placed.workload.clone());
    let (key, target) = (placed.key.clone(), placed.target.clone());
    let dial: Dial = Arc::new(move |port| {
        let (provider, workload) = (provider.clone(), workload.clone());
        let (key, target) = (key.clone(), target.clone());
        Box::pin(async move {
            provider
                .port_forward(&workload, port)
                .await
                .map_err(|e| Error::provider(e, &key, &target).to_string())
        })
    });
    let uid = placed.pod.metadata.uid.clone().unwrap_or_default();
    let name = placed.key.clone();
    let describe: Arc<dyn Fn(u16, String) -> String + Send + Sync> =
        Arc::new(move |port, message| {
            format!("error forwarding port {port} to pod {name}, uid {uid}: {message}")
        });
    if let Ok(spdy) = spdy {
        if !spdy.offered().iter().any(|p| p == PORT_FORWARD) {
            return Err(Error::BadRequest(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {:?}, server supports [{PORT_FORWARD:?}]",
                spdy.offered()
            )));
        }
        return Ok(spdy.respond_raw(PORT_FORWARD, move |io| spdy_session(io, dial, describe)));
    }
    let Ok(ws) = ws else {
        return Err(Error::BadRequest(format!(
            "port-forward needs an upgrade: SPDY/3.1 with {PORT_FORWARD}, or a WebSocket with {TUNNELED} or {V4}"
        )));
    };
    let offered: Vec<String> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect();
    if offered.iter().any(|p| p == TUNNELED) {
        return Ok(ws
            .protocols([TUNNELED])
            .on_upgrade(move |socket| tunnel(socket, move |io| spdy_session(io, dial, describe)))
            .into_response());
    }
    if offered.iter().any(|p| p == V4) {
        let ports = ports(query.as_deref().unwrap_or_default())?;
        return Ok(ws
            .protocols([V4])
            .on_upgrade(move |socket| websocket_session(socket, ports, dial, describe))
            .into_response());
    }
    Err(Error::BadRequest(format!(
        "the WebSocket upgrade offers neither {TUNNELED} nor {V4}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::spdy::frame::tests::complete;

    /// Dials an in-memory echo server; port 9 refuses.
    fn echo() -> Dial {
        Arc::new(|port| {
            Box::pin(async move {
                if port == 9 {
                    return Err("connection refused".to_string());
                }
                let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    while let Ok(n) = theirs.read(&mut buf).await {
                        if n == 0 || theirs.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(PortConnection {
                    stream: Box::new(ours),
                    error: Box::pin(async { None }),
                })
            })
        })
    }

    fn describe() -> Arc<dyn Fn(u16, String) -> String + Send + Sync> {
        Arc::new(|port, m| format!("error forwarding port {port}: {m}"))
    }

    fn syn(codec: &mut HeaderCodec, stream: u32, kind: &str, port: &str, request: &str) -> Vec<u8> {
        let headers = codec
            .encode(&[("streamtype", kind), ("port", port), ("requestid", request)])
            .unwrap();
        let mut out = Vec::new();
        Frame::SynStream {
            stream,
            fin: false,
            headers,
        }
        .encode(&mut out);
        out
    }

    async fn frames_until(
        client: &mut tokio::io::DuplexStream,
        done: impl Fn(&[Frame]) -> bool,
    ) -> Vec<Frame> {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the session closed early; got {:?}",
                complete(&bytes)
            );
            bytes.extend_from_slice(&buf[..n]);
            let frames = complete(&bytes);
            if done(&frames) {
                return frames;
            }
        }
    }

    #[tokio::test]
    async fn a_data_and_error_stream_pair_is_dialled_and_its_bytes_come_back() {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        tokio::spawn(spdy_session(server, echo(), describe()));
        let mut codec = HeaderCodec::default();
        let mut opening = syn(&mut codec, 1, "error", "80", "0");
        opening.extend(syn(&mut codec, 3, "data", "80", "0"));
        Frame::Data {
            stream: 3,
            fin: false,
            data: b"ping".to_vec(),
        }
        .encode(&mut opening);
        client.write_all(&opening).await.unwrap();
        let frames = frames_until(&mut client, |f| {
            f.iter()
                .any(|f| matches!(f, Frame::Data { stream: 3, data, .. } if data == b"ping"))
        })
        .await;
        let replies: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { stream, .. } => Some(*stream),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![1, 3]);
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_dialled_says_why_on_the_error_stream_and_closes_it() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(spdy_session(server, echo(), describe()));
        let mut codec = HeaderCodec::default();
        let mut opening = syn(&mut codec, 1, "error", "9", "7");
        opening.extend(syn(&mut codec, 3, "data", "9", "7"));
        client.write_all(&opening).await.unwrap();
        let frames = frames_until(&mut client, |f| {
            f.iter().any(|f| {
                matches!(
                    f,
                    Frame::Data {
                        stream: 1,
                        fin: true,
                        ..
                    }
                )
            })
        })
        .await;
        assert!(
            frames.iter().any(|f| matches!(
                f,
                Frame::Data {
                    stream: 3,
                    fin: true,
                    ..
                }
            )),
            "the data stream is closed too, so the client stops waiting for it: {frames:?}"
        );
        let message: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    stream: 1, data, ..
                } => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(message, b"error forwarding port 9: connection refused");
    }

    #[tokio::test]
    async fn a_stream_without_a_port_is_reset() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(spdy_session(server, echo(), describe()));
        let mut codec = HeaderCodec::default();
        let headers = codec.encode(&[("streamtype", "data")]).unwrap();
        let mut opening = Vec::new();
        Frame::SynStream {
            stream: 1,
            fin: false,
            headers,
        }
        .encode(&mut opening);
        client.write_all(&opening).await.unwrap();
        let frames = frames_until(&mut client, |f| !f.is_empty()).await;
        assert_eq!(
            frames[0],
            Frame::RstStream {
                stream: 1,
                status: INVALID_STREAM
            }
        );
    }

    #[test]
    fn the_ports_of_a_websocket_port_forward_come_from_the_query() {
        assert_eq!(ports("port=80&port=8080").unwrap(), vec![80, 8080]);
        assert_eq!(ports("ports=80,443").unwrap(), vec![80, 443]);
        assert!(ports("").is_err());
        assert!(ports("port=http").is_err());
    }
}
