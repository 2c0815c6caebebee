//! SPDY/3.1 frames on the wire: the 8-byte header of control and data frames, the payload of
//! each control frame the kubelet protocol uses, and an incremental decoder. Header blocks stay
//! compressed here ([`headers`](super::headers) inflates them).

use super::Error;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// `FLAG_FIN` on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's half of the stream ends.
pub const FLAG_FIN: u8 = 0x01;
/// The largest payload a frame carries (24-bit length).
pub const MAX_PAYLOAD: usize = 0x00FF_FFFF;
/// RST_STREAM status: the stream id is not (or no longer) open.
pub const INVALID_STREAM: u32 = 2;
/// GOAWAY status: the session ends normally.
pub const GOAWAY_OK: u32 = 0;
/// The SETTINGS id of the initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// One frame. Header blocks (`headers`) are the compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The client opens a stream.
    SynStream {
        /// Stream id (odd: client-initiated).
        stream: u32,
        /// The client will send nothing on it.
        fin: bool,
        /// The compressed header block.
        headers: Vec<u8>,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// Stream id.
        stream: u32,
        /// This side will send nothing on it.
        fin: bool,
        /// The compressed header block.
        headers: Vec<u8>,
    },
    /// A stream is aborted.
    RstStream {
        /// Stream id.
        stream: u32,
        /// Why (1 protocol error, 5 cancel, ...).
        status: u32,
    },
    /// Session settings: of them only the peer's initial stream window matters here (flow
    /// control, [`flow`](super::flow)); a peer that sends SETTINGS does flow control.
    Settings {
        /// `SETTINGS_INITIAL_WINDOW_SIZE` (id 7), when present.
        initial_window: Option<u32>,
    },
    /// A liveness probe, answered with the same id.
    Ping {
        /// The probe's id.
        id: u32,
    },
    /// The session ends.
    GoAway {
        /// The last stream the sender accepted.
        last_stream: u32,
        /// 0 ok, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream (compressed).
    Headers {
        /// Stream id.
        stream: u32,
        /// The sender's half ends.
        fin: bool,
        /// The compressed header block.
        headers: Vec<u8>,
    },
    /// Flow-control credit.
    WindowUpdate {
        /// Stream id (0: the session).
        stream: u32,
        /// Bytes added to the window.
        delta: u32,
    },
    /// Bytes of a stream.
    Data {
        /// Stream id.
        stream: u32,
        /// The sender's half ends with these bytes.
        fin: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A control frame type this server does not use (ignored, as the protocol says).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

fn u32_at(payload: &[u8], at: usize) -> Result<u32, Error> {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::Frame(format!("payload of {} bytes is too short", payload.len())))
}

fn stream_at(payload: &[u8], at: usize) -> Result<u32, Error> {
    Ok(u32_at(payload, at)? & 0x7FFF_FFFF)
}

impl Frame {
    /// Reads one frame from the front of `buf`, removing its bytes; `None` while `buf` holds
    /// less than a whole frame.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Frame>, Error> {
        let Some(head) = buf.get(..8) else {
            return Ok(None);
        };
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let control = head[0] & 0x80 != 0;
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let payload: Vec<u8> = buf.drain(..8 + length).skip(8).collect();
        let fin = flags & FLAG_FIN != 0;
        if !control {
            return Ok(Some(Frame::Data {
                stream: word & 0x7FFF_FFFF,
                fin,
                data: payload,
            }));
        }
        let version = ((word >> 16) & 0x7FFF) as u16;
        if version != VERSION {
            return Err(Error::Frame(format!(
                "SPDY version {version}, not {VERSION}"
            )));
        }
        Frame::control(word as u16, fin, payload).map(Some)
    }

    fn control(kind: u16, fin: bool, payload: Vec<u8>) -> Result<Frame, Error> {
        Ok(match kind {
            kind::SYN_STREAM => Frame::SynStream {
                stream: stream_at(&payload, 0)?,
                fin,
                headers: payload.get(10..).unwrap_or_default().to_vec(),
            },
            kind::SYN_REPLY => Frame::SynReply {
                stream: stream_at(&payload, 0)?,
                fin,
                headers: payload.get(4..).unwrap_or_default().to_vec(),
            },
            kind::HEADERS => Frame::Headers {
                stream: stream_at(&payload, 0)?,
                fin,
                headers: payload.get(4..).unwrap_or_default().to_vec(),
            },
            kind::RST_STREAM => Frame::RstStream {
                stream: stream_at(&payload, 0)?,
                status: u32_at(&payload, 4)?,
            },
            kind::SETTINGS => {
                let count = u32_at(&payload, 0)? as usize;
                let mut initial_window = None;
                for i in 0..count.min(payload.len() / 8) {
                    let id = u32_at(&payload, 4 + 8 * i)? & 0x00FF_FFFF;
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        initial_window = Some(u32_at(&payload, 8 + 8 * i)? & 0x7FFF_FFFF);
                    }
                }
                Frame::Settings { initial_window }
            }
            kind::PING => Frame::Ping {
                id: u32_at(&payload, 0)?,
            },
            kind::GOAWAY => Frame::GoAway {
                last_stream: stream_at(&payload, 0)?,
                status: u32_at(&payload, 4)?,
            },
            kind::WINDOW_UPDATE => Frame::WindowUpdate {
                stream: stream_at(&payload, 0)?,
                delta: u32_at(&payload, 4)? & 0x7FFF_FFFF,
            },
            kind => Frame::Unknown { kind },
        })
    }

    /// Appends the frame's bytes to `out`. A payload over [`MAX_PAYLOAD`] is the caller's bug
    /// (data is sent in smaller chunks).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, parts: &[&[u8]]| {
            let length: usize = parts.iter().map(|p| p.len()).sum();
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&length_word(flags, length));
            parts.iter().for_each(|p| out.extend_from_slice(p));
        };
        let flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match self {
            Frame::Data { stream, fin, data } => {
                out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
                out.extend_from_slice(&length_word(flag(*fin), data.len()));
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => control(
                out,
                kind::SYN_STREAM,
                flag(*fin),
                &[&stream.to_be_bytes(), &[0; 4], &[0, 0], headers],
            ),
            Frame::SynReply {
                stream,
                fin,
                headers,
            } => control(
                out,
                kind::SYN_REPLY,
                flag(*fin),
                &[&stream.to_be_bytes(), headers],
            ),
            Frame::Headers {
                stream,
                fin,
                headers,
            } => control(
                out,
                kind::HEADERS,
                flag(*fin),
                &[&stream.to_be_bytes(), headers],
            ),
            Frame::RstStream { stream, status } => control(
                out,
                kind::RST_STREAM,
                0,
                &[&stream.to_be_bytes(), &status.to_be_bytes()],
            ),
            Frame::Settings { initial_window } => {
                let entry = initial_window.map(|w| {
                    [SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes(), w.to_be_bytes()].concat()
                });
                let count = u32::from(entry.is_some()).to_be_bytes();
                control(
                    out,
                    kind::SETTINGS,
                    0,
                    &[&count, entry.as_deref().unwrap_or_default()],
                )
            }
            Frame::Ping { id } => control(out, kind::PING, 0, &[&id.to_be_bytes()]),
            Frame::GoAway {
                last_stream,
                status,
            } => control(
                out,
                kind::GOAWAY,
                0,
                &[&last_stream.to_be_bytes(), &status.to_be_bytes()],
            ),
            Frame::WindowUpdate { stream, delta } => control(
                out,
                kind::WINDOW_UPDATE,
                0,
                &[&stream.to_be_bytes(), &delta.to_be_bytes()],
            ),
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
        }
    }
}

