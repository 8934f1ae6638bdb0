//! `wgtool ping NAME|ADDRESS|gateway`: ICMPv6 echo through the in-process tunnel, printed
//! as `ping` prints it. `gateway` is the org's service address on the tunnel's gateway (the
//! tunnel file's `DNS =`, `fdaa:<net>::3`), which the gateway host itself answers: a reply
//! proves the handshake and the gateway's way into the org network, with no machine and
//! no DNS involved.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use smoltcp::socket::icmp;
use smoltcp::wire::IpAddress;

use super::config::TunnelConfig;
use super::tunnel::UserspaceTunnel;
use crate::usage;
use crate::ReachArgs;

const PAYLOAD: usize = 56;
/// The target that means the gateway itself (as in `fly ping gateway`).
const GATEWAY: &str = "gateway";
/// After the last request, how long a reply may still come.
const LINGER: Duration = Duration::from_secs(2);

/// An echo request: type 128; smoltcp fills in the checksum when it sends it.
fn echo_request(ident: u16, seq: u16) -> [u8; 8 + PAYLOAD] {
    let mut p = [0u8; 8 + PAYLOAD];
    p[0] = 128;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// The sequence number of an echo reply (type 129) to `ident`.
fn echo_reply_seq(ident: u16, p: &[u8]) -> Option<u16> {
    let h = p.get(..8)?;
    (h[0] == 129 && h[4..6] == ident.to_be_bytes()).then(|| u16::from_be_bytes([h[6], h[7]]))
}

pub fn ping(
    config: &Path,
    reach: &ReachArgs,
    target: &str,
    count: Option<u32>,
    interval: f64,
) -> Result<()> {
    if !(interval.is_finite() && (0.01..=86_400.0).contains(&interval)) {
        return Err(usage(format!(
            "-i {interval}: from 0.01 seconds to a day (86400)"
        )));
    }
    if count == Some(0) {
        return Err(usage("-c 0: at least one echo request"));
    }
    let cfg = TunnelConfig::load(config).map_err(|e| usage(e.to_string()))?;
    super::shutdown::install();
    let mut t = UserspaceTunnel::open(&cfg, crate::reach(&cfg, reach)?)?;
    t.wait_up(super::dig::HANDSHAKE_LIMIT)?;
    let addr: Ipv6Addr = match target {
        GATEWAY => t.dns,
        _ => super::resolve::address(&mut t, target)?,
    };

    let ident = (std::process::id() & 0xffff) as u16;
    let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]);
    let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]);
    let mut socket = icmp::Socket::new(rx, tx);
    socket
        .bind(icmp::Endpoint::Ident(ident))
        .map_err(|e| anyhow::anyhow!("ICMP socket: {e}"))?;
    let h = t.sockets.add(socket);

    println!("PING {target} ({addr}) {PAYLOAD} data bytes");
    let interval = Duration::from_secs_f64(interval);
    let start = Instant::now();
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let (mut sent, mut received) = (0u32, 0u32);
    let mut rtts: Vec<f64> = Vec::new();
    let mut next_send = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        if super::shutdown::requested() {
            break;
        }
        let done_sending = count.is_some_and(|c| sent >= c);
        if done_sending && (received >= sent || last_sent.elapsed() > LINGER) {
            break;
        }
        if !done_sending && Instant::now() >= next_send {
            let seq = sent as u16;
            let socket = t.sockets.get_mut::<icmp::Socket>(h);
            if socket
                .send_slice(&echo_request(ident, seq), IpAddress::Ipv6(addr))
                .is_ok()
            {
                sent_at.insert(seq, Instant::now());
            }
            sent += 1;
            last_sent = Instant::now();
            next_send += interval;
        }
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        t.poll(wait, &mut [])?;
        let socket = t.sockets.get_mut::<icmp::Socket>(h);
        while let Ok((p, from)) = socket.recv() {
            let Some(seq) = echo_reply_seq(ident, p) else {
                continue;
            };
            let Some(at) = sent_at.remove(&seq) else {
                continue;
            };
            let ms = at.elapsed().as_secs_f64() * 1000.0;
            received += 1;
            rtts.push(ms);
            println!(
                "{} bytes from {from}: icmp_seq={} time={ms:.2} ms",
                p.len(),
                seq + 1
            );
        }
    }
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * f64::from(sent - received) / f64::from(sent)
    };
    println!("\n--- {target} ping statistics ---");
    println!(
        "{sent} packets transmitted, {received} received, {loss:.0}% packet loss, time {}ms",
        start.elapsed().as_millis()
    );
    if !rtts.is_empty() {
        let min = rtts.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().cloned().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        println!("rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    if received == 0 {
        bail!("no reply from {addr}");
    }
    Ok(())
}

/// One echo request to `addr` through the tunnel (which must be up); the round trip, or
/// an error when no reply comes within `limit`.
pub fn echo_once(t: &mut UserspaceTunnel, addr: Ipv6Addr, limit: Duration) -> Result<Duration> {
    let ident = (std::process::id() & 0xffff) as u16 ^ 0x8000;
    let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let mut socket = icmp::Socket::new(rx, tx);
    socket
        .bind(icmp::Endpoint::Ident(ident))
        .map_err(|e| anyhow::anyhow!("ICMP socket: {e}"))?;
    let h = t.sockets.add(socket);
    let result = echo_on(t, h, ident, addr, limit);
    t.sockets.remove(h);
    result
}

fn echo_on(
    t: &mut UserspaceTunnel,
    h: smoltcp::iface::SocketHandle,
    ident: u16,
    addr: Ipv6Addr,
    limit: Duration,
) -> Result<Duration> {
    t.sockets
        .get_mut::<icmp::Socket>(h)
        .send_slice(&echo_request(ident, 0), IpAddress::Ipv6(addr))
        .map_err(|e| anyhow::anyhow!("sending the echo request: {e}"))?;
    let start = Instant::now();
    while start.elapsed() < limit {
        t.poll(limit - start.elapsed().min(limit), &mut [])?;
        let socket = t.sockets.get_mut::<icmp::Socket>(h);
        while let Ok((p, _)) = socket.recv() {
            if echo_reply_seq(ident, p) == Some(0) {
                return Ok(start.elapsed());
            }
        }
    }
    bail!("no echo reply from {addr} within {} s", limit.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_matched_by_ident_and_sequence() {
        let mut p = echo_request(0x1234, 7);
        assert_eq!(echo_reply_seq(0x1234, &p), None, "a request is no reply");
        p[0] = 129;
        assert_eq!(echo_reply_seq(0x1234, &p), Some(7));
        assert_eq!(echo_reply_seq(0x4321, &p), None);
        assert_eq!(echo_reply_seq(0x1234, &p[..5]), None);
    }
}
