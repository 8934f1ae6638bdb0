use std::net::SocketAddr;
use std::time::Instant;

use registry::change::{plan, Context, Write};
use registry::{Change, MachineState, NodeSpec, RecordChange, Revision};

use super::*;
use crate::core::{Core, Options, Transmit};
use crate::sync::{apply, desired, peer_state, Desired};

/// Seeded randomness and a clock the test moves.
struct Ctx {
    state: u64,
    now: i64,
}

impl Ctx {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn key(&mut self) -> registry::PublicKey {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        k.into()
    }
}

impl Context for Ctx {
    fn random_u64(&mut self) -> u64 {
        self.next()
    }

    fn now_unix(&self) -> i64 {
        self.now
    }
}

const NODES: [(&str, bool); 5] = [
    ("gw1", true),
    ("gw2", true),
    ("n1", false),
    ("n2", false),
    ("n3", false),
];
const ORGS: [&str; 3] = ["acme", "beta", "gamma"];

fn pick<'a, T>(ctx: &mut Ctx, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    items.get(ctx.below(items.len() as u64) as usize)
}

fn random_change(s: &Snapshot, ctx: &mut Ctx) -> Change {
    let org = ORGS[ctx.below(3) as usize].to_string();
    let machines: Vec<registry::MachineId> = s.machines.keys().copied().collect();
    let peers: Vec<(String, String)> = s.peers.keys().cloned().collect();
    match ctx.below(100) {
        0..=4 => Change::CreateOrg { name: org },
        5 => Change::RemoveOrg { name: org },
        6..=10 => {
            let (name, gateway) = NODES[ctx.below(5) as usize];
            let i = ctx.below(200) as u8 + 1;
            Change::RegisterNode(NodeSpec {
                name: name.into(),
                region: "iad".into(),
                public_key: match s.nodes.get(name) {
                    // Mostly the same key: a restart moves the endpoint only.
                    Some(n) if ctx.below(4) != 0 => n.public_key,
                    _ => ctx.key(),
                },
                endpoint: SocketAddr::from(([10, 0, 0, i], 51820)),
                gateway,
            })
        }
        11 => Change::RemoveNode {
            name: NODES[ctx.below(5) as usize].0.into(),
        },
        12..=39 => Change::AddMachine {
            org,
            app: format!("app{}", ctx.below(4)),
            region: "iad".into(),
            node: NODES[ctx.below(5) as usize].0.into(),
            process_group: None,
        },
        40..=47 => match pick(ctx, &machines).copied() {
            Some(id) => Change::SetMachineState {
                id,
                state: if ctx.below(2) == 0 {
                    MachineState::Started
                } else {
                    MachineState::Stopped
                },
            },
            None => Change::CreateOrg { name: org },
        },
        48..=57 => match pick(ctx, &machines).copied() {
            Some(id) => Change::MoveMachine {
                id,
                node: NODES[ctx.below(5) as usize].0.into(),
            },
            None => Change::CreateOrg { name: org },
        },
        58..=67 => match pick(ctx, &machines).copied() {
            Some(id) => Change::RemoveMachine { id },
            None => Change::CreateOrg { name: org },
        },
        68..=85 => {
            let i = ctx.below(1000);
            let mut routes = Vec::new();
            if ctx.below(3) == 0 {
                routes.push(format!("2001:db8:{i:x}::/48").parse().unwrap());
            }
            if ctx.below(3) == 0 {
                routes.push(format!("10.{}.0.0/24", ctx.below(4)).parse().unwrap());
            }
            let gateway = if ctx.below(2) == 0 { "gw1" } else { "gw2" };
            Change::AddPeer {
                org,
                name: format!("p{i}"),
                region: None,
                gateway: Some(gateway.into()),
                public_key: ctx.key(),
                routes,
                expires: (ctx.below(3) == 0).then(|| ctx.now + 1 + ctx.below(20) as i64),
            }
        }
        86..=93 => match pick(ctx, &peers).cloned() {
            Some((org, name)) => Change::RemovePeer { org, name },
            None => Change::CreateOrg { name: org },
        },
        94..=96 => Change::PeerOrgs {
            a: org,
            b: ORGS[ctx.below(3) as usize].into(),
        },
        _ => Change::UnpeerOrgs {
            a: org,
            b: ORGS[ctx.below(3) as usize].into(),
        },
    }
}

