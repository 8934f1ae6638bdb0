//! Adding, changing and removing peers (from the UAPI and the registry); a peer's `Tunn`
//! and its receiver index are made here.

use std::time::Instant;

use boringtun::noise::Tunn;
use x25519_dalek::PublicKey as X25519Public;

use super::{Core, Endpoint, Peer, PeerIndex, PeerUpdate, PublicKey};

impl Core {
    pub(super) fn new_tunn(
        &self,
        key: &PublicKey,
        psk: Option<[u8; 32]>,
        index: PeerIndex,
    ) -> Tunn {
        Tunn::new(
            self.identity.private.clone(),
            X25519Public::from(*key),
            psk,
            None,
            index,
            Some(self.identity.tunn_limiter.clone()),
        )
    }

    /// An index neither a peer nor a registration holds.
    pub(super) fn allocate_index(&mut self) -> PeerIndex {
        loop {
            let i = self.peers.allocate_index();
            if !self.registered.holds_index(i) {
                return i;
            }
        }
    }

    /// Adds the peer if it is new; returns true if it was. A registered peer without a
    /// tunnel gets one (`wg set` on it at a gateway), as of `now`.
    pub fn ensure_peer(&mut self, now: Instant, key: PublicKey) -> bool {
        if self.peers.index_of(&key).is_some() {
            return false;
        }
        if self.registered.contains(&key) {
            return self.activate(now, &key).is_some();
        }
        let index = self.allocate_index();
        let tunn = self.new_tunn(&key, None, index);
        self.peers.insert(Peer {
            public_key: key,
            index,
            tunn,
            endpoint: None,
            allowed_ips: Vec::new(),
            via: None,
            site_v4: Vec::new(),
            keepalive: None,
            preshared_key: None,
            name: String::new(),
            last_sent: None,
            rx_bytes: 0,
            tx_bytes: 0,
            just_in_time: None,
        });
        true
    }

    /// Changes a peer in place; its session survives everything but a new preshared key.
    pub fn update_peer(&mut self, key: &PublicKey, update: PeerUpdate) {
        let Some(index) = self.peers.index_of(key) else {
            return;
        };
        let new_tunn = match update.preshared_key {
            Some(psk)
                if self
                    .peers
                    .get(index)
                    .is_some_and(|p| p.preshared_key != psk) =>
            {
                Some((psk, self.new_tunn(key, psk, index)))
            }
            _ => None,
        };
        let Some(peer) = self.peers.get_mut(index) else {
            return;
        };
        if let Some(ep) = update.endpoint {
            peer.endpoint = Some(Endpoint::Udp(ep));
        }
        if let Some(k) = update.keepalive {
            peer.keepalive = k.filter(|k| *k > 0);
        }
        if let Some(name) = update.name {
            peer.name = name;
        }
        if let Some((psk, tunn)) = new_tunn {
            peer.preshared_key = psk;
            peer.tunn = tunn;
        }
    }

    /// Removes the peer, and its registration if it has one.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        if self.unregister_peer(key) {
            return true;
        }
        let Some(peer) = self.peers.remove(key) else {
            return false;
        };
        self.router.retain(|t| t.peer() != Some(peer.index));
        true
    }

    pub fn clear_peers(&mut self) {
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.remove_peer(&k);
        }
    }
}
