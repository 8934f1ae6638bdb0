use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;
use crate::random_changes::{random_change, Repeating, Rng};
use crate::sqlite::SqliteRegistry;
use crate::{Registry, Snapshot};

/// A registry after `steps` random changes (tokens among them), and its change log.
fn registry(dir: &Path, seed: u64, steps: usize) -> SqliteRegistry {
    let reg = SqliteRegistry::open(dir.join("r.db").to_str().unwrap()).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for _ in 0..steps {
        let snap = reg.snapshot().unwrap();
        let change = random_change(&mut rng, &snap, true);
        let _ = reg.apply_with(&change, &mut Repeating(Rng(rng.next() | 1)));
    }
    reg
}

fn without_tokens_snap(mut s: Snapshot) -> Snapshot {
    s.tokens.clear();
    s
}

/// What a reader rebuilds from the copy: its records, then its deltas.
fn load(copy: &LocalCopy) -> (Snapshot, Loaded) {
    let mut snap = Snapshot::default();
    let mut deltas = Vec::new();
    let loaded = copy
        .load(&mut |r| snap.put(r), &mut |d| deltas.push(d.clone()))
        .unwrap()
        .expect("a copy");
    let base_revision = Revision(loaded.revision.0 - deltas.len() as u64);
    snap.revision = base_revision;
    for d in &deltas {
        assert!(snap.apply_delta(d), "delta {} applies", d.revision.0);
    }
    snap.next_network = loaded.next_network;
    (snap, loaded)
}

fn write_base_of(copy: &LocalCopy, snap: &Snapshot, last: Option<&Delta>) {
    let mut w = copy.write_base("test://r").unwrap();
    for r in snap.records() {
        w.put(&r).unwrap();
    }
    w.finish(snap.revision, snap.next_network, last).unwrap();
}

#[test]
fn a_base_and_its_journal_load_to_the_registry_without_tokens() {
    for seed in 1..=6 {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path(), seed, 150);
        let at_base = reg.snapshot().unwrap();
        let copy = LocalCopy::new(dir.path().join("copy"));
        write_base_of(&copy, &at_base, None);
        let mut rng = Rng(seed | 1);
        let mut journal = copy.journal().unwrap();
        for _ in 0..150 {
            let snap = reg.snapshot().unwrap();
            let change = random_change(&mut rng, &snap, true);
            let _ = reg.apply_with(&change, &mut Repeating(Rng(rng.next() | 1)));
        }
        let deltas = reg
            .changes_since(at_base.revision, 10_000)
            .unwrap()
            .unwrap();
        assert!(!deltas.is_empty(), "seed {seed}: some changes were made");
        for d in &deltas {
            journal.append(d).unwrap();
        }
        journal.flush().unwrap();
        let (snap, loaded) = load(&copy);
        let now = reg.snapshot().unwrap();
        assert_eq!(snap, without_tokens_snap(now.clone()), "seed {seed}");
        assert_eq!(loaded.revision, now.revision);
        assert_eq!(loaded.location, "test://r");
        assert_eq!(loaded.deltas, deltas.len());
        assert_eq!(loaded.last, Some(digest(deltas.last().unwrap())));
    }
}

