//! Sites: 4via6 to an IPv4 LAN behind a site router, and back through NAT64 bindings.

use std::time::Instant;

use super::*;

/// A UDP packet with a correct checksum, from `src` to `dst` (either family).
fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&4000u16.to_be_bytes());
    l4[2..4].copy_from_slice(&53u16.to_be_bytes());
    l4.extend_from_slice(payload);
    let len = l4.len() as u16;
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // Build as IPv6 with any checksum, then let the translator's round trip fix it:
            // the core never checks transport checksums, so only the addresses matter here.
            let mut p = ip6(&s.to_string(), &d.to_string(), &l4);
            p[6] = 17;
            p
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(20 + len).to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(&l4);
            p
        }
        _ => unreachable!("one family per packet"),
    }
}

const GATEWAY: Options = Options {
    forward: true,
    org_isolation: true,
    idle_evict: None,
};
const MACHINE: &str = "fdaa:0:1:a7b:1:0:1:2";
const VIA: &str = "fdaa:0:1:b1a:1:5::/96";

/// A is org 1's gateway with a machine, B a site router (a plain WireGuard peer, as
/// wireguard-go would be) with 2001:db8:5::/48 and 10.20.0.0/24 behind it.
fn site() -> (Node, Node) {
    let mut a = node(1, 100, GATEWAY);
    let mut b = node(2, 200, Options::default());
    a.core.ensure_peer(Instant::now(), b.public);
    a.core.set_allowed_ips(
        &b.public,
        &[net("fdaa:0:1:a7b:1:0:5:2/128"), net("2001:db8:5::/48")],
    );
    a.core.set_site(
        &b.public,
        Some(VIA.parse().unwrap()),
        &["10.20.0.0/24".parse().unwrap()],
    );
    // A also hosts a machine of org 2.
    a.core
        .set_local_routes(&[net("fdaa:0:1:a7b:1::/80"), net("fdaa:0:2:a7b:1::/80")]);
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        std::iter::empty(),
    );
    b.core.ensure_peer(Instant::now(), a.public);
    b.core.update_peer(
        &a.public,
        PeerUpdate {
            endpoint: Some(a.addr),
            ..Default::default()
        },
    );
    // Everything into the tunnel, as a hostile site's owner could set it.
    b.core
        .set_allowed_ips(&a.public, &[net("::/0"), net("0.0.0.0/0")]);
    (a, b)
}

/// B (the site) sends `p` from its LAN; what reaches A's TUN.
fn from_site(a: &mut Node, b: &mut Node, p: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Wire::default();
    b.core.handle_tun_packet(Instant::now(), p, &mut out);
    let (to_b, to_a) = pump(b, a, out);
    assert!(to_b.is_empty());
    to_a
}

#[test]
fn machine_reaches_site_ipv4_lan_through_4via6_and_the_answer_comes_back() {
    let (mut a, mut b) = site();
    // The site router says hello first, so A knows its endpoint (laptops and sites are
    // found by their handshakes).
    let hello = udp("2001:db8:5::9", MACHINE, b"hi");
    assert_eq!(from_site(&mut a, &mut b, &hello), vec![hello.clone()]);

    let q = udp(MACHINE, "fdaa:0:1:b1a:1:5:a14:5", b"question");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &q, &mut out);
    let (tun_a, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_a.is_empty());
    assert_eq!(tun_b.len(), 1, "one IPv4 packet reaches the site");
    let v4 = &tun_b[0];
    assert_eq!(v4[0] >> 4, 4);
    let pool_addr = [v4[12], v4[13], v4[14], v4[15]];
    assert_eq!(&pool_addr[..2], &[100, 127]);
    assert_eq!(&v4[16..20], &[10, 20, 0, 5]);
    assert!(v4.ends_with(b"question"));
    assert_eq!(a.core.nat64_bindings(), 1);

    // The LAN host answers the pool address.
    let src = std::net::Ipv4Addr::from(pool_addr).to_string();
    let answer = udp("10.20.0.5", &src, b"answer");
    let got = from_site(&mut a, &mut b, &answer);
    assert_eq!(got.len(), 1);
    let (s, d) = packet::addrs(&got[0]).unwrap();
    assert_eq!(s.to_string(), "fdaa:0:1:b1a:1:5:a14:5");
    assert_eq!(d.to_string(), MACHINE);
    assert!(got[0].ends_with(b"answer"));
}

#[test]
fn site_traffic_outside_its_routes_orgs_and_bindings_is_dropped_by_reason() {
    let (mut a, mut b) = site();
    let hello = udp("2001:db8:5::9", MACHINE, b"hi");
    from_site(&mut a, &mut b, &hello);
    let cases: [(Vec<u8>, Drop); 6] = [
        // IPv4 from outside the site's routes, spoofed.
        (
            udp("10.20.1.9", "100.127.0.1", b"x"),
            Drop::SourceNotAllowed,
        ),
        // IPv4 to a pool address nobody holds.
        (udp("10.20.0.5", "100.127.0.77", b"x"), Drop::NoBinding),
        // IPv6 from the site to another org's machine.
        (
            udp("2001:db8:5::9", "fdaa:0:2:a7b:1:0:1:2", b"x"),
            Drop::OrgMismatch,
        ),
        // To the gateway host's own addresses or the internet: no org.
        (
            udp("2001:db8:5::9", "2001:db8:99::1", b"x"),
            Drop::DestinationNoOrg,
        ),
        // From a prefix that is not the site's.
        (udp("2001:db8:6::9", MACHINE, b"x"), Drop::SourceNotAllowed),
        // To another site's 4via6 space (no such site here), or anywhere in the org that
        // is not this host's: never handed to the gateway's kernel.
        (
            udp("2001:db8:5::9", "fdaa:0:1:b1a:1:6:a14:5", b"x"),
            Drop::NoRoute,
        ),
    ];
    for (p, why) in cases {
        let before = a.core.counters.drops(why);
        let got = from_site(&mut a, &mut b, &p);
        assert!(got.is_empty(), "{why:?} case was delivered");
        assert_eq!(a.core.counters.drops(why), before + 1, "{why:?}");
    }
    // A peering opens org 2 to the site's prefix, and closing it shuts it again.
    let to_org2 = udp("2001:db8:5::9", "fdaa:0:2:a7b:1:0:1:2", b"peered");
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        [(OrgNetwork(2), OrgNetwork(1))],
    );
    assert_eq!(from_site(&mut a, &mut b, &to_org2), vec![to_org2.clone()]);
    a.core.set_org_policy(
        &[(net("2001:db8:5::/48"), OrgNetwork(1))],
        std::iter::empty(),
    );
    assert!(from_site(&mut a, &mut b, &to_org2).is_empty());
}

#[test]
fn address_outside_the_sites_routes_is_not_translated_and_removal_drops_the_via_route() {
    let (mut a, b) = site();
    let q = udp(MACHINE, "fdaa:0:1:b1a:1:5:a14:105", b"x"); // 10.20.1.5: not routed
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &q, &mut out);
    assert!(out.udp.is_empty());
    assert_eq!(a.core.counters.drops(Drop::NotTranslated), 1);
    a.core.remove_peer(&b.public);
    assert_eq!(
        a.core.route("fdaa:0:1:b1a:1:5:a14:5".parse().unwrap()),
        None
    );
}
