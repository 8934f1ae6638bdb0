//! A gateway's memory and first-handshake latency with many registered peers (issue 16),
//! in process: no network, no TUN. Registers REGISTERED peers in a gateway `Core`, then
//! handshakes ACTIVE of them with boringtun `Tunn` clients (each client dropped once its
//! session is confirmed, so the process's RSS is the gateway's), printing one line per
//! figure:
//!
//! ```text
//! cargo run --release -p meshd --example gateway_scale -- 100000 1000 10000
//! gateway_rss_mb registered=0 active=0 2.1
//! gateway_rss_mb registered=100000 active=0 41.0
//! gateway_rss_mb registered=100000 active=1000 52.3
//! first_handshake_ms registered=100000 p50/p99 0.21/0.35
//! ...
//! ```
//!
//! `--all-tunnels REGISTERED` prints what the gateway held before (a `Tunn` for every
//! registered peer) for comparison.
//!
//! `first_handshake_ms` is the gateway's time from an initiation for a peer with no tunnel
//! to its response (MAC1 and load check, `parse_handshake_anon`, making the `Tunn`, the
//! handshake), measured around `Core::handle_datagram`. Handshakes are paced under the
//! gateway's 100/s load threshold (so 1,000 take 10 s), as cookie round trips would measure
//! the client, not the gateway.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use ipnet::{IpNet, Ipv6Net};
use meshd::core::{Core, Options, Registration, Transmit};
use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};

#[derive(Default)]
struct Last {
    udp: Vec<Vec<u8>>,
}

impl Transmit for Last {
    fn send_udp(&mut self, _: SocketAddr, datagram: &[u8]) -> bool {
        self.udp.push(datagram.to_vec());
        true
    }
    fn write_tun(&mut self, _: &[u8]) {}
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// What a gateway held before tunnels were made just in time: a `Tunn` per registered peer.
fn all_tunnels(registered: usize) {
    let mut gw = Core::new(
        Some(StaticSecret::random_from_rng(OsRng)),
        Options {
            forward: true,
            org_isolation: true,
            idle_evict: None,
        },
        1,
    );
    let base: u128 = "fdaa:0:1:a7b:1::"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    for i in 0..registered {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let addr = std::net::Ipv6Addr::from(base + 0x1_0000 + i as u128);
        gw.ensure_peer(Instant::now(), key);
        gw.set_allowed_ips(&key, &[IpNet::V6(Ipv6Net::new(addr, 128).unwrap())]);
    }
    println!(
        "gateway_rss_mb registered={registered} all_tunnels {:.1}",
        rss_mb()
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--all-tunnels") {
        args.remove(0);
        let n = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
        return all_tunnels(n);
    }
    let args: Vec<usize> = args
        .iter()
        .map(|a| {
            a.parse()
                .expect("arguments: [--all-tunnels] REGISTERED [ACTIVE...]")
        })
        .collect();
    let registered = args.first().copied().unwrap_or(100_000);
    let mut steps: Vec<usize> = args.get(1..).map(|s| s.to_vec()).unwrap_or_default();
    if steps.is_empty() {
        steps.push(1000);
    }
    let most = steps.iter().copied().max().unwrap_or(0).min(registered);
    println!("gateway_rss_mb registered=0 active=0 {:.1}", rss_mb());

    let gw_secret = StaticSecret::random_from_rng(OsRng);
    let gw_public = PublicKey::from(&gw_secret);
    let mut gw = Core::new(
        Some(gw_secret),
        Options {
            forward: true,
            org_isolation: true,
            idle_evict: Some(Duration::from_secs(180)),
        },
        1,
    );
    let base: u128 = "fdaa:0:1:a7b:1::"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .into();
    gw.set_local_routes(&[IpNet::V6(Ipv6Net::new(base.into(), 80).unwrap())]);
    let register = |gw: &mut Core, i: usize, key: [u8; 32]| {
        let addr = std::net::Ipv6Addr::from(base + 0x1_0000 + i as u128);
        let net = IpNet::V6(Ipv6Net::new(addr, 128).unwrap());
        gw.register_peer(
            key,
            Registration::new(&format!("peer/acme/p{i}"), &[net], None, &[]),
        );
    };
    // The clients that will connect: real keys. The rest: any 32 bytes is a public key.
    let clients: Vec<StaticSecret> = (0..most)
        .map(|_| StaticSecret::random_from_rng(OsRng))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        register(&mut gw, i, PublicKey::from(c).to_bytes());
    }
    for i in most..registered {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        register(&mut gw, i, key);
    }
    assert_eq!(gw.registered_count(), registered);
    println!(
        "gateway_rss_mb registered={registered} active=0 {:.1}",
        rss_mb()
    );

    let from: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let mut batch = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut latencies = Vec::new();
    let mut done = 0;
    for step in steps {
        let step = step.min(registered);
        while done < step.min(most) {
            // Under the 100 handshakes a second that make the gateway ask for cookies
            // (boringtun's limiter counts on its own clock).
            if done % 95 == 0 {
                let next = batch + Duration::from_millis(1010);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                batch = Instant::now();
                gw.handle_timeout(batch, &mut Last::default());
            }
            let clock = Instant::now();
            let mut client = Tunn::new(
                clients[done].clone(),
                gw_public,
                None,
                None,
                done as u32,
                None,
            );
            let TunnResult::WriteToNetwork(init) =
                client.format_handshake_initiation(&mut buf, false)
            else {
                panic!("no initiation");
            };
            let init = init.to_vec();
            let mut out = Last::default();
            let t = Instant::now();
            gw.handle_datagram(clock, from, &init, &mut out);
            latencies.push(t.elapsed());
            let response = out.udp.pop().expect("the gateway answers a registered key");
            let keepalive = match client.decapsulate(None, &response, &mut buf) {
                TunnResult::WriteToNetwork(k) => k,
                TunnResult::Err(e) => panic!("the client refused the response: {e:?}"),
                _ => panic!(
                    "the client made nothing of the response (type {})",
                    response[0]
                ),
            };
            let keepalive = keepalive.to_vec();
            gw.handle_datagram(clock, from, &keepalive, &mut Last::default());
            done += 1;
        }
        assert_eq!(gw.active_count(), done);
        println!(
            "gateway_rss_mb registered={registered} active={done} {:.1}",
            rss_mb()
        );
    }
    latencies.sort();
    println!(
        "first_handshake_ms registered={registered} n={} p50/p99 {:.3}/{:.3}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}
