//! The desired state kept up to date change by change: [`Model`] holds what [`super::desired`]
//! computes from a whole snapshot, as reference counts of what each record contributes, so a
//! registry [`Delta`] costs the records it touched, not the registry. It also notes what each
//! change touched ([`Dirty`]), so that [`apply_dirty`] brings the core along in the size of
//! the change too.
//!
//! Every record contributes to the desired state through its own fields and a few small
//! tables kept whole here (orgs, nodes, peerings); a node's host and an org's network never
//! change while records refer to them (the registry refuses removing either while used, and
//! a host is never reassigned), so a record's contribution can be taken back exactly as it
//! was given. Peers that expire are kept until they do, then their contribution is taken
//! back and given again as an expired peer's ([`Model::tick`]).
//!
//! [`super::desired`] stays the definition: the tests check that a model fed deltas equals it
//! on the resulting snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};
use registry::{Delta, MachineView, Node, OrgNetwork, Peer, Record, RecordRef, Snapshot};

use super::DesiredPeer;
use crate::core::PublicKey;

mod counted;

use counted::Counted;

/// What changed since the last [`Model::take_dirty`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Peers (nodes and this gateway's laptops and sites) whose desired state may differ;
    /// one the model no longer has is to be removed.
    pub peers: BTreeSet<PublicKey>,
    /// The local prefixes, the site prefixes or the peerings.
    pub policy: bool,
    /// The interface addresses.
    pub addresses: bool,
    /// The kernel routes.
    pub routes: bool,
}

impl Dirty {
    fn all(&mut self) {
        self.policy = true;
        self.addresses = true;
        self.routes = true;
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && !self.policy && !self.addresses && !self.routes
    }
}

/// The desired state of node `me`, kept by applying deltas.
#[derive(Debug, Default)]
pub struct Model {
    me: String,
    /// The model's clock (Unix seconds): peers expired at it contribute as expired.
    now_unix: i64,
    orgs: BTreeMap<String, OrgNetwork>,
    nodes: BTreeMap<String, Node>,
    /// Node name by host part.
    host_node: HashMap<u32, String>,
    peerings: BTreeSet<(String, String)>,
    /// Prefixes reached through each host's node: the /80 of every org served there, the
    /// /112 of each machine running there away from its own /80, and the IPv6 site routes
    /// and 4via6 prefix of each peer attached there. This node's own entry holds /80s only
    /// (its machines and peers contribute to `local_extra` and `gateway_peers` instead).
    by_host: HashMap<u32, Counted<IpNet>>,
    /// Local prefixes besides this host's /80s: each local machine's /112, each present
    /// org's DNS /128.
    local_extra: Counted<IpNet>,
    /// Addresses of the machines here, by org.
    local_addrs: BTreeMap<String, Counted<Ipv6Addr>>,
    /// Orgs present here: machines here and unexpired peers attached here.
    present: Counted<String>,
    /// Unexpired IPv6 site routes, by org.
    sites: BTreeMap<String, Counted<Ipv6Net>>,
    /// Laptops and sites attached here.
    gateway_peers: BTreeMap<PublicKey, DesiredPeer>,
    /// Peers that will expire, by expiry and key, with the record to take back.
    expiring: BTreeMap<(i64, String, String), Peer>,
    dirty: Dirty,
}

fn host128(a: Ipv6Addr) -> IpNet {
    IpNet::V6(Ipv6Net::new(a, 128).unwrap_or_default())
}

impl Model {
    /// An empty model for node `me`.
    pub fn new(me: &str) -> Model {
        Model {
            me: me.to_string(),
            ..Model::default()
        }
    }

    /// Starts again from `snap` at `now_unix`; everything is dirty.
    pub fn reset(&mut self, snap: &Snapshot, now_unix: i64) {
        self.clear(now_unix);
        // What `put` does with each record, in the same order, by reference: a reset of a big
        // registry clones none of its records. Apps and tokens contribute nothing.
        for o in snap.orgs.values() {
            self.orgs.insert(o.name.clone(), o.network);
        }
        for n in snap.nodes.values() {
            self.node(n, true);
        }
        for m in snap.machines.values() {
            self.machine(m.into(), true);
        }
        for p in snap.peers.values() {
            self.peer(p, true);
        }
        self.peerings = snap.peerings.clone();
        let new_keys = self.peer_keys();
        self.dirty.peers.extend(new_keys);
    }

