use registry::change::{plan, SystemContext};
use registry::{Change, NodeSpec, Record};

use super::*;

const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_C: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const KEY_L: &str = "mHPB4wv2s2e/aBI5T3Lz0Y0S4wvhWrxZU9U4PjR2kGM=";

fn apply_change(s: &mut Snapshot, c: Change) -> Option<Record> {
    let p = plan(s, &c, &mut SystemContext).unwrap();
    p.apply_to(s);
    p.result
}

fn node(name: &str, key: &str, gateway: bool, n: u8) -> Change {
    Change::AddNode(NodeSpec {
        name: name.into(),
        region: "iad".into(),
        public_key: key.parse().unwrap(),
        endpoint: format!("10.0.0.{n}:51820").parse().unwrap(),
        gateway,
    })
}

fn machine(s: &mut Snapshot, org: &str, node: &str) -> registry::Machine {
    match apply_change(
        s,
        Change::AddMachine {
            org: org.into(),
            app: "web".into(),
            region: "iad".into(),
            node: node.into(),
            process_group: None,
        },
    ) {
        Some(Record::Machine(m)) => m,
        r => panic!("{r:?}"),
    }
}

fn mesh() -> Snapshot {
    let mut s = Snapshot::default();
    apply_change(
        &mut s,
        Change::CreateOrg {
            name: "acme".into(),
        },
    );
    apply_change(&mut s, node("gw", KEY_A, true, 1));
    apply_change(&mut s, node("b", KEY_B, false, 2));
    apply_change(&mut s, node("c", KEY_C, false, 3));
    s
}

fn key(k: &str) -> PublicKey {
    k.parse::<registry::PublicKey>().unwrap().to_bytes()
}

#[test]
fn nodes_get_the_slash80s_they_serve() {
    let mut s = mesh();
    let m = machine(&mut s, "acme", "b");
    let d = desired(&s, "gw", 0);
    let b = &d.peers[&key(KEY_B)];
    assert_eq!(b.endpoint, Some("10.0.0.2:51820".parse().unwrap()));
    assert!(b
        .allowed_ips
        .iter()
        .any(|n| n.contains(&IpAddr::V6(m.addr))));
    assert!(d.peers[&key(KEY_C)].allowed_ips.is_empty());
    assert!(d.addresses.is_empty(), "nothing runs on gw");

    let on_b = desired(&s, "b", 0);
    assert!(on_b.addresses.contains(&m.addr));
    let dns = s.orgs["acme"].network.dns_addr();
    assert!(on_b.addresses.contains(&dns));
    assert!(is_local(&on_b, IpAddr::V6(m.addr)));
    assert!(
        !on_b.peers.contains_key(&key(KEY_B)),
        "never a peer of itself"
    );
}

#[test]
fn moved_machine_routes_its_slash112_to_where_it_runs() {
    let mut s = mesh();
    let m = machine(&mut s, "acme", "b");
    apply_change(
        &mut s,
        Change::MoveMachine {
            id: m.id,
            node: "c".into(),
        },
    );
    let d = desired(&s, "gw", 0);
    let c = &d.peers[&key(KEY_C)];
    assert!(c.allowed_ips.contains(&IpNet::V6(m.prefix())));
    let on_c = desired(&s, "c", 0);
    assert!(on_c.addresses.contains(&m.addr));
    assert!(on_c.local.contains(&IpNet::V6(m.prefix())));
    let on_b = desired(&s, "b", 0);
    assert!(!on_b.addresses.contains(&m.addr));
    assert!(on_b.peers[&key(KEY_C)]
        .allowed_ips
        .contains(&IpNet::V6(m.prefix())));
}