#[test]
fn compaction_folds_the_rotated_journal_and_keeps_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 7, 200);
    let first = reg.snapshot().unwrap();
    let copy = LocalCopy::new(dir.path().join("copy"));
    write_base_of(&copy, &first, None);
    let mut journal = copy.journal().unwrap();
    let mut rng = Rng(99);
    let mut have = first.revision;
    for round in 0..3 {
        for _ in 0..120 {
            let snap = reg.snapshot().unwrap();
            let change = random_change(&mut rng, &snap, true);
            let _ = reg.apply_with(&change, &mut Repeating(Rng(rng.next() | 1)));
        }
        for d in reg.changes_since(have, 10_000).unwrap().unwrap() {
            journal.append(&d).unwrap();
            have = d.revision;
        }
        if round < 2 {
            assert!(journal.rotate().unwrap(), "round {round}: rotated");
            assert!(
                !journal.rotate().unwrap(),
                "a second rotation waits for the compaction"
            );
            // What follows the rotation goes to the new journal; the old one is folded.
            copy.compact().unwrap();
            assert!(!copy.old.exists());
            // The base stays in kind order (orgs and nodes before what names them), new
            // records among those of their kind: readers build in this order.
            let mut ranks = Vec::new();
            copy.load(&mut |r| ranks.push(kind_rank(&r)), &mut |_| {})
                .unwrap();
            assert!(
                ranks.windows(2).all(|w| w[0] <= w[1]),
                "round {round}: kinds out of order: {ranks:?}"
            );
            let news = |k: u8| ranks.iter().filter(|r| **r == k).count();
            assert!(news(0) > 1 && news(1) > 0, "the test adds orgs and nodes");
        }
    }
    journal.flush().unwrap();
    let (snap, loaded) = load(&copy);
    assert_eq!(snap, without_tokens_snap(reg.snapshot().unwrap()));
    assert_eq!(loaded.revision, have);
    assert!(loaded.deltas > 0, "the last round is still in the journal");
}

#[test]
fn a_torn_journal_line_ends_the_copy_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 3, 100);
    let copy = LocalCopy::new(dir.path().join("copy"));
    write_base_of(&copy, &Snapshot::default(), None);
    let deltas = reg.changes_since(Revision(0), 10_000).unwrap().unwrap();
    let mut journal = copy.journal().unwrap();
    for d in &deltas {
        journal.append(d).unwrap();
    }
    journal.flush().unwrap();
    drop(journal);
    // Cut the last line in half, as a crash in the middle of a write would.
    let text = fs::read_to_string(&copy.journal).unwrap();
    let cut = text.len() - text.lines().last().unwrap().len() / 2 - 1;
    fs::write(&copy.journal, &text[..cut]).unwrap();
    let (_, loaded) = load(&copy);
    assert_eq!(loaded.revision.0, deltas[deltas.len() - 2].revision.0);
}

#[test]
fn a_base_cut_short_or_of_another_version_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 4, 100);
    let copy = LocalCopy::new(dir.path().join("copy"));
    let snap = reg.snapshot().unwrap();
    assert!(
        snap.machines.len() > 2,
        "the random registry holds machines"
    );
    write_base_of(&copy, &snap, None);
    let whole = fs::read(copy.path()).unwrap();
    let load_err = |bytes: &[u8]| {
        fs::write(copy.path(), bytes).unwrap();
        copy.load(&mut |_| {}, &mut |_| {}).unwrap_err().to_string()
    };
    let err = load_err(&whole[..whole.len() - 3]);
    assert!(err.contains("cut short"), "{err}");
    // The end frame gone whole: the file ends after a record.
    let end_at = whole.len() - 4 - whole.iter().rev().position(|&b| b == END).unwrap() - 1;
    let err = load_err(&whole[..end_at]);
    assert!(err.contains("no end frame"), "{err}");
    let mut extra = whole.clone();
    extra.push(0);
    let err = load_err(&extra);
    assert!(err.contains("follow the end"), "{err}");

    let head_end = whole.iter().position(|&b| b == b'\n').unwrap() + 1;
    let head = String::from_utf8(whole[..head_end].to_vec()).unwrap();
    let mut other = head
        .replacen("\"version\":3", "\"version\":9", 1)
        .into_bytes();
    other.extend_from_slice(&whole[head_end..]);
    let err = load_err(&other);
    assert!(err.contains("version 9"), "{err}");

    // The first record's kind byte (after its 4-byte length) made unknown.
    let mut bad = whole.clone();
    bad[head_end + 4] = b'x';
    let err = load_err(&bad);
    assert!(
        err.contains("record 1") && err.contains("unknown record kind"),
        "{err}"
    );
    // A length past what a frame may be.
    let mut huge = whole.clone();
    huge[head_end..head_end + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = load_err(&huge);
    assert!(err.contains("claims"), "{err}");

    copy.remove().unwrap();
    assert_eq!(copy.load(&mut |_| {}, &mut |_| {}).unwrap(), None);
    assert_eq!(copy.location().unwrap(), None);
}

