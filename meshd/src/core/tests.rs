//! Two cores talking through memory: handshakes, data, and every reason to drop.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
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
    a.core.ensure_peer(b.public);
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
    b.core.ensure_peer(a.public);
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
fn pump(a: &mut Node, b: &mut Node, mut from_a: Wire) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let (mut tun_a, mut tun_b) = (std::mem::take(&mut from_a.tun), Vec::new());
    let mut pending_a = from_a.udp;
    let mut pending_b: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
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

#[test]
fn a_peer_moves_between_udp_and_websocket_and_answers_follow_it() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let to_b = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"one");
    let mut out = Wire::default();
    a.core.handle_tun_packet(now, &to_b, &mut out);
    pump(&mut a, &mut b, out);
    // A's next datagram reaches B over a WebSocket connection (A moved behind a network
    // that drops UDP): B answers on that connection.
    let ws = Endpoint::WebSocket {
        conn: 7,
        remote: "198.51.100.1:40000".parse().unwrap(),
    };
    let mut out = Wire::default();
    a.core.handle_tun_packet(now, &to_b, &mut out);
    let (_, d) = out.udp.pop().unwrap();
    let mut out_b = Wire::default();
    b.core.handle_datagram(now, ws, &d, &mut out_b);
    assert_eq!(out_b.tun, vec![to_b.clone()]);
    assert_eq!(b.core.peer(&a.public).unwrap().endpoint, Some(ws));
    let to_a = ip6("fdaa:0:1:a7b:2:5:0:2", "fdaa:0:1:a7b:1:1:0:2", b"two");
    let mut out_b = Wire::default();
    b.core.handle_tun_packet(now, &to_a, &mut out_b);
    assert!(out_b.udp.is_empty());
    assert_eq!(out_b.websocket.len(), 1);
    assert_eq!(out_b.websocket[0].0, 7);
    let c = &b.core.counters;
    assert_eq!((c.websocket_rx_packets, c.websocket_tx_packets), (1, 1));
    assert_eq!(c.websocket_rx_bytes, d.len() as u64);
    // A's answer comes back over the WebSocket too.
    let mut out_a = Wire::default();
    a.core
        .handle_datagram(now, b.addr, &out_b.websocket[0].1, &mut out_a);
    assert_eq!(out_a.tun, vec![to_a.clone()]);
    // And back on UDP: the next answer goes there.
    let mut out = Wire::default();
    a.core.handle_tun_packet(now, &to_b, &mut out);
    let (_, d) = out.udp.pop().unwrap();
    b.core
        .handle_datagram(now, a.addr, &d, &mut Wire::default());
    assert_eq!(
        b.core.peer(&a.public).unwrap().endpoint,
        Some(Endpoint::Udp(a.addr))
    );
    let mut out_b = Wire::default();
    b.core.handle_tun_packet(now, &to_a, &mut out_b);
    assert_eq!(out_b.udp.len(), 1);
    assert!(out_b.websocket.is_empty());
}

#[test]
fn two_cores_handshake_and_carry_a_packet() {
    let (mut a, mut b) = pair();
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"hello");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert_eq!(out.udp.len(), 1, "a handshake initiation goes out");
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert_eq!(tun_b, vec![p.clone()]);
    assert!(a.core.peer(&b.public).unwrap().tunn.stats().0.is_some());

    // And back, on the established session: one datagram, no handshake.
    let back = ip6("fdaa:0:1:a7b:2:5:0:2", "fdaa:0:1:a7b:1:1:0:2", b"hi");
    let mut out = Wire::default();
    b.core.handle_tun_packet(Instant::now(), &back, &mut out);
    assert_eq!(out.udp.len(), 1);
    let mut out_a = Wire::default();
    a.core
        .handle_datagram(Instant::now(), b.addr, &out.udp[0].1, &mut out_a);
    assert_eq!(out_a.tun, vec![back]);
}

