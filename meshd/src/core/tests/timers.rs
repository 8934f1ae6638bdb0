//! The timer tick, and what happens on it, on a clock the test chooses.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn timers_tick_every_quarter_second() {
    let (mut a, _) = pair();
    let t0 = Instant::now();
    let mut out = Wire::default();
    a.core.handle_timeout(t0, &mut out);
    assert_eq!(a.core.poll_timeout(), Some(t0 + crate::core::timers::TICK));
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

#[test]
fn persistent_keepalive_goes_out_when_the_interval_has_passed_and_not_before() {
    let mut p = Pair::new();
    let b_key = p.b.public;
    p.a.core.update_peer(
        &b_key,
        PeerUpdate {
            keepalive: Some(Some(25)),
            ..Default::default()
        },
    );
    let (_, tun_b) = p.send_from_a(&ip6("fdaa:0:1:a7b:1::1", "fdaa:0:1:a7b:2::1", b"hi"));
    assert_eq!(tun_b.len(), 1, "the handshake carried the packet");
    let rx = p.b.core.peer(&p.a.public).unwrap().rx_bytes;
    p.advance(Duration::from_secs(24));
    assert_eq!(p.tick(), (0, 0), "24 s after A last sent: nothing yet");
    p.advance(Duration::from_secs(2));
    assert_eq!(p.tick(), (1, 0), "26 s: A's keepalive");
    let b_peer = p.b.core.peer(&p.a.public).unwrap();
    // A keepalive is an empty data message: 16 bytes of header and a 16-byte tag.
    assert_eq!(b_peer.rx_bytes, rx + 32, "B received it");
    assert_eq!(p.tick(), (0, 0), "and not again within the same tick");
    p.advance(Duration::from_secs(25));
    assert_eq!(p.tick(), (1, 0), "25 s later, the next");
}

#[test]
fn no_keepalive_without_an_interval_however_long_the_quiet() {
    let mut p = Pair::new();
    p.send_from_a(&ip6("fdaa:0:1:a7b:1::1", "fdaa:0:1:a7b:2::1", b"hi"));
    p.advance(Duration::from_secs(3600));
    // boringtun's own timers run on its clock, which has not moved: meshd's add nothing.
    assert_eq!(p.tick(), (0, 0));
}