/// Every kind of record, with every optional field both ways, goes through the binary form.
#[test]
fn every_kind_of_record_reads_back_as_written() {
    use crate::{App, Machine, MachineState, Node, Org, OrgNetwork, Peer, Peering, PublicKey};
    let records = vec![
        Record::Org(Org {
            name: "acme".into(),
            network: OrgNetwork(u32::MAX),
        }),
        Record::Node(Node {
            name: "iad-1".into(),
            region: "iad".into(),
            public_key: PublicKey::from_bytes([0xff; 32]),
            endpoint: "[2001:db8::1]:51820".parse().unwrap(),
            gateway: true,
            host: 7,
        }),
        Record::Node(Node {
            name: "ams-1".into(),
            region: "ams".into(),
            public_key: PublicKey::from_bytes([0; 32]),
            endpoint: "192.0.2.1:1".parse().unwrap(),
            gateway: false,
            host: 0,
        }),
        Record::App(App {
            org: "acme".into(),
            name: "wéb".into(),
        }),
        Record::Machine(Machine {
            id: "0123456789abcd".parse().unwrap(),
            org: "acme".into(),
            app: "web".into(),
            region: "iad".into(),
            node: "iad-1".into(),
            process_group: "app".into(),
            state: MachineState::Stopped,
            addr: "fdaa:0:1:a7b:1::2".parse().unwrap(),
        }),
        Record::Peer(Peer {
            org: "acme".into(),
            name: "site".into(),
            gateway: "iad-1".into(),
            region: "iad".into(),
            public_key: PublicKey::from_bytes([b'p'; 32]),
            addr: "fdaa:0:1:a7b:2::3".parse().unwrap(),
            routes: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            created: -5,
            expires: Some(i64::MAX),
        }),
        Record::Peer(Peer {
            org: "acme".into(),
            name: "laptop".into(),
            gateway: "iad-1".into(),
            region: "iad".into(),
            public_key: PublicKey::from_bytes([b'q'; 32]),
            addr: "fdaa:0:1:a7b:2::4".parse().unwrap(),
            routes: Vec::new(),
            created: 1,
            expires: None,
        }),
        Record::Peering(Peering {
            a: "acme".into(),
            b: "globex".into(),
        }),
    ];
    // Read whole, and as a reader of borrowed machines reads it: the same record, and the
    // same refusal in the same words.
    let by_ref = |buf: &[u8]| {
        let mut got = None;
        codec::decode_ref(buf, &mut |r| got = Some(r.into_record())).map(|()| got.unwrap())
    };
    for r in &records {
        let mut buf = Vec::new();
        assert!(codec::encode(r, &mut buf));
        assert_eq!(codec::decode(&buf).as_ref(), Ok(r));
        assert_eq!(by_ref(&buf).as_ref(), Ok(r));
        // Every shorter prefix is refused, never read as something else or a panic.
        for cut in 0..buf.len() {
            assert!(codec::decode(&buf[..cut]).is_err(), "{r:?} cut at {cut}");
            assert_eq!(by_ref(&buf[..cut]), codec::decode(&buf[..cut]), "{r:?}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(
            by_ref(&longer).unwrap_err().contains("1 bytes after"),
            "{r:?}"
        );
        assert_eq!(by_ref(&longer), codec::decode(&longer));
        // A name that is not UTF-8 (the last byte of the org, `acme`, in each kind that has one).
        if let Some(at) = buf.windows(4).position(|w| w == b"acme") {
            let mut bad = buf.clone();
            bad[at + 3] = 0xff;
            assert!(by_ref(&bad).unwrap_err().contains("not UTF-8"), "{r:?}");
            assert_eq!(by_ref(&bad), codec::decode(&bad));
        }
    }
}

/// A key is written as the base64 text it was written as before keys had a type (so copies
/// of format version 3 written then still load), and text that is not a key is refused.
#[test]
fn a_public_key_is_kept_as_its_base64_text() {
    use crate::Node;
    const KEY: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    let node = |public_key| {
        Record::Node(Node {
            name: "iad-1".into(),
            region: "iad".into(),
            public_key,
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            gateway: false,
            host: 1,
        })
    };
    let mut buf = Vec::new();
    assert!(codec::encode(&node(KEY.parse().unwrap()), &mut buf));
    let at = 1 + (4 + 5) + (4 + 3);
    assert_eq!(buf[at..at + 4], 44u32.to_le_bytes());
    assert_eq!(&buf[at + 4..at + 48], KEY.as_bytes());

    let mut bad = buf.clone();
    bad[at + 4] = b'!';
    let err = codec::decode(&bad).unwrap_err();
    assert!(
        err.contains("public key") && err.contains("not base64"),
        "{err}"
    );
    let mut short = buf[..at].to_vec();
    short.extend_from_slice(&3u32.to_le_bytes());
    short.extend_from_slice(b"abc");
    short.extend_from_slice(&buf[at + 48..]);
    assert!(codec::decode(&short).unwrap_err().contains("public key"));
    assert_eq!(codec::decode(&buf), Ok(node(KEY.parse().unwrap())));
}

/// A machine id is written as the 14 characters it was written as when ids were strings (so
/// copies written then still load), and text that is not an id is refused.
#[test]
fn a_machine_id_is_kept_as_its_14_characters() {
    use crate::{Machine, MachineState};
    const ID: &str = "4d89699c030518";
    let addr: std::net::Ipv6Addr = "fdaa:0:1:a7b:1:0:1:2".parse().unwrap();
    let machine = || {
        Record::Machine(Machine {
            id: ID.parse().unwrap(),
            org: "acme".into(),
            app: "web".into(),
            region: "iad".into(),
            node: "iad-1".into(),
            process_group: "app".into(),
            state: MachineState::Started,
            addr,
        })
    };
    // What the codec wrote when the id was a `String`: each text its length and its bytes.
    let mut old = vec![b'm'];
    for text in [ID, "acme", "web", "iad", "iad-1", "app"] {
        old.extend_from_slice(&(text.len() as u32).to_le_bytes());
        old.extend_from_slice(text.as_bytes());
    }
    old.push(1);
    old.extend_from_slice(&addr.octets());
    let mut buf = Vec::new();
    assert!(codec::encode(&machine(), &mut buf));
    assert_eq!(buf, old);
    assert_eq!(codec::decode(&old), Ok(machine()));

    let mut bad = old.clone();
    bad[5] = b'X';
    let err = codec::decode(&bad).unwrap_err();
    assert!(
        err.contains("machine id `Xd89699c030518`: must be 14 lowercase hex characters"),
        "{err}"
    );
}

#[test]
fn files_are_private_and_an_unfinished_base_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 5, 60);
    for change in [
        crate::Change::CreateOrg {
            name: "tokens".into(),
        },
        crate::Change::CreateToken {
            id: "tok00000000000000a1".into(),
            org: "tokens".into(),
            scope: crate::TokenScope::Peer,
            secret_hash: "ab".repeat(32),
            expires: None,
            max_uses: None,
            region: None,
            name_prefix: None,
        },
    ] {
        reg.apply(&change).unwrap();
    }
    let snap = reg.snapshot().unwrap();
    assert!(!snap.tokens.is_empty(), "the random registry holds tokens");
    let copy = LocalCopy::new(dir.path().join("copy"));
    write_base_of(&copy, &snap, None);
    let mut journal = copy.journal().unwrap();
    // The token's own delta: its change is left out of the journal too.
    let before = Revision(snap.revision.0 - 1);
    let token_delta = reg.changes_since(before, 1).unwrap().unwrap().remove(0);
    assert!(format!("{token_delta:?}").contains("tok00000000000000a1"));
    journal.append(&token_delta).unwrap();
    journal.flush().unwrap();
    let journal_text = fs::read_to_string(&copy.journal).unwrap();
    assert!(
        !journal_text.contains("tok00000000000000a1"),
        "{journal_text}"
    );
    for p in [&copy.base, &copy.journal] {
        let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let bytes = fs::read(copy.path()).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("tok00000000000000a1"), "no token is copied");
    assert_eq!(copy.location().unwrap().as_deref(), Some("test://r"));

    let before = fs::read(copy.path()).unwrap();
    let mut w = copy.write_base("test://other").unwrap();
    w.put(snap.records().next().as_ref().unwrap()).unwrap();
    drop(w);
    assert_eq!(fs::read(copy.path()).unwrap(), before, "the old base stays");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

