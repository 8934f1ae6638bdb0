//! The registry's records and the snapshot that holds them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::addr::OrgNetwork;
use crate::error::Kind;
use crate::key::PublicKey;
use crate::machine_id::MachineId;
use crate::region::{self, Region};
#[cfg(any(feature = "etcd", test))]
use crate::view::MachineJson;

/// A registry version: every write makes a larger one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision(pub u64);

/// An organisation: a private network of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub name: String,
    pub network: OrgNetwork,
}

/// A host running meshd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub region: String,
    /// WireGuard public key (base64 in every stored and shown form).
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    pub gateway: bool,
    /// The node's 32-bit host part; the same in every org's address space.
    pub host: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub org: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    Started,
    Stopped,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Started => "started",
            MachineState::Stopped => "stopped",
        }
    }
}

/// A workload with a stable address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// 14 lowercase hex characters in every stored and shown form.
    pub id: MachineId,
    pub org: String,
    pub app: String,
    pub region: String,
    /// Where it runs now; its address stays in the /80 of the node it was created on.
    pub node: String,
    pub process_group: String,
    pub state: MachineState,
    pub addr: Ipv6Addr,
}

impl Machine {
    pub fn started(&self) -> bool {
        self.state == MachineState::Started
    }

    /// The /112 the machine owns.
    pub fn prefix(&self) -> Ipv6Net {
        machine_prefix(self.addr)
    }
}

/// The /112 a machine at `addr` owns.
pub(crate) fn machine_prefix(addr: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new(addr, 112)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

/// A WireGuard peer outside the mesh (a laptop, a site's router) attached to a gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub org: String,
    pub name: String,
    /// The gateway node it connects to.
    pub gateway: String,
    pub region: String,
    pub public_key: PublicKey,
    pub addr: Ipv6Addr,
    /// Extra prefixes routed to this peer (an on-prem site's subnets).
    pub routes: Vec<IpNet>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds after which the peer is no longer let in.
    pub expires: Option<i64>,
}

impl Peer {
    pub fn expired(&self, now_unix: i64) -> bool {
        self.expires.is_some_and(|e| e <= now_unix)
    }

    /// The peer's 4via6 /96 (see [`crate::addr::via_prefix`]) when it routes IPv4 prefixes:
    /// an IPv4 address `a.b.c.d` behind it is `<via>::a.b.c.d` to the rest of the org.
    /// `None` for a peer without IPv4 routes (the registry refuses IPv4 routes to a peer
    /// whose address has no 4via6 prefix).
    pub fn via(&self) -> Option<Ipv6Net> {
        if !self.routes.iter().any(|r| matches!(r, IpNet::V4(_))) {
            return None;
        }
        crate::addr::via_prefix(self.addr)
    }

    /// The peer's IPv6 routes (routed natively, unique in the registry).
    pub fn routes_v6(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.routes.iter().filter_map(|r| match r {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
    }

    /// The peer's IPv4 routes (reached through its 4via6 prefix; other sites may hold the
    /// same ones).
    pub fn routes_v4(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.routes.iter().filter_map(|r| match r {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
    }
}

/// Two orgs whose addresses may talk to each other: the only way traffic crosses orgs.
/// Unordered; stored with `a < b` (build it with [`Peering::new`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peering {
    pub a: String,
    pub b: String,
}

impl Peering {
    /// The peering of `x` and `y`, in either order.
    pub fn new(x: impl Into<String>, y: impl Into<String>) -> Peering {
        let (x, y) = (x.into(), y.into());
        if x <= y {
            Peering { a: x, b: y }
        } else {
            Peering { a: y, b: x }
        }
    }

    /// The same peering with `a < b`, whatever order it was built in.
    pub fn normalised(self) -> Peering {
        Peering::new(self.a, self.b)
    }

    /// Whether `org` is one of the two.
    pub fn involves(&self, org: &str) -> bool {
        self.a == org || self.b == org
    }
}

impl std::fmt::Display for Peering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {}", self.a, self.b)
    }
}

/// What a token may do: [`TokenScope::Peer`] creates, lists and removes its org's peers within
/// the token's limits; [`TokenScope::Admin`] does for its org what the local CLI does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Peer,
    Admin,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Peer => "peer",
            TokenScope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenScope {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "peer" => Ok(TokenScope::Peer),
            "admin" => Ok(TokenScope::Admin),
            other => Err(crate::error::Error::invalid(
                "token scope",
                other,
                "use `peer` or `admin`",
            )),
        }
    }
}

