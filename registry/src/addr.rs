//! The 6PN address plan:
//! `fdaa` (16 bits) | org network (32) | host (32) | slot (32) | interface (16).
//!
//! An org owns a /48, a node serves one /80 per org, a machine owns a /112 in its first node's
//! /80 (its address is `::2` in it), and a WireGuard peer owns a /128 in its gateway's /80.
//! Machines and peers draw slots from the same per-/80 space, so they can never collide.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

/// The mesh's ULA prefix, `fdaa::/16`.
pub const MESH_PREFIX: u16 = 0xfdaa;
/// Interface part of a machine's or peer's address inside its slot.
pub const HOST_IFACE: u16 = 2;
/// Interface part of the org's DNS server (host part 0 is for services every node answers).
pub const DNS_IFACE: u16 = 3;
/// Host parts are `a7b:<n>`, like Fly's, so addresses read as 6PN addresses.
pub const HOST_BASE: u32 = 0x0a7b_0000;
/// First and last host part a node can get.
pub const HOST_RANGE: (u32, u32) = (HOST_BASE + 1, HOST_BASE + 0xffff);
/// First and last slot a machine or peer can get inside a /80.
pub const SLOT_RANGE: (u32, u32) = (1, u32::MAX);

/// Host parts whose high half is this hold the org's 4via6 space (never a node's: node host
/// parts are `a7b:<n>`). `b1a` reads as "bla", after Tailscale's `fd7a:115c:a1e0:b1a::/64`.
pub const VIA_HOST_HI: u16 = 0x0b1a;
/// The IPv4 addresses a site's gateway translates from (stateful NAT64 toward the site's IPv4
/// LAN): a /16 of the shared address space (RFC 6598) that a site's tunnel file routes back.
/// Not all of `100.64.0.0/10`, so sites that also run Tailscale (which draws its addresses
/// from all of it at random) collide less often.
pub const NAT64_POOL: ipnet::Ipv4Net =
    ipnet::Ipv4Net::new_assert(Ipv4Addr::new(100, 127, 0, 0), 16);

/// An org's 32-bit network id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct OrgNetwork(pub u32);

fn compose(net: u32, host: u32, slot: u32, iface: u16) -> Ipv6Addr {
    let bits = (u128::from(MESH_PREFIX) << 112)
        | (u128::from(net) << 80)
        | (u128::from(host) << 48)
        | (u128::from(slot) << 16)
        | u128::from(iface);
    Ipv6Addr::from(bits)
}

fn net_of(addr: Ipv6Addr, len: u8) -> Ipv6Net {
    // Lengths here are constants below 128, so construction cannot fail.
    Ipv6Net::new(addr, len)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

impl OrgNetwork {
    /// The org's /48, e.g. `fdaa:0:18::/48`.
    pub fn prefix(self) -> Ipv6Net {
        net_of(compose(self.0, 0, 0, 0), 48)
    }

    /// The org's DNS server address, `<org>::3`.
    pub fn dns_addr(self) -> Ipv6Addr {
        compose(self.0, 0, 0, DNS_IFACE)
    }

    /// The /80 a node serves for this org.
    pub fn node_prefix(self, host: u32) -> Ipv6Net {
        net_of(compose(self.0, host, 0, 0), 80)
    }

    /// A machine's /112.
    pub fn slot_prefix(self, host: u32, slot: u32) -> Ipv6Net {
        net_of(compose(self.0, host, slot, 0), 112)
    }

    /// A machine's or peer's address: `::2` in its slot.
    pub fn slot_addr(self, host: u32, slot: u32) -> Ipv6Addr {
        compose(self.0, host, slot, HOST_IFACE)
    }

    /// The org network an address belongs to, if it lies in the mesh prefix.
    pub fn of(addr: Ipv6Addr) -> Option<OrgNetwork> {
        let bits = u128::from(addr);
        if (bits >> 112) as u16 != MESH_PREFIX {
            return None;
        }
        Some(OrgNetwork((bits >> 80) as u32))
    }
}

/// The 4via6 /96 of a site peer with address `peer_addr`: `fdaa:<net>:b1a:<gateway host
/// low 16 bits>:<slot>::/96`; an IPv4 address `a.b.c.d` behind that site is `<prefix>::a.b.c.d`.
/// Derived from the peer's own address, so it lives and dies with the peer and needs no
/// allocation. `None` when the peer's slot does not fit in 16 bits (65,535 machines and peers
/// of one org on one gateway) or the address is not a mesh address.
pub fn via_prefix(peer_addr: Ipv6Addr) -> Option<Ipv6Net> {
    let net = OrgNetwork::of(peer_addr)?;
    let host_lo = host_of(peer_addr) & 0xffff;
    let slot = slot_of(peer_addr);
    if slot > 0xffff {
        return None;
    }
    let bits = (u128::from(MESH_PREFIX) << 112)
        | (u128::from(net.0) << 80)
        | (u128::from(VIA_HOST_HI) << 64)
        | (u128::from(host_lo) << 48)
        | (u128::from(slot) << 32);
    Some(net_of(Ipv6Addr::from(bits), 96))
}

/// The 4via6 address of `v4` behind the site whose /96 is `via`.
pub fn via_addr(via: Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(via.network()) | u128::from(u32::from(v4)))
}

