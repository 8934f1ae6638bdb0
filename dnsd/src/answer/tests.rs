//! The answer function, row by row of the name table, every negative case, and scoping.

use std::net::{IpAddr, Ipv6Addr};

use registry::change::{plan, Context};
use registry::{Change, Machine, MachineState, NodeSpec, Snapshot};

use super::*;
use crate::index::{txt_rdata, Index, Options};

const NOW: i64 = 1_700_000_000;

struct Fixed(u64);

impl Context for Fixed {
    fn random_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn now_unix(&self) -> i64 {
        NOW
    }
}

fn apply(snap: &mut Snapshot, change: Change) {
    let mut ctx = Fixed(snap.revision.0 * 7919 + 13);
    let p = plan(snap, &change, &mut ctx).unwrap();
    p.apply_to(snap);
}

fn key(n: u8) -> registry::PublicKey {
    // Unique per n.
    let mut bytes = [0u8; 32];
    bytes[7] = n;
    bytes.into()
}

fn node(snap: &mut Snapshot, name: &str, region: &str, n: u8, gateway: bool) {
    apply(
        snap,
        Change::AddNode(NodeSpec {
            name: name.into(),
            region: region.into(),
            public_key: key(n),
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            gateway,
        }),
    );
}

fn machine(snap: &mut Snapshot, org: &str, app: &str, node: &str, group: Option<&str>) -> Machine {
    let region = snap.nodes[node].region.clone();
    apply(
        snap,
        Change::AddMachine {
            org: org.into(),
            app: app.into(),
            region,
            node: node.into(),
            process_group: group.map(Into::into),
        },
    );
    snap.machines
        .values()
        .filter(|m| m.org == org && m.app == app && m.node == node)
        .max_by_key(|m| registry::addr::slot_of(m.addr))
        .unwrap()
        .clone()
}

fn peer(snap: &mut Snapshot, org: &str, name: &str, n: u8, expires: Option<i64>) {
    apply(
        snap,
        Change::AddPeer {
            org: org.into(),
            name: name.into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: key(n),
            routes: vec![],
            expires,
        },
    );
}

struct World {
    snap: Snapshot,
    /// web: iad (app), ams (app), nrt (stopped), iad (worker)
    web: [Machine; 4],
    db: Machine,
    secret: Machine,
}

fn world() -> World {
    let mut s = Snapshot::default();
    for org in ["acme", "globex"] {
        apply(&mut s, Change::CreateOrg { name: org.into() });
    }
    node(&mut s, "host-iad", "iad", 1, true);
    node(&mut s, "host-ams", "ams", 2, false);
    node(&mut s, "host-nrt", "nrt", 3, false);
    let w0 = machine(&mut s, "acme", "web", "host-iad", None);
    let w1 = machine(&mut s, "acme", "web", "host-ams", None);
    let w2 = machine(&mut s, "acme", "web", "host-nrt", None);
    let w3 = machine(&mut s, "acme", "web", "host-iad", Some("worker"));
    apply(
        &mut s,
        Change::SetMachineState {
            id: w2.id,
            state: MachineState::Stopped,
        },
    );
    let w2 = s.machines[&w2.id].clone();
    let db = machine(&mut s, "acme", "db", "host-ams", None);
    let secret = machine(&mut s, "globex", "secret", "host-iad", None);
    peer(&mut s, "acme", "alice", 10, None);
    peer(&mut s, "acme", "interactive-1234", 11, None);
    peer(&mut s, "acme", "bob", 12, Some(NOW + 100));
    peer(&mut s, "globex", "carol", 13, None);
    World {
        snap: s,
        web: [w0, w1, w2, w3],
        db,
        secret,
    }
}

fn index(w: &World, default_org: Option<&str>) -> Index {
    Index::build(
        &w.snap,
        &Options {
            default_org: default_org.map(Into::into),
            ..Options::default()
        },
        NOW,
    )
}

