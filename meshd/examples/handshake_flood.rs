//! A handshake flood, as an attacker who knows a gateway's public key can send it: WireGuard
//! handshake initiations from random static keys, each with a valid MAC1 for the target, so
//! they pass the cheap checks and reach the rate limiter and, below its limit, the
//! Diffie-Hellman. For `bench/reliability/handshake_flood.sh`; see RELIABILITY.md.
//!
//!   handshake_flood --target 10.203.0.2:51002 --public-key KEY --rate 20000 --seconds 10
//!
//! Making an initiation costs three X25519 operations (a static key per tunnel, an ephemeral
//! key and its DH), more than one core makes at 10,000/s beside the daemon under test. So it
//! makes `--pool` initiations first, each from its own fresh static key, and then sends them
//! round-robin at `--rate`. The target cannot tell: it keeps no state for keys it does not
//! know, and MAC1 covers only the message and the target's key. `--pool 0` makes every
//! initiation fresh as it goes, at whatever rate that allows.
//!
//! Cookie replies (what a target under load answers with) are read and counted, not acted on:
//! an attacker that honoured them would be limited to the cookie's rate.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use clap::Parser;
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

/// Send WireGuard handshake initiations with a valid MAC1 from random keys.
#[derive(Parser)]
struct Args {
    /// Where to send them: the target's WireGuard `ip:port`.
    #[arg(long)]
    target: SocketAddr,
    /// The target's public key (base64, as `wg show` prints it).
    #[arg(long)]
    public_key: String,
    /// Initiations per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many initiations (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Distinct initiations made up front, each from its own static key, then sent in turn
    /// (0: a fresh key for every initiation, made as it goes).
    #[arg(long, default_value_t = 4096)]
    pool: usize,
    /// Local address to send from.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
}

/// A handshake initiation is 148 bytes.
const INIT_LEN: usize = 148;
const COOKIE_REPLY: u8 = 3;

fn main() -> Result<()> {
    let args = Args::parse();
    let key = meshd::key::parse_base64("public-key", &args.public_key)?;
    let target = PublicKey::from(key);
    if args.rate == 0 || args.seconds <= 0.0 {
        bail!("--rate and --seconds must be above 0");
    }
    let socket = UdpSocket::bind(args.bind).context("binding the sending socket")?;
    socket.set_nonblocking(true)?;
    // Only checks MAC1 formatting for our own tunnels; never consulted for the target.
    let limiter = Arc::new(RateLimiter::new(&target, u64::MAX));

    let made = Instant::now();
    let pool: Vec<[u8; INIT_LEN]> = (0..args.pool)
        .map(|i| initiation(&target, &limiter, i as u32))
        .collect::<Result<_>>()?;
    if !pool.is_empty() {
        eprintln!(
            "made {} initiations from {} fresh static keys in {:.2} s",
            pool.len(),
            pool.len(),
            made.elapsed().as_secs_f64()
        );
    }

    let limit = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut refused: u64 = 0;
    let mut cookies: u64 = 0;
    let mut other_replies: u64 = 0;
    let mut reply = [0u8; 256];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= limit || (args.count > 0 && sent >= args.count) {
            break;
        }
        // Catch up to where the rate says we should be, in bursts of at most 64.
        let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
        let due = if args.count > 0 {
            due.min(args.count)
        } else {
            due
        };
        let burst = due.saturating_sub(sent).min(64);
        for _ in 0..burst {
            let fresh;
            let msg = if pool.is_empty() {
                fresh = initiation(&target, &limiter, sent as u32)?;
                &fresh
            } else {
                &pool[(sent % pool.len() as u64) as usize]
            };
            match socket.send_to(msg, args.target) {
                Ok(_) => {}
                // A full socket buffer: counted as sent-and-lost would flatter the rate.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => refused += 1,
                Err(e) => return Err(e).context("sending"),
            }
            sent += 1;
        }
        while let Ok((n, _)) = socket.recv_from(&mut reply) {
            match reply[..n].first() {
                Some(&COOKIE_REPLY) => cookies += 1,
                _ => other_replies += 1,
            }
        }
        if burst == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = sent - refused;
    println!(
        "sent {delivered} initiations in {secs:.2} s: {:.0}/s (asked {}/s; {refused} refused by a full socket buffer); replies: {cookies} cookie, {other_replies} other",
        delivered as f64 / secs,
        args.rate
    );
    Ok(())
}

/// One initiation from a new random static key, MAC1 valid for `target`.
fn initiation(
    target: &PublicKey,
    limiter: &Arc<RateLimiter>,
    index: u32,
) -> Result<[u8; INIT_LEN]> {
    let mut tunn = Tunn::new(
        StaticSecret::random_from_rng(OsRng),
        *target,
        None,
        None,
        index & 0x00ff_ffff,
        Some(limiter.clone()),
    );
    let mut buf = [0u8; 256];
    match tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(msg) if msg.len() == INIT_LEN => {
            let mut out = [0u8; INIT_LEN];
            out.copy_from_slice(msg);
            Ok(out)
        }
        TunnResult::WriteToNetwork(msg) => bail!("an initiation of {} bytes", msg.len()),
        TunnResult::Err(e) => bail!("making an initiation: {e:?}"),
        _ => bail!("making an initiation: no message"),
    }
}
