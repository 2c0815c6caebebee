//! SPDY/3.1 flow control, server side: a send window per stream (the peer's initial window,
//! 64 KiB unless its SETTINGS say otherwise) and one for the session (64 KiB), each shrunk by
//! every DATA byte sent and grown by the peer's WINDOW_UPDATEs; DATA goes out only within both.
//! As receiver, a WINDOW_UPDATE goes back for a stream (and the session) once half a window of
//! its bytes has been taken in, so a peer that honours our windows keeps sending.
//!
//! Flow control is on for a session once the peer shows it does it: a SETTINGS or a
//! WINDOW_UPDATE frame. Until then windows are counted but not enforced and no WINDOW_UPDATE is
//! sent: the SPDY clients of kubelets (client-go's moby/spdystream, in kubectl and in every
//! apiserver) never send either and ignore windows, as the kubelet's own server does; holding
//! their output at 64 KiB would stall every exec, and they have no use for our updates.

use std::collections::HashMap;

use super::frame::Frame;

/// SPDY/3.1's initial window, for streams and for the session.
pub const INITIAL_WINDOW: i64 = 65_536;

/// The flow-control state of one session.
#[derive(Debug)]
pub struct Flow {
    on: bool,
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
    taken: HashMap<u32, i64>,
    session_taken: i64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            on: false,
            initial: INITIAL_WINDOW,
            session: INITIAL_WINDOW,
            streams: HashMap::new(),
            taken: HashMap::new(),
            session_taken: 0,
        }
    }
}

impl Flow {
    /// Whether the peer does flow control (windows are enforced).
    pub fn enforced(&self) -> bool {
        self.on
    }

    /// The peer's SETTINGS: flow control is on; a new initial window moves every stream's
    /// window by the difference (SPDY/3.1 section 2.6.8).
    pub fn on_settings(&mut self, initial_window: Option<u32>) {
        self.on = true;
        if let Some(new) = initial_window {
            let delta = i64::from(new) - self.initial;
            self.streams.values_mut().for_each(|w| *w += delta);
            self.initial = i64::from(new);
        }
    }

    /// The peer's WINDOW_UPDATE: flow control is on; the stream's (0: the session's) window
    /// grows by `delta`.
    pub fn on_window_update(&mut self, stream: u32, delta: u32) {
        self.on = true;
        let delta = i64::from(delta);
        if stream == 0 {
            self.session += delta;
        } else {
            *self.streams.entry(stream).or_insert(self.initial) += delta;
        }
    }

    /// How many bytes of `stream` may go out now.
    pub fn sendable(&self, stream: u32) -> usize {
        if !self.on {
            return usize::MAX;
        }
        let window = self.streams.get(&stream).copied().unwrap_or(self.initial);
        usize::try_from(window.min(self.session).max(0)).unwrap_or(0)
    }

    /// Counts `n` bytes of `stream` sent.
    pub fn sent(&mut self, stream: u32, n: usize) {
        let n = n as i64;
        self.session -= n;
        *self.streams.entry(stream).or_insert(self.initial) -= n;
    }

    /// Counts `n` bytes of `stream` taken in; the WINDOW_UPDATEs to send back, if any.
    pub fn received(&mut self, stream: u32, n: usize) -> Vec<Frame> {
        if !self.on || n == 0 {
            return Vec::new();
        }
        let n = n as i64;
        let mut updates = Vec::new();
        let taken = self.taken.entry(stream).or_default();
        *taken += n;
        if *taken >= INITIAL_WINDOW / 2 {
            updates.push(Frame::WindowUpdate {
                stream,
                delta: *taken as u32,
            });
            *taken = 0;
        }
        self.session_taken += n;
        if self.session_taken >= INITIAL_WINDOW / 2 {
            updates.push(Frame::WindowUpdate {
                stream: 0,
                delta: self.session_taken as u32,
            });
            self.session_taken = 0;
        }
        updates
    }

    /// Forgets a closed stream.
    pub fn closed(&mut self, stream: u32) {
        self.streams.remove(&stream);
        self.taken.remove(&stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_never_speaks_of_windows_is_not_held_to_them_nor_sent_updates() {
        let mut flow = Flow::default();
        flow.sent(1, 1 << 20);
        assert_eq!(flow.sendable(1), usize::MAX);
        assert!(flow.received(3, 1 << 20).is_empty());
    }

    #[test]
    fn once_the_peer_updates_windows_a_stream_sends_within_its_window_and_the_sessions() {
        let mut flow = Flow::default();
        flow.on_window_update(1, 0);
        assert!(flow.enforced());
        assert_eq!(flow.sendable(1), 65_536);
        flow.sent(1, 60_000);
        assert_eq!(flow.sendable(1), 5_536);
        // Another stream has its own window, but shares the session's.
        assert_eq!(flow.sendable(5), 5_536);
        flow.on_window_update(0, 100_000);
        assert_eq!(flow.sendable(5), 65_536);
        flow.sent(1, 5_536);
        assert_eq!(flow.sendable(1), 0);
        flow.on_window_update(1, 1_000);
        assert_eq!(flow.sendable(1), 1_000);
    }

    #[test]
    fn a_new_initial_window_in_settings_moves_every_open_streams_window() {
        let mut flow = Flow::default();
        flow.sent(1, 10_000);
        flow.on_settings(Some(16_384));
        flow.on_window_update(0, 1 << 20);
        assert_eq!(flow.sendable(1), 16_384 - 10_000);
        assert_eq!(
            flow.sendable(7),
            16_384,
            "a new stream starts at the new window"
        );
    }

    #[test]
    fn half_a_window_taken_in_is_given_back_for_the_stream_and_the_session() {
        let mut flow = Flow::default();
        flow.on_settings(None);
        assert!(flow.received(3, 20_000).is_empty());
        assert_eq!(
            flow.received(3, 20_000),
            vec![
                Frame::WindowUpdate {
                    stream: 3,
                    delta: 40_000
                },
                Frame::WindowUpdate {
                    stream: 0,
                    delta: 40_000
                }
            ]
        );
    }
}
