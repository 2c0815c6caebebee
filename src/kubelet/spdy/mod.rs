//! SPDY/3.1 for the kubelet API's exec and attach, as the kubelet speaks it to the apiserver
//! (which talks SPDY to kubelets from Kubernetes 1.30 on, whatever kubectl used) and as kubectl
//! speaks it with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` or when its WebSocket upgrade fails:
//! the upgrade's answer ([`upgrade`]), frames ([`frame`]), zlib header blocks with the protocol's
//! dictionary ([`headers`]) and one server session ([`session`]). No maintained crate serves
//! SPDY/3.1 over a hyper upgrade (`spdy-mux` is a client multiplexer over WebSockets), hence
//! this small module.

pub mod flow;
pub mod frame;
pub mod headers;
pub mod session;
pub mod upgrade;

pub use session::serve;
pub use upgrade::{SpdyUpgrade, negotiate};

/// What goes wrong in a SPDY session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer sent a malformed frame. Not retryable: the session ends.
    #[error("SPDY frame: {0}")]
    Frame(String),
    /// A header block did not (de)compress or parse. Not retryable: the session ends.
    #[error("SPDY header block: {0}")]
    Headers(String),
    /// Reading or writing the connection failed (the client went). Not retryable.
    #[error("SPDY connection: {0}")]
    Io(#[source] std::io::Error),
}
