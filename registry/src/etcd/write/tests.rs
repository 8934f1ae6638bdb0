//! A write on etcd reads part of the registry; it is only right if it plans what planning on
//! everything plans and leaves the index exactly as building it from the records would. A
//! map stands in for etcd: random registries, random changes of every kind, each written
//! through `Writer::step` and checked against `change::plan` on the whole snapshot.

use std::collections::BTreeMap;

use super::*;
use crate::change::{plan, Context};
use crate::etcd::reads::answer_from;
use crate::model::Snapshot;
use crate::random_changes::{kind, random_change, Repeating, Rng};

/// etcd as a map: a key's value and mod-revision, one revision per commit.
#[derive(Default)]
struct FakeEtcd {
    kv: BTreeMap<String, Kv>,
    revision: i64,
}

impl FakeEtcd {
    fn mark_mod(&self, keys: &Keys) -> i64 {
        self.kv
            .get(&keys.revision())
            .map_or(0, |kv| kv.mod_revision)
    }

    fn commit(&mut self, keys: &Keys, mark_mod: i64, ops: Vec<Op>) -> bool {
        if self.mark_mod(keys) != mark_mod {
            return false;
        }
        self.revision += 1;
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    let kv = Kv {
                        key: key.clone(),
                        value,
                        mod_revision: self.revision,
                    };
                    self.kv.insert(key, kv);
                }
                Op::Delete(key) => {
                    self.kv.remove(&key);
                }
                Op::DeleteRange(start, end) => self.kv.retain(|k, _| *k < start || *k >= end),
            }
        }
        true
    }

    fn mark(&self, keys: &Keys) -> Option<RevisionMark> {
        let kv = self.kv.get(&keys.revision())?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    /// The records, as a snapshot reads them (the change log and the index left out).
    fn snapshot(&self, keys: &Keys) -> Snapshot {
        let kvs: Vec<(String, Vec<u8>, i64)> = self
            .kv
            .values()
            .filter(|kv| !kv.key.starts_with(&keys.index_start()))
            .filter(|kv| !kv.key.starts_with(&keys.log_start()))
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision))
            .collect();
        keys::decode(keys, &kvs).unwrap().0
    }

    /// Every index key of every generation.
    fn index(&self, keys: &Keys) -> BTreeMap<String, Vec<u8>> {
        self.kv
            .values()
            .filter(|kv| kv.key.starts_with(&keys.index_start()))
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect()
    }
}

struct Written {
    result: Result<Applied>,
    rounds: usize,
    queries: Vec<Query>,
}

fn write(etcd: &mut FakeEtcd, writer: &Writer, change: &Change, ctx: impl Context) -> Written {
    let mut reads = Reads::default();
    let mut replay = Replay::new(ctx);
    let mut asked = Vec::new();
    let mut rounds = 0;
    while rounds < READ_ROUNDS {
        replay.rewind();
        let step = writer.step(change, &reads, &mut replay, "0123456789abcdef");
        let done = |result| Written {
            result,
            rounds,
            queries: asked.clone(),
        };
        match step {
            Err(e) => return done(Err(e)),
            Ok(Step::Read(queries)) => {
                for q in queries {
                    reads.answer(q.clone(), answer_from(&etcd.kv, &q));
                    asked.push(q);
                }
                rounds += 1;
            }
            Ok(Step::NoIndex) => panic!("a registry made by this code has an index"),
            Ok(Step::Unchanged(applied)) => return done(Ok(applied)),
            Ok(Step::Commit {
                mark_mod,
                ops,
                applied,
                partial,
            }) => {
                assert!(ops.len() <= MAX_TXN_OPS, "{} operations", ops.len());
                assert!(
                    etcd.commit(writer.keys, mark_mod, ops),
                    "nobody else writes"
                );
                if partial {
                    reads = Reads::default();
                    asked.clear();
                    rounds = 0;
                    continue;
                }
                return done(Ok(applied));
            }
        }
    }
    panic!("{change:?} still reading after {READ_ROUNDS} rounds");
}

