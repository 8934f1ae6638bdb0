//! The registry's behaviour, proven the same against every backend: each case below runs once
//! on an SQLite file and once on a real etcd (started by the test on loopback).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{machine, node, setup, Fixture, KEY_A, KEY_B};

/// More peer keys than the fixtures hold.
const KEY_C: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const KEY_D: &str = "mWq5Dz4MqlNmo0L+0wDXjgp+LF8l4vqzr9s7ZSDZTYY=";
use registry::{Change, Kind, MachineState, Peering, Record, RecordKey, Revision, TokenScope};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(&super::Fixture::sqlite()) })*
        }
        mod etcd {
            $(#[test] fn $case() { super::$case(&super::Fixture::etcd()) })*
        }
    };
}

conformance!(
    writes_persist_and_reopen_identically,
    failed_write_leaves_revision_and_records_alone,
    every_write_bumps_the_revision_once_and_a_noop_not_at_all,
    wait_newer_sees_another_handles_write,
    concurrent_writers_get_distinct_addresses,
    network_ids_are_never_reused,
    removals_take_records_out,
    follower_publishes_each_new_snapshot,
    copy_preserves_everything_and_refuses_a_non_empty_target,
    peerings_are_stored_followed_and_go_with_their_org,
    site_routes_are_checked_against_every_stored_peer,
    tokens_are_stored_used_revoked_and_copied,
    readers_following_deltas_end_equal_to_a_fresh_snapshot,
    the_change_log_sends_readers_it_cannot_answer_to_a_snapshot,
    the_frame_is_the_small_kinds_and_the_site_peers,
    a_read_of_some_kinds_does_not_read_the_others,
    an_org_part_scoped_is_the_whole_registry_scoped,
);

fn writes_persist_and_reopen_identically(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    let m = reg.apply(&machine("web")).unwrap();
    assert_eq!(m.revision, Revision(3), "{}", f.backend);
    let before = reg.snapshot().unwrap();
    drop(reg);
    let again = f.open();
    assert_eq!(again.snapshot().unwrap(), before);
    assert_eq!(before.machines.len(), 1);
    assert_eq!(before.apps.len(), 1);
    assert_eq!(before.next_network, 2);
    let Some(Record::Machine(made)) = m.record else {
        panic!("AddMachine returns the machine")
    };
    assert_eq!(before.machines[&made.id], made);
}

fn failed_write_leaves_revision_and_records_alone(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    let before = reg.snapshot().unwrap();
    let err = reg.apply(&machine("Web")).unwrap_err();
    assert!(err.is_user_error(), "{err}");
    assert!(err.to_string().contains("app name `Web`"), "{err}");
    let err = reg.apply(&node("host-a", KEY_B, false)).unwrap_err();
    assert!(matches!(err, registry::Error::Exists { .. }), "{err}");
    assert_eq!(reg.snapshot().unwrap(), before);
}

fn every_write_bumps_the_revision_once_and_a_noop_not_at_all(f: &Fixture) {
    let reg = f.open();
    assert_eq!(reg.snapshot().unwrap().revision, Revision(0));
    setup(&*reg);
    assert_eq!(reg.snapshot().unwrap().revision, Revision(2));
    let Change::AddNode(spec) = node("host-a", KEY_A, true) else {
        unreachable!()
    };
    // meshd re-registering an unchanged node writes nothing.
    let same = reg.apply(&Change::RegisterNode(spec.clone())).unwrap();
    assert_eq!(same.revision, Revision(2));
    let moved = registry::NodeSpec {
        endpoint: "192.0.2.9:51820".parse().unwrap(),
        ..spec
    };
    let changed = reg.apply(&Change::RegisterNode(moved)).unwrap();
    assert_eq!(changed.revision, Revision(3));
    assert_eq!(
        reg.snapshot().unwrap().nodes["host-a"].endpoint,
        "192.0.2.9:51820".parse().unwrap()
    );
}