#[test]
fn gateway_holds_its_wireguard_peers_and_sites_are_routed_by_family() {
    let mut s = mesh();
    let site4: IpNet = "192.168.7.0/24".parse().unwrap();
    let site6: IpNet = "2001:db8:7::/48".parse().unwrap();
    apply_change(
        &mut s,
        Change::AddPeer {
            org: "acme".into(),
            name: "site-ams".into(),
            region: None,
            gateway: Some("gw".into()),
            public_key: KEY_L.parse().unwrap(),
            routes: vec![site4, site6],
            expires: None,
        },
    );
    machine(&mut s, "acme", "b");
    let p = s.peers.values().next().unwrap().clone();
    let via = p.via().expect("a site with IPv4 routes has a 4via6 prefix");
    let d = desired(&s, "gw", 0);
    let site = &d.peers[&key(KEY_L)];
    assert_eq!(site.endpoint, None);
    assert!(site.allowed_ips.contains(&host128(p.addr)));
    // IPv6 natively; IPv4 only behind the /96, never as a route.
    assert!(site.allowed_ips.contains(&site6));
    assert!(!site.allowed_ips.contains(&site4));
    assert_eq!(site.via, Some(via));
    assert_eq!(
        site.site_v4,
        vec!["192.168.7.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    // Others reach the site (its /128, IPv6 prefix and /96) through the gateway, and route
    // its IPv6 prefix into their interface because they serve acme.
    let on_b = desired(&s, "b", 0);
    let gw = &on_b.peers[&key(KEY_A)];
    assert!(gw
        .allowed_ips
        .iter()
        .any(|n| n.contains(&IpAddr::V6(p.addr))));
    assert!(gw.allowed_ips.contains(&site6));
    assert!(gw.allowed_ips.contains(&IpNet::V6(via)));
    assert!(!gw.allowed_ips.contains(&site4));
    assert!(!on_b.peers.contains_key(&key(KEY_L)));
    let web_on_b = s.machines.values().find(|m| m.node == "b").unwrap().addr;
    assert!(on_b
        .routes
        .contains(&("2001:db8:7::/48".parse().unwrap(), Some(web_on_b))));
    // The gateway serves acme through the site alone: the route, with no source to prefer.
    assert!(desired(&s, "gw", 0)
        .routes
        .contains(&("2001:db8:7::/48".parse().unwrap(), None)));
    let acme = s.orgs["acme"].network;
    assert_eq!(on_b.sites, vec![(site6, acme)]);
    // c serves no acme machine: no site route into its kernel, but it still knows whose
    // prefix it is.
    let on_c = desired(&s, "c", 0);
    assert!(on_c.routes.is_empty());
    assert_eq!(on_c.sites, vec![(site6, acme)]);
    // Expired peers are let go, with their routes.
    let later = p.created + 10;
    let mut s2 = s.clone();
    s2.peers
        .values_mut()
        .for_each(|p| p.expires = Some(later - 1));
    let d2 = desired(&s2, "gw", later);
    assert!(!d2.peers.contains_key(&key(KEY_L)));
    assert!(d2.sites.is_empty());
    assert!(desired(&s2, "b", later).routes.is_empty());
}

#[test]
fn peerings_name_both_networks() {
    let mut s = mesh();
    apply_change(
        &mut s,
        Change::CreateOrg {
            name: "beta".into(),
        },
    );
    assert!(desired(&s, "b", 0).peerings.is_empty());
    apply_change(
        &mut s,
        Change::PeerOrgs {
            a: "beta".into(),
            b: "acme".into(),
        },
    );
    let (acme, beta) = (s.orgs["acme"].network, s.orgs["beta"].network);
    let got = desired(&s, "b", 0).peerings;
    assert!(
        got == vec![(acme, beta)] || got == vec![(beta, acme)],
        "{got:?}"
    );
}

#[test]
fn apply_touches_only_what_changed() {
    use crate::core::{Options, Transmit};
    struct Null;
    impl Transmit for Null {
        fn send_udp(&mut self, _: SocketAddr, _: &[u8]) -> bool {
            true
        }
        fn write_tun(&mut self, _: &[u8]) {}
    }
    let mut s = mesh();
    machine(&mut s, "acme", "b");
    let secret = x25519_dalek::StaticSecret::from(key(KEY_A));
    let mut core = Core::new(Some(secret), Options::default(), 1);
    let now = Instant::now();
    let first = apply(&mut core, &desired(&s, "gw", 0), now, &mut Null);
    assert_eq!(first.added, 2);
    let b_index = core.peer(&key(KEY_B)).unwrap().index;
    assert_eq!(
        apply(&mut core, &desired(&s, "gw", 0), now, &mut Null),
        Applied::default()
    );
    machine(&mut s, "acme", "c");
    let again = apply(&mut core, &desired(&s, "gw", 0), now, &mut Null);
    assert_eq!(again.updated, 1, "c gains a /80");
    assert_eq!(
        core.peer(&key(KEY_B)).unwrap().index,
        b_index,
        "b untouched"
    );
    if let Ok(p) = plan(
        &s,
        &Change::RemoveNode { name: "c".into() },
        &mut SystemContext,
    ) {
        p.apply_to(&mut s);
    }
    let d = desired(&s, "gw", 0);
    // (c may refuse removal while it has machines; either way b stays.)
    apply(&mut core, &d, now, &mut Null);
    assert_eq!(core.peer(&key(KEY_B)).unwrap().index, b_index);
}