/// The 4via6 prefix of an IPv4 route behind the site whose /96 is `via` (a /120 for a /24).
pub fn via_route(via: Ipv6Net, route: ipnet::Ipv4Net) -> Ipv6Net {
    net_of(via_addr(via, route.network()), 96 + route.prefix_len())
}

/// True for addresses in some org's 4via6 space.
pub fn is_via(addr: Ipv6Addr) -> bool {
    OrgNetwork::of(addr).is_some() && (u128::from(addr) >> 64) as u16 == VIA_HOST_HI
}

/// The host part (bits 48..80) of a mesh address.
pub fn host_of(addr: Ipv6Addr) -> u32 {
    (u128::from(addr) >> 48) as u32
}

/// The slot part (bits 80..112) of a mesh address.
pub fn slot_of(addr: Ipv6Addr) -> u32 {
    (u128::from(addr) >> 16) as u32
}

/// The lowest value in `range` that `used` does not hold. `used` must be sorted ascending.
pub fn lowest_free(used: impl IntoIterator<Item = u32>, range: (u32, u32)) -> Option<u32> {
    let mut want = range.0;
    for u in used {
        if u < want {
            continue;
        }
        if u > want {
            break;
        }
        if want == range.1 {
            return None;
        }
        want += 1;
    }
    (want <= range.1).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_flys_example() {
        let org = OrgNetwork(0x18);
        assert_eq!(org.prefix().to_string(), "fdaa:0:18::/48");
        assert_eq!(org.dns_addr().to_string(), "fdaa:0:18::3");
        let host = 0x0a7b_007d;
        assert_eq!(org.node_prefix(host).to_string(), "fdaa:0:18:a7b:7d::/80");
        let slot = 0xf066_b83b;
        assert_eq!(
            org.slot_prefix(host, slot).to_string(),
            "fdaa:0:18:a7b:7d:f066:b83b:0/112"
        );
        let addr = org.slot_addr(host, slot);
        assert_eq!(addr.to_string(), "fdaa:0:18:a7b:7d:f066:b83b:2");
        assert_eq!(OrgNetwork::of(addr), Some(org));
        assert_eq!(host_of(addr), host);
        assert_eq!(slot_of(addr), slot);
        assert!(org.node_prefix(host).contains(&addr));
        assert!(org.prefix().contains(&org.node_prefix(host)));
    }

    #[test]
    fn via_prefix_is_the_sites_own_96() {
        let org = OrgNetwork(0x18);
        let peer = org.slot_addr(0x0a7b_0003, 7);
        let via = via_prefix(peer).unwrap();
        assert_eq!(via.to_string(), "fdaa:0:18:b1a:3:7::/96");
        assert!(org.prefix().contains(&via));
        let a = via_addr(via, Ipv4Addr::new(10, 20, 0, 5));
        assert_eq!(a.to_string(), "fdaa:0:18:b1a:3:7:a14:5");
        assert!(is_via(a));
        assert!(!is_via(peer));
        assert_eq!(
            via_route(via, "10.20.0.0/24".parse().unwrap()).to_string(),
            "fdaa:0:18:b1a:3:7:a14:0/120"
        );
        assert_eq!(via_prefix(org.slot_addr(0x0a7b_0003, 0x1_0000)), None);
        assert_eq!(via_prefix("fd00::2".parse().unwrap()), None);
        // Never a node's /80 nor the services' host part 0.
        for host in [0u32, HOST_RANGE.0, HOST_RANGE.1] {
            assert!(!org.node_prefix(host).contains(&a));
        }
    }

    #[test]
    fn large_network_ids_use_both_groups() {
        let org = OrgNetwork(0x0002_045b);
        assert_eq!(org.prefix().to_string(), "fdaa:2:45b::/48");
        assert_eq!(OrgNetwork::of("fd00::1".parse().unwrap()), None);
    }

    #[test]
    fn lowest_free_fills_holes_then_exhausts() {
        assert_eq!(lowest_free([], (1, 3)), Some(1));
        assert_eq!(lowest_free([1, 2], (1, 3)), Some(3));
        assert_eq!(lowest_free([1, 3], (1, 3)), Some(2));
        assert_eq!(lowest_free([1, 2, 3], (1, 3)), None);
        assert_eq!(lowest_free([0, 5], (1, 3)), Some(1));
        assert_eq!(
            lowest_free([u32::MAX - 1], (u32::MAX - 1, u32::MAX)),
            Some(u32::MAX)
        );
        assert_eq!(
            lowest_free([u32::MAX - 1, u32::MAX], (u32::MAX - 1, u32::MAX)),
            None
        );
    }
}