#[test]
fn received_bytes_count_handshakes_and_data_but_not_rejects() {
    let (mut a, mut b) = pair();
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"hello");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let init_len = out.udp[0].1.len() as u64;
    let _ = pump(&mut a, &mut b, out);
    let rx = |n: &Node, of: &Node| n.core.peer(&of.public).unwrap().rx_bytes;
    let tx = |n: &Node, of: &Node| n.core.peer(&of.public).unwrap().tx_bytes;
    // A received only B's handshake response (92 bytes), which decrypts to nothing: it
    // counts all the same, as it does for wireguard-go.
    assert_eq!(rx(&a, &b), 92);
    // Everything one side sent, the other counted: the initiation, the data, a keepalive.
    assert!(rx(&b, &a) > init_len);
    assert_eq!(rx(&b, &a), tx(&a, &b));
    assert_eq!(rx(&a, &b), tx(&b, &a));
    // A replay is rejected and not counted.
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let datagram = out.udp[0].1.clone();
    let mut sink = Wire::default();
    b.core
        .handle_datagram(Instant::now(), a.addr, &datagram, &mut sink);
    let before = b.core.peer(&a.public).unwrap().rx_bytes;
    b.core
        .handle_datagram(Instant::now(), a.addr, &datagram, &mut sink);
    assert_eq!(b.core.peer(&a.public).unwrap().rx_bytes, before);
}

#[test]
fn replayed_garbage_and_unknown_index_are_dropped_and_counted() {
    let (mut a, mut b) = pair();
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"x");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    pump(&mut a, &mut b, out);

    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let data = out.udp[0].1.clone();
    let mut sink = Wire::default();
    b.core
        .handle_datagram(Instant::now(), a.addr, &data, &mut sink);
    b.core
        .handle_datagram(Instant::now(), a.addr, &data, &mut sink);
    assert_eq!(sink.tun.len(), 1);
    assert_eq!(b.core.counters.drops(Drop::Replay), 1);

    for junk in [&[][..], &[1, 0, 0, 0][..], &[4u8; 31][..], &[9u8; 200][..]] {
        b.core
            .handle_datagram(Instant::now(), a.addr, junk, &mut sink);
    }
    assert_eq!(b.core.counters.drops(Drop::Malformed), 4);

    let mut forged = data.clone();
    forged[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    b.core
        .handle_datagram(Instant::now(), a.addr, &forged, &mut sink);
    assert_eq!(b.core.counters.drops(Drop::UnknownIndex), 1);

    let _ = data;
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let mut flipped = out.udp[0].1.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    b.core
        .handle_datagram(Instant::now(), a.addr, &flipped, &mut sink);
    assert_eq!(b.core.counters.drops(Drop::Decrypt), 1);
    assert_eq!(sink.tun.len(), 1);
}

#[test]
fn handshake_from_a_stranger_is_dropped() {
    let (mut a, _) = pair();
    let mut stranger = node(3, 300, MESH);
    stranger.core.ensure_peer(a.public);
    stranger.core.update_peer(
        &a.public,
        PeerUpdate {
            endpoint: Some(a.addr),
            ..Default::default()
        },
    );
    stranger.core.set_allowed_ips(&a.public, &[net("::/0")]);
    let mut out = Wire::default();
    let p = ip6("fdaa:0:1:a7b:3::2", "fdaa:0:1:a7b:1::2", b"");
    stranger
        .core
        .handle_tun_packet(Instant::now(), &p, &mut out);
    let mut sink = Wire::default();
    a.core
        .handle_datagram(Instant::now(), stranger.addr, &out.udp[0].1, &mut sink);
    assert!(sink.udp.is_empty());
    assert_eq!(a.core.counters.drops(Drop::UnknownPeer), 1);
}

#[test]
fn org_mismatch_is_dropped_on_both_paths() {
    let (mut a, mut b) = pair();
    // Org 1 to org 2 from A's TUN.
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:2:a7b:2:5:0:2", b"x");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert!(out.udp.is_empty());
    assert_eq!(a.core.counters.drops(Drop::OrgMismatch), 1);

    // A core without the filter sends it; B still refuses it.
    a.core.options.org_isolation = false;
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_b.is_empty());
    assert_eq!(b.core.counters.drops(Drop::OrgMismatch), 1);
}

#[test]
fn source_outside_allowed_ips_is_dropped() {
    let (mut a, mut b) = pair();
    // A claims a source in B's own /80.
    let p = ip6("fdaa:0:1:a7b:2:9:0:2", "fdaa:0:1:a7b:2:5:0:2", b"x");
    a.core
        .set_allowed_ips(&b.public, &[net("fdaa:0:1:a7b:2:5:0:0/112")]);
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_b.is_empty());
    assert_eq!(b.core.counters.drops(Drop::SourceNotAllowed), 1);
}

