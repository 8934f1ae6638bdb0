//! Allowed IPs: which prefixes route to which peer, to a site's 4via6 prefix or to this
//! host, and the org boundary between them (wireguard-go's allowedips.go, over
//! [`super::Router`]).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use registry::OrgNetwork;

use super::{Core, PublicKey, Target};

impl Core {
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
}
