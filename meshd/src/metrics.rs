//! Prometheus text, served over a minimal HTTP/1.0 responder (one scrape at a time is
//! plenty for a node exporter's traffic).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::core::{Counters, Drop};
use crate::websocket::Close;

pub struct Sample {
    pub counters: Counters,
    /// IPv4 fragments joined to the one before them on the way to the TUN.
    pub fragments_joined: u64,
    /// IPv6 sources holding a NAT64 pool address at this gateway (4via6 to sites).
    pub nat64_bindings: usize,
    /// One per configured peer, in the order of the peer table.
    pub per_peer: Vec<PeerSample>,
    pub peers: usize,
    pub peers_with_session: usize,
    /// Gateways: laptops and sites registered here, and those of them holding a tunnel.
    pub peers_registered: usize,
    pub peers_active: usize,
    pub registry_reachable: Option<bool>,
    pub registry_failures: u64,
    /// The registry revision the peers and routes were last brought to.
    pub registry_revision: u64,
    /// Peers whose endpoint is a WebSocket connection (the rest of `peers` with an endpoint
    /// are on UDP).
    pub peers_on_websocket: usize,
    /// The gateway's WebSocket listener, when it has one.
    pub websocket: Option<WebSocketSample>,
}

pub struct WebSocketSample {
    pub open: u64,
    pub accepted: u64,
    pub refused: u64,
    pub queue_full: u64,
    pub closed: Vec<(Close, u64)>,
    pub fingerprint: Option<String>,
}