#[test]
fn changing_allowed_ips_keeps_the_session() {
    let (mut a, mut b) = pair();
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"x");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    pump(&mut a, &mut b, out);
    let handshakes = a.core.counters.handshakes;

    // A machine moved to B: its /112 in another node's /80 now routes to B.
    a.core.set_allowed_ips(
        &b.public,
        &[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:1:a7b:9:7:0:0/112")],
    );
    b.core
        .set_local_routes(&[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:1:a7b:9:7:0:0/112")]);
    let moved = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:9:7:0:2", b"y");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &moved, &mut out);
    assert_eq!(out.udp.len(), 1, "sent on the existing session");
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert_eq!(tun_b, vec![moved]);
    assert_eq!(a.core.counters.handshakes, handshakes);

    // Another peer comes and goes; B's session is untouched.
    let other = [7u8; 32];
    a.core.ensure_peer(other);
    a.core
        .set_allowed_ips(&other, &[net("fdaa:0:1:a7b:3::/80")]);
    a.core.remove_peer(&other);
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert_eq!(out.udp.len(), 1);
    assert_eq!(out.udp[0].1[0], 4, "a data message, not a new handshake");
}

#[test]
fn gateway_forwards_between_peers_and_plain_nodes_do_not() {
    // laptop -> gateway -> node
    let gw_opts = Options {
        forward: true,
        org_isolation: true,
        idle_evict: None,
    };
    let mut laptop = node(10, 1000, Options::default());
    let mut gw = node(11, 1100, gw_opts);
    let mut n = node(12, 1200, MESH);
    let link = |from: &mut Node, to: &Node, nets: &[&str]| {
        from.core.ensure_peer(to.public);
        from.core.update_peer(
            &to.public,
            PeerUpdate {
                endpoint: Some(to.addr),
                ..Default::default()
            },
        );
        let nets: Vec<IpNet> = nets.iter().map(|s| net(s)).collect();
        from.core.set_allowed_ips(&to.public, &nets);
    };
    link(&mut laptop, &gw, &["fdaa:0:1::/48"]);
    link(&mut gw, &laptop, &["fdaa:0:1:a7b:11:1:0:2/128"]);
    link(&mut gw, &n, &["fdaa:0:1:a7b:12::/80"]);
    link(&mut n, &gw, &["fdaa:0:1:a7b:11::/80"]);
    n.core.set_local_routes(&[net("fdaa:0:1:a7b:12::/80")]);

    let p = ip6("fdaa:0:1:a7b:11:1:0:2", "fdaa:0:1:a7b:12:4:0:2", b"req");
    let mut out = Wire::default();
    laptop.core.handle_tun_packet(Instant::now(), &p, &mut out);
    // laptop <-> gw handshake and data; what gw sends to n goes on the second pump.
    let now = Instant::now();
    let mut to_gw = out.udp;
    let mut to_n = Vec::new();
    let mut reached_n = Vec::new();
    for _ in 0..10 {
        let mut back_to_laptop = Vec::new();
        for (_, d) in to_gw.drain(..) {
            let mut o = Wire::default();
            gw.core.handle_datagram(now, laptop.addr, &d, &mut o);
            for (to, d) in o.udp {
                if to == n.addr {
                    to_n.push(d)
                } else {
                    back_to_laptop.push(d)
                }
            }
        }
        for d in back_to_laptop {
            let mut o = Wire::default();
            laptop.core.handle_datagram(now, gw.addr, &d, &mut o);
            to_gw.extend(o.udp);
        }
        let mut from_n = Vec::new();
        for d in to_n.drain(..) {
            let mut o = Wire::default();
            n.core.handle_datagram(now, gw.addr, &d, &mut o);
            reached_n.extend(o.tun);
            from_n.extend(o.udp);
        }
        for (_, d) in from_n {
            let mut o = Wire::default();
            gw.core.handle_datagram(now, n.addr, &d, &mut o);
            for (to, d) in o.udp {
                if to == n.addr {
                    to_n.push(d)
                }
            }
        }
    }
    assert_eq!(reached_n, vec![p]);
    assert_eq!(gw.core.counters.forwarded, 1);
}

#[test]
fn timers_tick_every_quarter_second() {
    let (mut a, _) = pair();
    let t0 = Instant::now();
    let mut out = Wire::default();
    a.core.handle_timeout(t0, &mut out);
    assert_eq!(a.core.poll_timeout(), Some(t0 + timers::TICK));
    // Keepalive with no session starts a handshake.
    let b_key = *a.core.peers().keys().next().unwrap();
    a.core.update_peer(
        &b_key,
        PeerUpdate {
            keepalive: Some(Some(1)),
            ..Default::default()
        },
    );
    a.core
        .handle_timeout(t0 + std::time::Duration::from_secs(2), &mut out);
    assert_eq!(out.udp.len(), 1);
    assert_eq!(out.udp[0].1[0], 1, "a handshake initiation");
}

/// A UDP packet with a correct checksum, from `src` to `dst` (either family).
fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&4000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&53u16.to_be_bytes());
    l4.extend_from_slice(payload);
    let len = l4.len() as u16;
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // Build as IPv6 with any checksum, then let the translator's round trip fix it:
            // the core never checks transport checksums, so only the addresses matter here.
            let mut p = ip6(&s.to_string(), &d.to_string(), &l4);
            p[6] = 17;
            p
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(20 + len).to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(&l4);
            p
        }
        _ => unreachable!("one family per packet"),
    }
}

