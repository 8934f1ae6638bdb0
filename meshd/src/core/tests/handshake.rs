//! Handshakes and what the receive path drops and counts, between two cores.

use std::time::Instant;

use super::*;

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
    stranger.core.ensure_peer(Instant::now(), a.public);
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