#[test]
fn a_resumed_journal_is_cut_after_the_loaded_revision_and_appends_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 8, 150);
    let copy = LocalCopy::new(dir.path().join("copy"));
    write_base_of(&copy, &Snapshot::default(), None);
    let deltas = reg.changes_since(Revision(0), 10_000).unwrap().unwrap();
    assert!(deltas.len() > 4);
    let mut journal = copy.journal().unwrap();
    for d in &deltas[..deltas.len() - 1] {
        journal.append(d).unwrap();
    }
    journal.flush().unwrap();
    drop(journal);
    // A crash mid-append: half a line, no newline.
    let mut text = fs::read(&copy.journal).unwrap();
    text.extend_from_slice(b"00000000deadbeef {\"revision\":");
    fs::write(&copy.journal, &text).unwrap();
    let (_, loaded) = load(&copy);
    let at = deltas[deltas.len() - 2].revision;
    assert_eq!(loaded.revision, at);

    // Resuming cuts the torn tail; the last delta appended after it is read back.
    let mut journal = copy.resume_journal(at).unwrap();
    assert_eq!(journal.lines(), (deltas.len() - 1) as u64);
    journal.append(deltas.last().unwrap()).unwrap();
    journal.flush().unwrap();
    let (snap, loaded) = load(&copy);
    assert_eq!(loaded.revision, deltas.last().unwrap().revision);
    assert_eq!(snap, without_tokens_snap(reg.snapshot().unwrap()));

    // Resuming at an earlier revision (a load that stopped at a gap) drops what follows it.
    drop(journal);
    let early = deltas[1].revision;
    let journal = copy.resume_journal(early).unwrap();
    assert_eq!(journal.lines(), 2);
    let (_, loaded) = load(&copy);
    assert_eq!(loaded.revision, early);
}

