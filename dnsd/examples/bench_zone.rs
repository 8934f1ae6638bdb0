//! Makes the benchmark's data: a registry with one org of N apps (3 machines each: one in iad,
//! two in ams, about a third of the ams ones stopped), the same `.internal` zone as a master file for NSD and Knot
//! (written from dnsd's own index, so the three serve identical data), and a dnsperf query file.
//!
//! `cargo run --release -p dnsd --example bench_zone -- <registry.db> <out dir> <apps>`

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use anyhow::{bail, Context as _};
use registry::change::{plan, Context};
use registry::{Change, MachineState, NodeSpec, Snapshot};

struct Seq(u64);

impl Context for Seq {
    fn random_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn now_unix(&self) -> i64 {
        1_700_000_000
    }
}

fn apply(snap: &mut Snapshot, ctx: &mut Seq, change: Change) -> anyhow::Result<()> {
    plan(snap, &change, ctx)?.apply_to(snap);
    Ok(())
}

/// TXT rdata (length-prefixed strings) as zone-file text: `"a" "b"`.
fn txt_text(rdata: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = rdata;
    while let Some((&len, tail)) = rest.split_first() {
        let (s, next) = tail.split_at(usize::from(len).min(tail.len()));
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "\"{}\"", String::from_utf8_lossy(s));
        rest = next;
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, out, apps] = args.as_slice() else {
        bail!("usage: bench_zone <registry.db> <out dir> <apps>");
    };
    let apps: usize = apps.parse().context("apps: a number")?;
    let mut snap = Snapshot::default();
    let mut ctx = Seq(7);
    apply(
        &mut snap,
        &mut ctx,
        Change::CreateOrg {
            name: "bench".into(),
        },
    )?;
    for (i, (name, region)) in [("host-iad", "iad"), ("host-ams", "ams")]
        .iter()
        .enumerate()
    {
        let mut key = [0u8; 32];
        key[0] = i as u8 + 1;
        apply(
            &mut snap,
            &mut ctx,
            Change::AddNode(NodeSpec {
                name: (*name).into(),
                region: (*region).into(),
                public_key: key.into(),
                endpoint: "192.0.2.1:51820".parse()?,
                gateway: i == 0,
            }),
        )?;
    }
    for a in 0..apps {
        let app = format!("app{a}");
        for (node, region) in [
            ("host-iad", "iad"),
            ("host-ams", "ams"),
            ("host-ams", "ams"),
        ] {
            apply(
                &mut snap,
                &mut ctx,
                Change::AddMachine {
                    org: "bench".into(),
                    app: app.clone(),
                    region: region.into(),
                    node: node.into(),
                    process_group: None,
                },
            )?;
        }
    }
    // About a third of the ams machines are stopped (so `all.` and started-only names differ).
    let stop: Vec<registry::MachineId> = snap
        .machines
        .values()
        .filter(|m| m.addr.segments()[6] % 3 == 0 && m.region == "ams")
        .map(|m| m.id)
        .collect();
    for id in stop {
        apply(
            &mut snap,
            &mut ctx,
            Change::SetMachineState {
                id,
                state: MachineState::Stopped,
            },
        )?;
    }
    let reg = registry::open(db)?;
    reg.import(&snap)?;

    let opts = dnsd::index::Options {
        default_org: Some("bench".into()),
        local_region: Some("iad".into()),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let index = dnsd::index::Index::build(&snap, &opts, 1_700_000_000);
    let build = t.elapsed();
    let t = std::time::Instant::now();
    let reread = reg.snapshot()?;
    let read = t.elapsed();
    eprintln!(
        "bench_zone: index built in {build:.1?}; registry snapshot read in {read:.1?} ({} machines)",
        reread.machines.len()
    );
    let zone = index.zones.values().next().context("no org")?;
    let mut names: Vec<(Box<[u8]>, &dnsd::index::Entry)> = zone.names.iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut z = String::new();
    z.push_str("$ORIGIN internal.\n$TTL 5\n");
    z.push_str("@ 5 IN SOA ns.internal. hostmaster.internal. 1 3600 600 86400 5\n");
    z.push_str("@ 5 IN NS ns.internal.\nns 5 IN AAAA ::1\n");
    for (name, e) in &names {
        let fqdn = if name.is_empty() {
            "internal.".to_string()
        } else {
            format!("{}.internal.", String::from_utf8_lossy(name))
        };
        for a in e.aaaa.iter() {
            let _ = writeln!(z, "{fqdn} 5 IN AAAA {}", Ipv6Addr::from(*a));
        }
        // The org-wide lists (`_apps`, `_instances`: tens of KB at this size) are not in the
        // query mix, and NSD's zone parser refuses TXT records with that many strings.
        if let Some(t) = e.txt.as_ref().filter(|t| t.len() <= 4096) {
            let _ = writeln!(z, "{fqdn} 5 IN TXT {}", txt_text(t));
        }
    }
    std::fs::write(format!("{out}/internal.zone"), z)?;

    // One query mix for all servers: 50% <app> AAAA (2 addresses), 20% <region>.<app> AAAA,
    // 10% <id>.vm.<app> AAAA, 10% vms.<app> TXT, 10% unknown names (NXDOMAIN).
    let ids: Vec<(registry::MachineId, String)> = snap
        .machines
        .values()
        .map(|m| (m.id, m.app.clone()))
        .collect();
    let mut q = String::new();
    let mut rng = Seq(42);
    for i in 0..100_000 {
        let app = rng.random_u64() as usize % apps;
        let line = match i % 10 {
            0..=4 => format!("app{app}.internal AAAA"),
            5 => format!("iad.app{app}.internal AAAA"),
            6 => format!("ams.app{app}.internal AAAA"),
            7 => {
                let (id, a) = &ids[rng.random_u64() as usize % ids.len()];
                format!("{id}.vm.{a}.internal AAAA")
            }
            8 => format!("vms.app{app}.internal TXT"),
            _ => format!("nope{app}.internal AAAA"),
        };
        q.push_str(&line);
        q.push('\n');
    }
    std::fs::write(format!("{out}/queries.txt"), q)?;
    eprintln!("bench_zone: {apps} apps, {} names", zone.names.len());
    Ok(())
}