/// Applies `change` to `s` if the registry would, and returns the delta it makes.
fn step(s: &mut Snapshot, change: &Change, ctx: &mut Ctx) -> Option<Delta> {
    let p = plan(s, change, ctx).ok()?;
    if p.writes.is_empty() && p.next_network.is_none() {
        return None;
    }
    let mut changes = Vec::new();
    for w in &p.writes {
        let (key, after) = match w {
            Write::Put(r) => (r.key(), Some(r.clone())),
            Write::Delete(k) => (k.clone(), None),
        };
        let before = s.get(&key);
        match &after {
            Some(r) => s.put(r.clone()),
            None => s.delete(&key),
        }
        changes.extend(RecordChange::new(key, before, after));
    }
    if let Some(n) = p.next_network {
        s.next_network = n;
    }
    s.revision.0 += 1;
    Some(Delta {
        revision: s.revision,
        next_network: s.next_network,
        changes,
    })
}

/// `desired`'s output with its lists in the model's order.
fn normalised(mut d: Desired) -> Desired {
    d.sites.sort();
    d.peerings.sort();
    d
}

struct Null;

impl Transmit for Null {
    fn send_udp(&mut self, _: SocketAddr, _: &[u8]) -> bool {
        true
    }
    fn write_tun(&mut self, _: &[u8]) {}
}

type CoreState = Vec<(PublicKey, Option<super::super::PeerState>)>;

fn core_state(core: &Core) -> (CoreState, Vec<PublicKey>) {
    let mut keys: Vec<PublicKey> = core.peers().keys().copied().collect();
    keys.sort();
    let mut registered: Vec<PublicKey> = core.registered_keys().copied().collect();
    registered.sort();
    (
        keys.into_iter()
            .map(|k| (k, peer_state(core, &k)))
            .collect(),
        registered,
    )
}

/// For several nodes at once (two gateways, a plain node, one not registered yet): a model
/// fed deltas and ticks equals `desired` of the snapshot after every step; what it calls
/// dirty covers everything that differs from the step before; and a core kept by
/// `apply_dirty` equals one kept by `apply` of the whole desired state.
fn run(seed: u64, steps: usize) {
    let mut ctx = Ctx {
        state: seed | 1,
        now: 1_000,
    };
    let mut s = Snapshot::default();
    let names = ["gw1", "n2", "gw2", "n9"];
    let mut models: Vec<Model> = names.iter().map(|n| Model::new(n)).collect();
    for m in &mut models {
        m.reset(&s, ctx.now);
        m.take_dirty();
    }
    let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
    // Plain cores, and gateway cores that register laptops and sites just in time.
    let gateway = Options {
        forward: true,
        org_isolation: true,
        idle_evict: Some(std::time::Duration::from_secs(180)),
    };
    let mut cores: Vec<(Core, Core)> = [Options::default(), gateway]
        .into_iter()
        .map(|o| {
            (
                Core::new(Some(secret.clone()), o, 1),
                Core::new(Some(secret.clone()), o, 1),
            )
        })
        .collect();
    let t0 = Instant::now();
    let mut before: Vec<Desired> = names.iter().map(|n| desired(&s, n, ctx.now)).collect();
    let mut applied_deltas = 0;
    for i in 0..steps {
        if ctx.below(10) == 0 {
            ctx.now += ctx.below(6) as i64;
            for m in &mut models {
                m.tick(ctx.now);
            }
        } else {
            let change = random_change(&s, &mut ctx);
            let Some(delta) = step(&mut s, &change, &mut ctx) else {
                continue;
            };
            applied_deltas += 1;
            for m in &mut models {
                m.apply(&delta);
            }
        }
        for (k, m) in models.iter_mut().enumerate() {
            let want = normalised(desired(&s, names[k], ctx.now));
            let got = m.desired();
            assert_eq!(
                got, want,
                "seed {seed} step {i} node {}: model and desired differ",
                names[k]
            );
            let dirty = m.take_dirty();
            let was = &before[k];
            let mut keys: BTreeSet<&PublicKey> = was.peers.keys().collect();
            keys.extend(want.peers.keys());
            for key in keys {
                if was.peers.get(key) != want.peers.get(key) {
                    assert!(
                        dirty.peers.contains(key),
                        "seed {seed} step {i} node {}: peer {} changed but is not dirty",
                        names[k],
                        registry::PublicKey::from(*key)
                    );
                }
            }
            let policy = (&was.local, &was.sites, &was.peerings)
                != (&want.local, &want.sites, &want.peerings);
            assert!(!policy || dirty.policy, "seed {seed} step {i}: policy");
            assert!(
                was.addresses == want.addresses || dirty.addresses,
                "seed {seed} step {i}: addresses"
            );
            assert!(
                was.routes == want.routes || dirty.routes,
                "seed {seed} step {i}: routes"
            );
            if k == 0 {
                for (full, kept) in &mut cores {
                    apply(full, &want, t0, &mut Null);
                    apply_dirty(kept, m, &dirty, t0, &mut Null);
                    assert_eq!(
                        core_state(kept),
                        core_state(full),
                        "seed {seed} step {i}: the core kept by apply_dirty differs"
                    );
                }
            }
            before[k] = want;
        }
    }
    assert!(
        applied_deltas > steps / 3,
        "seed {seed}: only {applied_deltas} of {steps} steps changed the registry"
    );
    assert!(!s.machines.is_empty() && !s.peers.is_empty());
}