#[test]
fn a_rotated_journal_left_by_a_crash_is_folded_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path(), 9, 150);
    let copy = LocalCopy::new(dir.path().join("copy"));
    write_base_of(&copy, &Snapshot::default(), None);
    let deltas = reg.changes_since(Revision(0), 10_000).unwrap().unwrap();
    let mut journal = copy.journal().unwrap();
    for d in &deltas {
        journal.append(d).unwrap();
    }
    assert!(journal.rotate().unwrap());
    // The crash: no compaction. Loads still read the rotated journal.
    drop(journal);
    let (snap, loaded) = load(&copy);
    let last = deltas.last().unwrap().revision;
    assert_eq!(loaded.revision, last);
    let journal = copy.resume_journal(last).unwrap();
    assert!(!copy.old.exists(), "folded into the base");
    assert_eq!(journal.lines(), 0);
    let (again, loaded) = load(&copy);
    assert_eq!((again, loaded.revision, loaded.deltas), (snap, last, 0));
}

#[test]
fn histories_that_differ_only_in_a_token_have_different_digests() {
    let token = |hash: &str| crate::Token {
        id: "tok00000000000000a1".into(),
        org: "acme".into(),
        scope: crate::TokenScope::Peer,
        secret_hash: hash.into(),
        created: 1,
        expires: None,
        max_uses: None,
        uses: 0,
        region: None,
        name_prefix: None,
        revoked: None,
    };
    let delta = |hash: &str| Delta {
        revision: Revision(7),
        next_network: 2,
        changes: vec![crate::RecordChange::new(
            RecordKey::Token {
                id: "tok00000000000000a1".into(),
            },
            None,
            Some(Record::Token(token(hash))),
        )
        .unwrap()],
    };
    let (a, b) = (delta(&"ab".repeat(32)), delta(&"cd".repeat(32)));
    assert_eq!(without_tokens(&a), without_tokens(&b));
    assert_ne!(digest(&a), digest(&b));
    assert_eq!(digest(&a), digest(&a.clone()));
}

