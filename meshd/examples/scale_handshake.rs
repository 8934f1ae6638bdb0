//! Laptops of `scale_registry`'s registry handshaking with a running gateway meshd over real
//! UDP, for `bench/scale/run.sh`: laptops FROM..FROM+COUNT, one after another, each from its
//! own socket, at most RATE a second (the gateway answers more than 100 initiations a second
//! with cookies, which would time the client's retry, not the gateway). Each laptop's first
//! initiation is timed to the gateway's response; its keepalive then confirms the session, so
//! the gateway holds COUNT active tunnels until they idle out.
//!
//! ```text
//! scale_handshake GATEWAY_ADDR SEED FROM COUNT RATE
//! ```
//!
//! Prints `first_handshake_ms p50/p99 A/B` and how many answered.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use x25519_dalek::PublicKey;

#[path = "common/scale_keys.rs"]
mod scale_keys;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: scale_handshake GATEWAY_ADDR SEED FROM COUNT RATE");
        std::process::exit(2);
    }
    let gateway: SocketAddr = args[1].parse().unwrap_or_else(|_| {
        eprintln!(
            "scale_handshake: GATEWAY_ADDR `{}` must be IP:PORT",
            args[1]
        );
        std::process::exit(2)
    });
    let number = |i: usize, what: &str| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("scale_handshake: {what} `{}` must be a number", args[i]);
            std::process::exit(2)
        })
    };
    let seed = number(2, "SEED");
    let from = number(3, "FROM");
    let count = number(4, "COUNT");
    let rate = number(5, "RATE").max(1);
    let gw_public = PublicKey::from(&scale_keys::secret(seed, u64::MAX));
    let local: SocketAddr = if gateway.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let mut buf = vec![0u8; 2048];
    let mut reply = vec![0u8; 2048];
    let mut latencies = Vec::with_capacity(count as usize);
    let mut failed = 0u64;
    let mut cookies = 0u64;
    // Keep every socket open so that the gateway's endpoints stay distinct and valid.
    let mut sockets = Vec::with_capacity(count as usize);
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    for n in 0..count {
        let due = started + gap * n as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let i = from + n;
        let sock = UdpSocket::bind(local).expect("a UDP socket");
        sock.connect(gateway).expect("connect to the gateway");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a read timeout");
        let mut client = Tunn::new(
            scale_keys::secret(seed, i),
            gw_public,
            None,
            None,
            (n & 0x00ff_ffff) as u32,
            None,
        );
        let TunnResult::WriteToNetwork(init) = client.format_handshake_initiation(&mut buf, false)
        else {
            failed += 1;
            continue;
        };
        let t = Instant::now();
        if sock.send(init).is_err() {
            failed += 1;
            continue;
        }
        // Past the gateway's load threshold it answers with a cookie: the client takes it and
        // sends its initiation again at once (boringtun adds the cookie's MAC2), counted.
        let mut answered = None;
        for _attempt in 0..3 {
            let Ok(len) = sock.recv(&mut reply) else {
                break;
            };
            let took = t.elapsed();
            match client.decapsulate(None, &reply[..len], &mut buf) {
                TunnResult::WriteToNetwork(keepalive) if reply[0] == 2 => {
                    let _ = sock.send(keepalive);
                    answered = Some(took);
                    break;
                }
                TunnResult::Done if reply[0] == 3 => {
                    cookies += 1;
                    if let TunnResult::WriteToNetwork(init) =
                        client.format_handshake_initiation(&mut buf, true)
                    {
                        let _ = sock.send(init);
                    }
                }
                _ => break,
            }
        }
        match answered {
            Some(took) => latencies.push(took),
            None => failed += 1,
        }
        sockets.push(sock);
    }
    latencies.sort();
    println!(
        "handshakes answered={} failed={failed} cookie_replies={cookies} in {:.1} s",
        latencies.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "first_handshake_ms p50/p99 {:.2}/{:.2}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
