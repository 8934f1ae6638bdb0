//! Registry → desired peer set → diff. `desired` is a pure function of a snapshot and this
//! node's name; `apply` changes only what differs, so existing sessions carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use registry::{OrgNetwork, Snapshot};

use crate::core::{Core, PeerUpdate, PublicKey, Registering, Registration, Transmit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// `node/<name>` or `peer/<org>/<name>`, for logs.
    pub name: String,
    /// Nodes have one; laptops and sites are found by their handshakes.
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// A site at this gateway: its 4via6 /96 and the IPv4 routes reached through it.
    pub via: Option<Ipv6Net>,
    pub site_v4: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub peers: BTreeMap<PublicKey, DesiredPeer>,
    /// Prefixes delivered to this host's TUN.
    pub local: Vec<IpNet>,
    /// Addresses to put on the interface: local machines and the DNS address of each org
    /// present here.
    pub addresses: BTreeSet<Ipv6Addr>,
    /// Every IPv6 site prefix in the registry and its org: the org boundary needs them all.
    pub sites: Vec<(IpNet, OrgNetwork)>,
    /// Peered org pairs.
    pub peerings: Vec<(OrgNetwork, OrgNetwork)>,
    /// Kernel routes into the interface besides the mesh prefix: the IPv6 site prefixes of
    /// the orgs present on this host, each with the source address the kernel should pick
    /// (a machine of that org here, if any): on a host with several orgs, the kernel's own
    /// choice could be another org's address, which the org boundary would drop.
    pub routes: BTreeSet<KernelRoute>,
}

fn host128(a: Ipv6Addr) -> IpNet {
    IpNet::V6(Ipv6Net::new(a, 128).unwrap_or_default())
}

/// What this node should look like for `snap`.
pub fn desired(snap: &Snapshot, me: &str, now_unix: i64) -> Desired {
    let my_host = snap.nodes.get(me).map(|n| n.host);
    let host_node: BTreeMap<u32, &str> = snap
        .nodes
        .values()
        .map(|n| (n.host, n.name.as_str()))
        .collect();
    let mut allowed: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    let mut local: BTreeSet<IpNet> = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    let mut present_orgs = BTreeSet::new();
    let mut org_src: BTreeMap<&str, Ipv6Addr> = BTreeMap::new();

    // Every node serving an org gets that org's /80 on it.
    for org in snap.orgs.values() {
        for host in snap.org_hosts(&org.name) {
            let prefix = IpNet::V6(org.network.node_prefix(host));
            match host_node.get(&host) {
                Some(n) if Some(host) == my_host => {
                    let _ = n;
                    local.insert(prefix);
                }
                Some(n) => {
                    allowed.entry(n).or_default().insert(prefix);
                }
                None => {}
            }
        }
    }
    // Machines: those here are local; those that moved away from their /80 get their /112
    // routed where they run now.
    for m in snap.machines.values() {
        let Some(runs_on) = snap.nodes.get(&m.node) else {
            continue;
        };
        let moved = registry::addr::host_of(m.addr) != runs_on.host;
        if m.node == me {
            addresses.insert(m.addr);
            let src = org_src.entry(m.org.as_str()).or_insert(m.addr);
            *src = (*src).min(m.addr);
            present_orgs.insert(m.org.as_str());
            local.insert(IpNet::V6(m.prefix()));
        } else if moved {
            allowed
                .entry(runs_on.name.as_str())
                .or_default()
                .insert(IpNet::V6(m.prefix()));
        }
    }
    // WireGuard peers: ours if we are their gateway; otherwise their IPv6 site routes and
    // their 4via6 /96 lead to their gateway (their /128 already lies in its /80). IPv4 site
    // routes are never routed on: the org reaches them through the /96.
    let mut peers = BTreeMap::new();
    let mut sites = Vec::new();
    for p in snap.peers.values().filter(|p| !p.expired(now_unix)) {
        let Some(network) = snap.orgs.get(&p.org).map(|o| o.network) else {
            continue;
        };
        sites.extend(p.routes_v6().map(|r| (IpNet::V6(r), network)));
        if p.gateway == me {
            let key = p.public_key.to_bytes();
            let mut ips = vec![host128(p.addr)];
            ips.extend(p.routes_v6().map(IpNet::V6));
            present_orgs.insert(p.org.as_str());
            let site_v4 = p
                .routes
                .iter()
                .filter_map(|r| match r {
                    IpNet::V4(n) => Some(*n),
                    IpNet::V6(_) => None,
                })
                .collect();
            peers.insert(
                key,
                DesiredPeer {
                    name: format!("peer/{}/{}", p.org, p.name),
                    endpoint: None,
                    allowed_ips: ips,
                    via: p.via(),
                    site_v4,
                },
            );
        } else if snap.nodes.contains_key(&p.gateway) {
            let to_gateway = allowed.entry(p.gateway.as_str()).or_default();
            to_gateway.extend(p.routes_v6().map(IpNet::V6));
            to_gateway.extend(p.via().map(IpNet::V6));
        }
    }
    let mut routes = BTreeSet::new();
    for org in &present_orgs {
        let src = org_src.get(org).copied();
        routes.extend(
            snap.site_prefixes_v6(org, now_unix)
                .into_iter()
                .map(|r| (r, src)),
        );
    }
    let peerings = snap
        .peerings
        .iter()
        .filter_map(|(a, b)| Some((snap.orgs.get(a)?.network, snap.orgs.get(b)?.network)))
        .collect();
    for org in present_orgs {
        if let Some(o) = snap.orgs.get(org) {
            let dns = o.network.dns_addr();
            addresses.insert(dns);
            local.insert(host128(dns));
        }
    }
    let me_key = snap.nodes.get(me).map(|n| n.public_key.to_bytes());
    for n in snap.nodes.values().filter(|n| n.name != me) {
        let key = n.public_key.to_bytes();
        if Some(key) == me_key {
            continue;
        }
        peers.insert(
            key,
            DesiredPeer {
                name: format!("node/{}", n.name),
                endpoint: Some(n.endpoint),
                allowed_ips: allowed
                    .remove(n.name.as_str())
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                via: None,
                site_v4: Vec::new(),
            },
        );
    }
    Desired {
        peers,
        local: local.into_iter().collect(),
        addresses,
        sites,
        peerings,
        routes,
    }
}