#[test]
fn stale_temporary_bases_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let copy = LocalCopy::new(dir.path().join("copy"));
    fs::write(dir.path().join("copy.tmp123"), b"half").unwrap();
    fs::write(dir.path().join("other.tmp123"), b"not ours").unwrap();
    copy.remove_stale_temps();
    assert!(!dir.path().join("copy.tmp123").exists());
    assert!(dir.path().join("other.tmp123").exists());
}

/// A registry whose first `changes_since` waits until the test lets it go: the keeper asks it
/// when it finishes a base, so the keeper stalls there as on a stuck disk.
struct Stalling {
    inner: SqliteRegistry,
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Registry for Stalling {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn snapshot(&self) -> crate::Result<Snapshot> {
        self.inner.snapshot()
    }
    fn wait_newer(
        &self,
        than: Revision,
        timeout: std::time::Duration,
    ) -> crate::Result<Option<Revision>> {
        self.inner.wait_newer(than, timeout)
    }
    fn apply(&self, change: &crate::Change) -> crate::Result<crate::Applied> {
        self.inner.apply(change)
    }
    fn import(&self, snapshot: &Snapshot) -> crate::Result<Revision> {
        self.inner.import(snapshot)
    }
    fn changes_since(&self, after: Revision, limit: usize) -> crate::Result<Option<Vec<Delta>>> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        self.inner.changes_since(after, limit)
    }
}

#[test]
fn a_stalled_keeper_never_blocks_deltas_and_its_journal_stops_before_a_dropped_one() {
    let dir = tempfile::tempdir().unwrap();
    let inner = registry(dir.path(), 11, 60);
    let snap = Arc::new(inner.snapshot().unwrap());
    let mut rng = Rng(77);
    for _ in 0..30 {
        let now = inner.snapshot().unwrap();
        let change = random_change(&mut rng, &now, false);
        let _ = inner.apply_with(&change, &mut Repeating(Rng(rng.next() | 1)));
    }
    let later = inner.changes_since(snap.revision, 10_000).unwrap().unwrap();
    assert!(
        later.len() > 10,
        "{} changes after the snapshot",
        later.len()
    );
    let (release, gate) = std::sync::mpsc::channel();
    let reg = Arc::new(Stalling {
        inner,
        gate: std::sync::Mutex::new(Some(gate)),
    });
    let copy = LocalCopy::new(dir.path().join("copy"));
    let keeper = Keeper::with_queue(copy.clone(), reg, 4);

    // The keeper stalls finishing the base; every delta is offered meanwhile, and none waits
    // (a blocked send would hang this test): four are queued, the rest dropped.
    keeper.snapshot(snap.clone());
    for d in &later {
        keeper.delta(Arc::new(d.clone()));
        keeper.flush();
    }
    release.send(()).unwrap();
    keeper.sync();
    // The journal holds the deltas that were queued, and nothing after the first dropped.
    let (loaded_snap, loaded) = load(&copy);
    assert!(
        loaded.deltas < later.len(),
        "{} of {} deltas written: none was dropped?",
        loaded.deltas,
        later.len()
    );
    assert_eq!(loaded.revision.0, snap.revision.0 + loaded.deltas as u64);
    let mut want = (*snap).clone();
    for d in &later[..loaded.deltas] {
        assert!(want.apply_delta(d));
    }
    assert_eq!(loaded_snap, without_tokens_snap(want));

    // After the gap the journal stays stopped, even for the delta that would follow it.
    let journal_len = || fs::metadata(&copy.journal).map(|m| m.len()).unwrap_or(0);
    let before = journal_len();
    keeper.delta(Arc::new(later[loaded.deltas + 1].clone()));
    keeper.delta(Arc::new(later[loaded.deltas].clone()));
    keeper.sync();
    assert_eq!(journal_len(), before);

    // A whole read starts it again.
    let whole = Arc::new(Snapshot {
        revision: later.last().unwrap().revision,
        ..(*snap).clone()
    });
    keeper.snapshot(whole.clone());
    keeper.sync();
    assert_eq!(load(&copy).1.revision, whole.revision);
}

