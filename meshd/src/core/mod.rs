//! The sans-IO data plane. `Core` owns the peers, the routing table and the counters; the
//! shell feeds it TUN packets, UDP datagrams and the time, and it answers through a
//! [`Transmit`] the shell implements. No sockets, no clock of its own (boringtun's `Tunn`
//! keeps its own timers; we only decide when to poll them).
//!
//! Packet path: TUN read → LPM on destination → org check → `Tunn::encapsulate` → UDP send;
//! UDP recv → find the peer (receiver index, or static key for initiations) →
//! `Tunn::decapsulate` → source must be inside that peer's allowed IPs → org check →
//! TUN write, or (gateways) encapsulate again for the peer that routes the destination.

mod cookie_budget;
pub mod counters;
pub mod endpoint;
mod just_in_time;
pub mod nat64;
pub mod org_filter;
pub mod packet;
pub mod peer_table;
pub mod registered;
pub mod router;
pub mod timers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use registry::OrgNetwork;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

pub use counters::{Counters, Drop};
pub use endpoint::{ConnectionId, Endpoint, Transport};
pub use just_in_time::Registering;
pub use org_filter::OrgPolicy;
pub use peer_table::{JustInTime, Peer, PeerIndex, PeerTable, PublicKey};
pub use registered::Registration;
pub use router::Router;

/// Handshake messages per second before we ask for cookies: boringtun's figure. Every
/// initiation and response passes this limiter once, before any Diffie-Hellman; `Tunn`s get
/// one that checks MAC1 and never limits, so a real handshake is not counted twice.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
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

struct Identity {
    private: StaticSecret,
    public: X25519Public,
    /// The one gate for handshake messages (see `HANDSHAKE_RATE_LIMIT`).
    rate_limiter: Arc<RateLimiter>,
    /// What the `Tunn`s check with: MAC1 only, never under load.
    tunn_limiter: Arc<RateLimiter>,
    /// Cookie replies per source address under load.
    cookie_budget: cookie_budget::CookieBudget,
}

