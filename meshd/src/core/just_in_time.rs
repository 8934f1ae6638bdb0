//! Tunnels made just in time (gateways): a registered peer's `Tunn` is made when its first
//! valid initiation arrives and dropped when it has been quiet for `Options::idle_evict`,
//! so a gateway's memory follows its connected peers, not its registered ones.
//!
//! - An initiation passes the MAC1 and load checks and `parse_handshake_anon` names its
//!   sender (as for any peer); a registered key without a tunnel gets one, and the same
//!   initiation goes on to it. If the tunnel refuses it (the initiation named a key its
//!   sender does not hold), the tunnel goes at once.
//! - A tunnel made for an initiation alone (which may be a replay) and never confirmed by a
//!   data packet or a handshake response goes after [`UNCONFIRMED_EVICT`].
//! - A packet for an inactive peer from the TUN or another peer is dropped and counted
//!   (`peer_inactive`): the laptop or site initiates, never the gateway.
//! - One exception, so that a returning peer sees no failure: a peer whose tunnel was
//!   evicted still believes in its session and sends data on it, which would be lost until
//!   its own timers start a handshake (15 s in WireGuard). A data packet (not a keepalive)
//!   carrying an index reserved for a registered peer makes its tunnel again and sends it an
//!   initiation at once, within a global budget ([`WAKE_RATE`]); the datagram itself is
//!   dropped as `peer_inactive`.

use super::Endpoint;
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;

use super::registered::Registration;
use super::send::send;
use super::{Core, Drop, JustInTime, Peer, PeerIndex, PublicKey, Target, Transmit};

/// How long a tunnel made for an initiation waits for the initiator's first data packet
/// (WireGuard's initiator sends one, a keepalive at least, as soon as it has the response;
/// this allows two retries of REKEY_TIMEOUT).
pub const UNCONFIRMED_EVICT: Duration = Duration::from_secs(15);
/// Gateway-started handshakes for stale sessions, per second, and at once.
const WAKE_RATE: f32 = 20.0;
const WAKE_BURST: f32 = 40.0;
/// A data message with an empty payload: header (16) and tag (16).
const KEEPALIVE_LEN: usize = 32;

/// What [`Core::register_peer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registering {
    Added,
    Updated,
    Unchanged,
}

#[derive(Debug)]
pub struct WakeBudget {
    tokens: f32,
    at: Option<Instant>,
}

impl Default for WakeBudget {
    fn default() -> Self {
        WakeBudget {
            tokens: WAKE_BURST,
            at: None,
        }
    }
}

