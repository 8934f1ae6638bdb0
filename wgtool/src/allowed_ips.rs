//! What a peer's tunnel carries, from the registry: the org's /48 (which holds the org's
//! 4via6 space too), the IPv6 prefixes of the org's sites other than the peer's own, and for
//! a site with IPv4 routes the NAT64 pool the org's gateway sends from toward its LAN.

use ipnet::{IpNet, Ipv6Net};
use registry::{Peer, Snapshot};

/// The allowed IPs of `peer`'s tunnel file, the org's /48 first.
pub fn of(snap: &Snapshot, peer: &Peer, org_prefix: Ipv6Net, now_unix: i64) -> Vec<IpNet> {
    let mut nets = vec![IpNet::V6(org_prefix)];
    for site in site_prefixes_v6(snap, &peer.org, now_unix) {
        let net = IpNet::V6(site);
        if org_prefix.contains(&site) || peer.routes.contains(&net) || nets.contains(&net) {
            continue;
        }
        nets.push(net);
    }
    if peer.routes.iter().any(|r| matches!(r, IpNet::V4(_))) {
        nets.push(IpNet::V4(registry::addr::NAT64_POOL));
    }
    nets
}

/// The IPv6 site prefixes of `org`'s peers that are still let in.
fn site_prefixes_v6(snap: &Snapshot, org: &str, now_unix: i64) -> Vec<Ipv6Net> {
    let mut v: Vec<Ipv6Net> = snap
        .peers
        .values()
        .filter(|p| p.org == org && !p.expired(now_unix))
        .flat_map(|p| p.routes.iter())
        .filter_map(|r| match r {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}