/// Flags (8 bits) and length (24 bits).
fn length_word(flags: u8, length: usize) -> [u8; 4] {
    debug_assert!(length <= MAX_PAYLOAD, "a frame of {length} bytes");
    let l = (length as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

#[cfg(test)]
pub(in crate::kubelet) mod tests {
    use super::*;

    /// The whole frames in `bytes`, in order (a partial last one is left out).
    pub(in crate::kubelet) fn complete(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = bytes.to_vec();
        let mut frames = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    /// Every frame in `bytes`, in order.
    pub(in crate::kubelet) fn all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = bytes.to_vec();
        let mut frames = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    #[test]
    fn the_frames_kubectl_sends_for_exec_with_stdin_decode_in_order() {
        let frames = all(include_bytes!("testdata/kubectl-1.37.1-exec-i-cat.bin"));
        let opened: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynStream { stream, fin, .. } => Some((*stream, *fin)),
                _ => None,
            })
            .map(|(stream, fin)| {
                assert!(!fin, "kubectl keeps every stream open for writing");
                stream
            })
            .collect();
        assert_eq!(opened, vec![1, 3, 5, 7]);
        let stdin: Vec<(&[u8], bool)> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    stream: 3,
                    fin,
                    data,
                } => Some((data.as_slice(), *fin)),
                _ => None,
            })
            .collect();
        assert_eq!(stdin, vec![(&b"hello-stdin"[..], false), (&b""[..], true)]);
        assert_eq!(
            frames.last(),
            Some(&Frame::GoAway {
                last_stream: 0,
                status: GOAWAY_OK
            })
        );
        assert!(frames.contains(&Frame::RstStream {
            stream: 5,
            status: 5
        }));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest_of_its_bytes() {
        let mut whole = Vec::new();
        Frame::Data {
            stream: 5,
            fin: true,
            data: b"out".to_vec(),
        }
        .encode(&mut whole);
        let mut buf = whole[..9].to_vec();
        assert_eq!(Frame::decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&whole[9..]);
        assert_eq!(
            Frame::decode(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 5,
                fin: true,
                data: b"out".to_vec()
            })
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_the_server_sends_decodes_to_itself() {
        let frames = vec![
            Frame::SynReply {
                stream: 3,
                fin: false,
                headers: vec![1, 2, 3],
            },
            Frame::Data {
                stream: 1,
                fin: true,
                data: br#"{"status":"Success"}"#.to_vec(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream: 9,
                status: INVALID_STREAM,
            },
            Frame::GoAway {
                last_stream: 7,
                status: GOAWAY_OK,
            },
            Frame::WindowUpdate {
                stream: 0,
                delta: 65536,
            },
            Frame::Settings {
                initial_window: Some(1 << 20),
            },
            Frame::Settings {
                initial_window: None,
            },
        ];
        let mut wire = Vec::new();
        frames.iter().for_each(|f| f.encode(&mut wire));
        assert_eq!(all(&wire), frames);
    }

    #[test]
    fn a_control_frame_of_another_version_is_a_protocol_error() {
        let mut buf = vec![0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        let err = Frame::decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("SPDY version 2"), "{err}");
    }
}
