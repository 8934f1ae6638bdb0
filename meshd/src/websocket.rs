//! WireGuard over WebSockets, the gateway's side, compatible with flyctl: a laptop whose
//! network drops UDP dials `wss://<gateway>:443/`, writes the magic 0x2FACED77, then each
//! WireGuard datagram as a 4-byte big-endian length and the datagram. The WebSocket's
//! binary messages are one byte stream (flyctl writes through a `net.Conn` over the
//! socket, so a frame may span messages and a message may hold several frames).
//!
//! - `framing`: the byte stream to datagrams and back, sans-IO; every bad input has a
//!   reason.
//! - `tls`: the listener's certificate, given or self-signed and kept.
//! - `connections`: the open connections the core's answers go out on, and their counters.
//! - `listener`: accepting, the handshakes, the per-connection loop into the core.

pub mod connections;
pub mod framing;
pub mod listener;
pub mod tls;

pub use connections::{Close, Connections};
pub use listener::serve;

use std::sync::Arc;

use crate::core::Endpoint;

/// What the listener needs of the daemon: where connections and their counters live, and the
/// path framed datagrams take into the core (the same as UDP's). The daemon's shell is one;
/// the listener imports nothing of the daemon's.
pub trait PeerPath: Send + Sync + 'static {
    /// What one connection's loop keeps between calls (the daemon's output batch).
    type Scratch: Default + Send;
    fn connections(&self) -> &Arc<Connections>;
    /// The listener is up, with this certificate fingerprint when it serves TLS.
    fn listening(&self, fingerprint: Option<String>);
    /// Takes every datagram `frames` holds whole, from connection `from`. An error means
    /// the stream is bad and the connection is to be closed.
    fn datagrams(
        &self,
        from: Endpoint,
        frames: &mut framing::Deframer,
        scratch: &mut Self::Scratch,
    ) -> Result<usize, framing::FrameError>;
}
