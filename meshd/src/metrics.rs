//! Prometheus text, served over a minimal HTTP/1.0 responder (one scrape at a time is
//! plenty for a node exporter's traffic).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::core::{Counters, Drop};
use crate::daemon::Shell;

pub struct Sample {
    pub counters: Counters,
    pub peers: usize,
    pub peers_with_session: usize,
    pub registry_reachable: Option<bool>,
    pub registry_failures: u64,
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
        "WireGuard peers configured.",
        &[("", s.peers as u64)],
    );
    metric(
        "peers_with_session",
        "gauge",
        "Peers with an established session.",
        &[("", s.peers_with_session as u64)],
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
    }
    o
}

pub fn serve(addr: SocketAddr, shell: Arc<Shell>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req);
                let body = render(&shell.sample());
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}