const GATEWAY: Options = Options {
    forward: true,
    org_isolation: true,
    idle_evict: None,
};
const MACHINE: &str = "fdaa:0:1:a7b:1:0:1:2";
const VIA: &str = "fdaa:0:1:b1a:1:5::/96";

/// A is org 1's gateway with a machine, B a site router (a plain WireGuard peer, as
/// wireguard-go would be) with 2001:db8:5::/48 and 10.20.0.0/24 behind it.
fn site() -> (Node, Node) {
    let mut a = node(1, 100, GATEWAY);
    let mut b = node(2, 200, Options::default());
    a.core.ensure_peer(b.public);
    a.core.set_allowed_ips(
        &b.public,
        &[net("fdaa:0:1:a7b:1:0:5:2/128"), net("2001:db8:5::/48")],
    );
    a.core.set_site(
        &b.public,
        Some(VIA.parse().unwrap()),
        &["10.20.0.0/24".parse().unwrap()],
    );
    // A also hosts a machine of org 2.
    a.core
        .set_local_routes(&[net("fdaa:0:1:a7b:1::/80"), net("fdaa:0:2:a7b:1::/80")]);
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        std::iter::empty(),
    );
    b.core.ensure_peer(a.public);
    b.core.update_peer(
        &a.public,
        PeerUpdate {
            endpoint: Some(a.addr),
            ..Default::default()
        },
    );
    // Everything into the tunnel, as a hostile site's owner could set it.
    b.core
        .set_allowed_ips(&a.public, &[net("::/0"), net("0.0.0.0/0")]);
    (a, b)
}

/// B (the site) sends `p` from its LAN; what reaches A's TUN.
fn from_site(a: &mut Node, b: &mut Node, p: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Wire::default();
    b.core.handle_tun_packet(Instant::now(), p, &mut out);
    let (to_b, to_a) = pump(b, a, out);
    assert!(to_b.is_empty());
    to_a
}

#[test]
fn machine_reaches_site_ipv4_lan_through_4via6_and_the_answer_comes_back() {
    let (mut a, mut b) = site();
    // The site router says hello first, so A knows its endpoint (laptops and sites are
    // found by their handshakes).
    let hello = udp("2001:db8:5::9", MACHINE, b"hi");
    assert_eq!(from_site(&mut a, &mut b, &hello), vec![hello.clone()]);

    let q = udp(MACHINE, "fdaa:0:1:b1a:1:5:a14:5", b"question");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &q, &mut out);
    let (tun_a, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_a.is_empty());
    assert_eq!(tun_b.len(), 1, "one IPv4 packet reaches the site");
    let v4 = &tun_b[0];
    assert_eq!(v4[0] >> 4, 4);
    let pool_addr = [v4[12], v4[13], v4[14], v4[15]];
    assert_eq!(&pool_addr[..2], &[100, 127]);
    assert_eq!(&v4[16..20], &[10, 20, 0, 5]);
    assert!(v4.ends_with(b"question"));
    assert_eq!(a.core.nat64_bindings(), 1);

    // The LAN host answers the pool address.
    let src = std::net::Ipv4Addr::from(pool_addr).to_string();
    let answer = udp("10.20.0.5", &src, b"answer");
    let got = from_site(&mut a, &mut b, &answer);
    assert_eq!(got.len(), 1);
    let (s, d) = packet::addrs(&got[0]).unwrap();
    assert_eq!(s.to_string(), "fdaa:0:1:b1a:1:5:a14:5");
    assert_eq!(d.to_string(), MACHINE);
    assert!(got[0].ends_with(b"answer"));
}

