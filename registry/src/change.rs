//! Writes, as a pure function of a snapshot: `plan` validates a change, allocates what it
//! needs and returns the records to put and delete. Every backend persists a plan in one
//! transaction, so validation and allocation live here once.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::addr::{self, OrgNetwork, HOST_RANGE, SLOT_RANGE};
use crate::error::{Error, Kind, Result};
use crate::key::PublicKey;
use crate::machine_id::MachineId;
use crate::model::{
    App, Machine, MachineState, Node, Org, Peer, Peering, Record, RecordKey, Snapshot, TokenScope,
};
use crate::{name, region};

mod token;

pub use token::check_token;

/// A node as its operator (or its own meshd) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub region: String,
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    pub gateway: bool,
}

/// One write to the registry; it applies whole or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    CreateOrg {
        name: String,
    },
    RemoveOrg {
        name: String,
    },
    /// Adds a node; fails if the name is taken.
    AddNode(NodeSpec),
    /// Adds a node or refreshes its key, endpoint, region and gateway flag (meshd at start).
    RegisterNode(NodeSpec),
    RemoveNode {
        name: String,
    },
    AddMachine {
        org: String,
        app: String,
        region: String,
        node: String,
        process_group: Option<String>,
    },
    SetMachineState {
        id: MachineId,
        state: MachineState,
    },
    MoveMachine {
        id: MachineId,
        node: String,
    },
    RemoveMachine {
        id: MachineId,
    },
    AddPeer {
        org: String,
        name: String,
        /// Pick a gateway in this region (the least loaded) unless `gateway` names one.
        region: Option<String>,
        gateway: Option<String>,
        public_key: PublicKey,
        routes: Vec<IpNet>,
        /// Unix seconds.
        expires: Option<i64>,
    },
    RemovePeer {
        org: String,
        name: String,
    },
    /// Lets the addresses of orgs `a` and `b` talk to each other (in both directions); the
    /// only way traffic crosses orgs. The order of the two does not matter.
    PeerOrgs {
        a: String,
        b: String,
    },
    /// Ends the peering of `a` and `b`, in either order.
    UnpeerOrgs {
        a: String,
        b: String,
    },
    /// Makes an enrollment token for `org`. The caller makes the id and the secret and gives
    /// only the secret's SHA-256; `max_uses`, `region` and `name_prefix` limit a peer token.
    CreateToken {
        id: String,
        org: String,
        scope: TokenScope,
        /// 64 lowercase hex characters.
        secret_hash: String,
        /// Unix seconds.
        expires: Option<i64>,
        max_uses: Option<u32>,
        region: Option<String>,
        name_prefix: Option<String>,
    },
    /// Marks a token revoked; it is kept, so that `token list` shows it and its id is not
    /// made again.
    RevokeToken {
        id: String,
    },
    /// `change`, made by an API client with token `id` whose secret hashes to `secret_hash`:
    /// applies only if the token is valid and the change within its scope and limits (see
    /// [`check_token`]). A peer token's use is counted in the same write.
    WithToken {
        id: String,
        secret_hash: String,
        change: Box<Change>,
    },
}

/// What a change does to the stored records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    Put(Record),
    Delete(RecordKey),
}

/// The outcome of planning a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Set when the change allocated a network id.
    pub next_network: Option<u32>,
    /// The record the change made or changed, for the caller to show.
    pub result: Option<Record>,
}

impl Plan {
    fn one(write: Write, result: Option<Record>) -> Plan {
        Plan {
            writes: vec![write],
            next_network: None,
            result,
        }
    }

    /// Applies the plan to an in-memory snapshot (backends that keep one, and tests).
    pub fn apply_to(&self, snap: &mut Snapshot) {
        for w in &self.writes {
            match w {
                Write::Put(r) => snap.put(r.clone()),
                Write::Delete(k) => snap.delete(k),
            }
        }
        if let Some(n) = self.next_network {
            snap.next_network = n;
        }
        snap.revision.0 += 1;
    }
}