/// What `apply` changed, for logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
}

/// Brings the core to `want`, touching only what differs. New node peers get a handshake
/// at once so a restarted node is reachable without waiting for the other side's timers.
pub fn apply(core: &mut Core, want: &Desired, now: Instant, out: &mut impl Transmit) -> Applied {
    let mut applied = Applied::default();
    let stale: BTreeSet<PublicKey> = core
        .peers()
        .keys()
        .chain(core.registered_keys())
        .filter(|k| !want.peers.contains_key(*k))
        .copied()
        .collect();
    for k in stale {
        core.remove_peer(&k);
        applied.removed += 1;
    }
    // Local routes first, so a prefix that moved here stops pointing at a peer.
    core.set_local_routes(&want.local);
    core.set_org_policy(&want.sites, want.peerings.iter().copied());
    for (key, p) in &want.peers {
        put_peer(core, key, p, now, out, &mut applied);
    }
    applied
}

/// Brings one peer of the core to `p`, adding it if new (and starting a handshake to a new
/// node), and counts what it did in `applied`.
pub(crate) fn put_peer(
    core: &mut Core,
    key: &PublicKey,
    p: &DesiredPeer,
    now: Instant,
    out: &mut impl Transmit,
    applied: &mut Applied,
) {
    // A gateway's laptops and sites (no endpoint: they find us) are registered; their
    // tunnels come with their handshakes.
    if p.endpoint.is_none() && core.just_in_time() {
        let registration = Registration::new(&p.name, &p.allowed_ips, p.via, &p.site_v4);
        match core.register_peer(*key, registration) {
            Registering::Added => applied.added += 1,
            Registering::Updated => applied.updated += 1,
            Registering::Unchanged => {}
        }
        return;
    }
    let added = core.ensure_peer(now, *key);
    let before = peer_state(core, key);
    // A laptop's endpoint is learned from its handshakes: keep it.
    core.update_peer(
        key,
        PeerUpdate {
            endpoint: p.endpoint,
            name: Some(p.name.clone()),
            ..Default::default()
        },
    );
    core.set_allowed_ips(key, &p.allowed_ips);
    core.set_site(key, p.via, &p.site_v4);
    let after = peer_state(core, key);
    if added {
        applied.added += 1;
        if p.endpoint.is_some() {
            core.initiate_handshake(now, key, out);
        }
    } else if before != after {
        applied.updated += 1;
    }
}

/// What `apply` compares to tell whether it changed a peer.
type PeerState = (
    Option<crate::core::Endpoint>,
    Vec<IpNet>,
    String,
    Option<Ipv6Net>,
    Vec<Ipv4Net>,
);

fn peer_state(core: &Core, key: &PublicKey) -> Option<PeerState> {
    core.peer(key).map(|x| {
        (
            x.endpoint,
            sorted(&x.allowed_ips),
            x.name.clone(),
            x.via,
            x.site_v4.clone(),
        )
    })
}

fn sorted(v: &[IpNet]) -> Vec<IpNet> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Addresses to add and to remove on the interface.
pub fn address_diff(
    have: &BTreeSet<Ipv6Addr>,
    want: &BTreeSet<Ipv6Addr>,
) -> (Vec<Ipv6Addr>, Vec<Ipv6Addr>) {
    (
        want.difference(have).copied().collect(),
        have.difference(want).copied().collect(),
    )
}

/// A kernel route: a prefix and the source address to prefer.
pub type KernelRoute = (Ipv6Net, Option<Ipv6Addr>);

/// Kernel routes to add and to remove.
pub fn route_diff(
    have: &BTreeSet<KernelRoute>,
    want: &BTreeSet<KernelRoute>,
) -> (Vec<KernelRoute>, Vec<KernelRoute>) {
    (
        want.difference(have).copied().collect(),
        have.difference(want).copied().collect(),
    )
}

/// Is `addr` on this node according to `want`? (For tests and logs.)
pub fn is_local(want: &Desired, addr: IpAddr) -> bool {
    want.local.iter().any(|n| n.contains(&addr))
}

pub mod model;

#[cfg(test)]
mod tests;
