use super::*;
use crate::change::NodeSpec;
use crate::Registry;

const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

fn fresh() -> (tempfile::TempDir, SqliteRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = SqliteRegistry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    (dir, reg)
}

fn setup(reg: &SqliteRegistry) {
    reg.apply(&Change::CreateOrg {
        name: "acme".into(),
    })
    .unwrap();
    reg.apply(&Change::AddNode(NodeSpec {
        name: "host-a".into(),
        region: "iad".into(),
        public_key: KEY_A.parse().unwrap(),
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        gateway: true,
    }))
    .unwrap();
}

#[test]
fn writes_persist_and_reopen_identically() {
    let (dir, reg) = fresh();
    setup(&reg);
    let m = reg
        .apply(&Change::AddMachine {
            org: "acme".into(),
            app: "web".into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: Some("worker".into()),
        })
        .unwrap();
    assert_eq!(m.revision, Revision(3));
    let before = reg.snapshot().unwrap();
    drop(reg);
    let again = SqliteRegistry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    assert_eq!(again.snapshot().unwrap(), before);
    assert_eq!(before.machines.len(), 1);
    assert_eq!(before.apps.len(), 1);
}

#[test]
fn failed_write_leaves_revision_and_records_alone() {
    let (_dir, reg) = fresh();
    setup(&reg);
    let before = reg.snapshot().unwrap();
    let err = reg
        .apply(&Change::AddMachine {
            org: "acme".into(),
            app: "Web".into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: None,
        })
        .unwrap_err();
    assert!(err.is_user_error());
    assert_eq!(reg.snapshot().unwrap(), before);
}

#[test]
fn wait_newer_sees_another_connections_write() {
    let (dir, reg) = fresh();
    let rev = reg.snapshot().unwrap().revision;
    assert_eq!(
        reg.wait_newer(rev, Duration::from_millis(30)).unwrap(),
        None
    );
    let path = dir.path().join("r.db");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let other = SqliteRegistry::open(path.to_str().unwrap()).unwrap();
        other
            .apply(&Change::CreateOrg { name: "x".into() })
            .unwrap();
    });
    let newer = reg.wait_newer(rev, Duration::from_secs(5)).unwrap();
    writer.join().unwrap();
    assert_eq!(newer, Some(Revision(rev.0 + 1)));
    assert!(reg.revision().unwrap() > rev);
}

#[test]
fn unusable_locations_give_clear_errors() {
    let err = SqliteRegistry::open("/nonexistent-sixpn-dir/r.db")
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "registry `/nonexistent-sixpn-dir/r.db`: folder `/nonexistent-sixpn-dir` does not exist"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteRegistry::open(dir.path().to_str().unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("is a folder"), "{err}");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = SqliteRegistry::open(junk.to_str().unwrap()).err().unwrap();
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn a_file_from_before_peerings_opens_and_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // What a registry made before migration 2 holds: the first schema, two orgs.
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO orgs (name, network) VALUES ('acme', 1), ('globex', 2);
             UPDATE meta SET value = 3 WHERE key = 'next_network';
             UPDATE meta SET value = 2 WHERE key = 'revision';",
        )
        .unwrap();
    }
    let path = path.to_str().unwrap();
    let reg = SqliteRegistry::open(path).unwrap();
    let snap = reg.snapshot().unwrap();
    assert_eq!(snap.revision, Revision(2));
    assert_eq!(snap.orgs.len(), 2);
    assert!(snap.peerings.is_empty());
    reg.apply(&Change::PeerOrgs {
        a: "globex".into(),
        b: "acme".into(),
    })
    .unwrap();
    drop(reg);
    let again = SqliteRegistry::open(path).unwrap();
    assert!(again.snapshot().unwrap().peered("acme", "globex"));
    let version: i64 = again
        .lock()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION as i64);
}

#[test]
fn a_peering_is_one_row_whichever_order_it_was_named_in() {
    let (_dir, reg) = fresh();
    for name in ["acme", "globex"] {
        reg.apply(&Change::CreateOrg { name: name.into() }).unwrap();
    }
    reg.apply(&Change::PeerOrgs {
        a: "globex".into(),
        b: "acme".into(),
    })
    .unwrap();
    let rows: Vec<(String, String)> = {
        let conn = reg.lock();
        let mut stmt = conn.prepare("SELECT a, b FROM peerings").unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows
    };
    assert_eq!(rows, vec![("acme".to_string(), "globex".to_string())]);
    reg.apply(&Change::UnpeerOrgs {
        a: "globex".into(),
        b: "acme".into(),
    })
    .unwrap();
    assert!(reg.snapshot().unwrap().peerings.is_empty());
}