impl Identity {
    fn new(private: StaticSecret) -> Identity {
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
    fn admit_handshake(
        &mut self,
        from: Endpoint,
        datagram: &[u8],
        buf: &mut [u8],
        out: &mut impl Transmit,
    ) -> Result<(), Drop> {
        let now = Instant::now();
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
            policy: OrgPolicy::default(),
            local: std::collections::BTreeSet::new(),
            nat: nat64::Bindings::new(registry::addr::NAT64_POOL),
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            fwd: vec![0u8; BUF_LEN].into_boxed_slice(),
            nat_buf: vec![0u8; BUF_LEN].into_boxed_slice(),
        }
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

    fn new_tunn(&self, key: &PublicKey, psk: Option<[u8; 32]>, index: PeerIndex) -> Tunn {
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
    fn allocate_index(&mut self) -> PeerIndex {
        loop {
            let i = self.peers.allocate_index();
            if !self.registered.holds_index(i) {
                return i;
            }
        }
    }

    /// Adds the peer if it is new; returns true if it was. A registered peer without a
    /// tunnel gets one (`wg set` on it at a gateway).
    pub fn ensure_peer(&mut self, key: PublicKey) -> bool {
        if self.peers.index_of(&key).is_some() {
            return false;
        }
        if self.registered.contains(&key) {
            return self.activate(Instant::now(), &key).is_some();
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

    /// Routes `net` to the peer. A prefix belongs to one peer: whoever had it loses it.
    pub fn add_allowed_ip(&mut self, key: &PublicKey, net: IpNet) {
        let Some(index) = self.peers.index_of(key) else {
            return;
        };
        let net = net.trunc();
        let previous = self.router.insert(net, Target::Peer(index));
        if let Some(Target::Peer(old)) = previous {
            if old != index {
                if let Some(p) = self.peers.get_mut(old) {
                    p.allowed_ips.retain(|n| *n != net);
                }
            }
        }
        if let Some(p) = self.peers.get_mut(index) {
            if !p.allowed_ips.contains(&net) {
                p.allowed_ips.push(net);
            }
        }
    }

    /// Makes the peer's allowed IPs exactly `nets`, touching only the routes that differ.
    pub fn set_allowed_ips(&mut self, key: &PublicKey, nets: &[IpNet]) {
        let Some(index) = self.peers.index_of(key) else {
            return;
        };
        let want: Vec<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        let have = self
            .peers
            .get(index)
            .map(|p| p.allowed_ips.clone())
            .unwrap_or_default();
        for old in have.iter().filter(|n| !want.contains(n)) {
            if self.router.get(*old) == Some(Target::Peer(index)) {
                self.router.remove(*old);
            }
        }
        if let Some(p) = self.peers.get_mut(index) {
            p.allowed_ips.retain(|n| want.contains(n));
        }
        for net in want {
            self.add_allowed_ip(key, net);
        }
    }

    /// Makes the peer a site with IPv4 routes reached through the 4via6 prefix `via`, or
    /// (`None`) no such site.
    pub fn set_site(&mut self, key: &PublicKey, via: Option<Ipv6Net>, v4: &[Ipv4Net]) {
        let Some(index) = self.peers.index_of(key) else {
            return;
        };
        let old = self.peers.get(index).and_then(|p| p.via);
        if let Some(old) = old.filter(|o| Some(*o) != via) {
            if self.router.get(IpNet::V6(old)) == Some(Target::Via(index)) {
                self.router.remove(IpNet::V6(old));
            }
        }
        if let Some(via) = via {
            self.router
                .insert(IpNet::V6(via.trunc()), Target::Via(index));
        }
        if let Some(p) = self.peers.get_mut(index) {
            p.via = via;
            p.site_v4 = v4.iter().map(|n| n.trunc()).collect();
        }
    }

    /// The org boundary: IPv6 site prefixes with their orgs, and the peered org pairs.
    pub fn set_org_policy(
        &mut self,
        sites: &[(IpNet, OrgNetwork)],
        peerings: impl IntoIterator<Item = (OrgNetwork, OrgNetwork)>,
    ) {
        self.policy.set_sites(sites);
        self.policy.set_peerings(peerings);
    }

    pub fn clear_allowed_ips(&mut self, key: &PublicKey) {
        self.set_allowed_ips(key, &[]);
    }

    /// Makes the prefixes delivered to this host exactly `nets`.
    /// Delivers `nets` to this host's TUN, and no other prefix: in the size of `nets` and of
    /// what changed, not of the routing table (a gateway's holds every peer's routes).
    pub fn set_local_routes(&mut self, nets: &[IpNet]) {
        let want: std::collections::BTreeSet<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        for gone in self.local.difference(&want) {
            if self.router.get(*gone) == Some(Target::Local) {
                self.router.remove(*gone);
            }
        }
        for &net in &want {
            if self.router.get(net) == Some(Target::Local) {
                continue;
            }
            if let Some(Target::Peer(old)) = self.router.get(net) {
                // Our own prefix wins over a peer claiming exactly the same one.
                if let Some(p) = self.peers.get_mut(old) {
                    p.allowed_ips.retain(|n| *n != net);
                }
            }
            self.router.insert(net, Target::Local);
        }
        self.local = want;
    }

    pub fn route(&self, addr: std::net::IpAddr) -> Option<Target> {
        self.router.lookup(addr)
    }

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

    /// A packet a local process sent into the TUN.
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut impl Transmit) {
        self.counters.tun_rx_packets += 1;
        self.counters.tun_rx_bytes += packet.len() as u64;
        if !self.has_key {
            return self.counters.drop(Drop::NoKey);
        }
        let Some((src, dst)) = packet::addrs(packet) else {
            return self.counters.drop(Drop::Malformed);
        };
        if self.options.org_isolation {
            if let Err(why) = self.policy.check(src, dst) {
                tracing::trace!(%src, %dst, reason = why.as_str(), "packet from the TUN dropped");
                return self.counters.drop(why);
            }
        }
        match self.router.lookup(dst) {
            Some(Target::Peer(index)) => {
                let Some(peer) = self.peers.get_mut(index) else {
                    let why = self.absent(index);
                    return self.counters.drop(why);
                };
                encapsulate(&mut self.counters, peer, now, packet, &mut self.buf, out);
            }
            Some(Target::Via(index)) => self.translate_out(now, index, src, packet, out),
            _ => self.counters.drop(Drop::NoRoute),
        }
    }

    /// A WireGuard datagram from the network: a UDP datagram (`from` a `SocketAddr`), or
    /// one framed on a gateway's WebSocket connection.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: impl Into<Endpoint>,
        datagram: &[u8],
        out: &mut impl Transmit,
    ) {
        let from: Endpoint = from.into();
        self.counters.count_rx(from.transport(), datagram.len());
        if !self.has_key {
            return self.counters.drop(Drop::NoKey);
        }
        // Set when this initiation made the peer's tunnel: undone if the tunnel refuses it.
        let mut made = false;
        let index = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return self.counters.drop(Drop::Malformed),
            Ok(Packet::HandshakeInit(init)) => {
                // MACs and the load check first: they are cheap, the DH below is not.
                if let Err(why) = self
                    .identity
                    .admit_handshake(from, datagram, &mut self.buf, out)
                {
                    return self.counters.drop(why);
                }
                let half = match parse_handshake_anon(
                    &self.identity.private,
                    &self.identity.public,
                    &init,
                ) {
                    Ok(h) => h,
                    Err(_) => return self.counters.drop(Drop::Decrypt),
                };
                let key = half.peer_static_public;
                match self.peers.index_of(&key) {
                    Some(i) => i,
                    None => match self.activate(now, &key) {
                        Some(i) => {
                            made = true;
                            i
                        }
                        None => return self.counters.drop(Drop::UnknownPeer),
                    },
                }
            }
            Ok(Packet::HandshakeResponse(p)) => {
                if let Err(why) = self
                    .identity
                    .admit_handshake(from, datagram, &mut self.buf, out)
                {
                    return self.counters.drop(why);
                }
                p.receiver_idx >> 8
            }
            Ok(Packet::PacketCookieReply(p)) => p.receiver_idx >> 8,
            Ok(Packet::PacketData(p)) => p.receiver_idx >> 8,
        };
        let Some(peer) = self.peers.get_mut(index) else {
            // Data for a registered peer whose tunnel was evicted: it is back.
            if datagram.first() == Some(&DATA) && self.registered.holds_index(index) {
                return self.wake(now, from, index, datagram.len(), out);
            }
            return self.counters.drop(Drop::UnknownIndex);
        };
        let result = peer
            .tunn
            .decapsulate(Some(from.ip()), datagram, &mut self.buf);
        if !matches!(result, TunnResult::Err(_)) {
            // Everything the session accepted, handshakes and keepalives included, as
            // wireguard-go counts it.
            peer.rx_bytes += datagram.len() as u64;
            if let Some(j) = peer.just_in_time.as_mut() {
                j.last_received = now;
                // A response or data proves the keys; an initiation may be a replay.
                j.confirmed |= matches!(datagram.first(), Some(2 | 4));
            }
        } else if made {
            // Anyone may name a registered key in an initiation; only its holder gets a
            // tunnel that stays.
            let why = match &result {
                TunnResult::Err(e) => Drop::of(e),
                _ => Drop::Decrypt,
            };
            let key = peer.public_key;
            self.evict(&key);
            return self.counters.drop(why);
        }
        let delivered = match result {
            TunnResult::Done => None,
            TunnResult::Err(e) => {
                tracing::trace!(peer = %peer.name, error = ?e, "datagram dropped");
                self.counters.drop(Drop::of(&e));
                None
            }
            TunnResult::WriteToNetwork(reply) => {
                if reply.first() != Some(&COOKIE_REPLY) {
                    // Authenticated: the peer is where this came from (roaming).
                    peer.endpoint = Some(from);
                    self.counters.handshakes += 1;
                }
                send(&mut self.counters, peer, now, from, reply, out);
                // Packets queued while the handshake ran can go now.
                while let TunnResult::WriteToNetwork(d) =
                    peer.tunn.decapsulate(None, &[], &mut self.buf)
                {
                    send(&mut self.counters, peer, now, from, d, out);
                }
                None
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                peer.endpoint = Some(from);
                Some(p.len())
            }
        };
        if let Some(len) = delivered {
            self.deliver(now, index, len, out);
        }
    }

    /// A packet `from` decapsulated into `self.buf[..len]`: check it, then hand it to the
    /// TUN or (gateways) to the peer that routes its destination.
    fn deliver(&mut self, now: Instant, from: PeerIndex, len: usize, out: &mut impl Transmit) {
        let buf = std::mem::take(&mut self.buf);
        self.deliver_packet(now, from, &buf[..len], out);
        self.buf = buf;
    }

    fn deliver_packet(
        &mut self,
        now: Instant,
        from: PeerIndex,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let Some((src, dst)) = packet::addrs(packet) else {
            return self.counters.drop(Drop::Malformed);
        };
        if let (IpAddr::V4(src4), IpAddr::V4(dst4)) = (src, dst) {
            if self.options.org_isolation {
                return self.translate_in(now, from, src4, dst4, packet, out);
            }
        }
        if self.router.lookup(src) != Some(Target::Peer(from)) {
            return self.counters.drop(Drop::SourceNotAllowed);
        }
        self.pass(now, from, src, dst, packet, out);
    }

    /// A packet from peer `from` whose source is checked: the org boundary, then on.
    fn pass(
        &mut self,
        now: Instant,
        from: PeerIndex,
        src: IpAddr,
        dst: IpAddr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        if self.options.org_isolation {
            if let Err(why) = self.policy.check(src, dst) {
                return self.counters.drop(why);
            }
        }
        match self.router.lookup(dst) {
            Some(Target::Peer(to)) if self.options.forward && to != from => {
                let Some(peer) = self.peers.get_mut(to) else {
                    let why = self.absent(to);
                    return self.counters.drop(why);
                };
                self.counters.forwarded += 1;
                encapsulate(&mut self.counters, peer, now, packet, &mut self.fwd, out);
            }
            Some(Target::Via(to)) if self.options.forward => {
                self.counters.forwarded += 1;
                self.translate_out(now, to, src, packet, out);
            }
            Some(Target::Peer(_) | Target::Via(_)) if self.options.org_isolation => {
                // Mesh mode without forwarding: not ours, and not ours to pass on.
                self.counters.drop(Drop::NoForward)
            }
            // Mesh mode knows every prefix of this host; nothing else goes to its kernel.
            None if self.options.org_isolation => self.counters.drop(Drop::NoRoute),
            _ => {
                self.counters.tun_tx_packets += 1;
                self.counters.tun_tx_bytes += packet.len() as u64;
                out.write_tun(packet);
            }
        }
    }

    /// An org's IPv6 packet to a 4via6 address of site `to`: out to the site as IPv4, from
    /// the pool address that stands for its source.
    fn translate_out(
        &mut self,
        now: Instant,
        to: PeerIndex,
        src: IpAddr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let (IpAddr::V6(src6), Some(dst4)) = (src, packet.get(36..40)) else {
            return self.counters.drop(Drop::NotTranslated);
        };
        let dst4 = Ipv4Addr::new(dst4[0], dst4[1], dst4[2], dst4[3]);
        let Some(peer) = self.peers.get_mut(to) else {
            let why = self.absent(to);
            return self.counters.drop(why);
        };
        if !peer.site_v4.iter().any(|n| n.contains(&dst4)) {
            return self.counters.drop(Drop::NotTranslated);
        }
        let src4 = self.nat.outbound(src6);
        match nat64::six_to_four(packet, src4, &mut self.nat_buf) {
            Ok(n) => encapsulate(
                &mut self.counters,
                peer,
                now,
                &self.nat_buf[..n],
                &mut self.fwd,
                out,
            ),
            Err(_) => self.counters.drop(Drop::NotTranslated),
        }
    }

    /// An IPv4 packet from a site's LAN to a pool address: on into the mesh as IPv6 from the
    /// LAN host's 4via6 address to the source the pool address stands for.
    fn translate_in(
        &mut self,
        now: Instant,
        from: PeerIndex,
        src4: Ipv4Addr,
        dst4: Ipv4Addr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let Some(peer) = self.peers.get(from) else {
            return self.counters.drop(Drop::UnknownIndex);
        };
        let Some(via) = peer
            .via
            .filter(|_| peer.site_v4.iter().any(|n| n.contains(&src4)))
        else {
            return self.counters.drop(Drop::SourceNotAllowed);
        };
        let Some(dst6) = self.nat.inbound(dst4) else {
            return self.counters.drop(Drop::NoBinding);
        };
        let src6 = registry::addr::via_addr(via, src4);
        let mut buf = std::mem::take(&mut self.nat_buf);
        match nat64::four_to_six(packet, src6, dst6, &mut buf) {
            Ok(n) => self.pass(now, from, src6.into(), dst6.into(), &buf[..n], out),
            Err(_) => self.counters.drop(Drop::NotTranslated),
        }
        self.nat_buf = buf;
    }

    /// How many IPv6 sources hold a NAT64 binding (for metrics).
    pub fn nat64_bindings(&self) -> usize {
        self.nat.len()
    }
}

fn send(
    counters: &mut Counters,
    peer: &mut Peer,
    now: Instant,
    to: Endpoint,
    datagram: &[u8],
    out: &mut impl Transmit,
) {
    if transmit(out, to, datagram) {
        counters.count_tx(to.transport(), datagram.len());
        peer.tx_bytes += datagram.len() as u64;
        peer.last_sent = Some(now);
    } else {
        counters.drop(Drop::SendFailed);
    }
}

fn encapsulate(
    counters: &mut Counters,
    peer: &mut Peer,
    now: Instant,
    packet: &[u8],
    buf: &mut [u8],
    out: &mut impl Transmit,
) {
    match peer.tunn.encapsulate(packet, buf) {
        TunnResult::WriteToNetwork(d) => match peer.endpoint {
            Some(ep) => send(counters, peer, now, ep, d, out),
            None => counters.drop(Drop::NoEndpoint),
        },
        TunnResult::Err(e) => counters.drop(Drop::of(&e)),
        // Queued until the handshake completes.
        _ => {}
    }
}

#[cfg(test)]
mod tests;
