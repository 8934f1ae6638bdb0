//! When to poll each `Tunn`'s timers (every 250 ms, as boringtun expects), reset the shared
//! handshake rate limiter (every second: a shared limiter is not reset by the tunnels), and
//! send persistent keepalives (kept here rather than in `Tunn` so `wg set` can change the
//! interval without a new session), and (gateways) evict idle tunnels made just in time.

use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;

use super::send::send;
use super::{Core, Transmit};

pub const TICK: Duration = Duration::from_millis(250);
const RATE_LIMIT_RESET: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Schedule {
    next_tick: Option<Instant>,
    next_reset: Option<Instant>,
}

impl Core {
    /// When the shell should call [`Core::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_tick
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Transmit) {
        if self.timers.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.timers.next_tick = Some(now + TICK);
        if self.timers.next_reset.is_none_or(|t| now >= t) {
            self.identity.rate_limiter.reset_count();
            self.timers.next_reset = Some(now + RATE_LIMIT_RESET);
        }
        if !self.has_key {
            return;
        }
        self.evict_idle(now);
        for peer in self.peers.iter_mut() {
            match peer.tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(d) => {
                    if let Some(ep) = peer.endpoint {
                        send(&mut self.counters, peer, now, ep, d, out);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(peer = %peer.name, error = ?e, "timers"),
                _ => {}
            }
            let Some(interval) = peer.keepalive else {
                continue;
            };
            let due = peer
                .last_sent
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(interval.into()));
            let Some(ep) = peer.endpoint else {
                continue;
            };
            if due {
                // An empty packet is a keepalive; with no session it starts a handshake.
                if let TunnResult::WriteToNetwork(d) = peer.tunn.encapsulate(&[], &mut self.buf) {
                    send(&mut self.counters, peer, now, ep, d, out);
                }
            }
        }
    }
}