impl WakeBudget {
    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let secs = now.saturating_duration_since(at).as_secs_f32();
            self.tokens = (self.tokens + secs * WAKE_RATE).min(WAKE_BURST);
        }
        self.at = Some(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Core {
    /// True when registered peers get their tunnels just in time (gateways).
    pub fn just_in_time(&self) -> bool {
        self.options.idle_evict.is_some()
    }

    /// Adds or changes a registered peer (gateways): its routes lead to it from now on, its
    /// tunnel comes with its first handshake. A tunnel it has keeps its session.
    pub fn register_peer(&mut self, key: PublicKey, registration: Registration) -> Registering {
        if self.public_key() == Some(key) {
            return Registering::Unchanged;
        }
        let (index, old) = match self.registered.get(&key) {
            Some(r) if r.registration == registration => return Registering::Unchanged,
            Some(r) => (r.index, Some(r.registration.clone())),
            None => {
                // A permanent peer (made over UAPI) with this key gives way.
                self.remove_peer(&key);
                (self.allocate_index(), None)
            }
        };
        if let Some(old) = &old {
            for net in old.allowed_ips.iter() {
                if !registration.allowed_ips.contains(net)
                    && self.router.get(*net) == Some(Target::Peer(index))
                {
                    self.router.remove(*net);
                }
            }
            if let Some(via) = old.via.filter(|v| Some(*v) != registration.via) {
                let via = ipnet::IpNet::V6(via);
                if self.router.get(via) == Some(Target::Via(index)) {
                    self.router.remove(via);
                }
            }
        }
        for net in registration.allowed_ips.iter() {
            let previous = self.router.insert(*net, Target::Peer(index));
            if let Some(Target::Peer(other)) = previous.filter(|p| *p != Target::Peer(index)) {
                // A prefix belongs to one peer, as in `add_allowed_ip`.
                if let Some(p) = self.peers.get_mut(other) {
                    p.allowed_ips.retain(|n| n != net);
                }
            }
        }
        if let Some(via) = registration.via {
            self.router
                .insert(ipnet::IpNet::V6(via), Target::Via(index));
        }
        if let Some(peer) = self.peers.get_mut(index) {
            peer.allowed_ips = registration.allowed_ips.to_vec();
            peer.via = registration.via;
            peer.site_v4 = registration.site_v4.to_vec();
            peer.name = registration.name.to_string();
        }
        self.registered.insert(key, index, registration);
        match old {
            None => Registering::Added,
            Some(_) => Registering::Updated,
        }
    }

    /// Removes a registered peer, its routes and its tunnel (cut off at once); false if the
    /// key is not registered.
    pub(super) fn unregister_peer(&mut self, key: &PublicKey) -> bool {
        let Some(r) = self.registered.remove(key) else {
            return false;
        };
        // Only its own prefixes: a retain over every route would cost a gateway with
        // 100k registered peers that much per removal.
        for net in r.registration.allowed_ips.iter() {
            if self.router.get(*net) == Some(Target::Peer(r.index)) {
                self.router.remove(*net);
            }
        }
        if let Some(via) = r.registration.via.map(ipnet::IpNet::V6) {
            if self.router.get(via) == Some(Target::Via(r.index)) {
                self.router.remove(via);
            }
        }
        self.peers.remove(key);
        true
    }

    pub fn is_registered(&self, key: &PublicKey) -> bool {
        self.registered.contains(key)
    }

    /// Registered peers, with or without a tunnel.
    pub fn registered_count(&self) -> usize {
        self.registered.len()
    }

    pub fn registered_keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.registered.keys()
    }

    /// Registered peers without a tunnel now that had one, with the Unix second of its
    /// latest handshake.
    pub fn evicted(&self) -> impl Iterator<Item = (&PublicKey, u64)> {
        self.registered
            .iter()
            .filter(|(k, r)| r.last_handshake > 0 && self.peers.index_of(k).is_none())
            .map(|(k, r)| (k, r.last_handshake))
    }

    /// Registered peers holding a tunnel now.
    pub fn active_count(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.just_in_time.is_some())
            .count()
    }

    /// Why a packet for `index`, which holds no tunnel, is dropped.
    pub(super) fn absent(&self, index: PeerIndex) -> Drop {
        if self.registered.holds_index(index) {
            Drop::PeerInactive
        } else {
            Drop::NoRoute
        }
    }

    /// Makes the tunnel of a registered peer that has none; returns its index.
    pub(super) fn activate(&mut self, now: Instant, key: &PublicKey) -> Option<PeerIndex> {
        let r = self.registered.get(key)?;
        let index = r.index;
        let peer = Peer {
            public_key: *key,
            index,
            tunn: self.new_tunn(key, None, index),
            endpoint: None,
            allowed_ips: r.registration.allowed_ips.to_vec(),
            via: r.registration.via,
            site_v4: r.registration.site_v4.to_vec(),
            keepalive: None,
            preshared_key: None,
            name: r.registration.name.to_string(),
            last_sent: None,
            rx_bytes: 0,
            tx_bytes: 0,
            just_in_time: Some(JustInTime {
                last_received: now,
                confirmed: false,
            }),
        };
        self.peers.insert(peer);
        self.counters.tunnels_made += 1;
        tracing::debug!(peer = %r.registration.name, "tunnel made");
        Some(index)
    }

    /// Drops a registered peer's tunnel at `now`; it stays registered, its routes stay.
    pub(super) fn evict(&mut self, key: &PublicKey, now: Instant) {
        if !self.registered.contains(key) {
            return;
        }
        let wall = self.wall.wall(now);
        if let Some(p) = self.peers.remove(key) {
            if let Some(t) = p.latest_handshake(wall) {
                self.registered.set_last_handshake(key, t.as_secs());
            }
            self.counters.tunnels_evicted += 1;
            tracing::debug!(peer = %p.name, "tunnel evicted");
        }
    }

    /// A data datagram from `from` for a session of registered peer `index`'s evicted
    /// tunnel: the peer is back, so start a handshake to it (see the module's notes).
    pub(super) fn wake(
        &mut self,
        now: Instant,
        from: Endpoint,
        index: PeerIndex,
        len: usize,
        out: &mut impl Transmit,
    ) {
        self.counters.drop(Drop::PeerInactive);
        // A keepalive says the peer has nothing to send: let it sleep.
        if len <= KEEPALIVE_LEN || !self.wake_budget.take(now) {
            return;
        }
        let Some(key) = self.registered.key_of(index).copied() else {
            return;
        };
        if self.activate(now, &key).is_none() {
            return;
        }
        let Some(peer) = self.peers.get_mut(index) else {
            return;
        };
        peer.endpoint = Some(from);
        if let TunnResult::WriteToNetwork(d) =
            peer.tunn.format_handshake_initiation(&mut self.buf, false)
        {
            self.counters.wakes += 1;
            send(&mut self.counters, peer, now, from, d, out);
        }
    }

    /// Evicts the tunnels that have been quiet too long (called from the timers).
    pub(super) fn evict_idle(&mut self, now: Instant) {
        let Some(idle) = self.options.idle_evict else {
            return;
        };
        let due = |j: &JustInTime| {
            let quiet = now.saturating_duration_since(j.last_received);
            quiet >= idle || (!j.confirmed && quiet >= UNCONFIRMED_EVICT)
        };
        let stale: Vec<PublicKey> = self
            .peers
            .iter()
            .filter(|p| p.just_in_time.as_ref().is_some_and(due))
            .map(|p| p.public_key)
            .collect();
        for key in stale {
            self.evict(&key, now);
        }
    }
}

#[cfg(test)]
mod tests;