/// An enrollment token: lets an API client act for one org. The registry keeps the SHA-256
/// of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// `tok` and 16 lowercase hex characters (see [`Token::make_id`]).
    pub id: String,
    pub org: String,
    pub scope: TokenScope,
    /// 64 lowercase hex characters: the SHA-256 of the secret, computed by the caller. Empty
    /// in what [`Snapshot::scoped`] hands out.
    pub secret_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds from which the token is refused.
    pub expires: Option<i64>,
    /// How many peers a peer token may create.
    pub max_uses: Option<u32>,
    /// How many peers it has created.
    pub uses: u32,
    /// A peer token creates peers only in this region.
    pub region: Option<String>,
    /// A peer token creates peers only with names that start with this.
    pub name_prefix: Option<String>,
    /// Unix seconds when it was revoked.
    pub revoked: Option<i64>,
}

impl Token {
    /// A token id from 64 random bits: `tok` and 16 lowercase hex characters.
    pub fn make_id(random: u64) -> String {
        format!("tok{random:016x}")
    }

    pub fn expired(&self, now_unix: i64) -> bool {
        self.expires.is_some_and(|e| e <= now_unix)
    }

    /// Whether it has created as many peers as it may.
    pub fn used_up(&self) -> bool {
        self.max_uses.is_some_and(|m| self.uses >= m)
    }
}

/// One record of any kind, as a write puts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Org(Org),
    Node(Node),
    App(App),
    Machine(Machine),
    Peer(Peer),
    Peering(Peering),
    Token(Token),
}

/// The key of a record, as a write deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordKey {
    Org {
        name: String,
    },
    Node {
        name: String,
    },
    App {
        org: String,
        name: String,
    },
    Machine {
        id: MachineId,
    },
    Peer {
        org: String,
        name: String,
    },
    /// Always with `a < b` when made by [`Record::key`] or [`RecordKey::peering`].
    Peering {
        a: String,
        b: String,
    },
    Token {
        id: String,
    },
}

impl RecordKey {
    /// The key of the peering of `x` and `y`, in either order.
    pub fn peering(x: impl Into<String>, y: impl Into<String>) -> RecordKey {
        let Peering { a, b } = Peering::new(x, y);
        RecordKey::Peering { a, b }
    }
}

/// The kind a stored value names where [`Record::from_json`] may read it straight: it begins
/// `{"kind":"<kind>",` and no escape or second tag follows (serde's way refuses the one and
/// reads the other; no stored record has either).
fn fast_tag(value: &[u8]) -> Option<&[u8]> {
    value
        .strip_prefix(br#"{"kind":""#)
        .and_then(|rest| {
            rest.iter()
                .position(|&b| b == b'"')
                .map(|end| rest.split_at(end))
        })
        .filter(|(_, after)| {
            !after.contains(&b'\\') && !after.windows(6).any(|w| w == br#""kind""#)
        })
        .map(|(tag, _)| tag)
}

impl Record {
    /// A record from its JSON, as the registries store it. A value that starts as every
    /// writer here writes one, `{"kind":"<kind>",`, is read straight as that kind's struct:
    /// serde's way with a tag (`#[serde(tag)]`) buffers every field of every record first,
    /// which was the larger part of reading a million machines from etcd. Anything else
    /// (the tag later, spaces) goes that way and means the same.
    pub fn from_json(value: &[u8]) -> serde_json::Result<Record> {
        fn direct<'a, T: Deserialize<'a>>(
            value: &'a [u8],
            make: fn(T) -> Record,
        ) -> Option<serde_json::Result<Record>> {
            Some(serde_json::from_slice(value).map(make))
        }
        let fast = match fast_tag(value) {
            Some(b"org") => direct(value, Record::Org),
            Some(b"node") => direct(value, Record::Node),
            Some(b"app") => direct(value, Record::App),
            Some(b"machine") => direct(value, Record::Machine),
            Some(b"peer") => direct(value, Record::Peer),
            Some(b"peering") => direct(value, Record::Peering),
            Some(b"token") => direct(value, Record::Token),
            _ => None,
        };
        fast.unwrap_or_else(|| serde_json::from_slice(value))
    }

    /// A stored machine read with its strings borrowed ([`crate::view`]), where
    /// [`Record::from_json`] would read it as a machine straight; `None` where it would not
    /// (another kind, or serde's way).
    #[cfg(any(feature = "etcd", test))]
    pub(crate) fn machine_json(value: &[u8]) -> Option<serde_json::Result<MachineJson<'_>>> {
        (fast_tag(value) == Some(b"machine")).then(|| serde_json::from_slice(value))
    }

    /// What kind of record it is.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Org(_) => Kind::Org,
            Record::Node(_) => Kind::Node,
            Record::App(_) => Kind::App,
            Record::Machine(_) => Kind::Machine,
            Record::Peer(_) => Kind::Peer,
            Record::Peering(_) => Kind::Peering,
            Record::Token(_) => Kind::Token,
        }
    }

    pub fn key(&self) -> RecordKey {
        match self {
            Record::Org(o) => RecordKey::Org {
                name: o.name.clone(),
            },
            Record::Node(n) => RecordKey::Node {
                name: n.name.clone(),
            },
            Record::App(a) => RecordKey::App {
                org: a.org.clone(),
                name: a.name.clone(),
            },
            Record::Machine(m) => RecordKey::Machine { id: m.id },
            Record::Peer(p) => RecordKey::Peer {
                org: p.org.clone(),
                name: p.name.clone(),
            },
            Record::Peering(p) => RecordKey::peering(p.a.clone(), p.b.clone()),
            Record::Token(t) => RecordKey::Token { id: t.id.clone() },
        }
    }
}

