//! Org isolation: a packet whose source and destination lie in different org networks of
//! the mesh prefix is dropped. Addresses outside the mesh prefix (site routes, IPv4) carry no
//! org, so the filter leaves them to the allowed-IPs checks.

use std::net::IpAddr;

use registry::OrgNetwork;

fn org_of(addr: IpAddr) -> Option<OrgNetwork> {
    match addr {
        IpAddr::V6(a) => OrgNetwork::of(a),
        IpAddr::V4(_) => None,
    }
}

/// True when both ends are mesh addresses of different orgs.
pub fn crosses_orgs(src: IpAddr, dst: IpAddr) -> bool {
    match (org_of(src), org_of(dst)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn different_orgs_cross_same_org_does_not() {
        assert!(crosses_orgs(ip("fdaa:0:18::2"), ip("fdaa:0:19::2")));
        assert!(!crosses_orgs(
            ip("fdaa:0:18:a7b:1::2"),
            ip("fdaa:0:18:a7b:2::2")
        ));
    }

    #[test]
    fn non_mesh_addresses_are_left_alone() {
        assert!(!crosses_orgs(ip("10.0.0.1"), ip("fdaa:0:19::2")));
        assert!(!crosses_orgs(ip("fd00::1"), ip("fdaa:0:19::2")));
    }
}