const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

fn create_token(id: &str, scope: crate::TokenScope) -> Change {
    Change::CreateToken {
        id: id.into(),
        org: "acme".into(),
        scope,
        secret_hash: HASH.into(),
        expires: Some(4_000_000_000),
        max_uses: (scope == crate::TokenScope::Peer).then_some(2),
        region: (scope == crate::TokenScope::Peer).then(|| "iad".into()),
        name_prefix: (scope == crate::TokenScope::Peer).then(|| "ci-".into()),
    }
}

#[test]
fn tokens_persist_with_their_uses_and_revocation() {
    let (dir, reg) = fresh();
    setup(&reg);
    reg.apply(&create_token(
        "tok00000000000000a1",
        crate::TokenScope::Admin,
    ))
    .unwrap();
    reg.apply(&create_token(
        "tok00000000000000b2",
        crate::TokenScope::Peer,
    ))
    .unwrap();
    reg.apply(&Change::WithToken {
        id: "tok00000000000000b2".into(),
        secret_hash: HASH.into(),
        change: Box::new(Change::AddPeer {
            org: "acme".into(),
            name: "ci-1".into(),
            region: None,
            gateway: None,
            public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
                .parse()
                .unwrap(),
            routes: vec![],
            expires: None,
        }),
    })
    .unwrap();
    reg.apply(&Change::RevokeToken {
        id: "tok00000000000000a1".into(),
    })
    .unwrap();
    let before = reg.snapshot().unwrap();
    drop(reg);
    let again = SqliteRegistry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    let snap = again.snapshot().unwrap();
    assert_eq!(snap, before);
    let peer = &snap.tokens["tok00000000000000b2"];
    assert_eq!(peer.uses, 1);
    assert_eq!(peer.secret_hash, HASH);
    assert_eq!(
        (
            peer.max_uses,
            peer.region.as_deref(),
            peer.name_prefix.as_deref()
        ),
        (Some(2), Some("iad"), Some("ci-"))
    );
    assert!(snap.tokens["tok00000000000000a1"].revoked.is_some());
    assert_eq!(snap.peers.len(), 1);
}

#[test]
fn a_refused_token_write_leaves_the_file_alone() {
    let (_dir, reg) = fresh();
    setup(&reg);
    reg.apply(&create_token(
        "tok00000000000000b2",
        crate::TokenScope::Peer,
    ))
    .unwrap();
    let before = reg.snapshot().unwrap();
    let err = reg
        .apply(&Change::WithToken {
            id: "tok00000000000000b2".into(),
            secret_hash: HASH.into(),
            change: Box::new(Change::CreateOrg {
                name: "other".into(),
            }),
        })
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
    assert_eq!(reg.snapshot().unwrap(), before);
}

#[test]
fn a_file_from_before_tokens_opens_and_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // What a registry made before migration 3 holds: two orgs, peered.
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO orgs (name, network) VALUES ('acme', 1), ('globex', 2);
             INSERT INTO peerings (a, b) VALUES ('acme', 'globex');
             UPDATE meta SET value = 3 WHERE key = 'next_network';
             UPDATE meta SET value = 3 WHERE key = 'revision';",
        )
        .unwrap();
    }
    let path = path.to_str().unwrap();
    let reg = SqliteRegistry::open(path).unwrap();
    let snap = reg.snapshot().unwrap();
    assert_eq!(snap.revision, Revision(3));
    assert!(snap.peered("acme", "globex"));
    assert!(snap.tokens.is_empty());
    reg.apply(&create_token(
        "tok00000000000000a1",
        crate::TokenScope::Admin,
    ))
    .unwrap();
    drop(reg);
    let again = SqliteRegistry::open(path).unwrap();
    let snap = again.snapshot().unwrap();
    assert_eq!(snap.tokens["tok00000000000000a1"].org, "acme");
    assert_eq!(snap.revision, Revision(4));
    let version: i64 = again
        .lock()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION as i64);
}

