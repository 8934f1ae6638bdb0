//! Org scoping: which org's names a querier sees, decided by its source address alone.

use std::net::{IpAddr, Ipv6Addr};

use registry::OrgNetwork;

use crate::index::{Index, OrgZone, RegionId};

/// What a querier may see.
#[derive(Debug)]
pub enum Scope<'a> {
    /// This org's names; `region` is where the querier is, when known (for `nearest`).
    Org {
        zone: &'a OrgZone,
        region: Option<RegionId>,
    },
    /// No org: `.internal` is refused.
    Refused,
}

/// The querier's org, from its source address: the org bits of an `fdaa` address; the
/// default org for clients outside the mesh prefix (loopback, underlay). An `fdaa` address
/// of no known org gets nothing: it must not fall back to the default org's names.
pub fn scope(index: &Index, src: IpAddr) -> Scope<'_> {
    let v6 = match src {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(Some(a), |_| None),
        IpAddr::V4(_) => None,
    };
    let org = v6.and_then(|a| OrgNetwork::of(a).map(|n| (a, n)));
    let Some((addr, network)) = org else {
        return match index.default_org.and_then(|n| index.zones.get(&n)) {
            Some(zone) => Scope::Org {
                zone,
                region: index.local_region,
            },
            None => Scope::Refused,
        };
    };
    match index.zones.get(&network.0) {
        Some(zone) => Scope::Org {
            zone,
            region: querier_region(index, addr),
        },
        None => Scope::Refused,
    }
}

/// The region of the node (or gateway) the address belongs to.
fn querier_region(index: &Index, addr: Ipv6Addr) -> Option<RegionId> {
    index
        .region_by_peer
        .get(&addr)
        .or_else(|| index.region_by_host.get(&registry::addr::host_of(addr)))
        .copied()
        .or(index.local_region)
}
