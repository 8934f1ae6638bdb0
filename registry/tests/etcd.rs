//! What only the etcd backend has to prove: URLs and credentials, unreachable members, several
//! processes allocating at once, and serving on while etcd is away.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{machine, setup, Etcd};
use registry::{Change, Error, Registry, Revision};

/// The env var that turns `child_allocates_machines` into a writer of its own.
const CHILD_URL: &str = "SIXPN_TEST_CHILD_URL";

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_etcd_urls_name_the_rule_and_hide_the_password() {
    let err = registry::open("etcd://alice:hunter2@127.0.0.1:99999/x")
        .err()
        .unwrap();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("port must be a number 1-65535"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let reg = registry::open("etcd://alice:hunter2@127.0.0.1:1/x").unwrap();
    assert_eq!(reg.location(), "etcd://alice@127.0.0.1:1/x");
}

#[test]
fn unreachable_etcd_gives_a_storage_error_naming_each_endpoint() {
    let (a, b) = (free_closed_port(), free_closed_port());
    let reg = registry::open(&format!("etcd://127.0.0.1:{a},127.0.0.1:{b}")).unwrap();
    let started = Instant::now();
    let err = reg.snapshot().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("no etcd member answered"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{a}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{b}")), "{text}");
    let err = reg
        .apply(&Change::CreateOrg { name: "x".into() })
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert!(!err.is_user_error());
}

fn free_closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Not a test of its own: the writer process that
/// `several_processes_allocating_at_once_get_distinct_addresses` starts.
#[test]
fn child_allocates_machines() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let reg = registry::open(&url).unwrap();
    for _ in 0..8 {
        let applied = reg.apply(&machine("web")).unwrap();
        let Some(registry::Record::Machine(m)) = applied.record else {
            panic!("no machine")
        };
        println!("ALLOCATED {} {} {}", m.id, m.addr, applied.revision.0);
    }
}

#[test]
fn several_processes_allocating_at_once_get_distinct_addresses() {
    const PROCESSES: usize = 4;
    let etcd = Etcd::single();
    let url = etcd.url();
    setup(&*registry::open(&url).unwrap());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_allocates_machines", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CHILD_URL, &url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addrs = BTreeSet::new();
    let mut revisions = BTreeSet::new();
    let mut count = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "writer failed:\n{text}");
        // libtest may print `test name ... ` in front of the first line.
        let lines = text
            .lines()
            .filter_map(|l| l.split_once("ALLOCATED ").map(|(_, r)| r));
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            addrs.insert(fields[1].to_string());
            revisions.insert(fields[2].to_string());
            count += 1;
        }
    }
    assert_eq!(count, PROCESSES * 8);
    assert_eq!(addrs.len(), count, "an address was handed out twice");
    assert_eq!(revisions.len(), count, "two writes share a revision");
    let reg = etcd_registry(&url);
    let snap = reg.snapshot().unwrap();
    assert_eq!(snap.machines.len(), count);
    assert!(reg.check_index().unwrap().is_some());
}

#[test]
fn followers_serve_the_last_snapshot_while_etcd_is_down_and_catch_up() {
    let mut etcd = Etcd::single();
    let url = etcd.url();
    let writer = registry::open(&url).unwrap();
    setup(&*writer);
    let follower = registry::follow(registry::open(&url).unwrap());
    let rx = follower.snapshots.clone();
    wait_until("the first snapshot", Duration::from_secs(5), || {
        rx.borrow().revision == Revision(2)
    });

    etcd.kill(0);
    wait_until("the follower to notice", Duration::from_secs(10), || {
        !follower.health.reachable()
    });
    assert_eq!(rx.borrow().revision, Revision(2), "kept the last snapshot");
    assert_eq!(rx.borrow().orgs.len(), 1);
    let err = writer.apply(&machine("web")).unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");

    etcd.start(0);
    etcd.wait_ready();
    writer.apply(&machine("web")).unwrap();
    wait_until("the follower to catch up", Duration::from_secs(15), || {
        rx.borrow().revision == Revision(3)
    });
    assert!(follower.health.reachable());
    assert!(follower.health.failures() > 0);
}