const READ_ROUNDS: usize = 16;

/// A writer on the fake etcd, keeping the last 50 revisions' changes.
fn fake_writer(keys: &Keys) -> Writer<'_> {
    Writer {
        keys,
        location: "fake",
        keep_changes: 50,
    }
}

#[test]
fn a_write_reads_part_and_plans_what_planning_on_everything_plans() {
    let keys = Keys::new("/t");
    let writer = fake_writer(&keys);
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // (rounds of reads) -> writes
    let mut rounds: BTreeMap<usize, usize> = BTreeMap::new();
    for seed in 1..=12u64 {
        let mut etcd = FakeEtcd::default();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for step in 0..400 {
            let full = etcd.snapshot(&keys);
            let change = random_change(&mut rng, &full, true);
            let ctx = Repeating(Rng(rng.next() | 1));
            let at = format!("seed {seed} step {step}: {change:?}");
            let whole = plan(&full, &change, &mut ctx.clone());
            let written = write(&mut etcd, &writer, &change, ctx.clone());
            *rounds.entry(written.rounds).or_default() += 1;
            for q in &written.queries {
                // Nothing grows with the machines or peers of the registry is read whole.
                if let Query::Prefix(p) = q {
                    for folder in ["/t/machines/", "/t/peers/", "/t/apps/", "/t/tokens/"] {
                        assert_ne!(p, folder, "{at}");
                    }
                    assert!(
                        p != "/t/meta/index/" && !p.ends_with("/count/"),
                        "{at}: {p}"
                    );
                }
            }
            match (&whole, &written.result) {
                (Ok(w), Ok(a)) => {
                    assert_eq!(w.result, a.record, "{at}");
                    let mut expected = full.clone();
                    if !w.writes.is_empty() || w.next_network.is_some() {
                        w.apply_to(&mut expected);
                    }
                    assert_eq!(etcd.snapshot(&keys), expected, "{at}");
                    assert_eq!(a.revision, expected.revision, "{at}");
                }
                (Err(w), Err(a)) => assert_eq!(format!("{w:?}"), format!("{a:?}"), "{at}"),
                _ => panic!("{at}: whole {whole:?}, written {:?}", written.result),
            }
            let counts = seen.entry(kind(&change)).or_default();
            match whole {
                Ok(_) => counts.0 += 1,
                Err(_) => counts.1 += 1,
            }
            // The index holds exactly what the records make, in the mark's generation only.
            if let Some(gen) = etcd.mark(&keys).and_then(|m| m.index) {
                let built = Index::new(keys.index(&gen)).build(&etcd.snapshot(&keys));
                assert_eq!(etcd.index(&keys), built, "{at}");
            }
        }
    }
    // Each round is one request to etcd. More than four only when the test's randomness
    // draws a taken machine id again and again (each draw is looked up).
    let total: usize = rounds.values().sum();
    let over: usize = rounds.range(5..).map(|(_, n)| n).sum();
    assert!(over * 50 < total, "rounds of reads: {rounds:?}");
    eprintln!("rounds of reads: {rounds:?}");
    for (k, (planned, refused)) in &seen {
        assert!(*planned > 0 || *refused > 0, "{k}");
    }
    assert!(seen.len() >= 16, "{seen:?}");
}