/// Everything in the registry at one revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub revision: Revision,
    /// The next network id to hand out; ids are never reused.
    pub next_network: u32,
    pub orgs: BTreeMap<String, Org>,
    pub nodes: BTreeMap<String, Node>,
    /// Keyed by (org, app).
    pub apps: BTreeMap<(String, String), App>,
    /// Keyed by machine id.
    pub machines: BTreeMap<MachineId, Machine>,
    /// Keyed by (org, peer name).
    pub peers: BTreeMap<(String, String), Peer>,
    /// Org-to-org peerings, each pair sorted (`a < b`). Absent in snapshots written before
    /// peerings existed.
    #[serde(default)]
    pub peerings: BTreeSet<(String, String)>,
    /// Enrollment tokens, keyed by id. Absent in snapshots written before tokens existed.
    #[serde(default)]
    pub tokens: BTreeMap<String, Token>,
}

impl Snapshot {
    /// Puts a record in, replacing the one with the same key.
    pub fn put(&mut self, record: Record) {
        match record {
            Record::Org(o) => {
                self.orgs.insert(o.name.clone(), o);
            }
            Record::Node(n) => {
                self.nodes.insert(n.name.clone(), n);
            }
            Record::App(a) => {
                self.apps.insert((a.org.clone(), a.name.clone()), a);
            }
            Record::Machine(m) => {
                self.machines.insert(m.id, m);
            }
            Record::Peer(p) => {
                self.peers.insert((p.org.clone(), p.name.clone()), p);
            }
            Record::Peering(p) => {
                let Peering { a, b } = p.normalised();
                self.peerings.insert((a, b));
            }
            Record::Token(t) => {
                self.tokens.insert(t.id.clone(), t);
            }
        }
    }

    /// Takes a record out; absent records are fine.
    pub fn delete(&mut self, key: &RecordKey) {
        match key {
            RecordKey::Org { name } => {
                self.orgs.remove(name);
            }
            RecordKey::Node { name } => {
                self.nodes.remove(name);
            }
            RecordKey::App { org, name } => {
                self.apps.remove(&(org.clone(), name.clone()));
            }
            RecordKey::Machine { id } => {
                self.machines.remove(id);
            }
            RecordKey::Peer { org, name } => {
                self.peers.remove(&(org.clone(), name.clone()));
            }
            RecordKey::Peering { a, b } => {
                let Peering { a, b } = Peering::new(a.clone(), b.clone());
                self.peerings.remove(&(a, b));
            }
            RecordKey::Token { id } => {
                self.tokens.remove(id);
            }
        }
    }

    pub fn org_by_network(&self, network: OrgNetwork) -> Option<&Org> {
        self.orgs.values().find(|o| o.network == network)
    }