#[test]
fn user_and_password_are_used_and_a_wrong_one_is_refused_clearly() {
    let etcd = Etcd::single();
    let port = etcd.client_port(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .unwrap();
        c.user_add("root", "s3cret", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();
    });
    let prefix = common::unique_prefix();
    let good = registry::open(&format!("etcd://root:s3cret@127.0.0.1:{port}{prefix}")).unwrap();
    setup(&*good);
    assert_eq!(good.snapshot().unwrap().revision, Revision(2));

    let bad = registry::open(&format!("etcd://root:wrong@127.0.0.1:{port}{prefix}")).unwrap();
    let err = bad.snapshot().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("wrong"), "{text}");
    let anonymous = registry::open(&format!("etcd://127.0.0.1:{port}{prefix}")).unwrap();
    assert!(anonymous.snapshot().is_err());
}

#[test]
fn an_embedded_registry_copies_into_etcd_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = registry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    setup(&*sqlite);
    for app in ["web", "web", "db"] {
        sqlite.apply(&machine(app)).unwrap();
    }
    sqlite
        .apply(&Change::AddPeer {
            org: "acme".into(),
            name: "alice".into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: common::KEY_B.parse().unwrap(),
            routes: vec!["10.1.0.0/16".parse().unwrap()],
            expires: Some(4_000_000_000),
        })
        .unwrap();
    sqlite
        .apply(&Change::CreateOrg {
            name: "globex".into(),
        })
        .unwrap();
    sqlite
        .apply(&Change::PeerOrgs {
            a: "acme".into(),
            b: "globex".into(),
        })
        .unwrap();
    let etcd = Etcd::single();
    let target = registry::open(&etcd.url()).unwrap();
    let copied = registry::copy(&*sqlite, &*target).unwrap();
    let source = sqlite.snapshot().unwrap();
    assert_eq!(copied.records, source.records().count());
    assert_eq!(target.snapshot().unwrap(), source);
    assert!(target.snapshot().unwrap().peered("globex", "acme"));
    let frame = target.frame().unwrap();
    assert_eq!(
        frame,
        source.clone().framed(),
        "the frame, through the imported index"
    );
    assert_eq!(frame.peers.len(), 1, "alice routes a site");
    // Allocation goes on from the copied state: the next machine gets the next slot.
    let next = target.apply(&machine("web")).unwrap();
    assert_eq!(next.revision, Revision(source.revision.0 + 1));
    let addrs: BTreeSet<_> = target
        .snapshot()
        .unwrap()
        .machines
        .values()
        .map(|m| m.addr)
        .collect();
    assert_eq!(addrs.len(), 4);
}

#[test]
fn the_etcd_change_log_keeps_the_newest_revisions() {
    let etcd = Etcd::single();
    let reg = registry::etcd::EtcdRegistry::open(&etcd.url())
        .unwrap()
        .keeping_changes(3);
    setup(&reg);
    for _ in 0..8 {
        reg.apply(&machine("web")).unwrap();
    }
    // Revision 10 now; revisions 8, 9 and 10 are kept.
    let kept = reg.changes_since(Revision(7), 100).unwrap().unwrap();
    let revisions: Vec<u64> = kept.iter().map(|d| d.revision.0).collect();
    assert_eq!(revisions, [8, 9, 10]);
    assert_eq!(reg.changes_since(Revision(6), 100).unwrap(), None);
    assert_eq!(reg.changes_since(Revision(0), 100).unwrap(), None);
    // The log is not part of what a snapshot holds.
    let snap = reg.snapshot().unwrap();
    assert_eq!((snap.revision, snap.machines.len()), (Revision(10), 8));
}

