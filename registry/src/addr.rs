//! The 6PN address plan:
//! `fdaa` (16 bits) | org network (32) | host (32) | slot (32) | interface (16).
//!
//! An org owns a /48, a node serves one /80 per org, a machine owns a /112 in its first node's
//! /80 (its address is `::2` in it), and a WireGuard peer owns a /128 in its gateway's /80.
//! Machines and peers draw slots from the same per-/80 space, so they can never collide.

use std::net::Ipv6Addr;

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

fn net(addr: Ipv6Addr, len: u8) -> Ipv6Net {
    // Lengths here are constants below 128, so construction cannot fail.
    Ipv6Net::new(addr, len)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

impl OrgNetwork {
    /// The org's /48, e.g. `fdaa:0:18::/48`.
    pub fn prefix(self) -> Ipv6Net {
        net(compose(self.0, 0, 0, 0), 48)
    }

    /// The org's DNS server address, `<org>::3`.
    pub fn dns_addr(self) -> Ipv6Addr {
        compose(self.0, 0, 0, DNS_IFACE)
    }

    /// The /80 a node serves for this org.
    pub fn node_prefix(self, host: u32) -> Ipv6Net {
        net(compose(self.0, host, 0, 0), 80)
    }

    /// A machine's /112.
    pub fn slot_prefix(self, host: u32, slot: u32) -> Ipv6Net {
        net(compose(self.0, host, slot, 0), 112)
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