/// Where a plan gets what it cannot compute: randomness for ids and the time.
pub trait Context {
    fn random_u64(&mut self) -> u64;
    fn now_unix(&self) -> i64;
}

/// The real context: OS randomness and the system clock.
pub struct SystemContext;

impl Context for SystemContext {
    fn random_u64(&mut self) -> u64 {
        use rand_core::RngCore;
        rand_core::OsRng.next_u64()
    }

    fn now_unix(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// What a plan counts over the whole registry: the answers a backend gives from an index
/// (a count, the lowest free slot) so that a write can be planned against a partial snapshot
/// holding only the records the change names. A [`Snapshot`] answers by scanning itself.
pub trait Usage {
    /// The lowest slot (in [`SLOT_RANGE`]) that no machine or peer address in `network`'s
    /// /80 at `host` holds; `None` when all are taken.
    fn lowest_free_slot(&self, network: OrgNetwork, host: u32) -> Result<Option<u32>>;
    /// Whether a machine has id `id`.
    fn machine_exists(&self, id: MachineId) -> Result<bool>;
    /// How many peers use node `gateway` as their gateway.
    fn gateway_peers(&self, gateway: &str) -> Result<usize>;
    /// How many machines and how many peers org `org` has.
    fn org_members(&self, org: &str) -> Result<(usize, usize)>;
    /// How many machines run on `node`, how many hold addresses from its host part.
    fn node_machines(&self, node: &Node) -> Result<(usize, usize)>;
}

impl Usage for Snapshot {
    fn lowest_free_slot(&self, network: OrgNetwork, host: u32) -> Result<Option<u32>> {
        Ok(addr::lowest_free(
            used_slots(self, network, host),
            SLOT_RANGE,
        ))
    }

    fn machine_exists(&self, id: MachineId) -> Result<bool> {
        Ok(self.machines.contains_key(&id))
    }

    fn gateway_peers(&self, gateway: &str) -> Result<usize> {
        Ok(self.peers.values().filter(|p| p.gateway == gateway).count())
    }

    fn org_members(&self, org: &str) -> Result<(usize, usize)> {
        let machines = self.machines.values().filter(|m| m.org == org).count();
        let peers = self.peers.values().filter(|p| p.org == org).count();
        Ok((machines, peers))
    }

    fn node_machines(&self, node: &Node) -> Result<(usize, usize)> {
        let running = self
            .machines
            .values()
            .filter(|m| m.node == node.name)
            .count();
        let addressed = self
            .machines
            .values()
            .filter(|m| addr::host_of(m.addr) == node.host)
            .count();
        Ok((running, addressed))
    }
}

/// Validates `change` against `snap` and works out its writes.
pub fn plan(snap: &Snapshot, change: &Change, ctx: &mut dyn Context) -> Result<Plan> {
    plan_with(snap, snap, change, ctx)
}

/// [`plan`] against a snapshot that may hold only part of the registry, with `usage`
/// answering for the whole. The plan equals [`plan`] on the whole snapshot when `snap` holds
/// every org, node and peering, and the records the change names: the machine, app, peer or
/// token by key, the peers with the change's public key, every peer with site routes (for a
/// peer with routes), an org's apps and tokens (to remove it), and the token of a
/// [`Change::WithToken`].
pub fn plan_with(
    snap: &Snapshot,
    usage: &dyn Usage,
    change: &Change,
    ctx: &mut dyn Context,
) -> Result<Plan> {
    match change {
        Change::CreateOrg { name } => create_org(snap, name),
        Change::RemoveOrg { name } => remove_org(snap, usage, name),
        Change::AddNode(spec) => add_node(snap, spec, false),
        Change::RegisterNode(spec) => add_node(snap, spec, true),
        Change::RemoveNode { name } => remove_node(snap, usage, name),
        Change::AddMachine {
            org,
            app,
            region,
            node,
            process_group,
        } => add_machine(
            snap,
            usage,
            org,
            app,
            region,
            node,
            process_group.as_deref(),
            ctx,
        ),
        Change::SetMachineState { id, state } => {
            let mut m = machine(snap, *id)?.clone();
            m.state = *state;
            Ok(Plan::one(
                Write::Put(Record::Machine(m.clone())),
                Some(Record::Machine(m)),
            ))
        }
        Change::MoveMachine { id, node } => {
            let mut m = machine(snap, *id)?.clone();
            let n = node_named(snap, node)?;
            m.node = n.name.clone();
            m.region = n.region.clone();
            Ok(Plan::one(
                Write::Put(Record::Machine(m.clone())),
                Some(Record::Machine(m)),
            ))
        }
        Change::RemoveMachine { id } => {
            let m = machine(snap, *id)?;
            Ok(Plan::one(
                Write::Delete(RecordKey::Machine { id: m.id }),
                Some(Record::Machine(m.clone())),
            ))
        }
        Change::AddPeer {
            org,
            name,
            region,
            gateway,
            public_key,
            routes,
            expires,
        } => add_peer(
            snap,
            usage,
            PeerRequest {
                org,
                name,
                region: region.as_deref(),
                gateway: gateway.as_deref(),
                public_key,
                routes,
                expires: *expires,
            },
            ctx,
        ),
        Change::RemovePeer { org: o, name } => {
            org(snap, o)?;
            let p = snap
                .peers
                .get(&(o.clone(), name.clone()))
                .ok_or_else(|| Error::not_found(Kind::Peer, name))?;
            Ok(Plan::one(
                Write::Delete(RecordKey::Peer {
                    org: o.clone(),
                    name: name.clone(),
                }),
                Some(Record::Peer(p.clone())),
            ))
        }
        Change::PeerOrgs { a, b } => peer_orgs(snap, a, b),
        Change::UnpeerOrgs { a, b } => unpeer_orgs(snap, a, b),
        Change::CreateToken {
            id,
            org,
            scope,
            secret_hash,
            expires,
            max_uses,
            region,
            name_prefix,
        } => token::create(
            snap,
            token::TokenRequest {
                id,
                org,
                scope: *scope,
                secret_hash,
                expires: *expires,
                max_uses: *max_uses,
                region: region.as_deref(),
                name_prefix: name_prefix.as_deref(),
            },
            ctx,
        ),
        Change::RevokeToken { id } => token::revoke(snap, id, ctx),
        Change::WithToken {
            id,
            secret_hash,
            change,
        } => token::with_token(snap, usage, id, secret_hash, change, ctx),
    }
}

fn org<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Org> {
    snap.orgs
        .get(name)
        .ok_or_else(|| Error::not_found(Kind::Org, name))
}

fn node_named<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Node> {
    snap.nodes
        .get(name)
        .ok_or_else(|| Error::not_found(Kind::Node, name))
}

fn machine(snap: &Snapshot, id: MachineId) -> Result<&Machine> {
    snap.machines
        .get(&id)
        .ok_or_else(|| Error::not_found(Kind::Machine, id.to_string()))
}

fn known_region(field: &'static str, code: &str) -> Result<()> {
    if region::find(code).is_some() {
        return Ok(());
    }
    let codes: Vec<&str> = region::REGIONS.iter().map(|r| r.code).collect();
    Err(Error::invalid(
        field,
        code,
        format!("unknown region (known: {})", codes.join(" ")),
    ))
}

/// No two members of the mesh may share a key: WireGuard tells peers apart by key.
fn key_unused(snap: &Snapshot, key: &PublicKey, except_node: Option<&str>) -> Result<()> {
    if let Some(n) = snap
        .nodes
        .values()
        .find(|n| n.public_key == *key && Some(n.name.as_str()) != except_node)
    {
        return Err(Error::invalid(
            "public key",
            key,
            format!("already used by node `{}`", n.name),
        ));
    }
    if let Some(p) = snap.peers.values().find(|p| p.public_key == *key) {
        return Err(Error::invalid(
            "public key",
            key,
            format!("already used by peer `{}` of org `{}`", p.name, p.org),
        ));
    }
    Ok(())
}

fn create_org(snap: &Snapshot, name: &str) -> Result<Plan> {
    name::label("org name", name)?;
    if snap.orgs.contains_key(name) {
        return Err(Error::exists(Kind::Org, name));
    }
    let network = snap.next_network.max(1);
    if network == u32::MAX {
        return Err(Error::Exhausted {
            what: "network id",
            space: "the registry".into(),
        });
    }
    let org = Org {
        name: name.to_string(),
        network: OrgNetwork(network),
    };
    Ok(Plan {
        writes: vec![Write::Put(Record::Org(org.clone()))],
        next_network: Some(network + 1),
        result: Some(Record::Org(org)),
    })
}

fn remove_org(snap: &Snapshot, usage: &dyn Usage, name: &str) -> Result<Plan> {
    let o = org(snap, name)?;
    let (machines, peers) = usage.org_members(name)?;
    if machines + peers > 0 {
        return Err(Error::InUse {
            kind: Kind::Org,
            name: name.into(),
            why: format!("it has {machines} machine(s) and {peers} peer(s); remove them first"),
        });
    }
    let mut writes: Vec<Write> = snap
        .apps
        .values()
        .filter(|a| a.org == name)
        .map(|a| {
            Write::Delete(RecordKey::App {
                org: a.org.clone(),
                name: a.name.clone(),
            })
        })
        .collect();
    // A peering names two orgs, a token one; either, outliving its org, would hand a later
    // org of the same name to whoever holds it.
    writes.extend(
        snap.peerings
            .iter()
            .filter(|(a, b)| a == name || b == name)
            .map(|(a, b)| Write::Delete(RecordKey::peering(a.clone(), b.clone()))),
    );
    writes.extend(
        snap.tokens
            .values()
            .filter(|t| t.org == name)
            .map(|t| Write::Delete(RecordKey::Token { id: t.id.clone() })),
    );
    writes.push(Write::Delete(RecordKey::Org { name: name.into() }));
    Ok(Plan {
        writes,
        next_network: None,
        result: Some(Record::Org(o.clone())),
    })
}

fn add_node(snap: &Snapshot, spec: &NodeSpec, refresh: bool) -> Result<Plan> {
    name::label("node name", &spec.name)?;
    known_region("region", &spec.region)?;
    if spec.endpoint.port() == 0 {
        return Err(Error::invalid(
            "endpoint",
            spec.endpoint,
            "port must not be 0",
        ));
    }
    if spec.endpoint.ip().is_unspecified() || spec.endpoint.ip().is_multicast() {
        return Err(Error::invalid(
            "endpoint",
            spec.endpoint,
            "must be an address other hosts can send to (not unspecified or multicast)",
        ));
    }
    let existing = snap.nodes.get(&spec.name);
    if existing.is_some() && !refresh {
        return Err(Error::exists(Kind::Node, &spec.name));
    }
    key_unused(snap, &spec.public_key, Some(&spec.name))?;
    let host = match existing {
        Some(n) => n.host,
        None => {
            let mut used: Vec<u32> = snap.nodes.values().map(|n| n.host).collect();
            used.sort_unstable();
            addr::lowest_free(used, HOST_RANGE).ok_or(Error::Exhausted {
                what: "host part",
                space: "the registry".into(),
            })?
        }
    };
    let node = Node {
        name: spec.name.clone(),
        region: spec.region.clone(),
        public_key: spec.public_key,
        endpoint: spec.endpoint,
        gateway: spec.gateway,
        host,
    };
    if existing == Some(&node) {
        // Nothing changed: no write, no new revision.
        return Ok(Plan {
            writes: vec![],
            next_network: None,
            result: Some(Record::Node(node)),
        });
    }
    Ok(Plan::one(
        Write::Put(Record::Node(node.clone())),
        Some(Record::Node(node)),
    ))
}

fn remove_node(snap: &Snapshot, usage: &dyn Usage, name: &str) -> Result<Plan> {
    let n = node_named(snap, name)?;
    let (running, addressed) = usage.node_machines(n)?;
    let peers = usage.gateway_peers(name)?;
    if running + addressed + peers > 0 {
        return Err(Error::InUse {
            kind: Kind::Node,
            name: name.into(),
            why: format!(
                "{running} machine(s) run there, {addressed} hold addresses from it, \
                 {peers} peer(s) use it as gateway; remove or move them first"
            ),
        });
    }
    Ok(Plan::one(
        Write::Delete(RecordKey::Node { name: name.into() }),
        Some(Record::Node(n.clone())),
    ))
}

/// The slots taken in one /80: by machines addressed there and peers attached there.
fn used_slots(snap: &Snapshot, network: OrgNetwork, host: u32) -> Vec<u32> {
    let space = network.node_prefix(host);
    let mut used: Vec<u32> = snap
        .machines
        .values()
        .map(|m| m.addr)
        .chain(snap.peers.values().map(|p| p.addr))
        .filter(|a| space.contains(a))
        .map(addr::slot_of)
        .collect();
    used.sort_unstable();
    used
}

fn free_slot(usage: &dyn Usage, network: OrgNetwork, host: u32) -> Result<u32> {
    usage
        .lowest_free_slot(network, host)?
        .ok_or_else(|| Error::Exhausted {
            what: "address",
            space: network.node_prefix(host).to_string(),
        })
}

#[allow(clippy::too_many_arguments)]
fn add_machine(
    snap: &Snapshot,
    usage: &dyn Usage,
    org_name: &str,
    app: &str,
    region_code: &str,
    node: &str,
    process_group: Option<&str>,
    ctx: &mut dyn Context,
) -> Result<Plan> {
    name::dns_name("app name", app)?;
    let group = process_group.unwrap_or("app");
    name::dns_name("process group", group)?;
    known_region("region", region_code)?;
    let o = org(snap, org_name)?;
    let n = node_named(snap, node)?;
    if n.region != region_code {
        return Err(Error::invalid(
            "node",
            node,
            format!("is in region `{}`, not `{region_code}`", n.region),
        ));
    }
    let slot = free_slot(usage, o.network, n.host)?;
    let id = loop {
        let id = MachineId::from_bits(ctx.random_u64());
        if !usage.machine_exists(id)? {
            break id;
        }
    };
    let m = Machine {
        id,
        org: org_name.into(),
        app: app.into(),
        region: region_code.into(),
        node: node.into(),
        process_group: group.into(),
        state: MachineState::Started,
        addr: o.network.slot_addr(n.host, slot),
    };
    let mut writes = Vec::with_capacity(2);
    if !snap
        .apps
        .contains_key(&(org_name.to_string(), app.to_string()))
    {
        writes.push(Write::Put(Record::App(App {
            org: org_name.into(),
            name: app.into(),
        })));
    }
    writes.push(Write::Put(Record::Machine(m.clone())));
    Ok(Plan {
        writes,
        next_network: None,
        result: Some(Record::Machine(m)),
    })
}

struct PeerRequest<'a> {
    org: &'a str,
    name: &'a str,
    region: Option<&'a str>,
    gateway: Option<&'a str>,
    public_key: &'a PublicKey,
    routes: &'a [IpNet],
    expires: Option<i64>,
}

fn pick_gateway<'a>(snap: &'a Snapshot, usage: &dyn Usage, req: &PeerRequest) -> Result<&'a Node> {
    if let Some(g) = req.gateway {
        let n = node_named(snap, g)?;
        if !n.gateway {
            return Err(Error::invalid(
                "gateway",
                g,
                "is not a gateway node (add it with --gateway)",
            ));
        }
        return Ok(n);
    }
    let Some(region_code) = req.region else {
        return Err(Error::invalid(
            "region",
            "",
            "a region or a gateway is needed",
        ));
    };
    known_region("region", region_code)?;
    let mut best: Option<(usize, &Node)> = None;
    // Nodes are in name order, so the first of the least loaded wins a tie.
    for n in snap
        .nodes
        .values()
        .filter(|n| n.gateway && n.region == region_code)
    {
        let load = usage.gateway_peers(&n.name)?;
        if best.is_none_or(|(least, _)| load < least) {
            best = Some((load, n));
        }
    }
    best.map(|(_, n)| n)
        .ok_or_else(|| Error::invalid("region", region_code, "has no gateway node"))
}

