//! A fixed registry snapshot for dnsd (two orgs, machines on two nodes, a laptop peer and a
//! site with IPv4 and IPv6 routes), the `server::Shared` built over it, and the source
//! addresses a query can come from (one of each kind the scope rules tell apart).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dnsd::cache::Cache;
use dnsd::forward::Forwarder;
use dnsd::index::{Index, Options};
use dnsd::metrics::Metrics;
use dnsd::server::{Clock, Shared};
use registry::change::{plan, Context, NodeSpec};
use registry::{Change, Snapshot};

pub const NOW: i64 = 1_700_000_000;

struct Fixed(u64);

impl Context for Fixed {
    fn random_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn now_unix(&self) -> i64 {
        NOW
    }
}

fn apply(snap: &mut Snapshot, change: Change) {
    let mut ctx = Fixed(snap.revision.0 * 7919 + 13);
    plan(snap, &change, &mut ctx)
        .unwrap_or_else(|e| panic!("fixture change {change:?}: {e}"))
        .apply_to(snap);
}

/// A public key, unique per `n`.
fn key(n: u8) -> registry::PublicKey {
    let mut bytes = [0u8; 32];
    bytes[7] = n;
    bytes.into()
}

/// acme: web on two nodes, db, a laptop (alice) and a site (site-ams: 10.1.0.0/16,
/// 2001:db8:a::/48); globex: one machine.
pub fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    for org in ["acme", "globex"] {
        apply(&mut s, Change::CreateOrg { name: org.into() });
    }
    for (n, (name, region, gateway)) in [("host-iad", "iad", true), ("host-ams", "ams", false)]
        .into_iter()
        .enumerate()
    {
        apply(
            &mut s,
            Change::AddNode(NodeSpec {
                name: name.into(),
                region: region.into(),
                public_key: key(n as u8 + 1),
                endpoint: "192.0.2.1:51820".parse().unwrap(),
                gateway,
            }),
        );
    }
    for (org, app, node, group) in [
        ("acme", "web", "host-iad", None),
        ("acme", "web", "host-ams", None),
        ("acme", "web", "host-iad", Some("worker")),
        ("acme", "db", "host-ams", None),
        ("globex", "secret", "host-iad", None),
    ] {
        let region = s.nodes[node].region.clone();
        apply(
            &mut s,
            Change::AddMachine {
                org: org.into(),
                app: app.into(),
                region,
                node: node.into(),
                process_group: group.map(Into::into),
            },
        );
    }
    for (name, n, routes) in [
        ("alice", 10, vec![]),
        (
            "site-ams",
            20,
            vec!["10.1.0.0/16".parse().unwrap(), "2001:db8:a::/48".parse().unwrap()],
        ),
    ] {
        apply(
            &mut s,
            Change::AddPeer {
                org: "acme".into(),
                name: name.into(),
                region: Some("iad".into()),
                gateway: None,
                public_key: key(n),
                routes,
                expires: None,
            },
        );
    }
    s
}

/// A forwarded name with a cached answer, so cache hits are answered too.
pub const CACHED_NAME: &str = "example.com";

/// dnsd's shared state over [`snapshot`]: default org acme, 10.0.0.0/8 trusted, and a
/// forwarder (never asked here: `server::handle` only reads its cache) holding an answer for
/// [`CACHED_NAME`] AAAA.
pub fn shared() -> Shared {
    let snap = snapshot();
    let opts = Options {
        default_org: Some("acme".into()),
        local_region: Some("iad".into()),
        allow: vec!["10.0.0.0/8".parse().unwrap()],
    };
    let metrics = Arc::new(Metrics::default());
    let cache = Cache::new(16, Duration::from_secs(60));
    let query = crate::dns::query(0x1234, CACHED_NAME, 28, Some(1232));
    let q = dnsd::wire::parse(&query).expect("the seed query parses");
    cache.put(&q, &upstream_answer(&query), Instant::now());
    let upstreams = vec!["127.0.0.1:9".parse().unwrap()];
    let forwarder = Forwarder::new(upstreams, Duration::from_secs(1), cache, metrics.clone());
    Shared {
        index: ArcSwap::from_pointee(Index::build(&snap, &opts, NOW)),
        forwarder: Some(forwarder),
        metrics,
    }
}

pub fn clock() -> Clock {
    Clock {
        received: Instant::now(),
        unix: NOW,
    }
}

/// Where a query may come from, by the scope rule each one exercises.
pub fn sources(snap: &Snapshot) -> Vec<SocketAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for org in ["acme", "globex"] {
        let m = snap.machines.values().find(|m| m.org == org).expect("a machine");
        ips.push(m.addr.into());
    }
    let alice = &snap.peers[&("acme".to_string(), "alice".to_string())];
    ips.push(alice.addr.into());
    for s in [
        "2001:db8:a::5",    // inside the site's IPv6 route
        "::1",              // loopback: default org
        "::ffff:127.0.0.1", // loopback, IPv4-mapped
        "127.0.0.1",
        "10.9.8.7",            // --allow
        "192.0.2.7",           // outsider
        "fdaa:0:ffff:a7b::2",  // an fdaa address of no org
    ] {
        ips.push(s.parse().unwrap());
    }
    ips.into_iter().map(|ip| SocketAddr::new(ip, 5353)).collect()
}

/// A query packet for `name` (dotted, case kept), with an OPT record of `edns` size.
pub fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x0100u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        p.push(0);
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    p
}

/// What an upstream would answer to `query` (an AAAA query with OPT): its question, one
/// AAAA record by compression pointer, and an OPT record.
pub fn upstream_answer(query: &[u8]) -> Vec<u8> {
    let q = dnsd::wire::parse(query).expect("a query");
    let mut r = Vec::new();
    r.extend_from_slice(&query[0..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1]);
    r.extend_from_slice(q.question);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0x0e, 0x10, 0, 16]);
    r.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53]);
    r.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    r
}
