//! Two cores talking through memory: handshakes, data, and every reason to drop.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::*;

#[derive(Default)]
struct Wire {
    udp: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl Transmit for Wire {
    fn send_udp(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        self.udp.push((to, datagram.to_vec()));
        true
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

fn ip6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
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