fn add_peer(
    snap: &Snapshot,
    usage: &dyn Usage,
    req: PeerRequest,
    ctx: &mut dyn Context,
) -> Result<Plan> {
    name::dns_name("peer name", req.name)?;
    let o = org(snap, req.org)?;
    if snap
        .peers
        .contains_key(&(req.org.to_string(), req.name.to_string()))
    {
        return Err(Error::exists(Kind::Peer, req.name));
    }
    key_unused(snap, req.public_key, None)?;
    let now = ctx.now_unix();
    if let Some(e) = req.expires {
        if e <= now {
            return Err(Error::invalid("expires", e, "must be in the future"));
        }
    }
    let gw = pick_gateway(snap, usage, &req)?;
    let slot = free_slot(usage, o.network, gw.host)?;
    let peer = Peer {
        org: req.org.into(),
        name: req.name.into(),
        gateway: gw.name.clone(),
        region: gw.region.clone(),
        public_key: *req.public_key,
        addr: o.network.slot_addr(gw.host, slot),
        routes: req.routes.iter().map(|r| r.trunc()).collect(),
        created: now,
        expires: req.expires,
    };
    check_routes(snap, &peer, req.routes)?;
    Ok(Plan::one(
        Write::Put(Record::Peer(peer.clone())),
        Some(Record::Peer(peer)),
    ))
}

