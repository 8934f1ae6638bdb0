//! When to poll each `Tunn`'s timers (every 250 ms, as boringtun expects), reset the shared
//! handshake rate limiter (every second: a shared limiter is not reset by the tunnels), and
//! send persistent keepalives (kept here rather than in `Tunn` so `wg set` can change the
//! interval without a new session), and (gateways) evict idle tunnels made just in time.

use std::time::{Duration, Instant, SystemTime};

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

/// The core's wall clock: the Unix time of one `Instant`, so that the core turns the
/// `Instant`s it is handed into Unix times (a peer's last handshake, kept when its tunnel is
/// evicted) without reading the system clock. Tests set it to what they choose.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// `at` is `wall` in Unix time.
    pub fn new(at: Instant, wall: SystemTime) -> WallClock {
        WallClock { at, wall }
    }

    /// The system's clock now.
    pub fn system() -> WallClock {
        WallClock::new(Instant::now(), SystemTime::now())
    }

    /// The Unix time of `now`.
    pub fn wall(&self, now: Instant) -> SystemTime {
        match now.checked_duration_since(self.at) {
            Some(ahead) => self.wall + ahead,
            None => self.wall - self.at.duration_since(now),
        }
    }
}