/// What the metrics show of one peer, as `wg show` does: by name (`node/<name>`,
/// `peer/<org>/<name>`, empty for peers made over UAPI) and public key.
pub struct PeerSample {
    pub name: String,
    pub public_key: String,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Seconds since the Unix epoch, 0 before the first handshake (as wireguard exporters
    /// give it).
    pub latest_handshake: u64,
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

pub fn render(s: &Sample) -> String {
    let c = &s.counters;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
        let _ = writeln!(o, "# HELP meshd_{name} {help}\n# TYPE meshd_{name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(o, "meshd_{name}{labels} {v}");
        }
    };
    metric(
        "peers",
        "gauge",
        "WireGuard peers holding a tunnel (what `wg show` lists): other nodes, and at a \
         gateway the registered peers that are active.",
        &[("", s.peers as u64)],
    );
    metric(
        "peers_with_session",
        "gauge",
        "Peers with an established session.",
        &[("", s.peers_with_session as u64)],
    );
    metric(
        "peers_registered",
        "gauge",
        "Laptops and sites registered at this gateway, with or without a tunnel.",
        &[("", s.peers_registered as u64)],
    );
    metric(
        "peers_active",
        "gauge",
        "Registered peers holding a tunnel now (made from their first handshake, evicted \
         when idle).",
        &[("", s.peers_active as u64)],
    );
    metric(
        "tunnels_made_total",
        "counter",
        "Tunnels made just in time for registered peers.",
        &[("", c.tunnels_made)],
    );
    metric(
        "tunnels_evicted_total",
        "counter",
        "Just-in-time tunnels dropped: idle, never confirmed, or refused their initiation.",
        &[("", c.tunnels_evicted)],
    );
    metric(
        "wakes_total",
        "counter",
        "Handshakes the gateway started toward a registered peer that sent data on the \
         session of its evicted tunnel.",
        &[("", c.wakes)],
    );
    metric(
        "handshakes_total",
        "counter",
        "Handshake steps completed.",
        &[("", c.handshakes)],
    );
    metric(
        "udp_packets_total",
        "counter",
        "WireGuard datagrams by direction.",
        &[
            ("{direction=\"rx\"}", c.udp_rx_packets),
            ("{direction=\"tx\"}", c.udp_tx_packets),
        ],
    );
    metric(
        "udp_bytes_total",
        "counter",
        "WireGuard datagram bytes by direction.",
        &[
            ("{direction=\"rx\"}", c.udp_rx_bytes),
            ("{direction=\"tx\"}", c.udp_tx_bytes),
        ],
    );
    metric(
        "transport_datagrams_total",
        "counter",
        "WireGuard datagrams by transport (udp, or websocket: framed on a gateway's \
         WebSocket connections) and direction.",
        &[
            ("{transport=\"udp\",direction=\"rx\"}", c.udp_rx_packets),
            ("{transport=\"udp\",direction=\"tx\"}", c.udp_tx_packets),
            (
                "{transport=\"websocket\",direction=\"rx\"}",
                c.websocket_rx_packets,
            ),
            (
                "{transport=\"websocket\",direction=\"tx\"}",
                c.websocket_tx_packets,
            ),
        ],
    );
    metric(
        "transport_bytes_total",
        "counter",
        "WireGuard datagram bytes by transport and direction (frame headers not counted).",
        &[
            ("{transport=\"udp\",direction=\"rx\"}", c.udp_rx_bytes),
            ("{transport=\"udp\",direction=\"tx\"}", c.udp_tx_bytes),
            (
                "{transport=\"websocket\",direction=\"rx\"}",
                c.websocket_rx_bytes,
            ),
            (
                "{transport=\"websocket\",direction=\"tx\"}",
                c.websocket_tx_bytes,
            ),
        ],
    );
    metric(
        "peers_on_websocket",
        "gauge",
        "Peers whose last authenticated datagram came over a WebSocket connection (their \
         answers go back on it).",
        &[("", s.peers_on_websocket as u64)],
    );
    if let Some(w) = &s.websocket {
        metric(
            "websocket_connections",
            "gauge",
            "WebSocket connections open (in their handshakes or carrying frames).",
            &[("", w.open)],
        );
        metric(
            "websocket_connections_total",
            "counter",
            "WebSocket connections by outcome at accept: accepted, or refused at the \
             connection limit.",
            &[
                ("{result=\"accepted\"}", w.accepted),
                ("{result=\"refused\"}", w.refused),
            ],
        );
        let closed: Vec<(String, u64)> = w
            .closed
            .iter()
            .map(|(c, n)| (format!("{{reason=\"{}\"}}", c.as_str()), *n))
            .collect();
        let closed: Vec<(&str, u64)> = closed.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "websocket_closed_total",
            "counter",
            "WebSocket connections closed, by reason (bad_magic, empty_frame, \
             frame_too_long, truncated: not flyctl framing).",
            &closed,
        );
        metric(
            "websocket_queue_full_total",
            "counter",
            "Datagrams for a WebSocket connection dropped because its send queue was full.",
            &[("", w.queue_full)],
        );
        if let Some(fp) = &w.fingerprint {
            let label = format!("{{sha256=\"{fp}\"}}");
            metric(
                "websocket_certificate_info",
                "gauge",
                "The WebSocket listener's certificate fingerprint, which laptops pin.",
                &[(label.as_str(), 1)],
            );
        }
    }
    metric(
        "tun_packets_total",
        "counter",
        "Inner packets by direction (rx: read from the TUN).",
        &[
            ("{direction=\"rx\"}", c.tun_rx_packets),
            ("{direction=\"tx\"}", c.tun_tx_packets),
        ],
    );
    metric(
        "tun_bytes_total",
        "counter",
        "Inner bytes by direction.",
        &[
            ("{direction=\"rx\"}", c.tun_rx_bytes),
            ("{direction=\"tx\"}", c.tun_tx_bytes),
        ],
    );
    metric(
        "tun_fragments_joined_total",
        "counter",
        "IPv4 fragments that arrived with the rest of their datagram and went to the TUN \
         joined to it (the kernel reassembles the others).",
        &[("", s.fragments_joined)],
    );
    metric(
        "nat64_bindings",
        "gauge",
        "IPv6 sources holding an address of the NAT64 pool (100.127.0.0/16) toward sites' \
         IPv4 LANs; bounded by the pool's size.",
        &[("", s.nat64_bindings as u64)],
    );
    metric(
        "forwarded_total",
        "counter",
        "Packets passed between peers.",
        &[("", c.forwarded)],
    );
    let drops: Vec<(String, u64)> = Drop::ALL
        .iter()
        .map(|d| (format!("{{reason=\"{}\"}}", d.as_str()), c.drops(*d)))
        .collect();
    let drops: Vec<(&str, u64)> = drops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "drops_total",
        "counter",
        "Packets dropped, by reason.",
        &drops,
    );
    let peer_labels: Vec<String> = s
        .per_peer
        .iter()
        .map(|p| {
            format!(
                "{{peer=\"{}\",public_key=\"{}\"}}",
                label_value(&p.name),
                label_value(&p.public_key)
            )
        })
        .collect();
    let per_peer = |f: fn(&PeerSample) -> u64| -> Vec<(&str, u64)> {
        peer_labels
            .iter()
            .zip(&s.per_peer)
            .map(|(l, p)| (l.as_str(), f(p)))
            .collect()
    };
    metric(
        "peer_transmit_bytes_total",
        "counter",
        "Bytes sent to a peer on the wire, handshakes included.",
        &per_peer(|p| p.tx_bytes),
    );
    metric(
        "peer_receive_bytes_total",
        "counter",
        "Bytes received from a peer on the wire, handshakes included.",
        &per_peer(|p| p.rx_bytes),
    );
    metric(
        "peer_latest_handshake_seconds",
        "gauge",
        "Unix time of a peer's latest completed handshake; 0 before the first.",
        &per_peer(|p| p.latest_handshake),
    );
    if let Some(up) = s.registry_reachable {
        metric(
            "registry_reachable",
            "gauge",
            "1 if the last registry read worked.",
            &[("", up as u64)],
        );
        metric(
            "registry_failures_total",
            "counter",
            "Failed registry reads.",
            &[("", s.registry_failures)],
        );
        metric(
            "registry_revision",
            "gauge",
            "Registry revision the peers and routes were last brought to.",
            &[("", s.registry_revision)],
        );
    }
    o
}

/// Serves `sample()`'s figures on `addr`, taking one sample per scrape.
pub fn serve(
    addr: SocketAddr,
    sample: impl Fn() -> Sample + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                // A client that never reads must not hold up the next scrape for long.
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req);
                let body = render(&sample());
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests;
