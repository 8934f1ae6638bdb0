//! Org scoping: which org's names a querier sees, and whether it may ask at all, decided by
//! its source address alone. dnsd is never an open resolver: a source that is not a member
//! of an org, not loopback and not in the allow list is refused everything.

use std::net::{IpAddr, Ipv6Addr};

use registry::OrgNetwork;

use crate::index::{Index, OrgZone, RegionId};

/// What a querier may see.
#[derive(Debug)]
pub enum Scope<'a> {
    /// This org's names, and forwarding; `region` is where the querier is, when known.
    Org {
        zone: &'a OrgZone,
        region: Option<RegionId>,
    },
    /// A trusted source (loopback, allow list) with no default org to show: forwarding
    /// only, `.internal` is refused. A trusted host keeps its resolver when the operator
    /// has not picked an org for it, as BIND's `allow-recursion` does not depend on zones.
    Trusted,
    /// Nothing at all.
    Refused(Refusal),
}

/// Why a query got REFUSED, as the `reason` label of `dnsd_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is in no org, not loopback and not in the allow list.
    Outsider,
    /// A mesh (`fdaa`) source of an org the registry does not hold.
    UnknownOrg,
    /// A trusted source asked a `.internal` name and there is no default org.
    NoDefaultOrg,
    /// A name outside `.internal` and no upstream to forward it to.
    NoUpstream,
    /// A `.internal` question of a class other than IN.
    Class,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Outsider,
        Refusal::UnknownOrg,
        Refusal::NoDefaultOrg,
        Refusal::NoUpstream,
        Refusal::Class,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Outsider => "outsider",
            Refusal::UnknownOrg => "unknown_org",
            Refusal::NoDefaultOrg => "no_default_org",
            Refusal::NoUpstream => "no_upstream",
            Refusal::Class => "class",
        }
    }
}

/// The querier's scope, from its source address, in this order:
/// 1. a mesh (`fdaa`) address: the org of its network bits, or nothing if there is no such
///    org (it must not fall back to the default org, nor to the allow list);
/// 2. an address in an IPv6 site prefix: the org of the site peer whose route holds it;
/// 3. loopback (127.0.0.0/8, ::1, IPv4-mapped loopback) or an allow-listed network: the
///    default org, else forwarding only;
/// 4. anything else: refused.
pub fn scope(index: &Index, src: IpAddr) -> Scope<'_> {
    // `[::]:53` takes IPv4 too, as `::ffff:a.b.c.d`: judge those as the IPv4 they are.
    let src = src.to_canonical();
    if let IpAddr::V6(addr) = src {
        if let Some(network) = OrgNetwork::of(addr) {
            return match index.zones.get(&network) {
                Some(zone) => Scope::Org {
                    zone,
                    region: querier_region(index, addr),
                },
                None => Scope::Refused(Refusal::UnknownOrg),
            };
        }
        if let Some(owner) = index.site_prefixes.owner(addr) {
            return match index.zones.get(&owner.network) {
                Some(zone) => Scope::Org {
                    zone,
                    region: owner.region.or(index.local_region),
                },
                None => Scope::Refused(Refusal::UnknownOrg),
            };
        }
    }
    if !src.is_loopback() && !index.allow.iter().any(|net| net.contains(&src)) {
        return Scope::Refused(Refusal::Outsider);
    }
    match index.default_org.and_then(|n| index.zones.get(&n)) {
        Some(zone) => Scope::Org {
            zone,
            region: index.local_region,
        },
        None => Scope::Trusted,
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
