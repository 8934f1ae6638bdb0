//! Two cores talking through memory: handshakes, data, and every reason to drop.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use registry::OrgNetwork;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::*;

/// What a core sent, kept in memory (the just-in-time tests use it too).
#[derive(Default)]
pub(in crate::core) struct Wire {
    pub udp: Vec<(SocketAddr, Vec<u8>)>,
    pub tun: Vec<Vec<u8>>,
    pub websocket: Vec<(ConnectionId, Vec<u8>)>,
}

impl Transmit for Wire {
    fn send_udp(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        self.udp.push((to, datagram.to_vec()));
        true
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
    fn send_websocket(&mut self, conn: ConnectionId, datagram: &[u8]) -> bool {
        self.websocket.push((conn, datagram.to_vec()));
        true
    }
}

fn ip6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    ip6_packet(src.parse().unwrap(), dst.parse().unwrap(), payload)
}

/// An IPv6 packet with no next header (59) carrying `payload`.
pub(in crate::core) fn ip6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

struct Node {
    core: Core,
    addr: SocketAddr,
    public: PublicKey,
}

fn node(port: u16, first_index: u32, options: Options) -> Node {
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let public = X25519Public::from(&secret).to_bytes();
    Node {
        core: Core::new(Some(secret), options, first_index),
        addr: format!("10.0.0.{port}:51820").parse().unwrap(),
        public,
    }
}

const MESH: Options = Options {
    forward: false,
    org_isolation: true,
    idle_evict: None,
};

/// A serves fdaa:0:1:a7b:1::/80, B serves fdaa:0:1:a7b:2::/80 and fdaa:0:2:a7b:2::/80.
fn pair() -> (Node, Node) {
    let mut a = node(1, 100, MESH);
    let mut b = node(2, 200, MESH);
    a.core.ensure_peer(Instant::now(), b.public);
    a.core.update_peer(
        &b.public,
        PeerUpdate {
            endpoint: Some(b.addr),
            ..Default::default()
        },
    );
    a.core.set_allowed_ips(
        &b.public,
        &[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:2:a7b:2::/80")],
    );
    a.core.set_local_routes(&[net("fdaa:0:1:a7b:1::/80")]);
    b.core.ensure_peer(Instant::now(), a.public);
    b.core.update_peer(
        &a.public,
        PeerUpdate {
            endpoint: Some(a.addr),
            ..Default::default()
        },
    );
    b.core
        .set_allowed_ips(&a.public, &[net("fdaa:0:1:a7b:1::/80")]);
    b.core
        .set_local_routes(&[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:2:a7b:2::/80")]);
    (a, b)
}

/// Delivers datagrams back and forth until both sides are quiet; returns what reached
/// each TUN.
fn pump(a: &mut Node, b: &mut Node, from_a: Wire) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    exchange(Instant::now(), a, b, from_a, Wire::default())
}

/// [`pump`] at a chosen time, starting with what both sides sent.
fn exchange(
    now: Instant,
    a: &mut Node,
    b: &mut Node,
    mut from_a: Wire,
    mut from_b: Wire,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut tun_a, mut tun_b) = (
        std::mem::take(&mut from_a.tun),
        std::mem::take(&mut from_b.tun),
    );
    let mut pending_a = from_a.udp;
    let mut pending_b = from_b.udp;
    for _ in 0..20 {
        if pending_a.is_empty() && pending_b.is_empty() {
            break;
        }
        let mut out_b = Wire::default();
        for (to, d) in pending_a.drain(..) {
            assert_eq!(to, b.addr);
            b.core.handle_datagram(now, a.addr, &d, &mut out_b);
        }
        tun_b.extend(out_b.tun);
        pending_b.extend(out_b.udp);
        let mut out_a = Wire::default();
        for (to, d) in pending_b.drain(..) {
            assert_eq!(to, a.addr);
            a.core.handle_datagram(now, b.addr, &d, &mut out_a);
        }
        tun_a.extend(out_a.tun);
        pending_a.extend(out_a.udp);
    }
    (tun_a, tun_b)
}

/// The two cores of [`pair`] and a clock the test moves: every call into a core is made at
/// `now`, so timers, keepalives and idle eviction happen when the test says. The sessions'
/// own rekey and expiry follow boringtun's clock inside `Tunn`: with the `mock-clock` feature
/// that clock (this thread's) moves with `now`, else it is the real one.
struct Pair {
    a: Node,
    b: Node,
    now: Instant,
}

impl Pair {
    fn new() -> Pair {
        let (a, b) = pair();
        Pair {
            a,
            b,
            now: Instant::now(),
        }
    }

    fn advance(&mut self, by: std::time::Duration) {
        self.now += by;
        #[cfg(feature = "mock-clock")]
        mock_instant::MockClock::advance(by);
    }

    /// A's TUN takes `packet`; everything that follows is carried. What reached each TUN.
    fn send_from_a(&mut self, packet: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut out = Wire::default();
        self.a.core.handle_tun_packet(self.now, packet, &mut out);
        exchange(self.now, &mut self.a, &mut self.b, out, Wire::default())
    }

    /// B's TUN takes `packet`; everything that follows is carried. What reached each TUN.
    #[cfg_attr(not(feature = "mock-clock"), allow(dead_code))]
    fn send_from_b(&mut self, packet: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut out = Wire::default();
        self.b.core.handle_tun_packet(self.now, packet, &mut out);
        exchange(self.now, &mut self.a, &mut self.b, Wire::default(), out)
    }

    /// Both cores' timers at `now`, and everything they sent carried. How many datagrams
    /// each side's timers sent.
    fn tick(&mut self) -> (usize, usize) {
        let (mut out_a, mut out_b) = (Wire::default(), Wire::default());
        self.a.core.handle_timeout(self.now, &mut out_a);
        self.b.core.handle_timeout(self.now, &mut out_b);
        let sent = (out_a.udp.len(), out_b.udp.len());
        exchange(self.now, &mut self.a, &mut self.b, out_a, out_b);
        sent
    }
}

mod handshake;
mod routing;
mod sites;
mod timers;
