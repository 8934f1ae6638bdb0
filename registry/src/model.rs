//! The registry's records and the snapshot that holds them all.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::addr::OrgNetwork;
use crate::region::{self, Region};

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
    /// WireGuard public key, base64.
    pub public_key: String,
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
    /// 14 lowercase hex characters.
    pub id: String,
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
        Ipv6Net::new(self.addr, 112)
            .map(|n| n.trunc())
            .unwrap_or_default()
    }
}

/// A WireGuard peer outside the mesh (a laptop, a site's router) attached to a gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub org: String,
    pub name: String,
    /// The gateway node it connects to.
    pub gateway: String,
    pub region: String,
    pub public_key: String,
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
}

/// The key of a record, as a write deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordKey {
    Org { name: String },
    Node { name: String },
    App { org: String, name: String },
    Machine { id: String },
    Peer { org: String, name: String },
}

impl Record {
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
            Record::Machine(m) => RecordKey::Machine { id: m.id.clone() },
            Record::Peer(p) => RecordKey::Peer {
                org: p.org.clone(),
                name: p.name.clone(),
            },
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
    pub machines: BTreeMap<String, Machine>,
    /// Keyed by (org, peer name).
    pub peers: BTreeMap<(String, String), Peer>,
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
                self.machines.insert(m.id.clone(), m);
            }
            Record::Peer(p) => {
                self.peers.insert((p.org.clone(), p.name.clone()), p);
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

    /// Every record, in a stable order (orgs, nodes, apps, machines, peers).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.orgs
            .values()
            .cloned()
            .map(Record::Org)
            .chain(self.nodes.values().cloned().map(Record::Node))
            .chain(self.apps.values().cloned().map(Record::App))
            .chain(self.machines.values().cloned().map(Record::Machine))
            .chain(self.peers.values().cloned().map(Record::Peer))
    }
}
