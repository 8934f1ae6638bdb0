//! What the model wants, read out: one peer, the local prefixes, the org policy, the
//! interface's addresses and routes, the whole desired state; and the core brought along with
//! what a change touched ([`apply_dirty`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::time::Instant;

use ipnet::IpNet;
use registry::OrgNetwork;

use super::super::{put_peer, Applied, Desired, DesiredPeer, KernelRoute};
use super::{Dirty, Model};
use crate::core::{Core, PublicKey, Transmit};

impl Model {
    /// The desired state of one peer, if the model wants it.
    pub fn peer_wanted(&self, key: &PublicKey) -> Option<DesiredPeer> {
        if let Some(p) = self.gateway_peers.get(key) {
            return Some(p.clone());
        }
        if Some(*key) == self.my_key() {
            return None;
        }
        let n = self
            .nodes
            .values()
            .filter(|n| n.name != self.me)
            .find(|n| n.public_key.as_bytes() == key)?;
        Some(DesiredPeer {
            name: format!("node/{}", n.name),
            endpoint: Some(n.endpoint),
            allowed_ips: self
                .by_host
                .get(&n.host)
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default(),
            via: None,
            site_v4: Vec::new(),
        })
    }

    /// Prefixes delivered to this host's TUN.
    pub fn local(&self) -> Vec<IpNet> {
        let mut local: BTreeSet<IpNet> = self.local_extra.keys().copied().collect();
        if let Some(mine) = self.my_host().and_then(|h| self.by_host.get(&h)) {
            local.extend(mine.keys().copied());
        }
        local.into_iter().collect()
    }

    /// Every unexpired IPv6 site prefix and its org's network, sorted.
    pub fn sites(&self) -> Vec<(IpNet, OrgNetwork)> {
        let mut sites: Vec<(IpNet, OrgNetwork)> = self
            .sites
            .iter()
            .filter_map(|(org, s)| Some((self.orgs.get(org).copied()?, s)))
            .flat_map(|(net, s)| s.keys().map(move |r| (IpNet::V6(*r), net)))
            .collect();
        sites.sort();
        sites
    }

    /// Peered org pairs by network, sorted.
    pub fn peerings(&self) -> Vec<(OrgNetwork, OrgNetwork)> {
        let mut pairs: Vec<(OrgNetwork, OrgNetwork)> = self
            .peerings
            .iter()
            .filter_map(|(a, b)| Some((*self.orgs.get(a)?, *self.orgs.get(b)?)))
            .collect();
        pairs.sort();
        pairs
    }

    pub fn addresses(&self) -> BTreeSet<Ipv6Addr> {
        let mut out: BTreeSet<Ipv6Addr> = self
            .local_addrs
            .values()
            .flat_map(|a| a.keys().copied())
            .collect();
        out.extend(
            self.present
                .keys()
                .filter_map(|org| self.orgs.get(org))
                .map(|net| net.dns_addr()),
        );
        out
    }

    pub fn routes(&self) -> BTreeSet<KernelRoute> {
        let mut routes = BTreeSet::new();
        for org in self.present.keys() {
            let src = self.local_addrs.get(org).and_then(|a| a.first().copied());
            if let Some(sites) = self.sites.get(org) {
                routes.extend(sites.keys().map(|r| (*r, src)));
            }
        }
        routes
    }

    /// The whole desired state, as [`super::desired`] would compute it from the snapshot the
    /// model has followed (in the size of the state, not of the registry).
    pub fn desired(&self) -> Desired {
        let mut peers = BTreeMap::new();
        let me_key = self.my_key();
        for n in self.nodes.values().filter(|n| n.name != self.me) {
            let key = n.public_key.to_bytes();
            if Some(key) == me_key {
                continue;
            }
            if let Some(p) = self.peer_wanted(&key) {
                peers.insert(key, p);
            }
        }
        for (k, p) in &self.gateway_peers {
            peers.insert(*k, p.clone());
        }
        Desired {
            peers,
            local: self.local(),
            addresses: self.addresses(),
            sites: self.sites(),
            peerings: self.peerings(),
            routes: self.routes(),
        }
    }
}

/// Brings the core along with what `dirty` says changed in `model`: each dirty peer put or
/// removed, the local prefixes and org policy set again if they changed. The interface's
/// addresses and routes are the caller's (see [`Model::addresses`], [`Model::routes`]).
pub fn apply_dirty(
    core: &mut Core,
    model: &Model,
    dirty: &Dirty,
    now: Instant,
    out: &mut impl Transmit,
) -> Applied {
    let mut applied = Applied::default();
    let wanted: Vec<(PublicKey, Option<DesiredPeer>)> = dirty
        .peers
        .iter()
        .map(|k| (*k, model.peer_wanted(k)))
        .collect();
    for (k, want) in &wanted {
        if want.is_none() && core.remove_peer(k) {
            applied.removed += 1;
        }
    }
    if dirty.policy {
        core.set_local_routes(&model.local());
        core.set_org_policy(&model.sites(), model.peerings());
    }
    for (k, want) in &wanted {
        if let Some(p) = want {
            put_peer(core, k, p, now, out, &mut applied);
        }
    }
    applied
}
