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