/// The etcd registry at `prefix`, as a version without the write index leaves it: no index
/// keys, and a revision mark that names none.
fn as_a_version_without_the_index_left_it(etcd: &Etcd, prefix: &str) {
    let port = etcd.client_port(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .unwrap();
        let options = etcd_client::DeleteOptions::new().with_prefix();
        c.delete(format!("{prefix}/meta/index/"), Some(options))
            .await
            .unwrap();
        let key = format!("{prefix}/meta/revision");
        let got = c.get(key.clone(), None).await.unwrap();
        let mut mark: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
        mark.as_object_mut().unwrap().remove("index");
        c.put(key, serde_json::to_vec(&mark).unwrap(), None)
            .await
            .unwrap();
    });
}

/// What a writer without the index does: puts `record` and bumps the revision, nothing else.
fn written_by_a_version_without_the_index(etcd: &Etcd, prefix: &str, record: &registry::Record) {
    let port = etcd.client_port(0);
    let key = match record {
        registry::Record::Machine(m) => format!("{prefix}/machines/{}", m.id),
        other => panic!("{other:?}"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .unwrap();
        let mark_key = format!("{prefix}/meta/revision");
        let got = c.get(mark_key.clone(), None).await.unwrap();
        let old: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
        let mark = serde_json::json!({
            "revision": old["revision"].as_u64().unwrap() + 1,
            "write": "old",
        });
        c.put(key, serde_json::to_vec(record).unwrap(), None)
            .await
            .unwrap();
        c.put(mark_key, serde_json::to_vec(&mark).unwrap(), None)
            .await
            .unwrap();
    });
}

fn etcd_registry(url: &str) -> registry::etcd::EtcdRegistry {
    registry::etcd::EtcdRegistry::open(url).unwrap()
}

