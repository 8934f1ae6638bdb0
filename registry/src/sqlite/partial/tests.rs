//! The partial read is only right if planning against it is planning against everything:
//! random registries, random changes of every kind (most of them refused for one reason or
//! another), and each planned both ways inside the same file.

use std::collections::BTreeMap;

use super::*;
use crate::change::{plan, plan_with, Write};
use crate::random_changes::{kind, random_change, Repeating, Rng};
use crate::sqlite::SqliteRegistry;
use crate::Registry;

#[test]
fn planning_on_the_partial_read_equals_planning_on_everything() {
    // (kind) -> (planned, refused)
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // Records in the fullest /80 at the end of a run, and holes seen below its top.
    let (mut fullest, mut holes) = (0usize, 0usize);
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let reg = SqliteRegistry::open(path.to_str().unwrap()).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for step in 0..400 {
            let full = reg.snapshot().unwrap();
            let change = random_change(&mut rng, &full, true);
            let ctx = Repeating(Rng(rng.next() | 1));
            let whole = plan(&full, &change, &mut ctx.clone());
            {
                let conn = reg.lock();
                let read = reg.reader(&conn);
                let part = snapshot_for(&read, &change).unwrap();
                let partial = plan_with(&part, &read, &change, &mut ctx.clone());
                let at = format!("seed {seed} step {step}: {change:?}");
                match (&whole, &partial) {
                    (Ok(w), Ok(p)) => {
                        assert_eq!(w, p, "{at}");
                        for write in &w.writes {
                            let key = match write {
                                Write::Put(r) => r.key(),
                                Write::Delete(k) => k.clone(),
                            };
                            assert_eq!(part.get(&key), full.get(&key), "{at}: before of {key:?}");
                        }
                    }
                    (Err(w), Err(p)) => assert_eq!(format!("{w:?}"), format!("{p:?}"), "{at}"),
                    _ => panic!("{at}: whole {whole:?}, partial {partial:?}"),
                }
            }
            let counts = seen.entry(kind(&change)).or_default();
            match whole {
                Ok(_) => counts.0 += 1,
                Err(_) => counts.1 += 1,
            }
            // The file takes the same plan (the write path reads partially too).
            let applied = reg.apply_with(&change, &mut ctx.clone());
            assert_eq!(applied.is_ok(), whole.is_ok(), "seed {seed} step {step}");
            if let Ok(w) = whole {
                let mut expected = full.clone();
                if !w.writes.is_empty() || w.next_network.is_some() {
                    w.apply_to(&mut expected);
                }
                assert_eq!(reg.snapshot().unwrap(), expected, "seed {seed} step {step}");
            }
        }
        let end = reg.snapshot().unwrap();
        let mut per_80: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for a in end
            .machines
            .values()
            .map(|m| m.addr)
            .chain(end.peers.values().map(|p| p.addr))
        {
            let net = OrgNetwork::of(a).map_or(0, |n| n.0);
            per_80
                .entry((net, addr::host_of(a)))
                .or_default()
                .push(addr::slot_of(a));
        }
        for slots in per_80.values() {
            fullest = fullest.max(slots.len());
            let top = slots.iter().max().copied().unwrap_or(0) as usize;
            holes += top - slots.len();
        }
    }
    assert!(
        fullest >= 10 && holes >= 20,
        "fullest /80 {fullest}, holes {holes}"
    );
    for k in [
        "CreateOrg",
        "RemoveOrg",
        "AddNode",
        "RegisterNode",
        "RemoveNode",
        "AddMachine",
        "SetMachineState",
        "MoveMachine",
        "RemoveMachine",
        "AddPeer",
        "RemovePeer",
        "PeerOrgs",
        "UnpeerOrgs",
        "CreateToken",
        "RevokeToken",
        "WithToken",
    ] {
        let (planned, refused) = seen.get(k).copied().unwrap_or_default();
        assert!(
            planned > 0 && refused > 0,
            "{k}: {planned} planned, {refused} refused"
        );
    }
}
