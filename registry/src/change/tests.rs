use std::collections::HashSet;

use super::*;
use crate::model::Revision;

/// A deterministic context: a counter for randomness and a fixed clock.
struct Fixed {
    next: u64,
    now: i64,
}

impl Context for Fixed {
    fn random_u64(&mut self) -> u64 {
        self.next = self
            .next
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.next
    }
    fn now_unix(&self) -> i64 {
        self.now
    }
}

fn ctx() -> Fixed {
    Fixed {
        next: 1,
        now: 1_700_000_000,
    }
}

const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_C: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn apply(snap: &mut Snapshot, change: Change) -> Result<Option<Record>> {
    let plan = plan(snap, &change, &mut ctx_for(snap))?;
    plan.apply_to(snap);
    Ok(plan.result)
}

/// Fresh randomness per write, derived from the revision so ids differ.
fn ctx_for(snap: &Snapshot) -> Fixed {
    Fixed {
        next: snap.revision.0 * 7919 + 13,
        now: 1_700_000_000,
    }
}

fn node(name: &str, region: &str, key: &str, gateway: bool) -> Change {
    Change::AddNode(NodeSpec {
        name: name.into(),
        region: region.into(),
        public_key: key.parse().unwrap(),
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        gateway,
    })
}

fn machine(org: &str, app: &str, region: &str, node: &str) -> Change {
    Change::AddMachine {
        org: org.into(),
        app: app.into(),
        region: region.into(),
        node: node.into(),
        process_group: None,
    }
}

fn base() -> Snapshot {
    let mut s = Snapshot::default();
    apply(
        &mut s,
        Change::CreateOrg {
            name: "acme".into(),
        },
    )
    .unwrap();
    apply(&mut s, node("host-a", "iad", KEY_A, true)).unwrap();
    apply(&mut s, node("host-b", "ams", KEY_B, false)).unwrap();
    s
}

fn added_machine(r: Option<Record>) -> Machine {
    match r {
        Some(Record::Machine(m)) => m,
        other => panic!("expected a machine, got {other:?}"),
    }
}

#[test]
fn network_ids_count_up_and_are_never_reused() {
    let mut s = Snapshot::default();
    let first = apply(&mut s, Change::CreateOrg { name: "a".into() }).unwrap();
    assert_eq!(
        first,
        Some(Record::Org(Org {
            name: "a".into(),
            network: OrgNetwork(1)
        }))
    );
    apply(&mut s, Change::CreateOrg { name: "b".into() }).unwrap();
    apply(&mut s, Change::RemoveOrg { name: "b".into() }).unwrap();
    apply(&mut s, Change::CreateOrg { name: "c".into() }).unwrap();
    assert_eq!(s.orgs["c"].network, OrgNetwork(3));
}

#[test]
fn machine_gets_slot_in_its_nodes_slash80() {
    let mut s = base();
    let m = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    assert_eq!(m.addr.to_string(), "fdaa:0:1:a7b:1:0:1:2");
    assert_eq!(m.id.to_string().len(), 14);
    assert_eq!(m.process_group, "app");
    assert!(
        s.apps.contains_key(&("acme".into(), "web".into())),
        "app made on first machine"
    );
    let m2 = added_machine(apply(&mut s, machine("acme", "web", "ams", "host-b")).unwrap());
    assert_eq!(m2.addr.to_string(), "fdaa:0:1:a7b:2:0:1:2");
}

#[test]
fn removed_machine_address_is_reused() {
    let mut s = base();
    let a = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    let b = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    assert_ne!(a.addr, b.addr);
    apply(&mut s, Change::RemoveMachine { id: a.id }).unwrap();
    let c = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    assert_eq!(c.addr, a.addr);
}

#[test]
fn ten_thousand_machines_never_collide() {
    let mut s = base();
    let mut addrs = HashSet::new();
    let mut ids = HashSet::new();
    for i in 0..10_000 {
        let node = if i % 2 == 0 {
            ("iad", "host-a")
        } else {
            ("ams", "host-b")
        };
        let m = added_machine(apply(&mut s, machine("acme", "web", node.0, node.1)).unwrap());
        assert!(addrs.insert(m.addr), "address {} given twice", m.addr);
        assert!(ids.insert(m.id), "id {} given twice", m.id);
        // Churn: remove every seventh so reuse happens under load.
        if i % 7 == 0 {
            apply(&mut s, Change::RemoveMachine { id: m.id }).unwrap();
            addrs.remove(&m.addr);
        }
    }
    assert_eq!(s.machines.len(), addrs.len());
}

