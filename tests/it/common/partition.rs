//! A network partition between one client and a TCP server, of the project's own: a relay that
//! forwards bytes unchanged (TLS passes through untouched) until it is cut, and then, as a lost
//! route does, forwards nothing at all: open connections go silent (neither closed nor answered)
//! and new ones are accepted and never served. Healed, it closes what the cut left hanging (as
//! TCP connections idle through a partition end up reset) and forwards again.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay in front of one server.
pub struct Partition {
    /// `127.0.0.1:<port>` to connect to instead of the server.
    pub addr: std::net::SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Starts relaying to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(watch::channel(false).0);
        let upstream = upstream.to_owned();
        let accept = {
            let cut = cut.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream.clone(), cut.subscribe()));
                }
            })
        };
        Partition { addr, cut, accept }
    }

    /// Cuts the route: from now on nothing passes either way.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals it: connections left hanging are closed, new ones are relayed again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_replace(false);
    }
}

/// One connection: relayed while the route is up; silent, then closed, once it is cut.
async fn relay(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut server) = TcpStream::connect(&upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = cut.wait_for(|cut| *cut) => {}
        }
        // The server side of a partition sees nothing either; closing it is what its own
        // timeouts would do eventually.
        drop(server);
    }
    // Cut: hold the client's connection open and silent until the route heals.
    let _ = cut.wait_for(|cut| !*cut).await;
    let _ = client.shutdown().await;
}
