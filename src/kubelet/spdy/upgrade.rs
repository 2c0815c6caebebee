//! The SPDY/3.1 upgrade of an exec or attach request: recognised by `Upgrade: SPDY/3.1`, the
//! channel protocol chosen from the client's `X-Stream-Protocol-Version` offers (its order, the
//! first one served, as the kubelet's handshake does), answered `101 Switching Protocols` naming
//! it, then the session served on the upgraded connection.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::kubelet::channels::{Protocol, Session, Wanted, pair};
use crate::kubelet::error::Error;

/// The upgrade token.
pub const SPDY_31: &str = "SPDY/3.1";
/// The header carrying the channel protocol offers and the choice.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The channel protocols served over SPDY, most preferred first. Over SPDY v5 is v4 (its one
/// addition, closing stdin, is SPDY's own FIN); kubectl 1.37 offers both.
pub const SERVED: [Protocol; 5] = Protocol::SPDY;

/// An exec or attach request that asks for SPDY/3.1.
pub struct SpdyUpgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
    offered: Vec<String>,
}

/// The request does not ask for SPDY (it may ask for a WebSocket).
#[derive(Debug)]
pub struct NotSpdy;

impl IntoResponse for NotSpdy {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, "not a SPDY/3.1 upgrade").into_response()
    }
}

/// Whether `headers` ask for a SPDY/3.1 upgrade.
pub fn asks_for_spdy(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SPDY_31));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// The client's offers, in its order (repeated headers, or comma-separated).
pub fn offers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first of the client's offers that is served.
pub fn negotiate(offered: &[String]) -> Option<Protocol> {
    Protocol::negotiate(offered.iter().map(String::as_str), &SERVED)
}

impl<S: Send + Sync> FromRequestParts<S> for SpdyUpgrade {
    type Rejection = NotSpdy;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if !asks_for_spdy(&parts.headers) {
            return Err(NotSpdy);
        }
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(NotSpdy)?;
        Ok(SpdyUpgrade {
            on_upgrade,
            offered: offers(&parts.headers),
        })
    }
}

impl SpdyUpgrade {
    /// The channel protocol to speak, or a 400 naming what the client offered and what is
    /// served.
    pub fn protocol(&self) -> Result<Protocol, Error> {
        negotiate(&self.offered).ok_or_else(|| {
            Error::BadRequest(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {:?}, server supports {:?}",
                self.offered,
                SERVED.map(Protocol::name)
            ))
        })
    }

    /// The offered protocols (`X-Stream-Protocol-Version`).
    pub fn offered(&self) -> &[String] {
        &self.offered
    }

    /// Answers 101 with `protocol`, then hands the upgraded connection to `run` (port-forward's
    /// session, which is not an exec's).
    pub fn respond_raw<F, Fut>(self, protocol: &'static str, run: F) -> Response
    where
        F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => run(TokioIo::new(upgraded)).await,
                Err(e) => tracing::info!(error = %e, "kubelet API: the SPDY upgrade failed"),
            }
        });
        switching(protocol)
    }

    /// Answers 101 and, once the connection is upgraded, serves the SPDY session for `wanted`
    /// while `run` drives the exec or attach on the other ends.
    pub fn respond<F, Fut>(self, protocol: Protocol, wanted: Wanted, run: F) -> Response
    where
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::info!(error = %e, "kubelet API: the SPDY upgrade failed");
                    return;
                }
            };
            let (ends, session) = pair();
            let running = tokio::spawn(run(session));
            if let Err(e) = super::serve(TokioIo::new(upgraded), protocol, wanted, ends).await {
                tracing::info!(error = %e, "kubelet API: the SPDY session ended with an error");
            }
            // The client has gone: the exec's ends are closed, so it ends too.
            let _ = running.await;
        });
        switching(protocol.name())
    }
}

/// The 101 answer to a SPDY/3.1 upgrade speaking `protocol`.
fn switching(protocol: &'static str) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_31));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_served_protocol_in_kubectls_order_is_chosen() {
        let mut h = HeaderMap::new();
        for p in [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "channel.k8s.io",
        ] {
            h.append(PROTOCOL_HEADER, HeaderValue::from_static(p));
        }
        assert_eq!(negotiate(&offers(&h)), Some(Protocol::V5));
        let older = vec!["v4.channel.k8s.io".to_string(), "v5.channel.k8s.io".into()];
        assert_eq!(negotiate(&older), Some(Protocol::V4));
        assert_eq!(
            negotiate(&["v3.channel.k8s.io".to_string()]),
            Some(Protocol::V3)
        );
        assert_eq!(
            negotiate(&["channel.k8s.io".to_string()]),
            Some(Protocol::V1)
        );
        assert_eq!(negotiate(&["v9.channel.k8s.io".to_string()]), None);
    }

    #[test]
    fn only_an_upgrade_to_spdy_31_is_spdy() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!asks_for_spdy(&h), "no Connection: Upgrade");
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert!(asks_for_spdy(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!asks_for_spdy(&h));
    }
}