#[test]
fn after_a_failed_whole_read_the_copy_starts_empty_and_keeps_the_deltas_that_follow() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(registry(dir.path(), 5, 80));
    let want = reg.snapshot().unwrap();
    let deltas = reg.changes_since(Revision(0), 10_000).unwrap().unwrap();
    assert_eq!(deltas.last().map(|d| d.revision), Some(want.revision));
    let copy = LocalCopy::new(dir.path().join("copy"));
    let keeper = Keeper::start(copy.clone(), reg.clone());

    // A whole read fails half-way: the reader starts empty at revision 0, then follows the
    // registry's log from its first change.
    keeper.begin();
    keeper.records(want.records().take(3).collect());
    keeper.abort();
    for d in deltas {
        keeper.delta(Arc::new(d));
    }
    keeper.sync();
    let (loaded_snap, loaded) = load(&copy);
    assert_eq!(loaded.revision, want.revision);
    assert_eq!(loaded_snap, without_tokens_snap(want.clone()));

    // Where a copy exists, a failed read leaves it as it is.
    let keeper = Keeper::start(copy.clone(), reg.clone());
    keeper.begin();
    keeper.abort();
    keeper.sync();
    assert_eq!(load(&copy).0, without_tokens_snap(want));
}

/// A whole read handed on as dnsd hands it (machines in batches, other records whole, in the
/// order read) makes the copy of the registry.
#[test]
fn a_whole_read_given_in_machine_batches_and_records_is_the_copy() {
    use crate::Kind;

    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(registry(dir.path(), 7, 150));
    let want = reg.snapshot().unwrap();
    assert!(want.machines.len() > 3, "{}", want.machines.len());
    let copy = LocalCopy::new(dir.path().join("copy"));
    let keeper = Keeper::start(copy.clone(), reg.clone());
    keeper.begin();
    let mut chunker = crate::Chunker::new(3);
    let mut keep = |c: crate::Chunk| match c {
        crate::Chunk::Machines(b) => keeper.machines(b),
        crate::Chunk::Records(r) => keeper.records(r),
    };
    let revision = reg
        .visit_refs(&Kind::RECORDS, &mut |r| {
            chunker.put(r, &mut keep);
        })
        .unwrap();
    chunker.flush(&mut keep);
    keeper.end(revision);
    keeper.sync();
    let (snap, loaded) = load(&copy);
    assert_eq!(loaded.revision, want.revision);
    assert_eq!(snap, without_tokens_snap(want));
    // In the order read, as a whole read's readers build (orgs and nodes first).
    let mut read = Vec::new();
    reg.visit(&mut |r| read.push(r)).unwrap();
    read.retain(|r| r.kind() != Kind::Token);
    let mut kept = Vec::new();
    copy.load_refs(&mut |r| kept.push(r.into_record()), &mut |_| {})
        .unwrap();
    assert_eq!(kept, read);
}

#[test]
fn settling_at_a_stop_waits_for_the_writer_but_not_for_a_stalled_one() {
    let dir = tempfile::tempdir().unwrap();
    let inner = registry(dir.path(), 12, 40);
    let snap = Arc::new(inner.snapshot().unwrap());
    let (release, gate) = std::sync::mpsc::channel();
    let reg = Arc::new(Stalling {
        inner,
        gate: std::sync::Mutex::new(Some(gate)),
    });
    let copy = LocalCopy::new(dir.path().join("copy"));
    // A queue of one: the stalled base holds the writer, a delta takes the one place, and
    // the settle's own job finds the queue full until the writer is let go.
    let keeper = Keeper::with_queue(copy.clone(), reg, 1);
    keeper.snapshot(snap.clone());
    keeper.flush();
    let started = std::time::Instant::now();
    assert!(!keeper.settle(std::time::Duration::from_millis(200)));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    release.send(()).unwrap();
    assert!(keeper.settle(std::time::Duration::from_secs(20)));
    assert_eq!(load(&copy).1.revision, snap.revision);
}
