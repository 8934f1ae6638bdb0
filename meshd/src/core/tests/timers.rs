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

/// Ten minutes of traffic both ways on boringtun's clock, a packet each way every second,
/// across its rekeys: every packet arrives (boringtun 0.7.1 was reported to go one-way deaf
/// 15–30 s after a handshake), and the session is renewed every two minutes or so.
#[cfg(feature = "mock-clock")]
#[test]
fn ten_minutes_of_traffic_both_ways_across_rekeys_loses_nothing() {
    let mut p = Pair::new();
    let a_to_b = ip6("fdaa:0:1:a7b:1::1", "fdaa:0:1:a7b:2::1", b"ping");
    let b_to_a = ip6("fdaa:0:1:a7b:2::1", "fdaa:0:1:a7b:1::1", b"pong");
    for second in 0..600 {
        p.advance(Duration::from_secs(1));
        p.tick();
        let (_, at_b) = p.send_from_a(&a_to_b);
        assert_eq!(at_b, vec![a_to_b.clone()], "second {second}: a → b");
        let (at_a, _) = p.send_from_b(&b_to_a);
        assert_eq!(at_a, vec![b_to_a.clone()], "second {second}: b → a");
    }
    // Each handshake counts two steps (the initiation taken, the response taken): the first,
    // then one at each 120 s of a session's age.
    let steps = p.a.core.counters.handshakes + p.b.core.counters.handshakes;
    assert!(
        (10..=14).contains(&steps),
        "{steps} handshake steps in ten minutes"
    );
}

/// A session is not used past three minutes (REJECT_AFTER_TIME): after 181 quiet seconds on
/// boringtun's clock, A's next packet starts a new handshake, which carries it.
#[cfg(feature = "mock-clock")]
#[test]
fn after_three_quiet_minutes_the_next_packet_makes_a_new_session_and_arrives() {
    let mut p = Pair::new();
    let packet = ip6("fdaa:0:1:a7b:1::1", "fdaa:0:1:a7b:2::1", b"hi");
    assert_eq!(p.send_from_a(&packet).1.len(), 1);
    let initiations = p.b.core.counters.handshakes;
    p.advance(Duration::from_secs(100));
    p.tick();
    assert_eq!(p.send_from_a(&packet).1, vec![packet.clone()]);
    assert_eq!(
        p.b.core.counters.handshakes, initiations,
        "100 s: the same session"
    );
    p.advance(Duration::from_secs(181));
    p.tick();
    assert_eq!(p.send_from_a(&packet).1, vec![packet.clone()]);
    assert!(
        p.b.core.counters.handshakes > initiations,
        "281 s: a new session"
    );
}