fn made_machine(applied: registry::Applied) -> registry::Machine {
    match applied.record {
        Some(registry::Record::Machine(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_registry_written_without_the_index_gains_it_at_the_next_write() {
    let etcd = Etcd::single();
    let prefix = common::unique_prefix();
    let reg = etcd_registry(&etcd.url_with(&prefix));
    setup(&reg);
    let made: Vec<_> = (0..3)
        .map(|_| made_machine(reg.apply(&machine("web")).unwrap()))
        .collect();
    let route: ipnet::IpNet = "2001:db8:7::/48".parse().unwrap();
    reg.apply(&Change::AddPeer {
        org: "acme".into(),
        name: "site".into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: common::KEY_B.parse().unwrap(),
        routes: vec![route],
        expires: None,
    })
    .unwrap();
    assert!(reg.check_index().unwrap().is_some());
    reg.apply(&Change::RemoveMachine { id: made[1].id })
        .unwrap();

    as_a_version_without_the_index_left_it(&etcd, &prefix);
    assert_eq!(reg.check_index().unwrap(), None);
    let before = reg.snapshot().unwrap();
    let frame = reg.frame().unwrap();
    assert_eq!(frame, before.clone().framed(), "the frame without an index");
    assert_eq!((frame.peers.len(), frame.machines.len()), (1, 0));
    // The freed slot is found again: the index was built from what the records say.
    let again = made_machine(reg.apply(&machine("web")).unwrap());
    assert_eq!(again.addr, made[1].addr);
    assert!(reg.check_index().unwrap().is_some());
    assert_eq!(reg.snapshot().unwrap().revision.0, before.revision.0 + 1);
    // What the rebuilt index answers besides free slots: keys, routes and counts.
    let err = reg
        .apply(&Change::AddPeer {
            org: "acme".into(),
            name: "other".into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: common::KEY_B.parse().unwrap(),
            routes: vec![],
            expires: None,
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("already used by peer `site`"),
        "{err}"
    );
    let err = reg
        .apply(&Change::AddPeer {
            org: "acme".into(),
            name: "other".into(),
            region: Some("iad".into()),
            gateway: None,
            public_key: "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
                .parse()
                .unwrap(),
            routes: vec!["2001:db8:7:1::/64".parse().unwrap()],
            expires: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("of peer `site`"), "{err}");
    let err = reg
        .apply(&Change::RemoveNode {
            name: "host-a".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("3 machine(s) run there"), "{err}");
    assert!(err.to_string().contains("1 peer(s) use it"), "{err}");
}

#[test]
fn a_write_by_a_version_without_the_index_is_seen_by_the_next_one() {
    let etcd = Etcd::single();
    let prefix = common::unique_prefix();
    let reg = etcd_registry(&etcd.url_with(&prefix));
    setup(&reg);
    let first = made_machine(reg.apply(&machine("web")).unwrap());
    // An older wgtool adds a machine in the next slot, leaving the index as it was.
    let network = registry::OrgNetwork::of(first.addr).unwrap();
    let host = registry::addr::host_of(first.addr);
    let slot = registry::addr::slot_of(first.addr) + 1;
    let theirs = registry::Machine {
        id: "0000000000beef".parse().unwrap(),
        addr: network.slot_addr(host, slot),
        ..first.clone()
    };
    written_by_a_version_without_the_index(
        &etcd,
        &prefix,
        &registry::Record::Machine(theirs.clone()),
    );
    assert_eq!(reg.check_index().unwrap(), None);
    let ours = made_machine(reg.apply(&machine("web")).unwrap());
    assert_eq!(ours.addr, network.slot_addr(host, slot + 1));
    assert!(reg.check_index().unwrap().is_some());
    let snap = reg.snapshot().unwrap();
    assert_eq!(snap.machines.len(), 3);
    assert_eq!(snap.machines[&theirs.id], theirs);
}

#[test]
fn the_index_stays_right_under_concurrent_writers_and_removes() {
    const WRITERS: u64 = 4;
    const EACH: usize = 150;
    let etcd = Etcd::single();
    let url = etcd.url();
    let reg = etcd_registry(&url);
    common::churn::Churn::start(&reg, 1);
    let handles: Vec<_> = (1..=WRITERS)
        .map(|w| {
            let reg = registry::open(&url).unwrap();
            std::thread::spawn(move || {
                let mut churn = common::churn::Churn::join(w);
                for _ in 0..EACH {
                    churn.step(&*reg);
                }
                (churn.applied, churn.refused)
            })
        })
        .collect();
    let mut applied = 0;
    for h in handles {
        let (a, _) = h.join().unwrap();
        applied += a;
    }
    assert!(applied > EACH, "only {applied} writes applied");
    let keys = reg.check_index().unwrap().expect("an index");
    assert!(keys > 0);
    let snap = reg.snapshot().unwrap();
    let addrs: BTreeSet<_> = snap
        .machines
        .values()
        .map(|m| m.addr)
        .chain(snap.peers.values().map(|p| p.addr))
        .collect();
    assert_eq!(
        addrs.len(),
        snap.machines.len() + snap.peers.len(),
        "an address was handed out twice"
    );
}

/// A whole read cuts a large range into narrower spans as it goes (etcd 3.4 walks the whole
/// range of every request): read in pages of 1 or 3, with spans cut after nearly every page,
/// a snapshot and a visit hold exactly what a read in pages of 1,000 holds, and what the
/// registry it was copied from holds; a visit gives the kinds in the order it promises.
#[test]
fn a_registry_read_in_small_pages_and_narrowing_spans_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = registry::open(dir.path().join("r.db").to_str().unwrap()).unwrap();
    setup(&*sqlite);
    for org in ["globex", "initech"] {
        sqlite
            .apply(&Change::CreateOrg { name: org.into() })
            .unwrap();
    }
    for i in 0..240 {
        let org = ["acme", "globex", "initech"][i % 3];
        sqlite
            .apply(&Change::AddMachine {
                org: org.into(),
                app: format!("app-{}", i % 17),
                region: "iad".into(),
                node: "host-a".into(),
                process_group: None,
            })
            .unwrap();
    }
    for i in 0..30 {
        // 32 bytes in base64: 43 characters, the last with its low bits clear, and `=`.
        let key = format!("{:A>42}{}=", i, "A");
        sqlite
            .apply(&Change::AddPeer {
                org: ["acme", "globex"][i % 2].into(),
                name: format!("laptop-{i}"),
                region: Some("iad".into()),
                gateway: None,
                public_key: key.parse().unwrap(),
                routes: vec![],
                expires: None,
            })
            .unwrap();
    }
    sqlite
        .apply(&Change::PeerOrgs {
            a: "acme".into(),
            b: "globex".into(),
        })
        .unwrap();
    let etcd = Etcd::single();
    let url = etcd.url();
    let target = registry::open(&url).unwrap();
    registry::copy(&*sqlite, &*target).unwrap();
    let want = sqlite.snapshot().unwrap();
    let kind = |r: &registry::Record| match r {
        registry::Record::Org(_) => 0,
        registry::Record::Node(_) => 1,
        registry::Record::App(_) => 2,
        registry::Record::Machine(_) => 3,
        registry::Record::Peer(_) => 4,
        registry::Record::Peering(_) => 5,
        registry::Record::Token(_) => 6,
    };
    // The last: pages too large for the answers taken (records are ~100-200 bytes), read
    // again in smaller ones.
    for (page, answers) in [(1, None), (3, None), (1000, None), (1000, Some(1500))] {
        let reg = etcd_registry(&url).reading_pages_of(page);
        let reg = match answers {
            Some(bytes) => reg.taking_answers_of(bytes),
            None => reg,
        };
        assert_eq!(reg.snapshot().unwrap(), want, "pages of {page}");
        let mut seen = Vec::new();
        let revision = reg.visit(&mut |r| seen.push(r)).unwrap();
        assert_eq!(revision, want.revision, "pages of {page}");
        assert!(
            seen.windows(2).all(|w| kind(&w[0]) <= kind(&w[1])),
            "pages of {page}"
        );
        let mut visited = registry::Snapshot {
            revision,
            next_network: want.next_network,
            ..registry::Snapshot::default()
        };
        let records = seen.len();
        seen.into_iter().for_each(|r| visited.put(r));
        assert_eq!(records, want.records().count(), "pages of {page}");
        assert_eq!(visited, want, "pages of {page}");
    }
    // Answers smaller than one record: the read fails, naming the first record it could not
    // take (a snapshot reads its keys in order: apps first).
    let err = etcd_registry(&url)
        .taking_answers_of(40)
        .snapshot()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the value at `/t")
            && err.contains("/apps/acme/app-0` is larger than the 40 bytes an answer may hold"),
        "{err}"
    );
}

/// A whole read decodes pages while later ones arrive. A value that holds no record, read
/// first of many, stops it with an error that names the key, whichever way it is read, and
/// no read hangs behind the decoder that stopped.
#[test]
fn a_value_that_holds_no_record_stops_a_whole_read_and_is_named() {
    let etcd = Etcd::single();
    let prefix = common::unique_prefix();
    let url = etcd.url_with(&prefix);
    let reg = etcd_registry(&url);
    setup(&reg);
    for i in 0..40 {
        reg.apply(&machine(&format!("app{i}"))).unwrap();
    }
    let port = etcd.client_port(0);
    let bad = format!("{prefix}/machines/00000000000000");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .unwrap();
        c.put(
            bad.clone(),
            br#"{"kind":"machine","id":"nope"}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    });
    for page in [1, 1000] {
        let reg = etcd_registry(&url).reading_pages_of(page);
        let Err(Error::Corrupt { message, .. }) = reg.snapshot() else {
            panic!("pages of {page}: a snapshot with a bad value read");
        };
        assert!(
            message.contains(&format!("key `{bad}` does not hold a record")),
            "{message}"
        );
        let Err(Error::Corrupt { message, .. }) = reg.visit(&mut |_| {}) else {
            panic!("pages of {page}: a visit with a bad value read");
        };
        assert!(message.contains(&bad), "{message}");
    }
}

/// The frame reads the small kinds whole, in one answer: 20,000 tokens (about 6 MB) are more
/// than tonic takes by default (4 MiB). The frame holds them all, and a write that reads it
/// (a new token) lands.
#[test]
fn a_frame_larger_than_four_mebibytes_is_read() {
    let etcd = Etcd::single();
    let reg = etcd_registry(&etcd.url());
    let mut snap = registry::Snapshot {
        next_network: 2,
        ..registry::Snapshot::default()
    };
    snap.put(registry::Record::Org(registry::Org {
        name: "acme".into(),
        network: registry::OrgNetwork(1),
    }));
    for i in 0..20_000u64 {
        snap.put(registry::Record::Token(registry::Token {
            id: format!("tok{i:016x}"),
            org: "acme".into(),
            scope: registry::TokenScope::Peer,
            secret_hash: "ab".repeat(32),
            created: 1_700_000_000,
            expires: Some(1_900_000_000),
            max_uses: Some(1),
            uses: 0,
            region: Some("iad".into()),
            name_prefix: Some(format!("ci-runner-{i}-")),
            revoked: None,
        }));
    }
    reg.import(&snap).unwrap();
    let frame = reg.frame().unwrap();
    assert_eq!(frame.tokens.len(), 20_000);
    reg.apply(&Change::CreateToken {
        id: "tokffffffffffffffff".into(),
        org: "acme".into(),
        scope: registry::TokenScope::Peer,
        secret_hash: "00".repeat(32),
        expires: None,
        max_uses: None,
        region: None,
        name_prefix: None,
    })
    .unwrap();
    assert_eq!(reg.frame().unwrap().tokens.len(), 20_001);
}

/// A real etcd refuses a transaction of more than 128 operations. An org that had 130 apps
/// and holds 130 tokens is removed anyway, whole: nothing of it is left, another org's token
/// stays, and the index agrees with the records.
#[test]
fn an_org_with_more_apps_and_tokens_than_one_transaction_holds_is_removed() {
    let etcd = Etcd::single();
    let reg = etcd_registry(&etcd.url());
    setup(&reg);
    reg.apply(&Change::CreateOrg {
        name: "globex".into(),
    })
    .unwrap();
    for i in 0..130 {
        let m = made_machine(reg.apply(&machine(&format!("app{i}"))).unwrap());
        reg.apply(&Change::RemoveMachine { id: m.id }).unwrap();
    }
    let token = |org: &str, i: u64| Change::CreateToken {
        id: format!("tok{i:016x}"),
        org: org.into(),
        scope: registry::TokenScope::Peer,
        secret_hash: "00".repeat(32),
        expires: None,
        max_uses: None,
        region: None,
        name_prefix: None,
    };
    for i in 0..130 {
        reg.apply(&token("acme", i)).unwrap();
    }
    reg.apply(&token("globex", 999)).unwrap();
    let before = reg.snapshot().unwrap();
    assert_eq!((before.apps.len(), before.tokens.len()), (130, 131));
    reg.apply(&Change::RemoveOrg {
        name: "acme".into(),
    })
    .unwrap();
    let after = reg.snapshot().unwrap();
    assert!(!after.orgs.contains_key("acme"));
    assert!(after.apps.is_empty(), "{:?}", after.apps.keys().next());
    let tokens: Vec<&str> = after.tokens.keys().map(String::as_str).collect();
    assert_eq!(tokens, [format!("tok{:016x}", 999)]);
    assert!(reg.check_index().unwrap().is_some(), "the index agrees");
}