fn peer_orgs(snap: &Snapshot, a: &str, b: &str) -> Result<Plan> {
    if a == b {
        return Err(Error::invalid("org", a, "cannot peer with itself"));
    }
    org(snap, a)?;
    org(snap, b)?;
    let peering = Peering::new(a, b);
    if snap.peered(a, b) {
        return Err(Error::exists(Kind::Peering, peering.to_string()));
    }
    Ok(Plan::one(
        Write::Put(Record::Peering(peering.clone())),
        Some(Record::Peering(peering)),
    ))
}

fn unpeer_orgs(snap: &Snapshot, a: &str, b: &str) -> Result<Plan> {
    if a == b {
        return Err(Error::invalid("org", a, "cannot peer with itself"));
    }
    let peering = Peering::new(a, b);
    if !snap.peered(a, b) {
        // Name the org that is missing, if one is: that is the likelier typo.
        org(snap, a)?;
        org(snap, b)?;
        return Err(Error::not_found(Kind::Peering, peering.to_string()));
    }
    Ok(Plan::one(
        Write::Delete(RecordKey::peering(a, b)),
        Some(Record::Peering(peering)),
    ))
}

/// Prefixes no site route may touch, and why. A route that overlaps one (holds it, or lies
/// inside it) is refused: a gateway would otherwise send a site traffic that is not the site's.
const RESERVED: &[(IpNet, &str)] = &[
    (
        v4(Ipv4Addr::UNSPECIFIED, 32),
        "holds the unspecified address 0.0.0.0, which no host has",
    ),
    (
        v6(Ipv6Addr::UNSPECIFIED, 128),
        "holds the unspecified address ::, which no host has",
    ),
    (
        v4(Ipv4Addr::new(127, 0, 0, 0), 8),
        "overlaps loopback 127.0.0.0/8, which never leaves a host",
    ),
    (
        v6(Ipv6Addr::LOCALHOST, 128),
        "holds loopback ::1, which never leaves a host",
    ),
    (
        v4(Ipv4Addr::new(169, 254, 0, 0), 16),
        "overlaps link-local 169.254.0.0/16, which no router forwards",
    ),
    (
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        "overlaps link-local fe80::/10, which no router forwards",
    ),
    (
        v4(Ipv4Addr::new(224, 0, 0, 0), 4),
        "overlaps multicast 224.0.0.0/4, which is not routed to one peer",
    ),
    (
        v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        "overlaps multicast ff00::/8, which is not routed to one peer",
    ),
    (
        v4(Ipv4Addr::BROADCAST, 32),
        "holds the broadcast address 255.255.255.255, which no router forwards",
    ),
    (
        v6(Ipv6Addr::new(addr::MESH_PREFIX, 0, 0, 0, 0, 0, 0, 0), 16),
        "overlaps the mesh prefix fdaa::/16, which the address plan owns",
    ),
    (
        IpNet::V4(addr::NAT64_POOL),
        "overlaps 100.127.0.0/16, the pool site gateways translate IPv6 sources into",
    ),
    (
        v6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
        "overlaps ::ffff:0:0/96, IPv4-mapped addresses, which only exist inside a host",
    ),
];

