//! How a write's cost grows with the registry: builds an SQLite registry of MACHINES machines
//! and PEERS peers with `import`, then times 50 `AddMachine` and 50 `AddPeer` applies.
//!
//! `cargo run --release -p sixpn-registry --example scale_writes -- [MACHINES] [PEERS] [WORKERS] [PER_ORG] [FILE]`
//!
//! One org per PER_ORG (default 10,000) machines, WORKERS (default 100) worker nodes and 10
//! gateways over 5 regions, three machines per app, 1% of machines stopped. FILE (default: a
//! temporary folder) must not exist yet. Prints one `name value` line per figure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use registry::sqlite::SqliteRegistry;
use registry::{
    App, Change, Machine, MachineState, Node, Org, OrgNetwork, Peer, Record, Registry, Snapshot,
};

const REGIONS: &[&str] = &["iad", "ord", "ams", "fra", "sin"];
const GATEWAYS: u32 = 10;
const WRITES: usize = 50;

fn key(n: u64) -> registry::PublicKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[31] = 0x5a;
    registry::PublicKey::from_bytes(bytes)
}

/// The shape of the registry.
#[derive(Clone, Copy)]
struct Layout {
    machines: usize,
    peers: usize,
    workers: u32,
    per_org: usize,
}

impl Layout {
    fn orgs(&self) -> usize {
        self.machines.div_ceil(self.per_org).max(1)
    }
}

fn node(i: u32, gateway: bool) -> Node {
    let name = if gateway {
        format!("gw-{i}")
    } else {
        format!("worker-{i}")
    };
    // Gateways' host parts after any number of workers.
    let host = registry::addr::HOST_RANGE.0 + if gateway { 60_000 + i } else { i };
    Node {
        name,
        region: REGIONS[i as usize % REGIONS.len()].into(),
        public_key: key(1 << 40 | u64::from(host)),
        endpoint: SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 51820)),
        gateway,
        host,
    }
}

/// A registry of that shape, made in memory.
fn build(layout: Layout) -> Snapshot {
    let Layout {
        machines,
        peers,
        workers,
        per_org,
    } = layout;
    let orgs = layout.orgs();
    let mut snap = Snapshot {
        revision: registry::Revision(1),
        next_network: orgs as u32 + 1,
        ..Snapshot::default()
    };
    for o in 0..orgs {
        snap.put(Record::Org(Org {
            name: format!("org-{o}"),
            network: OrgNetwork(o as u32 + 1),
        }));
    }
    let workers: Vec<Node> = (0..workers).map(|i| node(i, false)).collect();
    let gateways: Vec<Node> = (0..GATEWAYS).map(|i| node(i, true)).collect();
    for n in workers.iter().chain(&gateways) {
        snap.put(Record::Node(n.clone()));
    }
    // The next slot of each (org, node) /80.
    let mut slots = std::collections::HashMap::<(usize, u32), u32>::new();
    let mut take = |org: usize, host: u32| {
        let s = slots.entry((org, host)).or_insert(0);
        *s += 1;
        *s
    };
    for i in 0..machines {
        let org = i / per_org;
        let n = &workers[i % workers.len()];
        let app = format!("app-{}", (i % per_org) / 3);
        let net = OrgNetwork(org as u32 + 1);
        let id = registry::MachineId::from_bits((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        snap.put(Record::App(App {
            org: format!("org-{org}"),
            name: app.clone(),
        }));
        snap.put(Record::Machine(Machine {
            id,
            org: format!("org-{org}"),
            app,
            region: n.region.clone(),
            node: n.name.clone(),
            process_group: "app".into(),
            state: if i % 100 == 0 {
                MachineState::Stopped
            } else {
                MachineState::Started
            },
            addr: net.slot_addr(n.host, take(org, n.host)),
        }));
    }
    for i in 0..peers {
        let org = i % orgs;
        let gw = &gateways[i % gateways.len()];
        let net = OrgNetwork(org as u32 + 1);
        snap.put(Record::Peer(Peer {
            org: format!("org-{org}"),
            name: format!("peer-{i}"),
            gateway: gw.name.clone(),
            region: gw.region.clone(),
            public_key: key(i as u64),
            addr: net.slot_addr(gw.host, take(org, gw.host)),
            routes: vec![],
            created: 1_700_000_000,
            expires: None,
        }));
    }
    snap
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn timed(reg: &dyn Registry, changes: impl Iterator<Item = Change>) -> Vec<Duration> {
    let mut times: Vec<Duration> = changes
        .map(|c| {
            let start = Instant::now();
            reg.apply(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: usize| {
        args.get(i).map_or(default, |a| {
            a.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("argument {i} `{a}`: a number"))
        })
    };
    let layout = Layout {
        machines: number(1, 100_000),
        peers: number(2, 0),
        workers: number(3, 100).clamp(1, 50_000) as u32,
        per_org: number(4, 10_000).max(1),
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| dir.path().join("registry.db").display().to_string());

    let start = Instant::now();
    let snap = build(layout);
    println!("generate_s {:.2}", start.elapsed().as_secs_f64());
    let reg = SqliteRegistry::open(&file).expect("opening the registry file");
    let start = Instant::now();
    let revision = reg.import(&snap).expect("importing");
    println!("import_s {:.2}", start.elapsed().as_secs_f64());
    let records = snap.records().count();
    drop(snap);
    // Freeing the million records above leaves malloc a consolidation to do at the next
    // large allocation (0.3 s at 300k machines): do it here, not in the first timed write.
    std::hint::black_box(vec![1u8; 1 << 20]);
    println!("records {records}");

    let orgs = layout.orgs();
    let adds = timed(
        &reg,
        (0..WRITES).map(|i| {
            let n = node((i * 7) as u32 % layout.workers, false);
            Change::AddMachine {
                org: format!("org-{}", i % orgs),
                app: format!("bench-{i}"),
                region: n.region,
                node: n.name,
                process_group: None,
            }
        }),
    );
    println!(
        "add_machine_ms p50 {:.2} p99 {:.2}",
        percentile(&adds, 0.5),
        percentile(&adds, 0.99)
    );
    let adds = timed(
        &reg,
        (0..WRITES).map(|i| Change::AddPeer {
            org: format!("org-{}", i % orgs),
            name: format!("bench-peer-{i}"),
            region: Some(REGIONS[i % REGIONS.len()].into()),
            gateway: None,
            public_key: key(1 << 50 | i as u64),
            routes: vec![],
            expires: None,
        }),
    );
    println!(
        "add_peer_ms p50 {:.2} p99 {:.2}",
        percentile(&adds, 0.5),
        percentile(&adds, 0.99)
    );
    let start = Instant::now();
    let deltas = reg
        .changes_since(revision, 1024)
        .expect("reading the change log")
        .expect("the log holds every write since the import");
    println!(
        "changes_since_ms {:.2} ({} deltas)",
        start.elapsed().as_secs_f64() * 1000.0,
        deltas.len()
    );
    let start = Instant::now();
    let whole = reg.snapshot().expect("reading the registry");
    println!(
        "snapshot_s {:.2} ({} machines)",
        start.elapsed().as_secs_f64(),
        whole.machines.len()
    );
}
