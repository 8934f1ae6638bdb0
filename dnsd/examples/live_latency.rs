//! Measures how soon dnsd answers a machine after it is written to the registry: adds N
//! machines one by one (each a new app) and, for each, asks dnsd over UDP every 0.2 ms until
//! the new address comes back. Prints min / median / p90 / max from the start of the write.
//!
//! `cargo run --release -p dnsd --example live_latency -- <registry.db> <dnsd addr:port> <N>`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use registry::{Change, Record};

fn query(name: &str) -> Vec<u8> {
    let mut p = vec![0x4c, 0x1d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 28, 0, 1]);
    p
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, server, n] = args.as_slice() else {
        bail!("usage: live_latency <registry.db> <dnsd addr:port> <N>");
    };
    let server: SocketAddr = server.parse().context("dnsd address")?;
    let n: usize = n.parse().context("N")?;
    let reg = registry::open(db)?;
    let snap = reg.snapshot()?;
    let (org, node) = match (snap.orgs.keys().next(), snap.nodes.values().next()) {
        (Some(o), Some(n)) => (o.clone(), n.clone()),
        _ => bail!("the registry needs an org and a node"),
    };
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_micros(200)))?;
    let mut took = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    let mut buf = [0u8; 1500];
    let tag = std::process::id();
    for i in 0..n {
        let app = format!("live{tag}-{i}");
        let start = Instant::now();
        let Some(Record::Machine(m)) = reg
            .apply(&Change::AddMachine {
                org: org.clone(),
                app: app.clone(),
                region: node.region.clone(),
                node: node.name.clone(),
                process_group: None,
            })?
            .record
        else {
            bail!("add machine returned no machine");
        };
        writes.push(start.elapsed());
        let q = query(&format!("{app}.internal"));
        loop {
            sock.send_to(&q, server)?;
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                if len >= 16 && buf[7] == 1 && buf[len - 16..len] == m.addr.octets() {
                    took.push(start.elapsed());
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(5) {
                bail!("{app}.internal not answered within 5 s");
            }
        }
    }
    let after: Vec<Duration> = took.iter().zip(&writes).map(|(t, w)| *t - *w).collect();
    let summary = |mut v: Vec<Duration>| {
        v.sort();
        let pct = |p: usize| v[(v.len() - 1) * p / 100];
        format!(
            "min {:.1?} median {:.1?} p90 {:.1?} max {:.1?}",
            v[0],
            pct(50),
            pct(90),
            v[v.len() - 1]
        )
    };
    println!(
        "add-to-answer over {n} machines, {} in the registry:",
        snap.machines.len()
    );
    println!(
        "  registry write (wgtool's part):        {}",
        summary(writes)
    );
    println!(
        "  write committed -> dnsd answers it:    {}",
        summary(after)
    );
    println!("  start of write -> dnsd answers it:     {}", summary(took));
    Ok(())
}