    /// Starts again, empty, at `now_unix`, to be filled record by record ([`Model::put`]) in
    /// the order [`registry::Registry::visit`] gives them; everything is dirty.
    pub fn clear(&mut self, now_unix: i64) {
        let old_keys: Vec<PublicKey> = self.peer_keys();
        let me = std::mem::take(&mut self.me);
        *self = Model {
            me,
            now_unix,
            ..Model::default()
        };
        self.dirty.all();
        self.dirty.peers.extend(old_keys);
    }

    /// Adds one record of a whole read: orgs and nodes must come before the machines and
    /// peers that name them.
    pub fn put(&mut self, r: &Record) {
        self.record(r, true);
    }

    /// [`Model::put`] for a record of a whole read, a machine borrowed.
    pub fn put_ref(&mut self, r: &RecordRef<'_>) {
        match r {
            RecordRef::Machine(m) => self.machine(*m, true),
            RecordRef::Record(r) => self.put(r),
        }
    }

    /// Applies one revision's changes.
    pub fn apply(&mut self, delta: &Delta) {
        for c in &delta.changes {
            if let Some(before) = &c.before {
                self.record(before, false);
            }
            if let Some(after) = &c.after {
                self.record(after, true);
            }
        }
    }

    /// Moves the clock to `now_unix`: peers that expired by then stop being let in and
    /// routed to.
    pub fn tick(&mut self, now_unix: i64) {
        self.now_unix = now_unix;
        while let Some(entry) = self.expiring.first_entry() {
            if entry.key().0 > now_unix {
                break;
            }
            let p = entry.remove();
            // Taken back as it was given (unexpired), given again as expired.
            self.peer_unexpired(&p, false);
            self.peer_always(&p, false);
            self.peer(&p, true);
        }
    }