    pub fn region(code: &str) -> Option<&'static Region> {
        region::find(code)
    }

    /// The nodes that serve a /80 for `org`: those running one of its machines, holding the
    /// address space of one (a machine that moved away), or gateways holding one of its peers.
    pub fn org_hosts(&self, org: &str) -> std::collections::BTreeSet<u32> {
        let mut hosts = std::collections::BTreeSet::new();
        for m in self.machines.values().filter(|m| m.org == org) {
            hosts.insert(crate::addr::host_of(m.addr));
            if let Some(n) = self.nodes.get(&m.node) {
                hosts.insert(n.host);
            }
        }
        for p in self.peers.values().filter(|p| p.org == org) {
            hosts.insert(crate::addr::host_of(p.addr));
        }
        hosts
    }

    /// Whether orgs `x` and `y` are peered, in either order. Never for an org with itself
    /// (an org needs no peering to reach its own addresses). Looks through every peering
    /// without allocating; readers asking per packet keep their own index.
    pub fn peered(&self, x: &str, y: &str) -> bool {
        if x == y {
            return false;
        }
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        self.peerings.iter().any(|(pa, pb)| pa == a && pb == b)
    }

    /// The orgs `org` is peered with, sorted.
    pub fn peers_of_org(&self, org: &str) -> Vec<&str> {
        let mut orgs: Vec<&str> = self
            .peerings
            .iter()
            .filter_map(|(a, b)| {
                if a == org {
                    Some(b.as_str())
                } else if b == org {
                    Some(a.as_str())
                } else {
                    None
                }
            })
            .collect();
        orgs.sort_unstable();
        orgs
    }

    /// Every site route in the registry with the peer it is routed to, expired peers
    /// included (filter with [`Peer::expired`]). IPv6 routes are unique; IPv4 routes may
    /// repeat between peers, each reached through its own peer's [`Peer::via`].
    pub fn site_routes(&self) -> impl Iterator<Item = (IpNet, &Peer)> + '_ {
        self.peers
            .values()
            .flat_map(|p| p.routes.iter().map(move |r| (*r, p)))
    }

    /// The IPv6 site prefixes of `org`: the IPv6 routes of its peers that have not expired
    /// at `now_unix`, sorted.
    pub fn site_prefixes_v6(&self, org: &str, now_unix: i64) -> Vec<Ipv6Net> {
        let mut prefixes: Vec<Ipv6Net> = self
            .peers
            .values()
            .filter(|p| p.org == org && !p.expired(now_unix))
            .flat_map(|p| p.routes_v6())
            .collect();
        prefixes.sort_unstable();
        prefixes
    }

    /// The peer whose IPv6 site route holds `addr` (the longest, should old records overlap),
    /// expired peers included; its `org` is the org the address belongs to.
    pub fn site_peer_of(&self, addr: Ipv6Addr) -> Option<&Peer> {
        self.peers
            .values()
            .flat_map(|p| p.routes_v6().map(move |r| (r, p)))
            .filter(|(r, _)| r.contains(&addr))
            .max_by_key(|(r, _)| r.prefix_len())
            .map(|(_, p)| p)
    }

    /// Only the frame ([`crate::Registry::frame`]): the orgs, nodes, peerings, tokens and
    /// site-routing peers (those with any route) of this snapshot, at its revision.
    pub fn framed(mut self) -> Snapshot {
        self.apps.clear();
        self.machines.clear();
        self.peers.retain(|_, p| !p.routes.is_empty());
        self
    }

    /// The frame, and the records `also` names that exist ([`crate::Registry::frame_with`]).
    pub fn framed_with(self, also: &[RecordKey]) -> Snapshot {
        let extra: Vec<Record> = also.iter().filter_map(|k| self.get(k)).collect();
        let mut frame = self.framed();
        for r in extra {
            frame.put(r);
        }
        frame
    }

    /// What a token of `org` may read: every node (its tunnel files name gateways); the org
    /// and the orgs peered with it, and those peerings; the org's apps, machines, peers and
    /// tokens (their secret hashes emptied); and the peers of peered orgs that route sites,
    /// whose prefixes its tunnel files hold. Same revision and next network id.
    pub fn scoped(&self, org: &str) -> Snapshot {
        let peered: BTreeSet<&str> = self.peers_of_org(org).into_iter().collect();
        let site_of_peered = |p: &Peer| peered.contains(p.org.as_str()) && !p.routes.is_empty();
        let mut tokens = kept(&self.tokens, |t| t.org == org);
        for t in tokens.values_mut() {
            t.secret_hash.clear();
        }
        Snapshot {
            revision: self.revision,
            next_network: self.next_network,
            orgs: kept(&self.orgs, |o| {
                o.name == org || peered.contains(o.name.as_str())
            }),
            nodes: self.nodes.clone(),
            apps: kept(&self.apps, |a| a.org == org),
            machines: kept(&self.machines, |m| m.org == org),
            peers: kept(&self.peers, |p| p.org == org || site_of_peered(p)),
            peerings: self
                .peerings
                .iter()
                .filter(|(a, b)| a == org || b == org)
                .cloned()
                .collect(),
            tokens,
        }
    }

    /// Every record, in a stable order (orgs, nodes, apps, machines, peers, peerings,
    /// tokens).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.orgs
            .values()
            .cloned()
            .map(Record::Org)
            .chain(self.nodes.values().cloned().map(Record::Node))
            .chain(self.apps.values().cloned().map(Record::App))
            .chain(self.machines.values().cloned().map(Record::Machine))
            .chain(self.peers.values().cloned().map(Record::Peer))
            .chain(self.peerings.iter().map(|(a, b)| {
                Record::Peering(Peering {
                    a: a.clone(),
                    b: b.clone(),
                })
            }))
            .chain(self.tokens.values().cloned().map(Record::Token))
    }
}

/// The entries of `map` whose value passes `keep`.
fn kept<K: Clone + Ord, V: Clone>(
    map: &BTreeMap<K, V>,
    keep: impl Fn(&V) -> bool,
) -> BTreeMap<K, V> {
    map.iter()
        .filter(|(_, v)| keep(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
