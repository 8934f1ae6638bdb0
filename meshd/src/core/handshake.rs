//! Handshake admission and initiation: the MAC and load check every handshake message
//! passes before any Diffie-Hellman, cookie replies under load, and handshakes started
//! ahead of the first packet.

use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::TunnResult;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::send::send;
use super::{cookie_budget, transmit, Core, Drop, Endpoint, PublicKey, Transmit};

/// Handshake messages per second before we ask for cookies: boringtun's figure. Every
/// initiation and response passes this limiter once, before any Diffie-Hellman; `Tunn`s get
/// one that checks MAC1 and never limits, so a real handshake is not counted twice.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

pub(super) struct Identity {
    pub(super) private: StaticSecret,
    pub(super) public: X25519Public,
    /// The one gate for handshake messages (see `HANDSHAKE_RATE_LIMIT`).
    pub(super) rate_limiter: Arc<RateLimiter>,
    /// What the `Tunn`s check with: MAC1 only, never under load.
    pub(super) tunn_limiter: Arc<RateLimiter>,
    /// Cookie replies per source address under load.
    cookie_budget: cookie_budget::CookieBudget,
}

impl Identity {
    pub(super) fn new(private: StaticSecret) -> Identity {
        let public = X25519Public::from(&private);
        let rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let tunn_limiter = Arc::new(RateLimiter::new(&public, u64::MAX));
        Identity {
            private,
            public,
            rate_limiter,
            tunn_limiter,
            cookie_budget: Default::default(),
        }
    }

    /// MACs and the load check, before anything costly: `Err` is the reason to drop, after
    /// a cookie reply is sent if one is due and the source's budget allows it.
    pub(super) fn admit_handshake(
        &mut self,
        now: Instant,
        from: Endpoint,
        datagram: &[u8],
        buf: &mut [u8],
        out: &mut impl Transmit,
    ) -> Result<(), Drop> {
        // Without an address the limiter checks MAC1 and the load as before, but under
        // load it drops instead of making a cookie reply.
        let budget = self.cookie_budget.has(from.ip(), now);
        let addr = budget.then_some(from.ip());
        match self.rate_limiter.verify_packet(addr, datagram, buf) {
            Ok(_) => Ok(()),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.cookie_budget.spend(from.ip(), now);
                transmit(out, from, cookie);
                Err(Drop::UnderLoad)
            }
            Err(TunnResult::Err(boringtun::noise::errors::WireGuardError::UnderLoad)) => {
                Err(Drop::CookieLimited)
            }
            Err(_) => Err(Drop::InvalidMac),
        }
    }
}

impl Core {
    /// Starts a handshake with the peer now rather than on its first packet, so a restarted
    /// node is reachable at once from peers whose old sessions it no longer has.
    pub fn initiate_handshake(&mut self, now: Instant, key: &PublicKey, out: &mut impl Transmit) {
        if !self.has_key {
            return;
        }
        let Some(peer) = self.peers.by_key_mut(key) else {
            return;
        };
        let Some(endpoint) = peer.endpoint else {
            return;
        };
        if let TunnResult::WriteToNetwork(d) =
            peer.tunn.format_handshake_initiation(&mut self.buf, false)
        {
            send(&mut self.counters, peer, now, endpoint, d, out);
        }
    }
}