fn ask<'a>(ix: &'a Index, name: &str, qtype: u16, from: IpAddr) -> Answer<'a> {
    let q = Question {
        name: name.as_bytes(),
        qtype,
        qclass: CLASS_IN,
    };
    answer(ix, &q, from, NOW)
}

/// The sorted addresses of an AAAA answer.
fn addrs(a: &Answer<'_>) -> Vec<Ipv6Addr> {
    let Answer::Aaaa { addrs, .. } = a else {
        panic!("not an AAAA answer: {a:?}");
    };
    let mut v: Vec<Ipv6Addr> = addrs.iter().map(|a| Ipv6Addr::from(*a)).collect();
    v.sort();
    v
}

fn ordered(a: &Answer<'_>) -> Vec<Ipv6Addr> {
    let Answer::Aaaa { addrs, .. } = a else {
        panic!("not an AAAA answer: {a:?}");
    };
    addrs.iter().map(|a| Ipv6Addr::from(*a)).collect()
}

fn sorted(ms: &[&Machine]) -> Vec<Ipv6Addr> {
    let mut v: Vec<Ipv6Addr> = ms.iter().map(|m| m.addr).collect();
    v.sort();
    v
}

/// The text of a TXT answer, its character-strings joined.
fn text(a: &Answer<'_>) -> String {
    let Answer::Txt(rdata) = a else {
        panic!("not a TXT answer: {a:?}");
    };
    let mut s = Vec::new();
    let mut rest = *rdata;
    while let Some((&len, tail)) = rest.split_first() {
        s.extend_from_slice(&tail[..usize::from(len)]);
        rest = &tail[usize::from(len)..];
    }
    String::from_utf8(s).unwrap()
}

fn acme(w: &World) -> IpAddr {
    IpAddr::V6(w.web[0].addr)
}