#[test]
fn moved_machine_keeps_address_and_blocks_reuse() {
    let mut s = base();
    let m = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    let moved = added_machine(
        apply(
            &mut s,
            Change::MoveMachine {
                id: m.id,
                node: "host-b".into(),
            },
        )
        .unwrap(),
    );
    assert_eq!(moved.addr, m.addr);
    assert_eq!(moved.node, "host-b");
    assert_eq!(moved.region, "ams");
    // Its slot in host-a's /80 stays taken.
    let next = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    assert_ne!(next.addr, m.addr);
    // And host-a cannot go while a machine holds an address from it.
    let err = apply(
        &mut s,
        Change::RemoveNode {
            name: "host-a".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err}");
}

#[test]
fn peers_share_the_gateway_space_without_colliding() {
    let mut s = base();
    let m = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    let p = apply(
        &mut s,
        Change::AddPeer {
            org: "acme".into(),
            name: "alice".into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: KEY_C.parse().unwrap(),
            routes: vec![],
            expires: None,
        },
    )
    .unwrap();
    let Some(Record::Peer(p)) = p else {
        panic!("no peer")
    };
    assert_eq!(p.gateway, "host-a");
    assert_ne!(p.addr, m.addr);
    assert!(s.orgs["acme"]
        .network
        .node_prefix(0x0a7b_0001)
        .contains(&p.addr));
    assert_eq!(p.created, 1_700_000_000);
}

#[test]
fn peer_needs_a_gateway_in_its_region() {
    let mut s = base();
    let err = apply(
        &mut s,
        Change::AddPeer {
            org: "acme".into(),
            name: "bob".into(),
            region: Some("ams".into()),
            gateway: None,
            public_key: KEY_C.parse().unwrap(),
            routes: vec![],
            expires: None,
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "region `ams`: has no gateway node");
}

/// A WireGuard key of its own for the `i`th test peer.
fn key(i: u8) -> PublicKey {
    PublicKey::from_bytes([i; 32])
}

fn site(org: &str, name: &str, key: &PublicKey, routes: &[&str]) -> Change {
    Change::AddPeer {
        org: org.into(),
        name: name.into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: *key,
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        expires: None,
    }
}

fn added_peer(r: Option<Record>) -> Peer {
    match r {
        Some(Record::Peer(p)) => p,
        other => panic!("expected a peer, got {other:?}"),
    }
}

/// Plans a site with `routes` on `s`; the error's text if refused.
fn refusal(s: &Snapshot, routes: &[&str]) -> Option<String> {
    let change = site("acme", "site", &key(200), routes);
    match plan(s, &change, &mut ctx()) {
        Ok(_) => None,
        Err(e) => {
            assert!(e.is_user_error(), "{e}");
            assert!(matches!(e, Error::Invalid { field: "route", .. }), "{e}");
            Some(e.to_string())
        }
    }
}

#[test]
fn routes_that_no_site_can_own_are_refused_and_their_neighbours_taken() {
    let s = base();
    // (refused, the rule it breaks, a near miss that is fine)
    let cases = [
        ("0.0.0.0/0", "a default route", "10.0.0.0/8"),
        ("::/0", "a default route", "2001:db8::/32"),
        ("0.0.0.0/8", "unspecified address 0.0.0.0", "1.0.0.0/8"),
        ("::/96", "unspecified address ::", "100::/64"),
        ("127.0.0.0/8", "loopback 127.0.0.0/8", "126.0.0.0/8"),
        ("127.1.2.0/24", "loopback 127.0.0.0/8", "128.0.0.0/8"),
        ("::1/128", "loopback ::1", "::2/128"),
        (
            "169.254.10.0/24",
            "link-local 169.254.0.0/16",
            "169.253.0.0/16",
        ),
        ("fe80::/64", "link-local fe80::/10", "fe00::/9"),
        ("224.0.0.0/24", "multicast 224.0.0.0/4", "223.255.255.0/24"),
        ("239.1.0.0/16", "multicast 224.0.0.0/4", "240.0.0.0/8"),
        ("192.0.0.0/2", "multicast 224.0.0.0/4", "192.0.0.0/3"),
        ("ff02::/16", "multicast ff00::/8", "fec0::/10"),
        (
            "255.255.255.255/32",
            "broadcast address 255.255.255.255",
            "255.255.255.254/32",
        ),
        ("fdaa:0:9::/48", "the mesh prefix fdaa::/16", "fdab::/16"),
        ("fd00::/8", "the mesh prefix fdaa::/16", "fd00::/9"),
        (
            "100.127.3.0/24",
            "100.127.0.0/16, the pool",
            "100.126.0.0/16",
        ),
        (
            "100.64.0.0/10",
            "100.127.0.0/16, the pool",
            "100.128.0.0/16",
        ),
        (
            "::ffff:10.0.0.0/104",
            "::ffff:0:0/96, IPv4-mapped",
            "::fffe:0:0/96",
        ),
    ];
    for (bad, rule, near) in cases {
        let err = refusal(&s, &[bad]).unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(
            err.starts_with(&format!("route `{bad}`: ")) && err.contains(rule),
            "{bad}: got `{err}`, want `{rule}`"
        );
        assert_eq!(refusal(&s, &[near]), None, "{near} is fine");
    }
}

#[test]
fn a_refused_route_refuses_the_whole_peer() {
    let mut s = base();
    let before = s.clone();
    let err = apply(
        &mut s,
        site("acme", "site", &key(1), &["10.0.0.0/24", "127.0.0.0/8"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(s, before, "nothing written");
}

#[test]
fn ipv6_site_routes_are_unique_across_the_registry() {
    let mut s = base();
    apply(
        &mut s,
        Change::CreateOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    apply(&mut s, site("acme", "site1", &key(1), &["2001:db8:1::/48"])).unwrap();
    // Inside it, around it, and from another org.
    let err = apply(
        &mut s,
        site("acme", "site2", &key(2), &["2001:db8:1:5::/64"]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route `2001:db8:1:5::/64`: overlaps 2001:db8:1::/48 of peer `site1`; \
         IPv6 site routes must be unique"
    );
    let err = apply(&mut s, site("globex", "site2", &key(2), &["2001:db8::/32"])).unwrap_err();
    assert!(
        err.to_string().contains("of a peer of another org") && !err.to_string().contains("site1"),
        "another org's peer names are not shown: {err}"
    );
    // The next /48 over is free, in either org.
    apply(
        &mut s,
        site("globex", "site2", &key(2), &["2001:db8:2::/48"]),
    )
    .unwrap();
    apply(&mut s, site("acme", "site3", &key(3), &["2001:db8:3::/48"])).unwrap();
    // Gone with its peer.
    apply(
        &mut s,
        Change::RemovePeer {
            org: "acme".into(),
            name: "site1".into(),
        },
    )
    .unwrap();
    apply(
        &mut s,
        site("globex", "site4", &key(4), &["2001:db8:1::/48"]),
    )
    .unwrap();
}

#[test]
fn ipv4_site_routes_repeat_between_sites_but_not_within_one() {
    let mut s = base();
    apply(
        &mut s,
        Change::CreateOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    let a = added_peer(apply(&mut s, site("acme", "site1", &key(1), &["192.168.1.0/24"])).unwrap());
    let b = added_peer(apply(&mut s, site("acme", "site2", &key(2), &["192.168.1.0/24"])).unwrap());
    apply(
        &mut s,
        site("globex", "site3", &key(3), &["192.168.0.0/16"]),
    )
    .unwrap();
    // Each reached through its own 4via6 prefix.
    assert_ne!(a.via(), b.via());
    let err = apply(
        &mut s,
        site("acme", "site4", &key(4), &["10.0.0.0/16", "10.0.5.0/24"]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route `10.0.5.0/24`: overlaps 10.0.0.0/16, also in this peer's routes"
    );
    let err = apply(
        &mut s,
        site(
            "acme",
            "site4",
            &key(4),
            &["2001:db8:9::/48", "2001:db8:9:1::/64"],
        ),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("also in this peer's routes"),
        "{err}"
    );
    let d = added_peer(
        apply(
            &mut s,
            site(
                "acme",
                "site4",
                &key(4),
                &["10.0.0.0/24", "10.0.1.0/24", "2001:db8:9::/48"],
            ),
        )
        .unwrap(),
    );
    assert_eq!(d.routes.len(), 3);
}

#[test]
fn routes_are_stored_as_their_network() {
    let mut s = base();
    let p = added_peer(apply(&mut s, site("acme", "site", &key(1), &["10.1.2.3/24"])).unwrap());
    assert_eq!(p.routes, vec!["10.1.2.0/24".parse::<IpNet>().unwrap()]);
}

#[test]
fn ipv4_routes_need_a_slot_with_a_4via6_prefix() {
    let mut s = base();
    let network = s.orgs["acme"].network;
    let host = s.nodes["host-a"].host;
    // Machines hold slots 1..=65534 of acme's /80 on host-a.
    for slot in 1..=0xfffe_u32 {
        s.put(Record::Machine(Machine {
            id: MachineId::from_bits(u64::from(slot)),
            org: "acme".into(),
            app: "web".into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: "app".into(),
            state: MachineState::Started,
            addr: network.slot_addr(host, slot),
        }));
    }
    // Slot 65535 still has a /96.
    let last = added_peer(apply(&mut s, site("acme", "site1", &key(1), &["10.0.0.0/24"])).unwrap());
    assert_eq!(addr::slot_of(last.addr), 0xffff);
    assert!(last.via().is_some());
    // Slot 65536 has none: IPv4 is refused, IPv6 alone is fine.
    let err = apply(&mut s, site("acme", "site2", &key(2), &["10.0.0.0/24"])).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "route `10.0.0.0/24`: this peer's slot is above 65535, so it has no 4via6 prefix;"
        ),
        "{err}"
    );
    let v6 = added_peer(apply(&mut s, site("acme", "site2", &key(2), &["2001:db8::/48"])).unwrap());
    assert_eq!(addr::slot_of(v6.addr), 0x1_0000);
    assert_eq!(v6.via(), None);
}

fn orgs(names: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    for name in names {
        apply(
            &mut s,
            Change::CreateOrg {
                name: (*name).into(),
            },
        )
        .unwrap();
    }
    s
}

fn peer_orgs(a: &str, b: &str) -> Change {
    Change::PeerOrgs {
        a: a.into(),
        b: b.into(),
    }
}

fn unpeer_orgs(a: &str, b: &str) -> Change {
    Change::UnpeerOrgs {
        a: a.into(),
        b: b.into(),
    }
}

#[test]
fn orgs_peer_in_either_order_once() {
    let mut s = orgs(&["acme", "globex", "initech"]);
    let made = apply(&mut s, peer_orgs("globex", "acme")).unwrap();
    assert_eq!(
        made,
        Some(Record::Peering(Peering {
            a: "acme".into(),
            b: "globex".into()
        }))
    );
    assert!(s.peered("acme", "globex") && s.peered("globex", "acme"));
    assert!(!s.peered("acme", "initech") && !s.peered("acme", "acme"));
    assert_eq!(s.peers_of_org("globex"), vec!["acme"]);
    for again in [peer_orgs("acme", "globex"), peer_orgs("globex", "acme")] {
        let err = plan(&s, &again, &mut ctx()).unwrap_err();
        assert_eq!(err.to_string(), "peering `acme <-> globex` already exists");
        assert!(matches!(
            err,
            Error::Exists {
                kind: Kind::Peering,
                ..
            }
        ));
    }
    apply(&mut s, peer_orgs("initech", "globex")).unwrap();
    assert_eq!(s.peers_of_org("globex"), vec!["acme", "initech"]);
}

#[test]
fn peering_refusals_name_the_org_and_the_rule_and_write_nothing() {
    let mut s = orgs(&["acme", "globex"]);
    apply(&mut s, peer_orgs("acme", "globex")).unwrap();
    apply(
        &mut s,
        Change::CreateOrg {
            name: "initech".into(),
        },
    )
    .unwrap();
    let cases = [
        (
            peer_orgs("acme", "acme"),
            "org `acme`: cannot peer with itself",
        ),
        (
            unpeer_orgs("acme", "acme"),
            "org `acme`: cannot peer with itself",
        ),
        (peer_orgs("acme", "nope"), "org `nope` does not exist"),
        (peer_orgs("nope", "acme"), "org `nope` does not exist"),
        (unpeer_orgs("nope", "acme"), "org `nope` does not exist"),
        (
            unpeer_orgs("acme", "initech"),
            "peering `acme <-> initech` does not exist",
        ),
        (
            unpeer_orgs("initech", "acme"),
            "peering `acme <-> initech` does not exist",
        ),
    ];
    for (change, want) in cases {
        let err = plan(&s, &change, &mut ctx()).unwrap_err();
        assert_eq!(err.to_string(), want, "{change:?}");
        assert!(err.is_user_error());
    }
}

#[test]
fn unpeering_takes_the_pair_out_in_either_order() {
    let mut s = orgs(&["acme", "globex"]);
    apply(&mut s, peer_orgs("acme", "globex")).unwrap();
    let plan = plan(&s, &unpeer_orgs("globex", "acme"), &mut ctx()).unwrap();
    assert_eq!(
        plan.writes,
        vec![Write::Delete(RecordKey::Peering {
            a: "acme".into(),
            b: "globex".into()
        })]
    );
    plan.apply_to(&mut s);
    assert!(!s.peered("acme", "globex"));
    assert!(s.peerings.is_empty());
    // And they may peer again.
    apply(&mut s, peer_orgs("acme", "globex")).unwrap();
}

#[test]
fn removing_an_org_removes_its_peerings_in_the_same_write() {
    let mut s = orgs(&["acme", "globex", "initech"]);
    apply(&mut s, peer_orgs("acme", "globex")).unwrap();
    apply(&mut s, peer_orgs("globex", "initech")).unwrap();
    apply(&mut s, peer_orgs("acme", "initech")).unwrap();
    let rev = s.revision;
    apply(
        &mut s,
        Change::RemoveOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    assert_eq!(s.revision.0, rev.0 + 1, "one write");
    assert_eq!(
        s.peerings.iter().cloned().collect::<Vec<_>>(),
        vec![("acme".to_string(), "initech".to_string())]
    );
    // A new org of the same name inherits nothing.
    apply(
        &mut s,
        Change::CreateOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    assert!(!s.peered("acme", "globex"));
    assert!(s.peers_of_org("globex").is_empty());
}

#[test]
fn bad_input_names_field_and_rule_and_changes_nothing() {
    let s = base();
    let cases: Vec<(Change, &str)> = vec![
        (
            Change::CreateOrg {
                name: "Acme".into(),
            },
            "org name `Acme`: use a-z",
        ),
        (
            Change::CreateOrg {
                name: "acme".into(),
            },
            "org `acme` already exists",
        ),
        (
            machine("nope", "web", "iad", "host-a"),
            "org `nope` does not exist",
        ),
        (
            machine("acme", "web", "xyz", "host-a"),
            "region `xyz`: unknown region",
        ),
        (
            machine("acme", "web", "iad", "host-z"),
            "node `host-z` does not exist",
        ),
        (
            machine("acme", "web", "ams", "host-a"),
            "node `host-a`: is in region `iad`, not `ams`",
        ),
        (
            machine("acme", "vm", "iad", "host-a"),
            "app name `vm`: is reserved",
        ),
        (
            machine("acme", "-web", "iad", "host-a"),
            "app name `-web`: must not start or end",
        ),
        (
            node("host-a", "iad", KEY_C, false),
            "node `host-a` already exists",
        ),
        (
            node("host-c", "iad", KEY_A, false),
            "already used by node `host-a`",
        ),
        (
            Change::RemoveMachine {
                id: MachineId::from_bits(0),
            },
            "machine `00000000000000` does not exist",
        ),
    ];
    for (change, want) in cases {
        let err = plan(&s, &change, &mut ctx()).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{change:?}: got `{err}`, want `{want}`"
        );
        assert!(err.is_user_error());
    }
}

#[test]
fn a_bad_machine_id_is_refused_where_a_change_is_read() {
    // A change names a machine by a `MachineId`, so the id is checked where the change's
    // text is read (an API body, a change log) rather than by `plan`.
    for change in [
        r#"{"RemoveMachine":{"id":"xyz"}}"#,
        r#"{"SetMachineState":{"id":"4D89699C030518","state":"started"}}"#,
        r#"{"MoveMachine":{"id":"4d89699c03051","node":"host-a"}}"#,
    ] {
        let err = serde_json::from_str::<Change>(change)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("machine id `") && err.contains("`: must be 14 lowercase hex characters"),
            "{change}: {err}"
        );
    }
    let ok: Change = serde_json::from_str(r#"{"RemoveMachine":{"id":"4d89699c030518"}}"#).unwrap();
    assert_eq!(
        ok,
        Change::RemoveMachine {
            id: "4d89699c030518".parse().unwrap()
        }
    );
}

#[test]
fn register_node_refreshes_in_place_and_is_idempotent() {
    let mut s = base();
    let host = s.nodes["host-b"].host;
    let spec = NodeSpec {
        name: "host-b".into(),
        region: "ams".into(),
        public_key: KEY_C.parse().unwrap(),
        endpoint: "192.0.2.9:51821".parse().unwrap(),
        gateway: false,
    };
    apply(&mut s, Change::RegisterNode(spec.clone())).unwrap();
    assert_eq!(s.nodes["host-b"].host, host);
    assert_eq!(s.nodes["host-b"].public_key.to_string(), KEY_C);
    let again = plan(&s, &Change::RegisterNode(spec), &mut ctx()).unwrap();
    assert!(again.writes.is_empty(), "an unchanged node is no write");
}

#[test]
fn snapshot_revision_counts_writes() {
    let mut s = Snapshot::default();
    assert_eq!(s.revision, Revision(0));
    apply(&mut s, Change::CreateOrg { name: "a".into() }).unwrap();
    apply(&mut s, Change::CreateOrg { name: "b".into() }).unwrap();
    assert_eq!(s.revision, Revision(2));
}

mod tokens;