#[test]
fn a_token_with_an_unknown_scope_is_reported_as_corrupt() {
    let (_dir, reg) = fresh();
    setup(&reg);
    reg.apply(&create_token(
        "tok00000000000000a1",
        crate::TokenScope::Admin,
    ))
    .unwrap();
    reg.lock()
        .execute("UPDATE tokens SET scope = 'root'", [])
        .unwrap();
    let err = reg.snapshot().unwrap_err().to_string();
    assert!(
        err.contains("token `tok00000000000000a1` has scope `root`"),
        "{err}"
    );
}

#[test]
fn a_machine_with_a_bad_id_is_reported_as_corrupt() {
    let (_dir, reg) = fresh();
    setup(&reg);
    reg.apply(&Change::AddMachine {
        org: "acme".into(),
        app: "web".into(),
        region: "iad".into(),
        node: "host-a".into(),
        process_group: None,
    })
    .unwrap();
    reg.lock()
        .execute("UPDATE machines SET id = 'web-1'", [])
        .unwrap();
    let err = reg.snapshot().unwrap_err();
    assert!(matches!(err, crate::Error::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("a machine has machine id `web-1`: must be 14 lowercase hex characters"),
        "{err}"
    );
}

/// A machine's names are borrowed from its row; one that is not text, or not UTF-8, is
/// refused in rusqlite's own words for reading it as a `String`, naming the column.
#[test]
fn a_machine_whose_names_are_not_text_is_refused_as_a_string_read_refuses_it() {
    for (column, index, value) in [
        ("org", 1, "x'ff'"),
        ("app", 2, "CAST(x'ff' AS TEXT)"),
        ("process_group", 5, "x''"),
    ] {
        let (_dir, reg) = fresh();
        setup(&reg);
        reg.apply(&Change::AddMachine {
            org: "acme".into(),
            app: "web".into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: None,
        })
        .unwrap();
        let conn = reg.lock();
        conn.execute(&format!("UPDATE machines SET {column} = {value}"), [])
            .unwrap();
        let as_string = conn
            .query_row(
                "SELECT id, org, app, region, node, process_group FROM machines",
                [],
                |r| r.get::<_, String>(index),
            )
            .unwrap_err()
            .to_string();
        drop(conn);
        assert!(
            as_string.contains(&format!("index: {index}")),
            "{as_string}"
        );
        for err in [
            reg.snapshot().unwrap_err(),
            reg.visit_refs(&[Kind::Machine], &mut |_| {}).unwrap_err(),
        ] {
            assert!(matches!(err, crate::Error::Storage { .. }), "{err:?}");
            assert!(
                err.to_string().contains(&as_string),
                "{column}: {err} / {as_string}"
            );
        }
    }
}

#[test]
fn a_visit_gives_every_record_of_the_snapshot_kinds_in_order() {
    let (_dir, reg) = fresh();
    setup(&reg);
    for app in ["web", "db", "web"] {
        reg.apply(&Change::AddMachine {
            org: "acme".into(),
            app: app.into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: None,
        })
        .unwrap();
    }
    reg.apply(&create_token(
        "tok0123456789abcdef",
        crate::TokenScope::Peer,
    ))
    .unwrap();
    let snap = reg.snapshot().unwrap();
    let mut seen = Vec::new();
    let revision = reg.visit(&mut |r| seen.push(r)).unwrap();
    assert_eq!(revision, snap.revision);
    let kind = |r: &Record| match r {
        Record::Org(_) => 0,
        Record::Node(_) => 1,
        Record::App(_) => 2,
        Record::Machine(_) => 3,
        Record::Peer(_) => 4,
        Record::Peering(_) => 5,
        Record::Token(_) => 6,
    };
    assert!(
        seen.windows(2).all(|w| kind(&w[0]) <= kind(&w[1])),
        "{seen:?}"
    );
    let mut visited = Snapshot {
        revision,
        next_network: snap.next_network,
        ..Snapshot::default()
    };
    let records = seen.len();
    seen.into_iter().for_each(|r| visited.put(r));
    assert_eq!(visited, snap);
    assert_eq!(records, snap.records().count());
}
