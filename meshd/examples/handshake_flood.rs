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
    let key = registry::PublicKey::parse("--public-key", &args.public_key)?;
    let target = PublicKey::from(key.to_bytes());
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
    let to = socket2::SockAddr::from(args.target);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut refused: u64 = 0;
    let mut cookies: u64 = 0;
    let mut other_replies: u64 = 0;
    let mut replies = Replies::new();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= limit || (args.count > 0 && sent >= args.count) {
            break;
        }
        // Catch up to where the rate says we should be, in batches of at most BATCH sent by
        // one sendmmsg, then sleep until the next batch is due: the tool's own CPU is spent
        // on the machine under test, so it should be little (about 60 system calls a second
        // at 10,000/s).
        let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
        let due = if args.count > 0 {
            due.min(args.count)
        } else {
            due
        };
        let n = due.saturating_sub(sent).min(BATCH as u64) as usize;
        if n > 0 {
            let fresh: Vec<[u8; INIT_LEN]>;
            let msgs: Vec<&[u8]> = if pool.is_empty() {
                fresh = (0..n)
                    .map(|i| initiation(&target, &limiter, (sent + i as u64) as u32))
                    .collect::<Result<_>>()?;
                fresh.iter().map(|m| &m[..]).collect()
            } else {
                (0..n)
                    .map(|i| &pool[((sent + i as u64) % pool.len() as u64) as usize][..])
                    .collect()
            };
            let accepted = send_batch(&socket, &msgs, &to).context("sending")?;
            // A full socket buffer: counted as refused, not as sent-and-lost, which would
            // flatter the rate.
            refused += (n - accepted) as u64;
            sent += n as u64;
        }
        for first in replies.drain(&socket) {
            match first {
                COOKIE_REPLY => cookies += 1,
                _ => other_replies += 1,
            }
        }
        if due.saturating_sub(sent) < BATCH as u64 {
            let next = (sent + BATCH as u64) as f64 / args.rate as f64;
            let wait = Duration::from_secs_f64(next).saturating_sub(start.elapsed());
            std::thread::sleep(wait.min(Duration::from_millis(20)));
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

/// Messages per sendmmsg and per recvmmsg.
const BATCH: usize = 64;

/// Sends `msgs` to `to` with sendmmsg; how many the kernel took.
fn send_batch(socket: &UdpSocket, msgs: &[&[u8]], to: &socket2::SockAddr) -> Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.as_ptr() as *mut libc::c_void,
            iov_len: m.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero msghdr is valid; the fields set point into live buffers.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = to.len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: `hdrs` points at `iovs`, `msgs` and `to`, all alive for the call.
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e.into());
    }
    Ok(n as usize)
}

/// Buffers for reading replies BATCH at a time with recvmmsg.
struct Replies {
    bufs: Vec<[u8; 256]>,
}

impl Replies {
    fn new() -> Replies {
        Replies {
            bufs: vec![[0u8; 256]; BATCH],
        }
    }

    /// The first byte (the message type) of every reply waiting on the socket.
    fn drain(&mut self, socket: &UdpSocket) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        loop {
            let mut iovs: Vec<libc::iovec> = self
                .bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: as in send_batch.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: `hdrs` points at `iovs`, which point at `self.bufs`; the socket is
            // non-blocking.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return out;
            }
            for (h, b) in hdrs.iter().zip(&self.bufs).take(n as usize) {
                if h.msg_len > 0 {
                    out.push(b[0]);
                }
            }
            if (n as usize) < BATCH {
                return out;
            }
        }
    }
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
