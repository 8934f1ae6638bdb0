//! Random registries and random changes of every kind, most of them refused for one reason
//! or another, for tests that compare a backend's way of planning with planning on everything.

use crate::change::{Change, Context, NodeSpec};
use crate::key::PublicKey;
use crate::machine_id::MachineId;
use crate::model::{MachineState, Snapshot, TokenScope};

pub(crate) const NOW: i64 = 1_700_000_000;

/// xorshift64*: small, seeded, good enough to pick test cases.
#[derive(Clone)]
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Randomness that often repeats, so that machine ids collide and are drawn again, and a
/// fixed clock.
#[derive(Clone)]
pub(crate) struct Repeating(pub Rng);

impl Context for Repeating {
    fn random_u64(&mut self) -> u64 {
        if self.0.chance(50) {
            self.0.next() % 24
        } else {
            self.0.next()
        }
    }

    fn now_unix(&self) -> i64 {
        NOW
    }
}

const ORGS: &[&str] = &["acme", "globex", "initech", "Bad"];
const NODES: &[&str] = &["n1", "n2", "n3", "n4", "n5"];
const REGIONS: &[&str] = &["iad", "ord", "xxx"];
const APPS: &[&str] = &["web", "db", "Web"];
const PEERS: &[&str] = &["p1", "p2", "p3", "p4", "p5", "p6"];
const TOKENS: &[&str] = &["tok00000000000000a1", "tok00000000000000a2", "tokbad"];
const ROUTES: &[&str] = &[
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:2::/48",
    "fd00:1::/64",
    "10.0.0.0/24",
    "192.168.1.0/24",
    "fdaa::/16",
];

fn key(i: usize) -> PublicKey {
    PublicKey::from_bytes([i as u8 + 1; 32])
}

fn hash(i: usize) -> String {
    format!("{:064x}", i + 1)
}

fn some<T: Clone>(rng: &mut Rng, items: &[T]) -> Option<T> {
    rng.chance(50).then(|| rng.pick(items).clone())
}

/// A machine's id, or one that no machine is likely to have (a malformed one can no longer be
/// written). Draws as often as when the second of those was malformed, so that a seed makes
/// the same changes as before.
fn machine_id(rng: &mut Rng, snap: &Snapshot) -> MachineId {
    let unknown = [MachineId::from_bits(1), MachineId::from_bits(u64::MAX)];
    if snap.machines.is_empty() || rng.chance(15) {
        return *rng.pick(&unknown);
    }
    let i = rng.below(snap.machines.len());
    snap.machines.keys().nth(i).copied().unwrap_or(unknown[0])
}

pub(crate) fn random_change(rng: &mut Rng, snap: &Snapshot, with_token: bool) -> Change {
    // Well-formed adds and removals often, so that /80s fill up and get holes.
    if let Some(change) = rng.chance(45).then(|| well_formed(rng, snap)).flatten() {
        return change;
    }
    let kinds = if with_token { 18 } else { 17 };
    let kind = rng.below(kinds);
    change_of_kind(rng, snap, kind)
}

/// A machine or peer added where it can be, or an existing one removed.
fn well_formed(rng: &mut Rng, snap: &Snapshot) -> Option<Change> {
    let org = snap
        .orgs
        .keys()
        .nth(rng.below(snap.orgs.len().max(1)))?
        .clone();
    let node = snap
        .nodes
        .values()
        .nth(rng.below(snap.nodes.len().max(1)))?
        .clone();
    Some(match rng.below(10) {
        0..=4 => Change::AddMachine {
            org,
            app: s(rng.pick(&["web", "db"])),
            region: node.region,
            node: node.name,
            process_group: None,
        },
        5..=6 => {
            let n = rng.below(40);
            Change::AddPeer {
                org,
                name: format!("w{n}"),
                region: Some(node.region),
                gateway: None,
                public_key: key(20 + n),
                routes: vec![],
                expires: None,
            }
        }
        7..=8 => Change::RemoveMachine {
            id: machine_id(rng, snap),
        },
        _ => {
            let p = snap
                .peers
                .keys()
                .nth(rng.below(snap.peers.len().max(1)))?
                .clone();
            Change::RemovePeer {
                org: p.0,
                name: p.1,
            }
        }
    })
}

fn s(x: &&str) -> String {
    x.to_string()
}

