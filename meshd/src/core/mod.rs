//! The sans-IO data plane. `Core` owns the peers, the routing table and the counters; the
//! shell feeds it TUN packets, UDP datagrams and the time, and it answers through a
//! [`Transmit`] the shell implements. No sockets, no clock of its own (boringtun's `Tunn`
//! keeps its own timers; we only decide when to poll them).
//!
//! Packet path: TUN read → LPM on destination → org check → `Tunn::encapsulate` → UDP send;
//! UDP recv → find the peer (receiver index, or static key for initiations) →
//! `Tunn::decapsulate` → source must be inside that peer's allowed IPs → org check →
//! TUN write, or (gateways) encapsulate again for the peer that routes the destination.

mod allowed_ips;
mod cookie_budget;
pub mod counters;
pub mod endpoint;
mod handshake;
mod just_in_time;
pub mod nat64;
pub mod org_filter;
pub mod packet;
mod peer_config;
pub mod peer_table;
mod receive;
pub mod registered;
pub mod router;
mod send;
pub mod timers;

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use x25519_dalek::StaticSecret;

pub use counters::{Counters, Drop};
pub use endpoint::{ConnectionId, Endpoint, Transport};
pub use just_in_time::Registering;
pub use org_filter::OrgPolicy;
pub use peer_table::{JustInTime, Peer, PeerIndex, PeerTable, PublicKey};
pub use registered::Registration;
pub use router::Router;

use handshake::Identity;

/// Big enough for any IP packet plus WireGuard's overhead.
const BUF_LEN: usize = 65_536 + 256;
const COOKIE_REPLY: u8 = 3;
const DATA: u8 = 4;

/// Where the core's output goes: implemented by the shell over real sockets, and by tests
/// over vectors.
pub trait Transmit {
    fn send_udp(&mut self, to: SocketAddr, datagram: &[u8]) -> bool;
    fn write_tun(&mut self, packet: &[u8]);
    /// A datagram for a peer that last came over WebSocket connection `conn`; false when
    /// there is no such connection (any more). Only a gateway's shell has any.
    fn send_websocket(&mut self, conn: ConnectionId, datagram: &[u8]) -> bool {
        let _ = (conn, datagram);
        false
    }
}

/// Sends on whichever transport `to` names.
fn transmit(out: &mut impl Transmit, to: Endpoint, datagram: &[u8]) -> bool {
    match to {
        Endpoint::Udp(a) => out.send_udp(a, datagram),
        Endpoint::WebSocket { conn, .. } => out.send_websocket(conn, datagram),
    }
}

/// Where a prefix leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Delivered to this host's TUN (its machines, its /80s, the org DNS address).
    Local,
    Peer(PeerIndex),
    /// A site's 4via6 /96 on its gateway: translated to IPv4 and sent to the site's router.
    Via(PeerIndex),
}

impl Target {
    fn peer(self) -> Option<PeerIndex> {
        match self {
            Target::Local => None,
            Target::Peer(i) | Target::Via(i) => Some(i),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Pass packets between peers (gateways).
    pub forward: bool,
    /// Mesh mode: every address belongs to an org, packets cross orgs only where the
    /// registry peered them, and sites' IPv4 LANs are reached through 4via6.
    pub org_isolation: bool,
    /// Gateways: registered peers get a tunnel only from their first handshake, and lose
    /// it after this long without a packet from them ([`Core::register_peer`]). `None`:
    /// every peer holds its tunnel for good.
    pub idle_evict: Option<Duration>,
}

pub struct Core {
    identity: Identity,
    has_key: bool,
    options: Options,
    peers: PeerTable,
    /// A gateway's registered external peers, with or without a tunnel.
    registered: registered::RegisteredPeers,
    wake_budget: just_in_time::WakeBudget,
    router: Router<Target>,
    pub counters: Counters,
    pub listen_port: u16,
    pub fwmark: u32,
    timers: timers::Schedule,
    /// Unix time for the `Instant`s the core is handed.
    wall: timers::WallClock,
    policy: OrgPolicy,
    /// The prefixes last given to [`Core::set_local_routes`].
    local: std::collections::BTreeSet<IpNet>,
    nat: nat64::Bindings,
    buf: Box<[u8]>,
    fwd: Box<[u8]>,
    /// A translated packet, before it is encapsulated.
    nat_buf: Box<[u8]>,
}

/// What to change on a peer; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct PeerUpdate {
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<Option<u16>>,
    pub preshared_key: Option<Option<[u8; 32]>>,
    pub name: Option<String>,
}

impl Core {
    /// A core with this key, or with none yet (`wg set` gives one later).
    pub fn new(private: Option<StaticSecret>, options: Options, first_index: u32) -> Core {
        let has_key = private.is_some();
        let private = private.unwrap_or_else(|| StaticSecret::from([0u8; 32]));
        Core {
            identity: Identity::new(private),
            has_key,
            options,
            peers: PeerTable::new(first_index),
            registered: Default::default(),
            wake_budget: Default::default(),
            router: Router::default(),
            counters: Counters::default(),
            listen_port: 0,
            fwmark: 0,
            timers: timers::Schedule::default(),
            wall: timers::WallClock::system(),
            policy: OrgPolicy::default(),
            local: std::collections::BTreeSet::new(),
            nat: nat64::Bindings::new(registry::addr::NAT64_POOL),
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            fwd: vec![0u8; BUF_LEN].into_boxed_slice(),
            nat_buf: vec![0u8; BUF_LEN].into_boxed_slice(),
        }
    }

    /// Sets the Unix time of `at` (the system's clock at [`Core::new`] otherwise); the shell
    /// sets it at every timer tick.
    pub fn set_wall_clock(&mut self, at: std::time::Instant, wall: std::time::SystemTime) {
        self.wall = timers::WallClock::new(at, wall);
    }

    pub fn options(&self) -> Options {
        self.options
    }

    pub fn private_key(&self) -> Option<[u8; 32]> {
        self.has_key.then(|| self.identity.private.to_bytes())
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.has_key.then(|| self.identity.public.to_bytes())
    }

    /// Sets or clears the private key. Existing sessions die (the key is part of them), the
    /// peers and their settings stay.
    pub fn set_private_key(&mut self, private: Option<StaticSecret>) {
        if private.as_ref().map(|p| p.to_bytes()) == self.private_key() {
            return;
        }
        self.has_key = private.is_some();
        self.identity = Identity::new(private.unwrap_or_else(|| StaticSecret::from([0u8; 32])));
        let own = self.identity.public.to_bytes();
        // A peer with our own public key makes no sense; wireguard-go drops it too.
        if self.has_key && self.peers.index_of(&own).is_some() {
            self.remove_peer(&own);
        }
        for peer in self.peers.iter_mut() {
            peer.tunn.set_static_private(
                self.identity.private.clone(),
                self.identity.public,
                Some(self.identity.tunn_limiter.clone()),
            );
        }
    }

    /// The peers holding a tunnel now: permanent ones and, at a gateway, the registered
    /// peers that are connected.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    pub fn peer(&self, key: &PublicKey) -> Option<&Peer> {
        self.peers.get(self.peers.index_of(key)?)
    }

    /// How many IPv6 sources hold a NAT64 binding (for metrics).
    pub fn nat64_bindings(&self) -> usize {
        self.nat.len()
    }
}

#[cfg(test)]
mod tests;
