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

fn key(n: u8) -> String {
    // base64 of 32 bytes, unique per n.
    format!(
        "{}{}{}=",
        "A".repeat(10),
        (b'A' + n) as char,
        "A".repeat(32)
    )
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
            id: w2.id.clone(),
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
            local_region: None,
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
    started.sort_by(|a, b| a.id.cmp(&b.id));
    let vms: Vec<String> = started
        .iter()
        .map(|m| format!("{} {}", m.id, m.region))
        .collect();
    assert_eq!(t("vms.web.internal"), vms.join(","));
    let mut all: Vec<&Machine> = w.web.iter().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
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
    assert!(!t("_instances.internal").contains(&w.web[2].id));
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

#[test]
fn clients_outside_every_org_get_the_default_org_or_refused() {
    let w = world();
    let loopback: IpAddr = "::1".parse().unwrap();
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let ix = index(&w, None);
    for from in [loopback, v4, mapped] {
        assert_eq!(ask(&ix, "web.internal", TYPE_AAAA, from), Answer::Refused);
        assert_eq!(ask(&ix, "example.com", TYPE_AAAA, from), Answer::Forward);
    }
    let ix = index(&w, Some("acme"));
    for from in [loopback, v4, mapped] {
        assert_eq!(
            addrs(&ask(&ix, "web.internal", TYPE_AAAA, from)),
            sorted(&[&w.web[0], &w.web[1], &w.web[3]])
        );
    }
    // An fdaa address of no org is not "outside": it does not get the default org.
    let stranger: IpAddr = "fdaa:0:ffff::2".parse().unwrap();
    assert_eq!(
        ask(&ix, "web.internal", TYPE_AAAA, stranger),
        Answer::Refused
    );
    // A default org that does not exist refuses.
    let ix = index(&w, Some("nobody"));
    assert_eq!(
        ask(&ix, "web.internal", TYPE_AAAA, loopback),
        Answer::Refused
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
    assert_eq!(answer(&ix, &q, acme(&w), NOW), Answer::Refused);
}
