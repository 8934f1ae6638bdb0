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
        public_key: KEY_A.into(),
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
