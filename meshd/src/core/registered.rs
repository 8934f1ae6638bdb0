//! A gateway's external peers (laptops, sites) as the registry lists them, without tunnels.
//!
//! A `Tunn` costs kilobytes and a gateway may have a hundred thousand registered peers, most
//! of them never connected at any one time; Fly's gateways fell over holding them all. So a
//! gateway keeps only this compact record per registered peer, routes its prefixes to the
//! peer index the record reserves, and makes the `Tunn` when the peer's first valid
//! handshake initiation arrives (see `Core::handle_datagram`); an idle tunnel is dropped
//! again (see `timers`). The index is reserved for as long as the peer is registered, so the
//! router never changes when a tunnel comes or goes, and a datagram for a session of an
//! evicted tunnel still names the peer it belonged to.

use std::collections::HashMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::peer_table::{PeerIndex, PublicKey};

/// What the registry says about one external peer: everything its tunnel needs but the
/// session itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `peer/<org>/<name>`, for logs and metrics.
    pub name: Box<str>,
    /// Its /128 and its IPv6 site routes.
    pub allowed_ips: Box<[IpNet]>,
    /// A site's 4via6 /96.
    pub via: Option<Ipv6Net>,
    /// A site's IPv4 routes (reached through `via`, never routed on).
    pub site_v4: Box<[Ipv4Net]>,
}

impl Registration {
    pub fn new(
        name: &str,
        allowed_ips: &[IpNet],
        via: Option<Ipv6Net>,
        site_v4: &[Ipv4Net],
    ) -> Registration {
        let mut ips: Vec<IpNet> = allowed_ips.iter().map(|n| n.trunc()).collect();
        ips.sort();
        ips.dedup();
        Registration {
            name: name.into(),
            allowed_ips: ips.into(),
            via: via.map(|v| v.trunc()),
            site_v4: site_v4.iter().map(|n| n.trunc()).collect(),
        }
    }
}

#[derive(Debug)]
pub struct Registered {
    pub index: PeerIndex,
    pub registration: Registration,
    /// Unix seconds of the latest handshake of its last evicted tunnel, 0 for none: what
    /// `wgtool status` and `prune --idle` need of a peer `wg show` no longer lists.
    pub last_handshake: u64,
}

#[derive(Debug, Default)]
pub struct RegisteredPeers {
    by_key: HashMap<PublicKey, Registered>,
    by_index: HashMap<PeerIndex, PublicKey>,
}

impl RegisteredPeers {
    pub fn get(&self, key: &PublicKey) -> Option<&Registered> {
        self.by_key.get(key)
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// The registered peer an index is reserved for.
    pub fn key_of(&self, index: PeerIndex) -> Option<&PublicKey> {
        self.by_index.get(&index)
    }

    pub fn holds_index(&self, index: PeerIndex) -> bool {
        self.by_index.contains_key(&index)
    }

    /// Puts a registration in; returns the one it replaced.
    pub fn insert(
        &mut self,
        key: PublicKey,
        index: PeerIndex,
        registration: Registration,
    ) -> Option<Registration> {
        self.by_index.insert(index, key);
        let last_handshake = self.by_key.get(&key).map_or(0, |r| r.last_handshake);
        let old = self.by_key.insert(
            key,
            Registered {
                index,
                registration,
                last_handshake,
            },
        )?;
        if old.index != index {
            self.by_index.remove(&old.index);
        }
        Some(old.registration)
    }

    /// Notes when the peer last completed a handshake (its tunnel is going).
    pub fn set_last_handshake(&mut self, key: &PublicKey, unix_secs: u64) {
        if let Some(r) = self.by_key.get_mut(key) {
            r.last_handshake = r.last_handshake.max(unix_secs);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, &Registered)> {
        self.by_key.iter()
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<Registered> {
        let r = self.by_key.remove(key)?;
        self.by_index.remove(&r.index);
        Some(r)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.by_key.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_names_its_peer_until_the_peer_is_removed() {
        let mut r = RegisteredPeers::default();
        let reg = Registration::new(
            "peer/acme/alice",
            &["fdaa::1/128".parse().unwrap()],
            None,
            &[],
        );
        assert!(r.insert([1; 32], 7, reg.clone()).is_none());
        assert_eq!(r.key_of(7), Some(&[1; 32]));
        assert_eq!(r.insert([1; 32], 7, reg.clone()), Some(reg));
        assert_eq!(r.len(), 1);
        assert_eq!(r.remove(&[1; 32]).map(|x| x.index), Some(7));
        assert!(!r.holds_index(7));
        assert!(r.is_empty());
    }
}
