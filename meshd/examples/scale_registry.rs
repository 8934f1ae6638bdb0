//! Builds a big registry for `bench/scale/run.sh` in one `import`: MACHINES machines in one
//! org per 10,000 (three machines an app, spread over nodes in eight regions, 1% stopped),
//! and PEERS laptops of those orgs attached to one gateway node, `gw-bench`, whose meshd the
//! bench runs. Everything random comes from SEED, so `scale_handshake` can make the laptops'
//! private keys again; the gateway's private key is written to KEY_FILE (0600) for meshd.
//!
//! ```text
//! scale_registry REGISTRY MACHINES PEERS SEED KEY_FILE GATEWAY_ENDPOINT
//! ```
//!
//! Prints `build_s <seconds>` (making the records and importing them) and what it made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use registry::addr::{OrgNetwork, HOST_BASE};
use registry::{App, Machine, MachineId, MachineState, Node, Org, Peer, Revision, Snapshot};
use scale_keys::{b64, mix, secret};
use x25519_dalek::PublicKey;

#[path = "common/scale_keys.rs"]
mod scale_keys;

const REGIONS: [&str; 8] = ["iad", "ord", "dfw", "sjc", "ams", "fra", "nrt", "syd"];
/// Machines per org, per node (roughly), per app.
const PER_ORG: usize = 10_000;
const PER_NODE: usize = 2_000;
const PER_APP: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: scale_registry REGISTRY MACHINES PEERS SEED KEY_FILE GATEWAY_ENDPOINT");
        std::process::exit(2);
    }
    let number = |i: usize, what: &str| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("scale_registry: {what} `{}` must be a number", args[i]);
            std::process::exit(2)
        })
    };
    let location = &args[1];
    let machines = number(2, "MACHINES") as usize;
    let peers = number(3, "PEERS") as usize;
    let seed = number(4, "SEED");
    let key_file = &args[5];
    let endpoint: SocketAddr = args[6].parse().unwrap_or_else(|_| {
        eprintln!(
            "scale_registry: GATEWAY_ENDPOINT `{}` must be IP:PORT",
            args[6]
        );
        std::process::exit(2)
    });
    let started = Instant::now();

    let orgs = machines.div_ceil(PER_ORG).max(1);
    let nodes = (machines / PER_NODE).max(REGIONS.len());
    let mut snap = Snapshot {
        revision: Revision(1),
        next_network: orgs as u32 + 1,
        ..Snapshot::default()
    };
    for o in 0..orgs {
        let name = format!("org{o}");
        snap.orgs.insert(
            name.clone(),
            Org {
                name,
                network: OrgNetwork(o as u32 + 1),
            },
        );
    }
    let mut node_list: Vec<(String, String, u32)> = Vec::with_capacity(nodes + 1);
    for n in 0..nodes {
        let region = REGIONS[n % REGIONS.len()];
        let name = format!("{region}-{n}");
        let host = HOST_BASE + 1 + n as u32;
        let key = PublicKey::from(&secret(seed ^ 0x40de, n as u64)).to_bytes();
        snap.nodes.insert(
            name.clone(),
            Node {
                name: name.clone(),
                region: region.into(),
                public_key: key.into(),
                endpoint: SocketAddr::from((
                    [192, 0, 2, (n % 250) as u8 + 1],
                    51820 + (n / 250) as u16,
                )),
                gateway: false,
                host,
            },
        );
        node_list.push((name, region.to_string(), host));
    }
    let gw_secret = secret(seed, u64::MAX);
    let gw_host = HOST_BASE + 1 + nodes as u32;
    snap.nodes.insert(
        "gw-bench".into(),
        Node {
            name: "gw-bench".into(),
            region: "iad".into(),
            public_key: PublicKey::from(&gw_secret).to_bytes().into(),
            endpoint,
            gateway: true,
            host: gw_host,
        },
    );

    // Next free slot in each (org, host) /80.
    let mut slots: HashMap<(usize, u32), u32> = HashMap::new();
    let mut next_slot = |org: usize, host: u32| {
        let s = slots.entry((org, host)).or_insert(0);
        *s += 1;
        *s
    };
    let mut ids = HashSet::with_capacity(machines);
    let mut apps = BTreeMap::new();
    for i in 0..machines {
        let o = i / PER_ORG;
        let org = format!("org{o}");
        let app = format!("app{}", (i % PER_ORG) / PER_APP);
        // Neighbouring machines of one app land on different nodes.
        let (node, region, host) = &node_list[(i.wrapping_mul(7919) / 3 + i) % nodes];
        let network = snap.orgs[&org].network;
        let mut n = i as u64;
        let id = loop {
            let id = MachineId::from_bits(mix(seed, n));
            if ids.insert(id) {
                break id;
            }
            n += 1 << 40;
        };
        apps.entry((org.clone(), app.clone())).or_insert(App {
            org: org.clone(),
            name: app.clone(),
        });
        snap.machines.insert(
            id,
            Machine {
                id,
                org,
                app,
                region: region.clone(),
                node: node.clone(),
                process_group: "app".into(),
                state: if i % 100 == 99 {
                    MachineState::Stopped
                } else {
                    MachineState::Started
                },
                addr: network.slot_addr(*host, next_slot(o, *host)),
            },
        );
    }
    snap.apps = apps;
    for i in 0..peers {
        let o = i % orgs;
        let org = format!("org{o}");
        let network = snap.orgs[&org].network;
        let key = PublicKey::from(&secret(seed, i as u64)).to_bytes();
        let name = format!("laptop{i}");
        snap.peers.insert(
            (org.clone(), name.clone()),
            Peer {
                org,
                name,
                gateway: "gw-bench".into(),
                region: "iad".into(),
                public_key: key.into(),
                addr: network.slot_addr(gw_host, next_slot(o, gw_host)),
                routes: Vec::new(),
                created: 1_700_000_000,
                expires: None,
            },
        );
    }
    let made = started.elapsed();

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .unwrap_or_else(|e| {
            eprintln!("scale_registry: KEY_FILE `{key_file}`: {e}");
            std::process::exit(1)
        });
    writeln!(file, "{}", b64(&gw_secret.to_bytes())).expect("writing the key file");

    let reg = registry::open(location).unwrap_or_else(|e| {
        eprintln!("scale_registry: {e}");
        std::process::exit(1)
    });
    if let Err(e) = reg.import(&snap) {
        eprintln!("scale_registry: import: {e}");
        std::process::exit(1);
    }
    let total = started.elapsed();
    println!(
        "made orgs={orgs} nodes={} apps={} machines={} peers={} in {:.1} s; imported in {:.1} s",
        snap.nodes.len(),
        snap.apps.len(),
        snap.machines.len(),
        snap.peers.len(),
        made.as_secs_f64(),
        (total - made).as_secs_f64()
    );
    println!("build_s {:.1}", total.as_secs_f64());
}
