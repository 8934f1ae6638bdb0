//! What a peer's tunnel carries, from the registry: the org's /48 (which holds the org's
//! 4via6 space too), the IPv6 prefixes of the org's sites other than the peer's own, and for
//! a site with IPv4 routes the NAT64 pool the org's gateway sends from toward its LAN; and
//! for each org peered with the peer's org, that org's /48 and IPv6 site prefixes (the
//! gateway lets them through only while the peering lasts).

use ipnet::{IpNet, Ipv6Net};
use registry::{Peer, Snapshot};

/// The allowed IPs of `peer`'s tunnel file, the org's /48 first.
pub fn of(snap: &Snapshot, peer: &Peer, org_prefix: Ipv6Net, now_unix: i64) -> Vec<IpNet> {
    let mut nets = vec![IpNet::V6(org_prefix)];
    for site in snap.site_prefixes_v6(&peer.org, now_unix) {
        let net = IpNet::V6(site);
        if org_prefix.contains(&site) || peer.routes.contains(&net) || nets.contains(&net) {
            continue;
        }
        nets.push(net);
    }
    if peer.routes.iter().any(|r| matches!(r, IpNet::V4(_))) {
        nets.push(IpNet::V4(registry::addr::NAT64_POOL));
    }
    for other in snap.peers_of_org(&peer.org) {
        let Some(o) = snap.orgs.get(other) else {
            continue;
        };
        nets.push(IpNet::V6(o.network.prefix()));
        nets.extend(
            snap.site_prefixes_v6(other, now_unix)
                .into_iter()
                .map(IpNet::V6),
        );
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::OrgNetwork;

    fn peer(org: &str, name: &str, slot: u32, routes: &[&str], expires: Option<i64>) -> Peer {
        Peer {
            org: org.into(),
            name: name.into(),
            gateway: "gw1".into(),
            region: "iad".into(),
            public_key: [0; 32].into(),
            addr: OrgNetwork(1).slot_addr(0x0a7b_0001, slot),
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            created: 0,
            expires,
        }
    }

    #[test]
    fn sites_get_the_org_the_other_sites_and_the_pool_but_not_their_own_lan() {
        let mut snap = Snapshot::default();
        let peers = [
            peer("acme", "alice", 1, &[], None),
            peer("acme", "ams", 2, &["10.20.0.0/24", "2001:db8:5::/48"], None),
            peer("acme", "fra", 3, &["2001:db8:7::/48"], None),
            peer("acme", "old", 4, &["2001:db8:8::/48"], Some(100)),
            peer("globex", "lon", 5, &["2001:db8:9::/48"], None),
        ];
        for p in &peers {
            snap.put(registry::Record::Peer(p.clone()));
        }
        let org: Ipv6Net = "fdaa:0:1::/48".parse().unwrap();
        let of = |snap: &Snapshot, p: &Peer| -> Vec<String> {
            of(snap, p, org, 200)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            of(&snap, &peers[0]),
            ["fdaa:0:1::/48", "2001:db8:5::/48", "2001:db8:7::/48"],
            "a laptop: the org and its live sites, no other org's"
        );
        assert_eq!(
            of(&snap, &peers[1]),
            ["fdaa:0:1::/48", "2001:db8:7::/48", "100.127.0.0/16"],
            "an IPv4 site: not its own LAN, and the NAT64 pool"
        );
        assert_eq!(
            of(&snap, &peers[2]),
            ["fdaa:0:1::/48", "2001:db8:5::/48"],
            "an IPv6-only site: no pool"
        );
        // Peered with globex: globex's /48 and its sites come after the org's own.
        for (name, n) in [("acme", 1), ("globex", 2)] {
            snap.put(registry::Record::Org(registry::Org {
                name: name.into(),
                network: OrgNetwork(n),
            }));
        }
        snap.put(registry::Record::Peering(registry::Peering::new(
            "globex", "acme",
        )));
        assert_eq!(
            of(&snap, &peers[0]),
            [
                "fdaa:0:1::/48",
                "2001:db8:5::/48",
                "2001:db8:7::/48",
                "fdaa:0:2::/48",
                "2001:db8:9::/48"
            ],
            "a laptop of a peered org"
        );
    }
}
