//! The org boundary: every address meshd carries belongs to exactly one org, a mesh address
//! by its org bits (4via6 addresses included: they lie in the org's /48), an IPv6 site
//! prefix by the org of the peer that owns it. A packet whose ends belong to different orgs
//! passes only when the registry holds a peering between them; a packet with an end that
//! belongs to no org (a gateway's own addresses, the internet) does not pass at all.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use registry::OrgNetwork;

use super::counters::Drop;
use super::router::Router;

#[derive(Debug, Default)]
pub struct OrgPolicy {
    /// IPv6 site prefixes and the org of the peer that owns each.
    sites: Router<OrgNetwork>,
    /// Peered org pairs, lower id first.
    peerings: HashSet<(OrgNetwork, OrgNetwork)>,
}

fn pair(a: OrgNetwork, b: OrgNetwork) -> (OrgNetwork, OrgNetwork) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl OrgPolicy {
    /// Makes the site prefixes exactly `sites` (each with its org).
    pub fn set_sites(&mut self, sites: &[(IpNet, OrgNetwork)]) {
        self.sites = Router::default();
        for (net, org) in sites {
            self.sites.insert(net.trunc(), *org);
        }
    }

    /// Makes the peered pairs exactly `pairs` (either order).
    pub fn set_peerings(&mut self, pairs: impl IntoIterator<Item = (OrgNetwork, OrgNetwork)>) {
        self.peerings = pairs.into_iter().map(|(a, b)| pair(a, b)).collect();
    }

    pub fn org_of(&self, addr: IpAddr) -> Option<OrgNetwork> {
        match addr {
            IpAddr::V6(a) => OrgNetwork::of(a).or_else(|| self.sites.lookup(addr)),
            IpAddr::V4(_) => None,
        }
    }

    /// Whether a packet from `src` to `dst` may pass, and if not, why.
    pub fn check(&self, src: IpAddr, dst: IpAddr) -> Result<(), Drop> {
        let from = self.org_of(src).ok_or(Drop::SourceNoOrg)?;
        let to = self.org_of(dst).ok_or(Drop::DestinationNoOrg)?;
        if from == to || self.peerings.contains(&pair(from, to)) {
            return Ok(());
        }
        Err(Drop::OrgMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> OrgPolicy {
        let mut p = OrgPolicy::default();
        p.set_sites(&[
            ("2001:db8:18::/48".parse().unwrap(), OrgNetwork(0x18)),
            ("2001:db8:19::/48".parse().unwrap(), OrgNetwork(0x19)),
        ]);
        p
    }

    #[test]
    fn different_orgs_cross_same_org_does_not() {
        let p = policy();
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("fdaa:0:19::2")),
            Err(Drop::OrgMismatch)
        );
        assert_eq!(
            p.check(ip("fdaa:0:18:a7b:1::2"), ip("fdaa:0:18:a7b:2::2")),
            Ok(())
        );
    }

    #[test]
    fn site_prefixes_belong_to_their_peers_org() {
        let p = policy();
        assert_eq!(p.check(ip("2001:db8:18::5"), ip("fdaa:0:18::2")), Ok(()));
        assert_eq!(
            p.check(ip("2001:db8:19::5"), ip("fdaa:0:18::2")),
            Err(Drop::OrgMismatch)
        );
        assert_eq!(
            p.check(ip("fdaa:0:19::2"), ip("2001:db8:18::5")),
            Err(Drop::OrgMismatch)
        );
        // 4via6 space is the org's own.
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("fdaa:0:18:b1a:1:1:a14:5")),
            Ok(())
        );
    }

    #[test]
    fn addresses_of_no_org_pass_nowhere() {
        let p = policy();
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("2001:db8:99::1")),
            Err(Drop::DestinationNoOrg)
        );
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("10.0.0.1")),
            Err(Drop::DestinationNoOrg)
        );
        assert_eq!(
            p.check(ip("fd00::1"), ip("fdaa:0:19::2")),
            Err(Drop::SourceNoOrg)
        );
        assert_eq!(
            p.check(ip("10.0.0.1"), ip("fdaa:0:19::2")),
            Err(Drop::SourceNoOrg)
        );
    }

    #[test]
    fn a_peering_opens_both_ways_and_only_that_pair() {
        let mut p = policy();
        p.set_peerings([(OrgNetwork(0x19), OrgNetwork(0x18))]);
        assert_eq!(p.check(ip("fdaa:0:18::2"), ip("fdaa:0:19::2")), Ok(()));
        assert_eq!(p.check(ip("fdaa:0:19::2"), ip("2001:db8:18::5")), Ok(()));
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("fdaa:0:20::2")),
            Err(Drop::OrgMismatch)
        );
        p.set_peerings([]);
        assert_eq!(
            p.check(ip("fdaa:0:18::2"), ip("fdaa:0:19::2")),
            Err(Drop::OrgMismatch)
        );
        p.set_sites(&[]);
        assert_eq!(
            p.check(ip("2001:db8:18::5"), ip("fdaa:0:18::2")),
            Err(Drop::SourceNoOrg)
        );
    }
}
