use super::*;
use crate::etcd::reads::{answer_from, Kv, Query};
use crate::model::{Machine, MachineState};

const NET: OrgNetwork = OrgNetwork(0x18);
const HOST: u32 = 0x0a7b_0001;

fn machine(slot: u32) -> Machine {
    Machine {
        id: crate::MachineId::from_bits(u64::from(slot)),
        org: "acme".into(),
        app: "web".into(),
        region: "iad".into(),
        node: "n1".into(),
        process_group: "app".into(),
        state: MachineState::Started,
        addr: NET.slot_addr(HOST, slot),
    }
}

fn snapshot(slots: &[u32]) -> Snapshot {
    let mut snap = Snapshot::default();
    for s in slots {
        snap.put(Record::Machine(machine(*s)));
    }
    snap
}

fn stored(index: &Index, snap: &Snapshot) -> BTreeMap<String, Kv> {
    index
        .build(snap)
        .into_iter()
        .map(|(key, value)| {
            let kv = Kv {
                key: key.clone(),
                value,
                mod_revision: 1,
            };
            (key, kv)
        })
        .collect()
}

/// Answers every read `f` asks from `kv` until it stops asking.
fn settle<T>(kv: &BTreeMap<String, Kv>, mut f: impl FnMut(&Reads) -> Result<T, Stop>) -> T {
    let mut reads = Reads::default();
    for _ in 0..10 {
        let got = f(&reads);
        let missing: Vec<Query> = reads.take_missing();
        if missing.is_empty() {
            return got.expect("no read missing");
        }
        for q in missing {
            reads.answer(q.clone(), answer_from(kv, &q));
        }
    }
    panic!("still reading");
}

fn runs(index: &Index, snap: &Snapshot) -> Vec<(u32, u32)> {
    let prefix = index.runs(NET.0, HOST);
    let mut runs: Vec<(u32, u32)> = index
        .build(snap)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| run_of(&k, &v).unwrap())
        .collect();
    runs.sort();
    runs
}

#[test]
fn runs_are_maximal_and_the_lowest_free_slot_follows_the_first() {
    let index = Index::new("/t/meta/index/v1-x/".into());
    let snap = snapshot(&[1, 2, 3, 5, 7, 8]);
    assert_eq!(runs(&index, &snap), [(1, 3), (5, 5), (7, 8)]);
    let kv = stored(&index, &snap);
    let free = settle(&kv, |r| index.lowest_free(r, NET.0, HOST));
    assert_eq!(free, Some(4));
    let empty = settle(&kv, |r| index.lowest_free(r, NET.0, HOST + 1));
    assert_eq!(empty, Some(1));
}

#[test]
fn edits_split_and_merge_runs_as_a_rebuild_would() {
    let index = Index::new("/t/meta/index/v1-x/".into());
    let cases: &[(&[u32], &[u32], &[u32])] = &[
        // (before, removed, added)
        (&[1, 2, 3, 5, 7, 8], &[], &[4]),
        (&[1, 2, 3, 5, 7, 8], &[2], &[]),
        (&[1, 2, 3, 5, 7, 8], &[1], &[6]),
        (&[1, 2, 3, 5, 7, 8], &[3], &[4]),
        (&[1, 2, 3], &[1, 2, 3], &[]),
        (&[], &[], &[1]),
        (&[2, 3], &[], &[1]),
        (&[1, 3, 5], &[3], &[2, 4]),
    ];
    for (before, removed, added) in cases {
        let snap = snapshot(before);
        let kv = stored(&index, &snap);
        let mut changes = Vec::new();
        for s in *removed {
            let m = Record::Machine(machine(*s));
            changes.extend(RecordChange::new(m.key(), Some(m), None));
        }
        for s in *added {
            let m = Record::Machine(machine(*s));
            changes.extend(RecordChange::new(m.key(), None, Some(m)));
        }
        let edits = settle(&kv, |r| index.edit(r, &changes));
        let mut after: BTreeMap<String, Vec<u8>> =
            kv.into_iter().map(|(k, v)| (k, v.value)).collect();
        for (k, v) in edits {
            match v {
                Some(v) => after.insert(k, v),
                None => after.remove(&k),
            };
        }
        let mut expected = snap.clone();
        for c in &changes {
            match &c.after {
                Some(r) => expected.put(r.clone()),
                None => expected.delete(&c.key),
            }
        }
        assert_eq!(
            after,
            index.build(&expected),
            "{before:?} - {removed:?} + {added:?}"
        );
    }
}

#[test]
fn only_layout_generations_are_read() {
    assert!(Index::readable("v1-0123456789abcdef"));
    for gen in ["v1-", "v1", "v2-0123", "v1-a/b", ""] {
        assert!(!Index::readable(gen), "{gen}");
    }
}