#[test]
fn site_traffic_outside_its_routes_orgs_and_bindings_is_dropped_by_reason() {
    let (mut a, mut b) = site();
    let hello = udp("2001:db8:5::9", MACHINE, b"hi");
    from_site(&mut a, &mut b, &hello);
    let cases: [(Vec<u8>, Drop); 6] = [
        // IPv4 from outside the site's routes, spoofed.
        (
            udp("10.20.1.9", "100.127.0.1", b"x"),
            Drop::SourceNotAllowed,
        ),
        // IPv4 to a pool address nobody holds.
        (udp("10.20.0.5", "100.127.0.77", b"x"), Drop::NoBinding),
        // IPv6 from the site to another org's machine.
        (
            udp("2001:db8:5::9", "fdaa:0:2:a7b:1:0:1:2", b"x"),
            Drop::OrgMismatch,
        ),
        // To the gateway host's own addresses or the internet: no org.
        (
            udp("2001:db8:5::9", "2001:db8:99::1", b"x"),
            Drop::DestinationNoOrg,
        ),
        // From a prefix that is not the site's.
        (udp("2001:db8:6::9", MACHINE, b"x"), Drop::SourceNotAllowed),
        // To another site's 4via6 space (no such site here), or anywhere in the org that
        // is not this host's: never handed to the gateway's kernel.
        (
            udp("2001:db8:5::9", "fdaa:0:1:b1a:1:6:a14:5", b"x"),
            Drop::NoRoute,
        ),
    ];
    for (p, why) in cases {
        let before = a.core.counters.drops(why);
        let got = from_site(&mut a, &mut b, &p);
        assert!(got.is_empty(), "{why:?} case was delivered");
        assert_eq!(a.core.counters.drops(why), before + 1, "{why:?}");
    }
    // A peering opens org 2 to the site's prefix, and closing it shuts it again.
    let to_org2 = udp("2001:db8:5::9", "fdaa:0:2:a7b:1:0:1:2", b"peered");
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        [(OrgNetwork(2), OrgNetwork(1))],
    );
    assert_eq!(from_site(&mut a, &mut b, &to_org2), vec![to_org2.clone()]);
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        std::iter::empty(),
    );
    assert!(from_site(&mut a, &mut b, &to_org2).is_empty());
}

#[test]
fn address_outside_the_sites_routes_is_not_translated_and_removal_drops_the_via_route() {
    let (mut a, b) = site();
    let q = udp(MACHINE, "fdaa:0:1:b1a:1:5:a14:105", b"x"); // 10.20.1.5: not routed
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &q, &mut out);
    assert!(out.udp.is_empty());
    assert_eq!(a.core.counters.drops(Drop::NotTranslated), 1);
    a.core.remove_peer(&b.public);
    assert_eq!(
        a.core.route("fdaa:0:1:b1a:1:5:a14:5".parse().unwrap()),
        None
    );
}

#[test]
fn local_routes_change_only_what_differs_and_win_back_their_prefix() {
    let mut core = Core::new(Some(StaticSecret::from([1u8; 32])), Options::default(), 1);
    let a: IpNet = "fdaa:0:1:a7b:1::/80".parse().unwrap();
    let b: IpNet = "fdaa:0:2:a7b:1::/80".parse().unwrap();
    let in_a: IpAddr = "fdaa:0:1:a7b:1::9".parse().unwrap();
    let in_b: IpAddr = "fdaa:0:2:a7b:1::9".parse().unwrap();
    core.set_local_routes(&[a, b]);
    assert_eq!(core.route(in_a), Some(Target::Local));
    assert_eq!(core.route(in_b), Some(Target::Local));
    core.set_local_routes(&[b]);
    assert_eq!(
        core.route(in_a),
        None,
        "a prefix no longer local is no longer routed"
    );
    assert_eq!(core.route(in_b), Some(Target::Local));
    // A peer that took exactly a local prefix loses it when the local set is given again.
    let key = [5u8; 32];
    core.ensure_peer(key);
    core.add_allowed_ip(&key, b);
    assert!(matches!(core.route(in_b), Some(Target::Peer(_))));
    core.set_local_routes(&[b]);
    assert_eq!(core.route(in_b), Some(Target::Local));
    assert!(!core.peer(&key).unwrap().allowed_ips.contains(&b));
    core.set_local_routes(&[]);
    assert_eq!(core.route(in_b), None);
}
