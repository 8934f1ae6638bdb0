//! The peers: each one's WireGuard session state (`Tunn`), endpoint and allowed IPs, found
//! by public key (handshake initiations) or by receiver index (everything else).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::Tunn;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A public key, raw.
pub type PublicKey = [u8; 32];

/// The 24-bit index a peer's sessions carry in the top bits of their receiver index.
pub type PeerIndex = u32;

const INDEX_MASK: u32 = 0x00ff_ffff;

pub struct Peer {
    pub public_key: PublicKey,
    pub index: PeerIndex,
    pub tunn: Tunn,
    pub endpoint: Option<super::Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    /// A site's 4via6 /96 (mesh mode): the org reaches the site's IPv4 LAN through it.
    pub via: Option<Ipv6Net>,
    /// The site's IPv4 routes, reached only through `via`: they may overlap other sites'
    /// (every site is 192.168.1.0/24), so they are checked per peer, never routed on.
    pub site_v4: Vec<Ipv4Net>,
    pub keepalive: Option<u16>,
    pub preshared_key: Option<[u8; 32]>,
    /// What the registry calls it, for logs (empty for UAPI-made peers).
    pub name: String,
    /// When we last sent anything to it, for persistent keepalive.
    pub last_sent: Option<Instant>,
    /// Bytes received and sent on the wire, every datagram the session accepted or sent
    /// (handshakes and keepalives included), as wireguard-go counts them.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// For a registered peer's tunnel made just in time (gateways), what decides when it
    /// is evicted; `None` for a permanent peer.
    pub just_in_time: Option<JustInTime>,
}

#[derive(Debug, Clone, Copy)]
pub struct JustInTime {
    /// The last packet the session accepted from the peer (handshakes, data, keepalives).
    pub last_received: Instant,
    /// The peer has shown it holds the session's keys (a handshake response or a data
    /// packet came): an initiation alone may be a replay.
    pub confirmed: bool,
}

impl Peer {
    /// When the last handshake completed, as time since the Unix epoch; `None` before the
    /// first.
    pub fn latest_handshake(&self, now: SystemTime) -> Option<Duration> {
        let (since, ..) = self.tunn.stats();
        since
            .and_then(|d| now.checked_sub(d))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
    }
}

#[derive(Default)]
pub struct PeerTable {
    by_index: HashMap<PeerIndex, Peer>,
    by_key: HashMap<PublicKey, PeerIndex>,
    next_index: PeerIndex,
}

impl PeerTable {
    pub fn new(first_index: PeerIndex) -> Self {
        PeerTable {
            next_index: first_index & INDEX_MASK,
            ..Default::default()
        }
    }

    /// An index no live peer uses; indexes are not reused soon, so a stale datagram for a
    /// removed peer finds nobody rather than a newcomer.
    pub fn allocate_index(&mut self) -> PeerIndex {
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index + 1) & INDEX_MASK;
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    pub fn insert(&mut self, peer: Peer) {
        self.by_key.insert(peer.public_key, peer.index);
        self.by_index.insert(peer.index, peer);
    }

    pub fn remove(&mut self, key: &PublicKey) -> Option<Peer> {
        let index = self.by_key.remove(key)?;
        self.by_index.remove(&index)
    }

    pub fn index_of(&self, key: &PublicKey) -> Option<PeerIndex> {
        self.by_key.get(key).copied()
    }

    pub fn get(&self, index: PeerIndex) -> Option<&Peer> {
        self.by_index.get(&index)
    }

    pub fn get_mut(&mut self, index: PeerIndex) -> Option<&mut Peer> {
        self.by_index.get_mut(&index)
    }

    pub fn by_key_mut(&mut self, key: &PublicKey) -> Option<&mut Peer> {
        let index = self.by_key.get(key)?;
        self.by_index.get_mut(index)
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_index.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.by_index.values_mut()
    }

    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.by_key.keys()
    }
}