fn wait_newer_sees_another_handles_write(f: &Fixture) {
    let reg = f.open();
    let rev = reg.snapshot().unwrap().revision;
    assert_eq!(
        reg.wait_newer(rev, Duration::from_millis(30)).unwrap(),
        None
    );
    let other = f.open();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        other
            .apply(&Change::CreateOrg { name: "x".into() })
            .unwrap();
    });
    let newer = reg.wait_newer(rev, Duration::from_secs(5)).unwrap();
    writer.join().unwrap();
    assert_eq!(newer, Some(Revision(rev.0 + 1)));
    assert_eq!(reg.snapshot().unwrap().revision, Revision(rev.0 + 1));
    // Nothing newer than what it just reported.
    assert_eq!(
        reg.wait_newer(Revision(rev.0 + 1), Duration::from_millis(50))
            .unwrap(),
        None
    );
}

fn concurrent_writers_get_distinct_addresses(f: &Fixture) {
    const WRITERS: usize = 4;
    const EACH: usize = 5;
    setup(&*f.open());
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let reg = f.open();
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|_| match reg.apply(&machine(&format!("app{w}"))) {
                        Ok(a) => a,
                        Err(e) => panic!("writer {w}: {e}"),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut revisions = BTreeSet::new();
    for h in handles {
        for applied in h.join().unwrap() {
            assert!(
                revisions.insert(applied.revision),
                "two writes got one revision"
            );
        }
    }
    let snap = f.open().snapshot().unwrap();
    assert_eq!(snap.machines.len(), WRITERS * EACH);
    let addrs: BTreeSet<_> = snap.machines.values().map(|m| m.addr).collect();
    assert_eq!(addrs.len(), WRITERS * EACH, "addresses handed out twice");
    assert_eq!(snap.revision, Revision(2 + (WRITERS * EACH) as u64));
}

fn network_ids_are_never_reused(f: &Fixture) {
    let reg = f.open();
    for name in ["a", "b"] {
        reg.apply(&Change::CreateOrg { name: name.into() }).unwrap();
    }
    reg.apply(&Change::RemoveOrg { name: "b".into() }).unwrap();
    drop(reg);
    let reg = f.open();
    reg.apply(&Change::CreateOrg { name: "c".into() }).unwrap();
    let snap = reg.snapshot().unwrap();
    assert_eq!(snap.orgs["a"].network.0, 1);
    assert_eq!(snap.orgs["c"].network.0, 3);
    assert_eq!(snap.next_network, 4);
}

fn removals_take_records_out(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    let m = match reg.apply(&machine("web")).unwrap().record {
        Some(Record::Machine(m)) => m,
        other => panic!("{other:?}"),
    };
    reg.apply(&Change::SetMachineState {
        id: m.id,
        state: MachineState::Stopped,
    })
    .unwrap();
    assert!(!reg.snapshot().unwrap().machines[&m.id].started());
    reg.apply(&Change::AddPeer {
        org: "acme".into(),
        name: "alice".into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: KEY_B.parse().unwrap(),
        routes: vec![],
        expires: None,
    })
    .unwrap();
    let err = reg
        .apply(&Change::RemoveOrg {
            name: "acme".into(),
        })
        .unwrap_err();
    assert!(matches!(err, registry::Error::InUse { .. }), "{err}");
    reg.apply(&Change::RemoveMachine { id: m.id }).unwrap();
    reg.apply(&Change::RemovePeer {
        org: "acme".into(),
        name: "alice".into(),
    })
    .unwrap();
    reg.apply(&Change::RemoveOrg {
        name: "acme".into(),
    })
    .unwrap();
    let snap = f.open().snapshot().unwrap();
    assert!(snap.orgs.is_empty() && snap.apps.is_empty() && snap.machines.is_empty());
    assert!(snap.peers.is_empty());
    assert_eq!(snap.nodes.len(), 1);
}

fn follower_publishes_each_new_snapshot(f: &Fixture) {
    let follower = registry::follow(f.open());
    let mut rx = follower.snapshots.clone();
    assert_eq!(rx.borrow().revision, Revision(0));
    let writer = f.open();
    setup(&*writer);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx.borrow_and_update().revision < Revision(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "follower never caught up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let snap = rx.borrow().clone();
    assert_eq!(*snap, writer.snapshot().unwrap());
    assert!(follower.health.reachable());
}

fn copy_preserves_everything_and_refuses_a_non_empty_target(f: &Fixture) {
    let from = f.open();
    setup(&*from);
    from.apply(&machine("web")).unwrap();
    from.apply(&machine("db")).unwrap();
    from.apply(&Change::CreateOrg {
        name: "other".into(),
    })
    .unwrap();
    from.apply(&Change::PeerOrgs {
        a: "other".into(),
        b: "acme".into(),
    })
    .unwrap();
    let (to_url, _keep) = f.sibling();
    let to = registry::open(&to_url).unwrap();
    let copied = registry::copy(&*from, &*to).unwrap();
    let source = from.snapshot().unwrap();
    assert_eq!(copied.revision, source.revision);
    assert_eq!(copied.records, source.records().count());
    assert_eq!(to.snapshot().unwrap(), source);
    assert!(to.snapshot().unwrap().peered("acme", "other"));
    // The copy goes on allocating where the source left off.
    let next = to.apply(&Change::CreateOrg { name: "new".into() }).unwrap();
    assert_eq!(next.revision, Revision(source.revision.0 + 1));
    assert_eq!(to.snapshot().unwrap().orgs["new"].network.0, 3);

    let err = registry::copy(&*from, &*to).unwrap_err();
    assert!(err.to_string().contains("must be empty"), "{err}");
}

fn peerings_are_stored_followed_and_go_with_their_org(f: &Fixture) {
    let follower = registry::follow(f.open());
    let mut rx = follower.snapshots.clone();
    let reg = f.open();
    for name in ["acme", "globex", "initech"] {
        reg.apply(&Change::CreateOrg { name: name.into() }).unwrap();
    }
    let made = reg
        .apply(&Change::PeerOrgs {
            a: "globex".into(),
            b: "acme".into(),
        })
        .unwrap();
    assert_eq!(
        made.record,
        Some(Record::Peering(Peering::new("acme", "globex")))
    );
    reg.apply(&Change::PeerOrgs {
        a: "globex".into(),
        b: "initech".into(),
    })
    .unwrap();
    let err = reg
        .apply(&Change::PeerOrgs {
            a: "acme".into(),
            b: "globex".into(),
        })
        .unwrap_err();
    assert!(matches!(err, registry::Error::Exists { .. }), "{err}");

    // Another handle, and the follower, see both.
    let snap = f.open().snapshot().unwrap();
    assert!(snap.peered("acme", "globex") && snap.peered("initech", "globex"));
    assert!(!snap.peered("acme", "initech"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx.borrow_and_update().revision < snap.revision {
        assert!(
            std::time::Instant::now() < deadline,
            "follower never caught up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rx.borrow().peerings, snap.peerings);

    reg.apply(&Change::UnpeerOrgs {
        a: "initech".into(),
        b: "globex".into(),
    })
    .unwrap();
    assert!(!f.open().snapshot().unwrap().peered("globex", "initech"));
    // Removing an org takes its peerings in the same write.
    let before = reg.snapshot().unwrap().revision;
    let gone = reg
        .apply(&Change::RemoveOrg {
            name: "globex".into(),
        })
        .unwrap();
    assert_eq!(gone.revision, Revision(before.0 + 1));
    let snap = f.open().snapshot().unwrap();
    assert!(snap.peerings.is_empty(), "{:?}", snap.peerings);
    reg.apply(&Change::CreateOrg {
        name: "globex".into(),
    })
    .unwrap();
    assert!(!f.open().snapshot().unwrap().peered("acme", "globex"));
}

fn site_routes_are_checked_against_every_stored_peer(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    let site = |name: &str, key: &str, route: &str| Change::AddPeer {
        org: "acme".into(),
        name: name.into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: key.parse().unwrap(),
        routes: vec![route.parse().unwrap()],
        expires: None,
    };
    reg.apply(&site("ams", KEY_B, "2001:db8:1::/48")).unwrap();
    let before = reg.snapshot().unwrap();
    let err = reg
        .apply(&site("nrt", KEY_C, "2001:db8:1:2::/64"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("overlaps 2001:db8:1::/48 of peer `ams`"),
        "{err}"
    );
    let err = reg
        .apply(&site("nrt", KEY_C, "100.127.0.0/24"))
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
    assert_eq!(reg.snapshot().unwrap(), before, "nothing written");
    reg.apply(&site("nrt", KEY_C, "192.168.1.0/24")).unwrap();
    reg.apply(&site("fra", KEY_D, "192.168.1.0/24")).unwrap();
    let snap = f.open().snapshot().unwrap();
    let vias: BTreeSet<_> = snap.peers.values().filter_map(|p| p.via()).collect();
    assert_eq!(vias.len(), 2, "each IPv4 site has its own 4via6 prefix");
}

fn tokens_are_stored_used_revoked_and_copied(f: &Fixture) {
    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    const CI: &str = "tok00000000000000b2";
    let reg = f.open();
    setup(&*reg);
    let made = reg
        .apply(&Change::CreateToken {
            id: CI.into(),
            org: "acme".into(),
            scope: TokenScope::Peer,
            secret_hash: HASH.into(),
            expires: None,
            max_uses: Some(1),
            region: Some("iad".into()),
            name_prefix: Some("ci-".into()),
        })
        .unwrap();
    let Some(Record::Token(shown)) = made.record else {
        panic!("CreateToken returns the token")
    };
    assert!(shown.secret_hash.is_empty(), "no hash in a result");
    let enroll = |name: &str, key: &str| Change::WithToken {
        id: CI.into(),
        secret_hash: HASH.into(),
        change: Box::new(Change::AddPeer {
            org: "acme".into(),
            name: name.into(),
            region: None,
            gateway: None,
            public_key: key.parse().unwrap(),
            routes: vec![],
            expires: None,
        }),
    };
    let first = reg.apply(&enroll("ci-1", KEY_B)).unwrap();
    // The peer and the use are one write.
    assert_eq!(first.revision, Revision(made.revision.0 + 1));
    let snap = f.open().snapshot().unwrap();
    assert_eq!(snap.tokens[CI].uses, 1);
    assert_eq!(snap.tokens[CI].secret_hash, HASH);
    assert_eq!(snap.peers.len(), 1);

    let before = reg.snapshot().unwrap();
    let err = reg.apply(&enroll("ci-2", KEY_C)).unwrap_err();
    assert!(matches!(err, registry::Error::Unauthorized(_)), "{err}");
    assert_eq!(err.http_status(), 401);
    assert_eq!(reg.snapshot().unwrap(), before, "nothing written");

    reg.apply(&Change::RevokeToken { id: CI.into() }).unwrap();
    let snap = f.open().snapshot().unwrap();
    assert!(snap.tokens[CI].revoked.is_some());
    let err = registry::check_token(&snap, CI, HASH, 0).unwrap_err();
    assert!(err.to_string().contains("was revoked"), "{err}");

    let (to_url, _keep) = f.sibling();
    let to = registry::open(&to_url).unwrap();
    registry::copy(&*reg, &*to).unwrap();
    assert_eq!(to.snapshot().unwrap().tokens, snap.tokens);
}

/// Readers that start from one snapshot and then take only deltas (by asking the change log,
/// and through `follow_changes`) hold what a fresh snapshot holds after a long random run of
/// writes of every kind. 10,000 writes on SQLite; 2,000 on etcd, where each write still reads
/// the whole registry (10,000 there took 157 s; set SIXPN_TEST_ETCD_WRITES to run that many).
fn readers_following_deltas_end_equal_to_a_fresh_snapshot(f: &Fixture) {
    use registry::{Snapshot, Update};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let writes = match f.backend {
        "sqlite" => 10_000,
        _ => std::env::var("SIXPN_TEST_ETCD_WRITES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2_000),
    };
    let reg = f.open();
    let mut churn = common::churn::Churn::start(&*reg, 0x5eed_1234);
    let mut reader = reg.snapshot().unwrap();
    let start = reader.revision;
    let changes = registry::follow_changes(f.open());
    let done = Arc::new(AtomicU64::new(u64::MAX));
    let follower = {
        let done = done.clone();
        let mut updates = changes.updates;
        let mut held: Snapshot = (*changes.first).clone();
        std::thread::spawn(move || {
            let (mut deltas, mut resets) = (0usize, 0usize);
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while held.revision.0 != done.load(Ordering::SeqCst) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "follower stuck at {:?}",
                    held.revision
                );
                match updates.try_recv() {
                    Ok(Update::Delta(d)) => {
                        assert!(
                            held.apply_delta(&d),
                            "delta {:?} after {:?}",
                            d.revision,
                            held.revision
                        );
                        deltas += 1;
                    }
                    Ok(Update::Reset(s)) => {
                        held = (*s).clone();
                        resets += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            (held, deltas, resets)
        })
    };
    let (mut asked, mut taken) = (0usize, 0usize);
    for i in 0..writes {
        churn.step(&*reg);
        // The reader catches up every few writes, sometimes a few deltas at a time.
        if churn.rng.below(8) == 0 || i + 1 == writes {
            loop {
                let limit = 1 + churn.rng.below(64);
                let deltas = reg
                    .changes_since(reader.revision, limit)
                    .unwrap()
                    .unwrap_or_else(|| {
                        panic!("{}: the log lost revision {:?}", f.backend, reader.revision)
                    });
                asked += 1;
                if deltas.is_empty() {
                    break;
                }
                for d in &deltas {
                    assert!(
                        reader.apply_delta(d),
                        "{}: delta {:?}",
                        f.backend,
                        d.revision
                    );
                    taken += 1;
                }
            }
        }
    }
    let fresh = reg.snapshot().unwrap();
    assert_eq!(reader, fresh, "{}: the delta reader", f.backend);
    done.store(fresh.revision.0, Ordering::SeqCst);
    let (held, deltas, resets) = follower.join().unwrap();
    assert_eq!(held, fresh, "{}: the follow_changes reader", f.backend);
    assert!(
        churn.applied > writes / 2 && churn.refused > 0,
        "{} applied, {} refused",
        churn.applied,
        churn.refused
    );
    assert_eq!(
        taken as u64,
        fresh.revision.0 - start.0,
        "one delta per revision"
    );
    assert!(
        deltas > 0,
        "follow_changes sent {deltas} deltas and {resets} resets"
    );
    eprintln!(
        "{}: {writes} writes ({} applied), {taken} deltas in {asked} reads; follow_changes: {deltas} deltas, {resets} resets; {} machines, {} peers at the end",
        f.backend, churn.applied, fresh.machines.len(), fresh.peers.len()
    );
}

/// The change log answers only what it can: from a revision newer than the registry, or
/// older than an import, a reader is told to take a snapshot; a refused write logs nothing.
fn the_change_log_sends_readers_it_cannot_answer_to_a_snapshot(f: &Fixture) {
    let from = f.open();
    assert_eq!(from.changes_since(Revision(0), 10).unwrap(), Some(vec![]));
    setup(&*from);
    from.apply(&machine("web")).unwrap();
    assert!(from.apply(&machine("Web")).is_err());
    let deltas = from.changes_since(Revision(0), 10).unwrap().unwrap();
    assert_eq!(
        deltas.iter().map(|d| d.revision.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{}",
        f.backend
    );
    assert_eq!(
        from.changes_since(Revision(1), 1).unwrap().unwrap(),
        deltas[1..2]
    );
    assert_eq!(from.changes_since(Revision(3), 10).unwrap(), Some(vec![]));
    assert_eq!(
        from.changes_since(Revision(4), 10).unwrap(),
        None,
        "{}",
        f.backend
    );

    let (to_url, _keep) = f.sibling();
    let to = registry::open(&to_url).unwrap();
    registry::copy(&*from, &*to).unwrap();
    assert_eq!(
        to.changes_since(Revision(0), 10).unwrap(),
        None,
        "{}",
        f.backend
    );
    assert_eq!(
        to.changes_since(Revision(2), 10).unwrap(),
        None,
        "{}",
        f.backend
    );
    assert_eq!(to.changes_since(Revision(3), 10).unwrap(), Some(vec![]));
    to.apply(&machine("db")).unwrap();
    let after = to.changes_since(Revision(3), 10).unwrap().unwrap();
    assert_eq!(after.len(), 1);
    let mut reader = from.snapshot().unwrap();
    assert!(reader.apply_delta(&after[0]));
    assert_eq!(reader, to.snapshot().unwrap(), "{}", f.backend);
}

/// `frame` holds what a tunnel file and a token check need and nothing else: every org,
/// node, peering and token, and only the peers that route sites, at the registry's revision;
/// through each backend's own narrow read, it equals the whole snapshot, framed.
/// A peer of `org` in iad, routing `routes` (a site) or none (a laptop).
fn peer(org: &str, name: &str, key: &str, routes: &[&str]) -> Change {
    Change::AddPeer {
        org: org.into(),
        name: name.into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: key.parse().unwrap(),
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        expires: None,
    }
}

fn the_frame_is_the_small_kinds_and_the_site_peers(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    reg.apply(&machine("web")).unwrap();
    reg.apply(&peer("acme", "alice", KEY_B, &[])).unwrap();
    reg.apply(&peer("acme", "ams", KEY_C, &["2001:db8:1::/48"]))
        .unwrap();
    reg.apply(&Change::CreateOrg {
        name: "globex".into(),
    })
    .unwrap();
    reg.apply(&peer("globex", "lon", KEY_D, &["10.9.0.0/16"]))
        .unwrap();
    reg.apply(&Change::PeerOrgs {
        a: "acme".into(),
        b: "globex".into(),
    })
    .unwrap();
    reg.apply(&Change::CreateToken {
        id: "tok00000000000000c3".into(),
        org: "globex".into(),
        scope: TokenScope::Admin,
        secret_hash: "00".repeat(32),
        expires: None,
        max_uses: None,
        region: None,
        name_prefix: None,
    })
    .unwrap();
    let whole = f.open().snapshot().unwrap();
    let frame = f.open().frame().unwrap();
    assert_eq!(frame, whole.clone().framed(), "{}", f.backend);
    let peers: Vec<&str> = frame.peers.values().map(|p| p.name.as_str()).collect();
    assert_eq!(peers, ["ams", "lon"], "{}: only the site peers", f.backend);
    assert!(
        frame.machines.is_empty() && frame.apps.is_empty(),
        "{}",
        f.backend
    );
    assert_eq!(
        (
            frame.orgs.len(),
            frame.nodes.len(),
            frame.peerings.len(),
            frame.tokens.len()
        ),
        (2, 1, 1, 1),
        "{}",
        f.backend
    );
    assert_eq!(frame.revision, whole.revision);
    assert_eq!(frame.next_network, whole.next_network);

    // With named records: the frame and those that exist, read at the same revision.
    let web = whole.machines.values().next().unwrap().id;
    let also = [
        RecordKey::Peer {
            org: "acme".into(),
            name: "alice".into(),
        },
        RecordKey::Machine { id: web },
        RecordKey::App {
            org: "acme".into(),
            name: "web".into(),
        },
        RecordKey::Peer {
            org: "acme".into(),
            name: "nobody".into(),
        },
        RecordKey::Org {
            name: "acme".into(),
        },
    ];
    let with = f.open().frame_with(&also).unwrap();
    assert_eq!(with, whole.clone().framed_with(&also), "{}", f.backend);
    assert_eq!(
        (with.peers.len(), with.machines.len(), with.apps.len()),
        (3, 1, 1),
        "{}: alice beside the site peers, web and its app",
        f.backend
    );

    // Some kinds only, at the registry's revision, in the whole read's order.
    for kinds in [
        &[Kind::Peer][..],
        &[Kind::Machine, Kind::Org],
        &[Kind::Token, Kind::App, Kind::Peering],
        &[],
    ] {
        let mut got = Vec::new();
        let at = f.open().visit_kinds(kinds, &mut |r| got.push(r)).unwrap();
        assert_eq!(at, whole.revision, "{}", f.backend);
        let mut want: Vec<Record> = Vec::new();
        f.open()
            .visit(&mut |r| {
                if kinds.contains(&r.kind()) {
                    want.push(r)
                }
            })
            .unwrap();
        assert_eq!(got, want, "{}: {kinds:?}", f.backend);
        let mut borrowed = Vec::new();
        let at = (f.open())
            .visit_refs(kinds, &mut |r| borrowed.push(r.into_record()))
            .unwrap();
        assert_eq!((at, &borrowed), (whole.revision, &want), "{}", f.backend);
        let kinds_seen: BTreeSet<String> = got.iter().map(|r| r.kind().to_string()).collect();
        assert_eq!(
            kinds_seen,
            kinds.iter().map(Kind::to_string).collect(),
            "{}: every kind asked for is in the fixture",
            f.backend
        );
    }
}

/// `org_part(org)` holds what `scoped(org)` keeps and no other org's apps or machines: for
/// an org peered with another, one peered with none, and one that does not exist.
fn an_org_part_scoped_is_the_whole_registry_scoped(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    for org in ["globex", "initech"] {
        reg.apply(&Change::CreateOrg { name: org.into() }).unwrap();
    }
    let add_machine = |org: &str, app: &str| Change::AddMachine {
        org: org.into(),
        app: app.into(),
        region: "iad".into(),
        node: "host-a".into(),
        process_group: None,
    };
    for (org, app) in [
        ("acme", "web"),
        ("acme", "db"),
        ("globex", "web"),
        ("initech", "api"),
    ] {
        reg.apply(&add_machine(org, app)).unwrap();
    }
    reg.apply(&peer("acme", "alice", KEY_B, &[])).unwrap();
    reg.apply(&peer("globex", "lon", KEY_C, &["10.9.0.0/16"]))
        .unwrap();
    reg.apply(&peer("initech", "par", KEY_D, &["10.8.0.0/16"]))
        .unwrap();
    reg.apply(&Change::PeerOrgs {
        a: "acme".into(),
        b: "globex".into(),
    })
    .unwrap();
    let whole = f.open().snapshot().unwrap();
    for org in ["acme", "globex", "initech", "nobody"] {
        let part = f.open().org_part(org).unwrap();
        assert_eq!(part.scoped(org), whole.scoped(org), "{}: {org}", f.backend);
        assert_eq!(
            (part.revision, part.next_network),
            (whole.revision, whole.next_network),
            "{}: {org}",
            f.backend
        );
        assert!(
            part.machines.values().all(|m| m.org == org)
                && part.apps.values().all(|a| a.org == org),
            "{}: {org}'s part holds another org's apps or machines",
            f.backend
        );
    }
    let acme = f.open().org_part("acme").unwrap().scoped("acme");
    let peers: Vec<&str> = acme.peers.values().map(|p| p.name.as_str()).collect();
    assert_eq!(
        (acme.machines.len(), peers),
        (2, vec!["alice", "lon"]),
        "{}: acme's machines, its peer and the peered org's site",
        f.backend
    );
}

/// `visit_kinds` and `snapshot_of` read only the kinds asked for: with every stored machine
/// made unreadable behind the registry's back, a read of orgs, nodes and peers succeeds and
/// is what it was, while any read that includes machines fails on them.
fn a_read_of_some_kinds_does_not_read_the_others(f: &Fixture) {
    let reg = f.open();
    setup(&*reg);
    reg.apply(&machine("web")).unwrap();
    reg.apply(&Change::AddPeer {
        org: "acme".into(),
        name: "alice".into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: KEY_B.parse().unwrap(),
        routes: vec![],
        expires: None,
    })
    .unwrap();
    let before = reg.snapshot().unwrap();
    f.spoil_machines();

    let some = f
        .open()
        .snapshot_of(&[Kind::Org, Kind::Node, Kind::Peer])
        .unwrap();
    assert_eq!(some.revision, before.revision, "{}", f.backend);
    assert_eq!(
        (&some.orgs, &some.nodes, &some.peers),
        (&before.orgs, &before.nodes, &before.peers),
        "{}",
        f.backend
    );
    assert_eq!(some.peers.len(), 1, "{}", f.backend);
    assert!(
        some.machines.is_empty() && some.apps.is_empty(),
        "{}",
        f.backend
    );

    let with_machines = [
        f.open()
            .visit_kinds(&[Kind::Machine], &mut |_| {})
            .map(drop),
        f.open()
            .visit_kinds(&[Kind::Org, Kind::Machine], &mut |_| {})
            .map(drop),
        f.open().snapshot().map(drop),
        f.open().visit_refs(&[Kind::Machine], &mut |_| {}).map(drop),
        f.open().visit_refs(&Kind::RECORDS, &mut |_| {}).map(drop),
    ];
    for read in with_machines {
        let err = read.expect_err("a read of the spoiled machines");
        assert!(
            matches!(err, registry::Error::Corrupt { .. }) && err.to_string().contains("nope"),
            "{}: {err}",
            f.backend
        );
    }
}