#[test]
fn a_model_fed_deltas_equals_desired_of_the_snapshot() {
    for seed in 1..=12u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 400);
    }
}

#[test]
fn a_reset_in_the_middle_lands_where_deltas_do() {
    let mut ctx = Ctx {
        state: 42,
        now: 1_000,
    };
    let mut s = Snapshot::default();
    let mut m = Model::new("gw1");
    m.reset(&s, ctx.now);
    for _ in 0..300 {
        let change = random_change(&s, &mut ctx);
        if let Some(d) = step(&mut s, &change, &mut ctx) {
            m.apply(&d);
        }
    }
    let mut fresh = Model::new("gw1");
    fresh.reset(&s, ctx.now);
    assert_eq!(fresh.desired(), m.desired());
    assert_eq!(fresh.desired(), normalised(desired(&s, "gw1", ctx.now)));
    let dirty = fresh.take_dirty();
    assert!(dirty.policy && dirty.addresses && dirty.routes);
    assert_eq!(s.revision, Revision(s.revision.0));
}

#[test]
fn an_expiring_peer_leaves_at_its_time() {
    let mut ctx = Ctx {
        state: 7,
        now: 1_000,
    };
    let mut s = Snapshot::default();
    let mut m = Model::new("gw1");
    m.reset(&s, ctx.now);
    let changes = [
        Change::CreateOrg {
            name: "acme".into(),
        },
        Change::RegisterNode(NodeSpec {
            name: "gw1".into(),
            region: "iad".into(),
            public_key: ctx.key(),
            endpoint: "10.0.0.1:51820".parse().unwrap(),
            gateway: true,
        }),
        Change::AddPeer {
            org: "acme".into(),
            name: "laptop".into(),
            region: None,
            gateway: Some("gw1".into()),
            public_key: ctx.key(),
            routes: vec!["2001:db8:5::/48".parse().unwrap()],
            expires: Some(1_010),
        },
    ];
    for c in &changes {
        let d = step(&mut s, c, &mut ctx).expect("applies");
        m.apply(&d);
    }
    assert_eq!(m.next_expiry(), Some(1_010));
    assert_eq!(m.desired().peers.len(), 1);
    m.take_dirty();
    m.tick(1_009);
    assert!(
        m.take_dirty().is_empty(),
        "nothing happens before the expiry"
    );
    m.tick(1_010);
    let dirty = m.take_dirty();
    assert_eq!(dirty.peers.len(), 1);
    assert!(dirty.policy && dirty.routes);
    assert!(m.desired().peers.is_empty());
    assert!(m.sites().is_empty());
    assert_eq!(m.next_expiry(), None);
    assert_eq!(m.desired(), normalised(desired(&s, "gw1", 1_010)));
}