const fn v4(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(addr, len))
}

const fn v6(addr: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(addr, len))
}

/// Checks a new peer's site routes: each must be routable to one site (`check_route`), none
/// may overlap another of the same list, and IPv4 ones need the peer's 4via6 prefix.
fn check_routes(snap: &Snapshot, peer: &Peer, routes: &[IpNet]) -> Result<()> {
    for (i, route) in routes.iter().enumerate() {
        check_route(snap, peer, *route)?;
        if let Some(earlier) = routes[..i].iter().find(|r| overlaps(**r, *route)) {
            return Err(Error::invalid(
                "route",
                route,
                format!("overlaps {earlier}, also in this peer's routes"),
            ));
        }
    }
    Ok(())
}

/// One site route of `peer` (whose address is already chosen). IPv6 routes are routed
/// natively, so one may belong to one peer in the whole registry; IPv4 routes are reached
/// through the peer's own 4via6 /96, so every site may have its 192.168.1.0/24.
fn check_route(snap: &Snapshot, peer: &Peer, given: IpNet) -> Result<()> {
    let route = given.trunc();
    if route.prefix_len() == 0 {
        return Err(Error::invalid(
            "route",
            given,
            "a default route cannot be routed to one peer",
        ));
    }
    if let Some((_, why)) = RESERVED.iter().find(|(r, _)| overlaps(route, *r)) {
        return Err(Error::invalid("route", given, *why));
    }
    match route {
        IpNet::V4(_) => {
            if addr::via_prefix(peer.addr).is_none() {
                return Err(Error::invalid(
                    "route",
                    given,
                    format!(
                        "this peer's slot is above 65535, so it has no 4via6 prefix; attach it \
                         to another gateway than `{}`, or give it IPv6 routes only",
                        peer.gateway
                    ),
                ));
            }
        }
        IpNet::V6(_) => {
            for (other, p) in snap.site_routes() {
                if !overlaps(route, other) {
                    continue;
                }
                // Another org's peer names stay that org's business.
                let whose = if p.org == peer.org {
                    format!("of peer `{}`", p.name)
                } else {
                    "of a peer of another org".to_string()
                };
                return Err(Error::invalid(
                    "route",
                    given,
                    format!("overlaps {other} {whose}; IPv6 site routes must be unique"),
                ));
            }
        }
    }
    Ok(())
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests;
