use rusqlite::Connection;

use crate::change::{Change, NodeSpec};
use crate::model::{Record, RecordKey, Revision, Snapshot};
use crate::sqlite::{SqliteRegistry, MIGRATIONS};
use crate::Registry;

const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

fn fresh() -> (tempfile::TempDir, SqliteRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = SqliteRegistry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    (dir, reg)
}

fn setup(reg: &dyn Registry) {
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

fn add_machine() -> Change {
    Change::AddMachine {
        org: "acme".into(),
        app: "web".into(),
        region: "iad".into(),
        node: "host-a".into(),
        process_group: None,
    }
}

#[test]
fn each_write_logs_what_it_changed_before_and_after() {
    let (_dir, reg) = fresh();
    setup(&reg);
    let made = reg.apply(&add_machine()).unwrap();
    let Some(Record::Machine(m)) = made.record else {
        panic!("AddMachine returns the machine")
    };
    let stopped = reg
        .apply(&Change::SetMachineState {
            id: m.id,
            state: crate::MachineState::Stopped,
        })
        .unwrap();
    reg.apply(&Change::RemoveMachine { id: m.id }).unwrap();
    let deltas = reg.changes_since(Revision(0), 100).unwrap().unwrap();
    let revisions: Vec<u64> = deltas.iter().map(|d| d.revision.0).collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5]);
    assert_eq!(deltas[0].next_network, 2, "CreateOrg allocated network 1");
    // AddMachine made the app and the machine.
    assert_eq!(deltas[2].changes.len(), 2);
    assert!(deltas[2].changes.iter().all(|c| c.before.is_none()));
    assert_eq!(deltas[2].changes[1].after, Some(Record::Machine(m.clone())));
    let change = &deltas[3].changes[0];
    assert_eq!(change.before, Some(Record::Machine(m.clone())));
    assert_eq!(change.after, stopped.record);
    let change = &deltas[4].changes[0];
    assert_eq!(change.key, RecordKey::Machine { id: m.id });
    assert_eq!(
        (change.before.is_some(), change.after.is_none()),
        (true, true)
    );
    // A reader that applies them all holds what the file holds.
    let mut mirror = Snapshot::default();
    for d in &deltas {
        assert!(mirror.apply_delta(d));
    }
    assert_eq!(mirror, reg.snapshot().unwrap());
    // From any revision, the rest; at the newest, nothing; `limit` bounds the answer.
    assert_eq!(
        reg.changes_since(Revision(3), 100).unwrap().unwrap(),
        deltas[3..]
    );
    assert_eq!(reg.changes_since(Revision(5), 100).unwrap(), Some(vec![]));
    assert_eq!(
        reg.changes_since(Revision(1), 2).unwrap().unwrap(),
        deltas[1..3]
    );
}

#[test]
fn a_refused_or_empty_write_logs_nothing() {
    let (_dir, reg) = fresh();
    setup(&reg);
    assert!(reg
        .apply(&Change::RemoveMachine {
            id: crate::MachineId::from_bits(1)
        })
        .is_err());
    let Change::AddNode(spec) = Change::AddNode(NodeSpec {
        name: "host-a".into(),
        region: "iad".into(),
        public_key: KEY_A.parse().unwrap(),
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        gateway: true,
    }) else {
        unreachable!()
    };
    assert_eq!(
        reg.apply(&Change::RegisterNode(spec)).unwrap().revision,
        Revision(2)
    );
    assert_eq!(
        reg.changes_since(Revision(0), 100).unwrap().unwrap().len(),
        2
    );
}

#[test]
fn the_log_keeps_the_newest_revisions_and_sends_older_readers_to_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let reg = SqliteRegistry::open(dir.path().join("r.db").to_str().unwrap())
        .unwrap()
        .keeping_changes(3);
    setup(&reg);
    for _ in 0..8 {
        reg.apply(&add_machine()).unwrap();
    }
    // Revision 10 now; revisions 8, 9 and 10 are kept.
    let kept = reg.changes_since(Revision(7), 100).unwrap().unwrap();
    assert_eq!(
        kept.iter().map(|d| d.revision.0).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    assert_eq!(reg.changes_since(Revision(6), 100).unwrap(), None);
    assert_eq!(reg.changes_since(Revision(0), 100).unwrap(), None);
    let rows: i64 = reg
        .lock()
        .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    // A reader ahead of the file (it was replaced by an older one) is sent to a snapshot.
    assert_eq!(reg.changes_since(Revision(11), 100).unwrap(), None);
}

