//! The timer tick.

use std::time::Instant;

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
