//! Where a peer's datagrams go: a UDP address, or a WebSocket connection a gateway holds
//! for a peer behind a network that drops UDP. The peer's last authenticated datagram
//! decides which (roaming), so a laptop may move from one to the other and back.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A WebSocket connection the shell holds; never reused while meshd runs.
pub type ConnectionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Udp(SocketAddr),
    /// Connection `conn`, from `remote` (the TCP peer: what `wg show` shows, and what
    /// cookie replies are keyed on).
    WebSocket {
        conn: ConnectionId,
        remote: SocketAddr,
    },
}

/// The transports, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    WebSocket,
}

impl Endpoint {
    /// The address on the wire (the TCP peer's for a WebSocket).
    pub fn addr(self) -> SocketAddr {
        match self {
            Endpoint::Udp(a) | Endpoint::WebSocket { remote: a, .. } => a,
        }
    }

    pub fn ip(self) -> IpAddr {
        self.addr().ip()
    }

    pub fn transport(self) -> Transport {
        match self {
            Endpoint::Udp(_) => Transport::Udp,
            Endpoint::WebSocket { .. } => Transport::WebSocket,
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Endpoint {
        Endpoint::Udp(a)
    }
}

/// As `wg show` wants it: an address and port, whatever the transport.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}