#[test]
fn app_name_lists_every_started_machine() {
    let w = world();
    let ix = index(&w, None);
    let a = ask(&ix, "web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), sorted(&[&w.web[0], &w.web[1], &w.web[3]]));
    assert!(matches!(a, Answer::Aaaa { shuffle: true, .. }));
    let g = ask(&ix, "global.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&g), addrs(&a));
    let one = ask(&ix, "db.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&one), vec![w.db.addr]);
    assert!(matches!(one, Answer::Aaaa { shuffle: false, .. }));
}

#[test]
fn region_name_lists_started_machines_there() {
    let w = world();
    let ix = index(&w, None);
    let a = ask(&ix, "iad.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), sorted(&[&w.web[0], &w.web[3]]));
    let a = ask(&ix, "ams.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), vec![w.web[1].addr]);
    // Only a stopped machine there: the name exists, with no address.
    assert_eq!(
        ask(&ix, "nrt.web.internal", TYPE_AAAA, acme(&w)),
        Answer::NoData
    );
    assert_eq!(
        ask(&ix, "lhr.web.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
}

#[test]
fn vm_name_is_that_machine_if_started() {
    let w = world();
    let ix = index(&w, None);
    let name = format!("{}.vm.web.internal", w.web[1].id);
    assert_eq!(
        addrs(&ask(&ix, &name, TYPE_AAAA, acme(&w))),
        vec![w.web[1].addr]
    );
    let stopped = format!("{}.vm.web.internal", w.web[2].id);
    assert_eq!(ask(&ix, &stopped, TYPE_AAAA, acme(&w)), Answer::NoData);
    // A machine of another app is not under this app.
    let wrong_app = format!("{}.vm.db.internal", w.web[1].id);
    assert_eq!(ask(&ix, &wrong_app, TYPE_AAAA, acme(&w)), Answer::NxDomain);
    assert_eq!(
        ask(&ix, "00000000000000.vm.web.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
    // A label that is not a machine id names no machine.
    let id = w.web[1].id.to_string();
    for label in [
        "web-1",
        &id[1..],
        &format!("{id}0"),
        &format!("x{}", &id[1..]),
    ] {
        let name = format!("{label}.vm.web.internal");
        assert_eq!(
            ask(&ix, &name, TYPE_AAAA, acme(&w)),
            Answer::NxDomain,
            "{name}"
        );
    }
}

#[test]
fn process_group_name_lists_its_started_machines() {
    let w = world();
    let ix = index(&w, None);
    let a = ask(&ix, "worker.process.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), vec![w.web[3].addr]);
    let a = ask(&ix, "app.process.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), sorted(&[&w.web[0], &w.web[1]]));
    assert_eq!(
        ask(&ix, "nope.process.web.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
}

#[test]
fn nearest_orders_by_distance_from_the_queriers_region() {
    let w = world();
    let ix = index(&w, None);
    // From ams (the db machine's address is on host-ams): the ams machine first.
    let from_ams = IpAddr::V6(w.db.addr);
    let a = ask(&ix, "top1.nearest.of.web.internal", TYPE_AAAA, from_ams);
    assert_eq!(ordered(&a), vec![w.web[1].addr]);
    assert!(matches!(a, Answer::Aaaa { shuffle: false, .. }));
    let a = ask(&ix, "top3.nearest.of.web.internal", TYPE_AAAA, from_ams);
    assert_eq!(ordered(&a)[0], w.web[1].addr);
    assert_eq!(sorted_tail(&a), sorted(&[&w.web[0], &w.web[3]]));
    // From iad: the two iad machines first, then ams; the stopped nrt one never.
    let a = ask(&ix, "top2.nearest.of.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), sorted(&[&w.web[0], &w.web[3]]));
    let a = ask(&ix, "top10.nearest.of.web.internal", TYPE_AAAA, acme(&w));
    assert_eq!(ordered(&a).len(), 3);
    assert_eq!(ordered(&a)[2], w.web[1].addr);
    // From a peer behind the iad gateway.
    let alice = w.snap.peers[&("acme".to_string(), "alice".to_string())].addr;
    let a = ask(
        &ix,
        "TOP1.nearest.of.web.internal".to_lowercase().as_str(),
        TYPE_AAAA,
        IpAddr::V6(alice),
    );
    assert!(sorted(&[&w.web[0], &w.web[3]]).contains(&ordered(&a)[0]));
    for bad in ["top0", "top", "topx", "top100"] {
        let name = format!("{bad}.nearest.of.web.internal");
        assert_eq!(
            ask(&ix, &name, TYPE_AAAA, acme(&w)),
            Answer::NxDomain,
            "{name}"
        );
    }
    assert_eq!(
        ask(&ix, "top1.nearest.of.nope.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
    assert_eq!(
        ask(&ix, "top1.nearest.of.web.internal", TYPE_TXT, acme(&w)),
        Answer::NoData
    );
}

fn sorted_tail(a: &Answer<'_>) -> Vec<Ipv6Addr> {
    let mut v = ordered(a)[1..].to_vec();
    v.sort();
    v
}

#[test]
fn peer_name_is_its_address_until_it_expires() {
    let w = world();
    let ix = index(&w, None);
    let alice = &w.snap.peers[&("acme".to_string(), "alice".to_string())];
    let a = ask(&ix, "alice._peer.internal", TYPE_AAAA, acme(&w));
    assert_eq!(addrs(&a), vec![alice.addr]);
    assert!(matches!(
        ask(&ix, "bob._peer.internal", TYPE_AAAA, acme(&w)),
        Answer::Aaaa { .. }
    ));
    let later = answer(
        &ix,
        &Question {
            name: b"bob._peer.internal",
            qtype: TYPE_AAAA,
            qclass: CLASS_IN,
        },
        acme(&w),
        NOW + 100,
    );
    assert_eq!(later, Answer::NxDomain);
    assert_eq!(ix.next_expiry, Some(NOW + 100));
    assert_eq!(
        ask(&ix, "carol._peer.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
}

#[test]
fn txt_names_use_flys_formats() {
    let w = world();
    let ix = index(&w, None);
    let t = |name: &str| text(&ask(&ix, name, TYPE_TXT, acme(&w)));
    assert_eq!(t("_apps.internal"), "db,web");
    assert_eq!(t("regions.web.internal"), "ams,iad");
    assert_eq!(t("all.regions.web.internal"), "ams,iad,nrt");
    let mut started = [&w.web[0], &w.web[1], &w.web[3]];
    started.sort_by_key(|a| a.id);
    let vms: Vec<String> = started
        .iter()
        .map(|m| format!("{} {}", m.id, m.region))
        .collect();
    assert_eq!(t("vms.web.internal"), vms.join(","));
    let mut all: Vec<&Machine> = w.web.iter().collect();
    all.sort_by_key(|a| a.id);
    let vms: Vec<String> = all
        .iter()
        .map(|m| format!("{} {}", m.id, m.region))
        .collect();
    assert_eq!(t("all.vms.web.internal"), vms.join(","));
    assert!(t("all.vms.web.internal").contains(&format!("{} nrt", w.web[2].id)));

    let inst = |m: &Machine| {
        format!(
            "instance={},app={},ip={},region={}",
            m.id, m.app, m.addr, m.region
        )
    };
    let mut every: Vec<&Machine> = w.web.iter().chain([&w.db]).collect();
    every.sort_by(|a, b| (&a.app, &a.id).cmp(&(&b.app, &b.id)));
    let all_text: Vec<String> = every.iter().map(|m| inst(m)).collect();
    assert_eq!(t("all._instances.internal"), all_text.join(";"));
    let started_text: Vec<String> = every
        .iter()
        .filter(|m| m.started())
        .map(|m| inst(m))
        .collect();
    assert_eq!(t("_instances.internal"), started_text.join(";"));
    assert!(!t("_instances.internal").contains(&w.web[2].id.to_string()));
    assert!(!t("_instances.internal").contains("secret"));
    // interactive-* peers are left out of the list (not out of DNS).
    assert_eq!(t("_peer.internal"), "alice,bob");
    assert!(matches!(
        ask(&ix, "interactive-1234._peer.internal", TYPE_AAAA, acme(&w)),
        Answer::Aaaa { .. }
    ));
}

#[test]
fn txt_over_255_bytes_comes_as_several_strings() {
    let mut w = world();
    for _ in 0..20 {
        machine(&mut w.snap, "acme", "big", "host-ams", None);
    }
    let ix = index(&w, None);
    let a = ask(&ix, "vms.big.internal", TYPE_TXT, acme(&w));
    let full = text(&a);
    assert_eq!(full.len(), 20 * 19 - 1);
    let Answer::Txt(rdata) = a else {
        unreachable!()
    };
    assert_eq!(rdata, &*txt_rdata(&full));
    assert_eq!(rdata[0], 255);
}

#[test]
fn unknown_names_are_nxdomain_and_known_names_of_other_types_nodata() {
    let w = world();
    let ix = index(&w, None);
    let from = acme(&w);
    for name in [
        "nope.internal",
        "x.web.internal",
        "vms.nope.internal",
        "a.b.c.internal",
    ] {
        assert_eq!(ask(&ix, name, TYPE_AAAA, from), Answer::NxDomain, "{name}");
        assert_eq!(ask(&ix, name, TYPE_TXT, from), Answer::NxDomain, "{name}");
    }
    assert_eq!(ask(&ix, "web.internal", TYPE_TXT, from), Answer::NoData);
    assert_eq!(ask(&ix, "web.internal", TYPE_A, from), Answer::NoData);
    assert_eq!(ask(&ix, "_apps.internal", TYPE_AAAA, from), Answer::NoData);
    // Empty non-terminals exist.
    assert_eq!(ask(&ix, "vm.web.internal", TYPE_AAAA, from), Answer::NoData);
    assert_eq!(ask(&ix, "_peer.internal", TYPE_AAAA, from), Answer::NoData);
    // The apex has the SOA.
    assert_eq!(ask(&ix, "internal", TYPE_SOA, from), Answer::Soa);
    assert_eq!(ask(&ix, "internal", TYPE_AAAA, from), Answer::NoData);
    assert_eq!(ask(&ix, "web.internal", TYPE_SOA, from), Answer::NoData);
}

#[test]
fn names_outside_internal_are_forwarded() {
    let w = world();
    let ix = index(&w, None);
    for name in [
        "example.com",
        "internal.com",
        "xinternal",
        "web.internal.example",
        "",
    ] {
        assert_eq!(
            ask(&ix, name, TYPE_AAAA, acme(&w)),
            Answer::Forward,
            "{name}"
        );
    }
}

#[test]
fn an_org_never_sees_another_orgs_names() {
    let w = world();
    let ix = index(&w, None);
    let globex = IpAddr::V6(w.secret.addr);
    assert_eq!(
        ask(&ix, "web.internal", TYPE_AAAA, globex),
        Answer::NxDomain
    );
    assert_eq!(
        ask(&ix, "alice._peer.internal", TYPE_AAAA, globex),
        Answer::NxDomain
    );
    assert_eq!(
        text(&ask(&ix, "_apps.internal", TYPE_TXT, globex)),
        "secret"
    );
    assert_eq!(text(&ask(&ix, "_peer.internal", TYPE_TXT, globex)), "carol");
    assert_eq!(
        addrs(&ask(&ix, "secret.internal", TYPE_AAAA, globex)),
        vec![w.secret.addr]
    );
    assert_eq!(
        ask(&ix, "secret.internal", TYPE_AAAA, acme(&w)),
        Answer::NxDomain
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn index_allowing(w: &World, default_org: Option<&str>, allow: &[&str]) -> Index {
    Index::build(
        &w.snap,
        &Options {
            default_org: default_org.map(Into::into),
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
            ..Options::default()
        },
        NOW,
    )
}

#[test]
fn loopback_in_every_form_gets_the_default_org() {
    let w = world();
    let ix = index(&w, Some("acme"));
    for from in ["::1", "127.0.0.1", "127.3.4.5", "::ffff:127.0.0.1"] {
        assert_eq!(
            addrs(&ask(&ix, "web.internal", TYPE_AAAA, ip(from))),
            sorted(&[&w.web[0], &w.web[1], &w.web[3]]),
            "{from}"
        );
        assert_eq!(
            ask(&ix, "example.com", TYPE_AAAA, ip(from)),
            Answer::Forward,
            "{from}"
        );
    }
}

#[test]
fn loopback_without_a_default_org_is_refused_internal_but_forwarded() {
    let w = world();
    // No default org, and one that names no org: the same.
    for default_org in [None, Some("nobody")] {
        let ix = index(&w, default_org);
        for from in ["::1", "127.0.0.1", "::ffff:127.0.0.1"] {
            assert_eq!(
                ask(&ix, "web.internal", TYPE_AAAA, ip(from)),
                Answer::Refused(Refusal::NoDefaultOrg),
                "{from}"
            );
            assert_eq!(
                ask(&ix, "example.com", TYPE_AAAA, ip(from)),
                Answer::Forward,
                "{from}"
            );
        }
    }
}

#[test]
fn outsiders_are_refused_internal_names_and_forwarding() {
    let w = world();
    let ix = index(&w, Some("acme"));
    for from in [
        "192.0.2.7",
        "::ffff:192.0.2.7",
        "2001:db8::7",
        "10.0.0.1",
        "fe80::1",
        "::",
        "0.0.0.0",
    ] {
        for name in ["web.internal", "internal", "example.com", ""] {
            assert_eq!(
                ask(&ix, name, TYPE_AAAA, ip(from)),
                Answer::Refused(Refusal::Outsider),
                "{name} from {from}"
            );
        }
    }
}

#[test]
fn a_mesh_address_of_no_org_is_refused_not_defaulted() {
    let w = world();
    // Even with the whole ULA range allowed: a mesh source is judged by its org bits only.
    let ix = index_allowing(&w, Some("acme"), &["fd00::/8"]);
    let stranger = ip("fdaa:0:ffff::2");
    for name in ["web.internal", "example.com"] {
        assert_eq!(
            ask(&ix, name, TYPE_AAAA, stranger),
            Answer::Refused(Refusal::UnknownOrg),
            "{name}"
        );
    }
    // An org member sees its org and gets forwarding, with or without a default org.
    let ix = index(&w, None);
    assert_eq!(
        ask(&ix, "example.com", TYPE_AAAA, acme(&w)),
        Answer::Forward
    );
}

#[test]
fn allowed_networks_are_trusted_like_loopback() {
    let w = world();
    let allow = ["10.0.0.0/8", "2001:db8:1::/48"];
    let ix = index_allowing(&w, Some("acme"), &allow);
    for from in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8:1::9"] {
        assert_eq!(
            addrs(&ask(&ix, "web.internal", TYPE_AAAA, ip(from))),
            sorted(&[&w.web[0], &w.web[1], &w.web[3]]),
            "{from}"
        );
        assert_eq!(ask(&ix, "example.com", TYPE_A, ip(from)), Answer::Forward);
    }
    for from in ["11.0.0.1", "2001:db8:2::9"] {
        assert_eq!(
            ask(&ix, "example.com", TYPE_A, ip(from)),
            Answer::Refused(Refusal::Outsider),
            "{from}"
        );
    }
    let ix = index_allowing(&w, None, &allow);
    assert_eq!(
        ask(&ix, "web.internal", TYPE_AAAA, ip("10.1.2.3")),
        Answer::Refused(Refusal::NoDefaultOrg)
    );
    assert_eq!(
        ask(&ix, "example.com", TYPE_A, ip("10.1.2.3")),
        Answer::Forward
    );
}

#[test]
fn other_classes_are_refused() {
    let w = world();
    let ix = index(&w, None);
    let q = Question {
        name: b"web.internal",
        qtype: TYPE_AAAA,
        qclass: 3,
    };
    assert_eq!(
        answer(&ix, &q, acme(&w), NOW),
        Answer::Refused(Refusal::Class)
    );
}

#[test]
fn any_gets_one_rrset_not_all() {
    let w = world();
    let ix = index(&w, None);
    let from = acme(&w);
    // A name with addresses: its AAAA set (the same a AAAA question gets).
    assert_eq!(
        addrs(&ask(&ix, "web.internal", TYPE_ANY, from)),
        sorted(&[&w.web[0], &w.web[1], &w.web[3]])
    );
    assert_eq!(
        addrs(&ask(&ix, "top1.nearest.of.web.internal", TYPE_ANY, from)).len(),
        1
    );
    // A name with text: the TXT record.
    assert_eq!(text(&ask(&ix, "_apps.internal", TYPE_ANY, from)), "db,web");
    // The apex: its SOA.
    assert_eq!(ask(&ix, "internal", TYPE_ANY, from), Answer::Soa);
    // An empty non-terminal: nothing; an unknown name: NXDOMAIN.
    assert_eq!(ask(&ix, "vm.web.internal", TYPE_ANY, from), Answer::NoData);
    assert_eq!(ask(&ix, "nope.internal", TYPE_ANY, from), Answer::NxDomain);
}

fn site(snap: &mut Snapshot, org: &str, name: &str, n: u8, routes: &[&str]) -> registry::Peer {
    apply(
        snap,
        Change::AddPeer {
            org: org.into(),
            name: name.into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: key(n),
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            expires: None,
        },
    );
    snap.peers[&(org.to_string(), name.to_string())].clone()
}

/// acme: site-ams (10.1.0.0/16, 192.168.5.0/24, 2001:db8:a::/48) and site-fra (IPv6 only);
/// globex: its own site-ams (10.2.0.0/16, 2001:db8:b::/48).
struct Sites {
    w: World,
    acme_ams: registry::Peer,
    globex_ams: registry::Peer,
}

fn sites() -> Sites {
    let mut w = world();
    let acme_ams = site(
        &mut w.snap,
        "acme",
        "site-ams",
        20,
        &["10.1.0.0/16", "192.168.5.0/24", "2001:db8:a::/48"],
    );
    site(&mut w.snap, "acme", "site-fra", 21, &["2001:db8:f::/48"]);
    let globex_ams = site(
        &mut w.snap,
        "globex",
        "site-ams",
        22,
        &["10.2.0.0/16", "2001:db8:b::/48"],
    );
    Sites {
        w,
        acme_ams,
        globex_ams,
    }
}

fn via(peer: &registry::Peer, v4: &str) -> Ipv6Addr {
    let prefix = registry::addr::via_prefix(peer.addr).unwrap();
    registry::addr::via_addr(prefix, v4.parse().unwrap())
}

fn address(a: &Answer<'_>) -> Ipv6Addr {
    let Answer::Address(octets) = a else {
        panic!("not one computed address: {a:?}");
    };
    Ipv6Addr::from(*octets)
}

#[test]
fn site_names_are_4via6_addresses_inside_the_sites_ipv4_routes() {
    let s = sites();
    let ix = index(&s.w, None);
    let from = acme(&s.w);
    let a = ask(&ix, "10-1-2-3.site-ams._site.internal", TYPE_AAAA, from);
    assert_eq!(address(&a), via(&s.acme_ams, "10.1.2.3"));
    // The address is the site's /96 with the IPv4 address in its low 32 bits.
    assert!(registry::addr::is_via(address(&a)));
    assert_eq!(
        u128::from(address(&a)) as u32,
        u32::from_be_bytes([10, 1, 2, 3])
    );
    let a = ask(
        &ix,
        "192-168-5-255.site-ams._site.internal",
        TYPE_AAAA,
        from,
    );
    assert_eq!(address(&a), via(&s.acme_ams, "192.168.5.255"));
    let a = ask(&ix, "10-1-0-0.site-ams._site.internal", TYPE_ANY, from);
    assert_eq!(address(&a), via(&s.acme_ams, "10.1.0.0"));
    // A valid name, another type: NODATA.
    for qtype in [TYPE_A, TYPE_TXT] {
        assert_eq!(
            ask(&ix, "10-1-2-3.site-ams._site.internal", qtype, from),
            Answer::NoData
        );
    }
}

#[test]
fn site_names_outside_the_routes_or_malformed_are_nxdomain() {
    let s = sites();
    let ix = index(&s.w, None);
    let from = acme(&s.w);
    for name in [
        // Outside every IPv4 route of the site.
        "10-2-0-1.site-ams._site.internal",
        "192-168-6-1.site-ams._site.internal",
        // A site with IPv6 routes only.
        "10-1-2-3.site-fra._site.internal",
        // No such site; a peer that is not a site.
        "10-1-2-3.site-nope._site.internal",
        "10-1-2-3.alice._site.internal",
        // Not an IPv4 address in the dashed form.
        "10-1-2.site-ams._site.internal",
        "10-1-2-3-4.site-ams._site.internal",
        "10-1-2-256.site-ams._site.internal",
        "10-1-2-03.site-ams._site.internal",
        "10-1-2-x.site-ams._site.internal",
        "10-1--3.site-ams._site.internal",
        "x.10-1-2-3.site-ams._site.internal",
    ] {
        assert_eq!(ask(&ix, name, TYPE_AAAA, from), Answer::NxDomain, "{name}");
    }
    // The site's own name and `_site` exist (NOERROR), with no address.
    assert_eq!(
        ask(&ix, "site-ams._site.internal", TYPE_AAAA, from),
        Answer::NoData
    );
    assert_eq!(ask(&ix, "_site.internal", TYPE_AAAA, from), Answer::NoData);
}

#[test]
fn site_names_are_the_queriers_orgs_own() {
    let s = sites();
    let ix = index(&s.w, None);
    let globex = IpAddr::V6(s.w.secret.addr);
    // globex's site-ams is globex's: its routes, its /96.
    let a = ask(&ix, "10-2-0-1.site-ams._site.internal", TYPE_AAAA, globex);
    assert_eq!(address(&a), via(&s.globex_ams, "10.2.0.1"));
    assert_ne!(address(&a), via(&s.acme_ams, "10.2.0.1"));
    // acme's routes are not globex's.
    assert_eq!(
        ask(&ix, "10-1-2-3.site-ams._site.internal", TYPE_AAAA, globex),
        Answer::NxDomain
    );
    assert_eq!(
        ask(
            &ix,
            "10-2-0-1.site-ams._site.internal",
            TYPE_AAAA,
            acme(&s.w)
        ),
        Answer::NxDomain
    );
    assert_eq!(
        text(&ask(&ix, "_site.internal", TYPE_TXT, acme(&s.w))),
        "site-ams,site-fra"
    );
    assert_eq!(
        text(&ask(&ix, "_site.internal", TYPE_TXT, globex)),
        "site-ams"
    );
    // Sites are peers too.
    assert_eq!(
        text(&ask(&ix, "_peer.internal", TYPE_TXT, globex)),
        "carol,site-ams"
    );
}

#[test]
fn hosts_in_an_ipv6_site_prefix_see_the_sites_org() {
    let s = sites();
    let ix = index(&s.w, Some("globex"));
    for from in ["2001:db8:a::10", "2001:db8:a:ffff::1", "2001:db8:f::1"] {
        assert_eq!(
            addrs(&ask(&ix, "web.internal", TYPE_AAAA, ip(from))),
            sorted(&[&s.w.web[0], &s.w.web[1], &s.w.web[3]]),
            "{from}"
        );
        assert_eq!(
            ask(&ix, "example.com", TYPE_AAAA, ip(from)),
            Answer::Forward
        );
    }
    let from = ip("2001:db8:b::10");
    assert_eq!(text(&ask(&ix, "_apps.internal", TYPE_TXT, from)), "secret");
    // Next to a site prefix is nobody's.
    assert_eq!(
        ask(&ix, "web.internal", TYPE_AAAA, ip("2001:db8:c::1")),
        Answer::Refused(Refusal::Outsider)
    );
    // An IPv4 site route is not a source of its own (IPv4 LAN hosts reach dnsd through
    // the allow list, if at all).
    assert_eq!(
        ask(&ix, "example.com", TYPE_AAAA, ip("10.1.2.3")),
        Answer::Refused(Refusal::Outsider)
    );
}

#[test]
fn instances_of_an_org_too_big_for_64k_are_still_answered_over_tcp() {
    let mut w = world();
    for _ in 0..1200 {
        machine(&mut w.snap, "acme", "big", "host-iad", None);
    }
    let ix = index(&w, None);
    for name in ["_instances.internal", "all._instances.internal"] {
        let a = ask(&ix, name, TYPE_TXT, acme(&w));
        let listed = text(&a);
        let items: Vec<&str> = listed.split(';').collect();
        // Whole records only, fewer than the org's 1,205 machines.
        assert!(
            items.len() > 600 && items.len() < 1200,
            "{name}: {}",
            items.len()
        );
        for item in &items {
            assert!(
                item.starts_with("instance=") && item.contains(",region="),
                "{item}"
            );
        }
        // The whole answer fits in one TCP message: no TC.
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 16, 0, 1]);
        let q = crate::wire::parse(&p).unwrap();
        let mut out = Vec::new();
        let wr = crate::wire::write_answer(&q, &a, 1, 65535, &mut out);
        assert!(
            !wr.truncated && out.len() <= 65535,
            "{name}: {} bytes",
            out.len()
        );
    }
}
