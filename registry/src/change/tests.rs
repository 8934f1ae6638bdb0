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
        public_key: key.into(),
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
    assert_eq!(m.id.len(), 14);
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
    apply(&mut s, Change::RemoveMachine { id: a.id.clone() }).unwrap();
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
        assert!(ids.insert(m.id.clone()), "id {} given twice", m.id);
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
                id: m.id.clone(),
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
            public_key: KEY_C.into(),
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
            public_key: KEY_C.into(),
            routes: vec![],
            expires: None,
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "region `ams`: has no gateway node");
}

#[test]
fn peer_routes_stay_out_of_the_mesh_and_each_other() {
    let mut s = base();
    let peer = |name: &str, key: &str, route: &str| Change::AddPeer {
        org: "acme".into(),
        name: name.into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: key.into(),
        routes: vec![route.parse().unwrap()],
        expires: None,
    };
    let err = apply(&mut s, peer("site", KEY_C, "fdaa:0:9::/48")).unwrap_err();
    assert!(
        err.to_string().contains("overlaps the mesh prefix"),
        "{err}"
    );
    apply(&mut s, peer("site", KEY_C, "10.1.0.0/16")).unwrap();
    let err = apply(
        &mut s,
        peer(
            "site2",
            "mWq5Dz4MqlNmo0L+0wDXjgp+LF8l4vqzr9s7ZSDZTYY=",
            "10.1.2.0/24",
        ),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("overlaps 10.1.0.0/16 of peer `site`"),
        "{err}"
    );
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
            node("host-c", "iad", "abc", false),
            "public key `abc`: must be",
        ),
        (
            Change::RemoveMachine {
                id: "00000000000000".into(),
            },
            "machine `00000000000000` does not exist",
        ),
        (
            Change::RemoveMachine { id: "xyz".into() },
            "machine id `xyz`: must be 14 lowercase hex",
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
fn register_node_refreshes_in_place_and_is_idempotent() {
    let mut s = base();
    let host = s.nodes["host-b"].host;
    let spec = NodeSpec {
        name: "host-b".into(),
        region: "ams".into(),
        public_key: KEY_C.into(),
        endpoint: "192.0.2.9:51821".parse().unwrap(),
        gateway: false,
    };
    apply(&mut s, Change::RegisterNode(spec.clone())).unwrap();
    assert_eq!(s.nodes["host-b"].host, host);
    assert_eq!(s.nodes["host-b"].public_key, KEY_C);
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
