//! WireGuard over WebSockets, the laptop's side, as flyctl does it: `wss://<gateway>:443/`,
//! the magic 0x2FACED77, then each datagram as a 4-byte big-endian length and the
//! datagram. A [`bridge`] carries datagrams between a local datagram socket and such a
//! connection: the in-process tunnel's socket pair (`--transport websocket|auto`), or a
//! UDP port on 127.0.0.1 that kernel WireGuard uses as its endpoint (`wgtool wsproxy`).
//!
//! The gateway's certificate is self-signed, so it is pinned as `wgtool serve`'s is: by its
//! SHA-256 (`--websocket-fingerprint`, as meshd logs it), or on first use (`pins`).

pub mod bridge;
// meshd's file, compiled here too: one framing for both ends. The gateway's half (the
// magic check, the end of a stream) goes unused on this side.
#[allow(dead_code)]
#[path = "../../meshd/src/websocket/framing.rs"]
pub mod framing;
pub mod pins;

/// How the in-process tunnel reaches its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Transport {
    Udp,
    Websocket,
    /// UDP first; WebSocket when no handshake completes over UDP within a few seconds.
    Auto,
}

impl Transport {
    /// As `--transport` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Websocket => "websocket",
            Transport::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Result<Transport, String> {
        [Transport::Udp, Transport::Websocket, Transport::Auto]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("transport `{s}`: udp, websocket or auto"))
    }
}

/// `--websocket-fingerprint` as people paste it (as `--api-fingerprint` is read).
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    crate::pin::parse_fingerprint(s)
        .map_err(|e| e.replacen("api-fingerprint", "websocket-fingerprint", 1))
}