#[test]
fn an_import_sends_every_earlier_reader_to_a_snapshot() {
    let (_dir, from) = fresh();
    setup(&from);
    from.apply(&add_machine()).unwrap();
    let snap = from.snapshot().unwrap();
    let (_dir2, to) = fresh();
    assert_eq!(to.changes_since(Revision(0), 10).unwrap(), Some(vec![]));
    let revision = to.import(&snap).unwrap();
    assert_eq!(revision, Revision(3));
    assert_eq!(to.changes_since(Revision(0), 10).unwrap(), None);
    assert_eq!(to.changes_since(Revision(3), 10).unwrap(), Some(vec![]));
    to.apply(&add_machine()).unwrap();
    let deltas = to.changes_since(Revision(3), 10).unwrap().unwrap();
    let mut mirror = snap.clone();
    assert!(mirror.apply_delta(&deltas[0]));
    assert_eq!(mirror, to.snapshot().unwrap());
}

#[test]
fn a_damaged_log_entry_is_reported_not_trusted() {
    let (_dir, reg) = fresh();
    setup(&reg);
    reg.lock()
        .execute(
            "UPDATE changes SET delta = '{\"revision\": ' WHERE revision = 2",
            [],
        )
        .unwrap();
    let err = reg.changes_since(Revision(0), 10).unwrap_err();
    assert!(matches!(err, crate::Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("revision 2"), "{err}");
    // A missing entry is a hole: the reader takes a snapshot.
    reg.lock()
        .execute("DELETE FROM changes WHERE revision = 2", [])
        .unwrap();
    assert_eq!(reg.changes_since(Revision(0), 10).unwrap(), None);
    assert_eq!(reg.changes_since(Revision(1), 10).unwrap(), None);
}

#[test]
fn a_file_from_before_the_log_opens_with_its_addresses_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // What a registry made before migration 4 holds: a machine in slot 1 of host-a's /80,
    // and a peer in slot 2.
    {
        let conn = Connection::open(&path).unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        let net = crate::OrgNetwork(1);
        let host = crate::addr::HOST_RANGE.0;
        conn.execute(
            "INSERT INTO orgs (name, network) VALUES ('acme', 1);
             ",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO nodes (name, region, public_key, endpoint, gateway, host)
             VALUES ('host-a', 'iad', ?1, '192.0.2.1:51820', 1, ?2)",
            rusqlite::params![KEY_A, host],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO machines (id, org, app, region, node, process_group, state, addr)
             VALUES ('0123456789abcd', 'acme', 'web', 'iad', 'host-a', 'app', 'started', ?1)",
            [net.slot_addr(host, 1).to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO peers (org, name, gateway, region, public_key, addr, routes, created)
             VALUES ('acme', 'laptop', 'host-a', 'iad', ?1, ?2, '[]', 0)",
            [
                "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".to_string(),
                net.slot_addr(host, 2).to_string(),
            ],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO apps (org, name) VALUES ('acme', 'web');
             UPDATE meta SET value = 2 WHERE key = 'next_network';
             UPDATE meta SET value = 7 WHERE key = 'revision';",
        )
        .unwrap();
    }
    let reg = SqliteRegistry::open(path.to_str().unwrap()).unwrap();
    let before = reg.snapshot().unwrap();
    assert_eq!(before.revision, Revision(7));
    // Readers from before the upgrade take a snapshot; from now on they follow the log.
    assert_eq!(reg.changes_since(Revision(6), 10).unwrap(), None);
    assert_eq!(reg.changes_since(Revision(7), 10).unwrap(), Some(vec![]));
    let Some(Record::Machine(m)) = reg.apply(&add_machine()).unwrap().record else {
        panic!("AddMachine returns the machine")
    };
    assert_eq!(crate::addr::slot_of(m.addr), 3, "slots 1 and 2 are taken");
    let deltas = reg.changes_since(Revision(7), 10).unwrap().unwrap();
    let mut mirror = before;
    assert!(mirror.apply_delta(&deltas[0]));
    assert_eq!(mirror, reg.snapshot().unwrap());
}

#[test]
fn an_imported_registry_allocates_its_holes_first() {
    let (_dir, from) = fresh();
    setup(&from);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let Some(Record::Machine(m)) = from.apply(&add_machine()).unwrap().record else {
            panic!("AddMachine returns the machine")
        };
        ids.push(m.id);
    }
    // Slots 2 and 4 freed: 1, 3 and 5 held.
    for id in [&ids[1], &ids[3]] {
        from.apply(&Change::RemoveMachine { id: *id }).unwrap();
    }
    let (_dir2, to) = fresh();
    to.import(&from.snapshot().unwrap()).unwrap();
    let slots: Vec<u32> = (0..3)
        .map(|_| match to.apply(&add_machine()).unwrap().record {
            Some(Record::Machine(m)) => crate::addr::slot_of(m.addr),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(slots, [2, 4, 6]);
}