fn change_of_kind(rng: &mut Rng, snap: &Snapshot, kind: usize) -> Change {
    match kind {
        0 => Change::CreateOrg {
            name: s(rng.pick(ORGS)),
        },
        1 => Change::RemoveOrg {
            name: s(rng.pick(ORGS)),
        },
        k @ (2 | 3) => {
            let spec = NodeSpec {
                name: s(rng.pick(NODES)),
                region: s(rng.pick(REGIONS)),
                // A key no other draw makes (a malformed one can no longer be written).
                public_key: if rng.chance(10) {
                    PublicKey::from_bytes([0; 32])
                } else {
                    key(rng.below(10))
                },
                endpoint: if rng.chance(5) {
                    "0.0.0.0:1".parse().unwrap()
                } else {
                    "192.0.2.1:51820".parse().unwrap()
                },
                gateway: rng.chance(60),
            };
            if k == 2 {
                Change::AddNode(spec)
            } else {
                Change::RegisterNode(spec)
            }
        }
        4 => Change::RemoveNode {
            name: s(rng.pick(NODES)),
        },
        5 | 6 => Change::AddMachine {
            org: s(rng.pick(ORGS)),
            app: s(rng.pick(APPS)),
            region: s(rng.pick(REGIONS)),
            node: s(rng.pick(NODES)),
            process_group: some(rng, &["worker".to_string()]),
        },
        7 => Change::SetMachineState {
            id: machine_id(rng, snap),
            state: *rng.pick(&[MachineState::Started, MachineState::Stopped]),
        },
        8 => Change::MoveMachine {
            id: machine_id(rng, snap),
            node: s(rng.pick(NODES)),
        },
        9 => Change::RemoveMachine {
            id: machine_id(rng, snap),
        },
        10 | 11 => {
            let routes = (0..rng.below(3))
                .map(|_| rng.pick(ROUTES).parse().unwrap())
                .collect();
            Change::AddPeer {
                org: s(rng.pick(ORGS)),
                name: s(rng.pick(PEERS)),
                region: some(rng, REGIONS).map(|r| r.to_string()),
                gateway: some(rng, NODES).map(|g| g.to_string()),
                public_key: key(rng.below(10)),
                routes,
                expires: *rng.pick(&[None, Some(NOW + 100), Some(NOW - 1)]),
            }
        }
        12 => Change::RemovePeer {
            org: s(rng.pick(ORGS)),
            name: s(rng.pick(PEERS)),
        },
        13 => Change::PeerOrgs {
            a: s(rng.pick(ORGS)),
            b: s(rng.pick(ORGS)),
        },
        14 => Change::UnpeerOrgs {
            a: s(rng.pick(ORGS)),
            b: s(rng.pick(ORGS)),
        },
        15 => Change::CreateToken {
            id: s(rng.pick(TOKENS)),
            org: s(rng.pick(ORGS)),
            scope: *rng.pick(&[TokenScope::Peer, TokenScope::Admin]),
            secret_hash: if rng.chance(10) {
                "short".into()
            } else {
                hash(rng.below(2))
            },
            expires: None,
            max_uses: *rng.pick(&[None, Some(2), Some(0)]),
            region: some(rng, &["iad".to_string()]),
            name_prefix: some(rng, &["p".to_string()]),
        },
        16 => Change::RevokeToken {
            id: s(rng.pick(TOKENS)),
        },
        _ => {
            // Mostly a stored token with its own secret, making a change of its own org's
            // (a peer token's kinds more often than chance), so that many are let through.
            let nested = rng.chance(5);
            let mut change = if rng.chance(60) {
                let kind = *rng.pick(&[5, 7, 10, 10, 11, 12, 15, 16]);
                change_of_kind(rng, snap, kind)
            } else {
                random_change(rng, snap, nested)
            };
            let stored = (!snap.tokens.is_empty() && rng.chance(80))
                .then(|| snap.tokens.values().nth(rng.below(snap.tokens.len())))
                .flatten();
            let (id, secret_hash) = match stored {
                Some(t) if rng.chance(90) => (t.id.clone(), t.secret_hash.clone()),
                Some(t) => (t.id.clone(), hash(7)),
                None => (s(rng.pick(TOKENS)), hash(rng.below(2))),
            };
            if let (Some(t), true) = (stored, rng.chance(80)) {
                set_org(&mut change, &t.org);
            }
            Change::WithToken {
                id,
                secret_hash,
                change: Box::new(change),
            }
        }
    }
}

/// Makes `change` one of `org`'s, where it names an org.
fn set_org(change: &mut Change, to: &str) {
    match change {
        Change::AddMachine { org, .. }
        | Change::AddPeer { org, .. }
        | Change::RemovePeer { org, .. }
        | Change::CreateToken { org, .. } => *org = to.to_string(),
        _ => {}
    }
}

/// The change's kind, for counting what the test covered.
pub(crate) fn kind(change: &Change) -> String {
    let debug = format!("{change:?}");
    let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
    debug[..end].to_string()
}