/// etcd holds at most 128 operations in a transaction. An org that had 300 apps and has 250
/// tokens goes anyway: its apps in one range, its tokens 60 at a time in writes of their
/// own until the rest fits with the org; every transaction within the limit, and the end the
/// whole plan's.
#[test]
fn an_org_with_more_apps_and_tokens_than_a_transaction_holds_is_removed() {
    let keys = Keys::new("/t");
    let writer = fake_writer(&keys);
    let mut etcd = FakeEtcd::default();
    let mut ctx = Repeating(Rng(5));
    let mut apply = |etcd: &mut FakeEtcd, change: Change| {
        let written = write(etcd, &writer, &change, Repeating(Rng(ctx.random_u64() | 1)));
        written.result.unwrap()
    };
    for org in ["acme", "acme2"] {
        apply(&mut etcd, Change::CreateOrg { name: org.into() });
    }
    for i in 0..300 {
        let app = crate::model::App {
            org: "acme".into(),
            name: format!("app{i}"),
        };
        let ops = vec![record_op(&keys, &Record::App(app))];
        assert!(etcd.commit(&keys, etcd.mark_mod(&keys), ops));
    }
    for (o, org, n) in [(1u64, "acme", 250), (2, "acme2", 2)] {
        for i in 0..n {
            apply(
                &mut etcd,
                Change::CreateToken {
                    id: format!("tok{:016x}", o << 32 | i),
                    org: org.into(),
                    scope: crate::model::TokenScope::Peer,
                    secret_hash: "00".repeat(32),
                    expires: None,
                    max_uses: None,
                    region: None,
                    name_prefix: None,
                },
            );
        }
    }
    let before = etcd.snapshot(&keys);
    assert_eq!((before.apps.len(), before.tokens.len()), (300, 252));
    let remove = Change::RemoveOrg {
        name: "acme".into(),
    };
    let whole = plan(&before, &remove, &mut Repeating(Rng(1))).unwrap();
    let applied = apply(&mut etcd, remove);
    let mut expected = before.clone();
    whole.apply_to(&mut expected);
    let after = etcd.snapshot(&keys);
    // Three writes of 60 tokens, then the org's with the other 70.
    assert_eq!(after.revision.0, before.revision.0 + 4);
    assert_eq!(applied.revision, after.revision);
    expected.revision = after.revision;
    assert_eq!(after, expected);
    assert_eq!(after.tokens.len(), 2, "acme2's stay");
    let gen = etcd.mark(&keys).and_then(|m| m.index).unwrap();
    let built = Index::new(keys.index(&gen)).build(&after);
    assert_eq!(etcd.index(&keys), built, "the index agrees");
}

#[test]
fn a_mark_without_an_index_asks_for_one_to_be_built() {
    let keys = Keys::new("/t");
    let writer = fake_writer(&keys);
    let mut etcd = FakeEtcd::default();
    let create = Change::CreateOrg {
        name: "acme".into(),
    };
    let ctx = Repeating(Rng(1));
    write(&mut etcd, &writer, &create, ctx.clone())
        .result
        .unwrap();
    // What a version without an index leaves: the same mark, less its generation.
    let mut mark = etcd.mark(&keys).unwrap();
    assert!(mark.index.as_deref().is_some_and(Index::readable));
    mark.index = None;
    let ops = vec![Op::Put(keys.revision(), serde_json::to_vec(&mark).unwrap())];
    assert!(etcd.commit(&keys, etcd.mark_mod(&keys), ops));
    let mut reads = Reads::default();
    let mut replay = Replay::new(ctx);
    let remove = Change::RemoveOrg {
        name: "acme".into(),
    };
    for _ in 0..READ_ROUNDS {
        match writer.step(&remove, &reads, &mut replay, "w").unwrap() {
            Step::Read(queries) => {
                for q in queries {
                    reads.answer(q.clone(), answer_from(&etcd.kv, &q));
                }
            }
            Step::NoIndex => return,
            other => panic!("{other:?}"),
        }
    }
    panic!("no NoIndex");
}

#[test]
fn replay_gives_each_run_the_same_values() {
    let mut replay = Replay::new(Repeating(Rng(7)));
    let first: Vec<u64> = (0..3).map(|_| replay.random_u64()).collect();
    let now = replay.now_unix();
    replay.rewind();
    let again: Vec<u64> = (0..4).map(|_| replay.random_u64()).collect();
    assert_eq!(first[..], again[..3]);
    assert_eq!(replay.now_unix(), now);
}
