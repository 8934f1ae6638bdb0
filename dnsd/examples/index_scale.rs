//! How the index scales: builds an in-memory registry snapshot of N machines (one org per
//! 10,000 machines, apps of M machines, 23 regions, 1% stopped) and P peers, builds the index
//! (time, RSS), then applies 1,000 single-machine deltas the way `dnsd` does (apply, then
//! publish a new revision through an `ArcSwap` while the previous one is still held) and
//! prints p50/p99/max apply time and the RSS after.
//!
//! `cargo run --release -p dnsd --example index_scale -- [MACHINES] [PEERS] [MACHINES_PER_APP]`
//!
//! With `--registry <location>` instead, it times what dnsd's start costs on a real registry:
//! reading the snapshot, then building the index from it.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use registry::region::REGIONS;
use registry::{
    App, Delta, Machine, MachineId, MachineState, Node, Org, OrgNetwork, Peer, Record,
    RecordChange, Revision, Snapshot,
};

use dnsd::answer::{answer, Answer, Question, TYPE_AAAA};
use dnsd::index::{IndexBuilder, Options};

const NOW: i64 = 1_700_000_000;
const MACHINES_PER_ORG: usize = 10_000;
const NODES: u32 = 200;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn mesh_addr(net: u32, host: u32, slot: u32, iface: u16) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfdaa,
        (net >> 16) as u16,
        net as u16,
        (host >> 16) as u16,
        host as u16,
        (slot >> 16) as u16,
        slot as u16,
        iface,
    )
}

struct Gen {
    slot: u32,
}

impl Gen {
    fn machine(&mut self, org: usize, app: usize, stopped: bool) -> Machine {
        self.slot += 1;
        let node = self.slot % NODES;
        let region = REGIONS[node as usize % REGIONS.len()].code;
        Machine {
            id: MachineId::from_bits(u64::from(self.slot).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8),
            org: format!("org{org}"),
            app: format!("app{app}"),
            region: region.into(),
            node: format!("node{node}"),
            process_group: "app".into(),
            state: if stopped {
                MachineState::Stopped
            } else {
                MachineState::Started
            },
            addr: mesh_addr(org as u32 + 1, node + 1, self.slot, 2),
        }
    }
}

fn snapshot(machines: usize, peers: usize, per_app: usize, g: &mut Gen) -> Snapshot {
    let mut s = Snapshot::default();
    let orgs = machines.div_ceil(MACHINES_PER_ORG).max(1);
    for o in 0..orgs {
        s.put(Record::Org(Org {
            name: format!("org{o}"),
            network: OrgNetwork(o as u32 + 1),
        }));
    }
    for n in 0..NODES {
        s.put(Record::Node(Node {
            name: format!("node{n}"),
            region: REGIONS[n as usize % REGIONS.len()].code.into(),
            public_key: [7; 32].into(),
            endpoint: "192.0.2.1:51820".parse().unwrap_or_else(|_| unreachable!()),
            gateway: n % 10 == 0,
            host: n + 1,
        }));
    }
    for i in 0..machines {
        let org = i % orgs;
        let app = i / (per_app * orgs);
        if i % (per_app * orgs) < orgs {
            s.put(Record::App(App {
                org: format!("org{org}"),
                name: format!("app{app}"),
            }));
        }
        let m = g.machine(org, app, i % 100 == 0);
        s.put(Record::Machine(m));
    }
    for p in 0..peers {
        g.slot += 1;
        let org = p % orgs;
        let gw = (p as u32 % (NODES / 10)) * 10;
        s.put(Record::Peer(Peer {
            org: format!("org{org}"),
            name: format!("peer{p}"),
            gateway: format!("node{gw}"),
            region: REGIONS[gw as usize % REGIONS.len()].code.into(),
            public_key: [7; 32].into(),
            addr: mesh_addr(org as u32 + 1, gw + 1, g.slot, 0),
            routes: if p % 20 == 0 {
                vec![format!("10.{}.{}.0/24", (p / 256) % 256, p % 256)
                    .parse()
                    .unwrap_or_else(|_| unreachable!())]
            } else {
                Vec::new()
            },
            created: NOW,
            expires: (p % 7 == 0).then_some(NOW + 86_400 + p as i64),
        }));
    }
    s.revision = Revision(1);
    s
}

/// 1,000 deltas of one machine each: a new machine in a new app, a new machine in an
/// existing app, a stop, a start, a move to another region, a removal.
fn deltas(s: &mut Snapshot, g: &mut Gen, n: usize) -> Vec<Delta> {
    let ids: Vec<MachineId> = s.machines.keys().step_by(997).copied().collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = ids[i % ids.len()];
        let after = match (i % 6, s.machines.get(&id).cloned()) {
            (0, _) | (_, None) => Some(g.machine(i % 7, 1_000_000 + i, false)),
            (1, Some(m)) => Some(g.machine(i % 7, m.app[3..].parse().unwrap_or(0), false)),
            (2, Some(m)) => Some(Machine {
                state: MachineState::Stopped,
                ..m
            }),
            (3, Some(m)) => Some(Machine {
                state: MachineState::Started,
                ..m
            }),
            (4, Some(m)) => Some(Machine {
                region: REGIONS[i % REGIONS.len()].code.into(),
                ..m
            }),
            (_, Some(_)) => None,
        };
        let (key, after) = match after {
            Some(m) => (Record::Machine(m.clone()).key(), Some(Record::Machine(m))),
            None => (registry::RecordKey::Machine { id }, None),
        };
        let before = s.get(&key);
        let changes = RecordChange::new(key, before, after).into_iter().collect();
        let d = Delta {
            revision: Revision(s.revision.0 + 1),
            next_network: s.next_network,
            changes,
        };
        s.apply_delta(&d);
        out.push(d);
    }
    out
}

fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() - 1) * p / 100]
}

/// dnsd's start on a real registry: the snapshot read, then the index build.
/// CPU time this process used so far (all threads, user and system).
fn cpu() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// dnsd's start (reading while building, no snapshot held), then, in the same process, the
/// older way (the whole snapshot first, then the index from it), for comparison.
fn start_on(location: &str) -> anyhow::Result<()> {
    let reg = registry::open(location)?;
    let (t, c) = (Instant::now(), cpu());
    let (changes, builder, _) = dnsd::live::start(reg.clone(), &Options::default(), None);
    let (streamed, streamed_cpu) = (t.elapsed(), cpu() - c);
    let names = builder.index().names();
    println!(
        "dnsd start (read while building): {streamed:.2?}, cpu {streamed_cpu:.2?} ({names} names, revision {}), rss {:.0} MB, peak {:.0} MB",
        changes.first.revision.0,
        rss_mb(),
        peak_rss_mb()
    );
    drop((changes, builder));
    dnsd::live::release_freed_memory();
    if std::env::var_os("ONLY_START").is_some() {
        return Ok(());
    }

    let (t, c) = (Instant::now(), cpu());
    let snap = reg.snapshot()?;
    let read = t.elapsed();
    println!(
        "registry read: {} machines, {} peers in {read:.2?}, rss {:.0} MB",
        snap.machines.len(),
        snap.peers.len(),
        rss_mb()
    );
    let t = Instant::now();
    let builder = IndexBuilder::from_snapshot(&snap, Options::default(), NOW);
    let build = t.elapsed();
    println!(
        "index from the snapshot: built in {build:.2?} ({} names), rss {:.0} MB; start {:.2?}, cpu {:.2?}",
        builder.index().names(),
        rss_mb(),
        read + build,
        cpu() - c
    );
    anyhow::ensure!(
        builder.index().names() == names,
        "the two starts built different indexes"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, location] = args.as_slice() {
        if flag == "--registry" {
            return start_on(location);
        }
    }
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i)
            .map(|a| a.parse().context("a number"))
            .unwrap_or(Ok(default))
    };
    let machines = arg(1, 100_000)?;
    let peers = arg(2, 10_000)?;
    let per_app = arg(3, 3)?.max(1);
    let rss0 = rss_mb();
    let mut g = Gen { slot: 0 };
    let t = Instant::now();
    let mut snap = snapshot(machines, peers, per_app, &mut g);
    println!(
        "snapshot: {} orgs, {} apps, {} machines, {} peers, made in {:.1?}, rss {:.0} MB (+{:.0})",
        snap.orgs.len(),
        snap.apps.len(),
        snap.machines.len(),
        snap.peers.len(),
        t.elapsed(),
        rss_mb(),
        rss_mb() - rss0
    );
    let opts = Options {
        default_org: Some("org0".into()),
        local_region: Some("iad".into()),
        allow: Vec::new(),
    };
    let rss_snap = rss_mb();
    let t = Instant::now();
    let mut builder = IndexBuilder::from_snapshot(&snap, opts, NOW);
    let build = t.elapsed();
    println!(
        "index: built in {build:.2?}, {} names, rss {:.0} MB (+{:.0} over the snapshot)",
        builder.index().names(),
        rss_mb(),
        rss_mb() - rss_snap
    );
    let todo = deltas(&mut snap, &mut g, 1_000);
    let probe: Vec<String> = todo
        .iter()
        .filter_map(|d| match d.changes.first()?.after.as_ref()? {
            Record::Machine(m) => Some(format!("{}.internal", m.app)),
            _ => None,
        })
        .collect();
    drop(snap);
    dnsd::live::release_freed_memory();
    let rss_before = rss_mb();
    println!("snapshot dropped: rss {rss_before:.0} MB (what dnsd holds: the index)");
    let shared = ArcSwap::from_pointee(builder.index().clone());
    let mut took = Vec::with_capacity(todo.len());
    for d in &todo {
        let t = Instant::now();
        builder.apply(d, NOW).map_err(|e| anyhow::anyhow!("{e}"))?;
        shared.store(Arc::new(builder.index().clone()));
        took.push(t.elapsed());
    }
    took.sort();
    println!(
        "1000 single-machine deltas: apply+publish p50 {:.1?} p99 {:.1?} max {:.1?}; rss after {:.0} MB ({:+.0})",
        pct(&took, 50),
        pct(&took, 99),
        took[took.len() - 1],
        rss_mb(),
        rss_mb() - rss_before
    );
    // Queries still answer from the published index: time a few thousand lookups.
    let index = shared.load();
    let src = std::net::IpAddr::V6(mesh_addr(1, 1, 1, 2));
    let t = Instant::now();
    let mut found = 0usize;
    for name in probe.iter().cycle().take(100_000) {
        let q = Question {
            name: name.as_bytes(),
            qtype: TYPE_AAAA,
            qclass: 1,
        };
        if matches!(answer(&index, &q, src, NOW), Answer::Aaaa { .. }) {
            found += 1;
        }
    }
    println!(
        "queries: 100000 answers in {:.1?} ({:.0} ns each), {found} with addresses",
        t.elapsed(),
        t.elapsed().as_nanos() as f64 / 100_000.0
    );
    Ok(())
}