    /// The earliest expiry still to come, for a timer.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiring.keys().next().map(|k| k.0)
    }

    /// What changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    fn my_host(&self) -> Option<u32> {
        self.nodes.get(&self.me).map(|n| n.host)
    }

    fn my_key(&self) -> Option<PublicKey> {
        self.nodes.get(&self.me).map(|n| n.public_key.to_bytes())
    }

    fn record(&mut self, r: &Record, add: bool) {
        match r {
            Record::Machine(m) => self.machine(m.into(), add),
            Record::Peer(p) => self.peer(p, add),
            Record::Org(o) => {
                if add {
                    self.orgs.insert(o.name.clone(), o.network);
                } else {
                    self.orgs.remove(&o.name);
                }
                self.dirty.all();
            }
            Record::Peering(p) => {
                let pair = (p.a.clone(), p.b.clone());
                if add {
                    self.peerings.insert(pair);
                } else {
                    self.peerings.remove(&pair);
                }
                self.dirty.policy = true;
            }
            Record::Node(n) => self.node(n, add),
            Record::App(_) | Record::Token(_) => {}
        }
    }

    fn node(&mut self, n: &Node, add: bool) {
        self.dirty.peers.insert(n.public_key.to_bytes());
        if add {
            self.host_node.insert(n.host, n.name.clone());
            self.nodes.insert(n.name.clone(), n.clone());
        } else {
            if self.host_node.get(&n.host) == Some(&n.name) {
                self.host_node.remove(&n.host);
            }
            self.nodes.remove(&n.name);
        }
        if n.name == self.me {
            // Which host is local, and which key is this node's: everything may differ.
            self.dirty.all();
            let keys = self.peer_keys();
            self.dirty.peers.extend(keys);
        }
    }

    /// Keys of every peer the model wants.
    fn peer_keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.gateway_peers.keys().copied().collect();
        keys.extend(self.nodes.values().map(|n| n.public_key.to_bytes()));
        keys
    }

    /// Marks what a change to host `host`'s prefixes touches.
    fn host_changed(&mut self, host: u32) {
        if Some(host) == self.my_host() {
            self.dirty.policy = true;
            return;
        }
        if let Some(n) = self.host_node.get(&host).and_then(|n| self.nodes.get(n)) {
            self.dirty.peers.insert(n.public_key.to_bytes());
        }
    }

    fn count_host(&mut self, host: u32, prefix: IpNet, add: bool) {
        let set = self.by_host.entry(host).or_default();
        let changed = if add {
            set.add(prefix)
        } else {
            set.remove(&prefix)
        };
        if set.is_empty() {
            self.by_host.remove(&host);
        }
        if changed {
            self.host_changed(host);
        }
    }

    fn count_local(&mut self, prefix: IpNet, add: bool) {
        let changed = if add {
            self.local_extra.add(prefix)
        } else {
            self.local_extra.remove(&prefix)
        };
        self.dirty.policy |= changed;
    }

    fn count_present(&mut self, org: &str, add: bool) {
        let changed = if add {
            self.present.add(org.to_string())
        } else {
            self.present.remove(&org.to_string())
        };
        if !changed {
            return;
        }
        self.dirty.addresses = true;
        self.dirty.routes = true;
        if let Some(net) = self.orgs.get(org).copied() {
            self.count_local(host128(net.dns_addr()), add);
        }
    }

    /// The /80 of `org` on `host`, counted once per record that puts the org there.
    fn count_org_host(&mut self, org: &str, host: u32, add: bool) {
        if let Some(net) = self.orgs.get(org).copied() {
            self.count_host(host, IpNet::V6(net.node_prefix(host)), add);
        }
    }

    fn machine(&mut self, m: MachineView<'_>, add: bool) {
        let addr_host = registry::addr::host_of(m.addr);
        self.count_org_host(m.org, addr_host, add);
        let Some(runs_on) = self.nodes.get(m.node).map(|n| n.host) else {
            return;
        };
        self.count_org_host(m.org, runs_on, add);
        if m.node == self.me {
            let addrs = self.local_addrs.entry(m.org.to_string()).or_default();
            let changed = if add {
                addrs.add(m.addr)
            } else {
                addrs.remove(&m.addr)
            };
            if addrs.is_empty() {
                self.local_addrs.remove(m.org);
            }
            if changed {
                self.dirty.addresses = true;
                self.dirty.routes = true;
            }
            self.count_present(m.org, add);
            self.count_local(IpNet::V6(m.prefix()), add);
        } else if addr_host != runs_on {
            self.count_host(runs_on, IpNet::V6(m.prefix()), add);
        }
    }

    fn peer(&mut self, p: &Peer, add: bool) {
        self.peer_always(p, add);
        if p.expired(self.now_unix) {
            return;
        }
        self.peer_unexpired(p, add);
        if let Some(e) = p.expires {
            let key = (e, p.org.clone(), p.name.clone());
            if add {
                self.expiring.insert(key, p.clone());
            } else {
                self.expiring.remove(&key);
            }
        }
    }

    /// What a peer gives expired or not: its org's /80 on its gateway's host.
    fn peer_always(&mut self, p: &Peer, add: bool) {
        self.count_org_host(&p.org, registry::addr::host_of(p.addr), add);
    }

    /// What only an unexpired peer gives.
    fn peer_unexpired(&mut self, p: &Peer, add: bool) {
        if !self.orgs.contains_key(&p.org) {
            return;
        }
        let sites = self.sites.entry(p.org.clone()).or_default();
        let mut changed = false;
        for r in p.routes_v6() {
            changed |= if add { sites.add(r) } else { sites.remove(&r) };
        }
        if sites.is_empty() {
            self.sites.remove(&p.org);
        }
        if changed {
            self.dirty.policy = true;
            self.dirty.routes = true;
        }
        if p.gateway == self.me {
            let key = p.public_key.to_bytes();
            self.count_present(&p.org, add);
            self.dirty.peers.insert(key);
            if add {
                let mut ips = vec![host128(p.addr)];
                ips.extend(p.routes_v6().map(IpNet::V6));
                self.gateway_peers.insert(
                    key,
                    DesiredPeer {
                        name: format!("peer/{}/{}", p.org, p.name),
                        endpoint: None,
                        allowed_ips: ips,
                        via: p.via(),
                        site_v4: p.routes_v4().collect(),
                    },
                );
            } else {
                self.gateway_peers.remove(&key);
            }
        } else if let Some(gw) = self.nodes.get(&p.gateway).map(|n| n.host) {
            for r in p.routes_v6().map(IpNet::V6).chain(p.via().map(IpNet::V6)) {
                self.count_host(gw, r, add);
            }
        }
    }
}

mod desired;

pub use desired::apply_dirty;

#[cfg(test)]
mod tests;
