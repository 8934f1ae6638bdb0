//! Questions to the org's DNS (the tunnel file's `DNS =` address, UDP 53) from inside the
//! tunnel, and turning a `.internal` name or an address into an address.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use smoltcp::socket::udp;
use smoltcp::wire::IpAddress;

use super::dns::{self, QType, Response};
use super::tunnel::UserspaceTunnel;

/// Each try waits this long for the answer; three tries in all.
const TRY: Duration = Duration::from_secs(2);
const TRIES: u32 = 3;

/// Asks the org's DNS `name` `qtype` through the tunnel (which must be up).
pub fn ask(t: &mut UserspaceTunnel, name: &str, qtype: QType) -> Result<Response> {
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 8192]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 2048]);
    let mut socket = udp::Socket::new(rx, tx);
    let port = 49152 + (std::process::id() as u16 % 16384);
    socket
        .bind(port)
        .map_err(|e| anyhow::anyhow!("binding UDP port {port} in the tunnel: {e}"))?;
    let handle = t.sockets.add(socket);
    let result = ask_on(t, handle, name, qtype);
    t.sockets.remove(handle);
    result
}

fn ask_on(
    t: &mut UserspaceTunnel,
    handle: smoltcp::iface::SocketHandle,
    name: &str,
    qtype: QType,
) -> Result<Response> {
    let server = t.dns;
    for attempt in 0..TRIES {
        let id = (std::process::id() as u16) ^ (attempt as u16) << 12 ^ 0x5a5a;
        let q = dns::query(id, name, qtype);
        t.sockets
            .get_mut::<udp::Socket>(handle)
            .send_slice(&q, (IpAddress::Ipv6(server), 53))
            .map_err(|e| anyhow::anyhow!("sending the DNS query: {e}"))?;
        let start = Instant::now();
        while start.elapsed() < TRY {
            t.poll(TRY - start.elapsed().min(TRY), &mut [])?;
            if super::shutdown::requested() {
                bail!("interrupted");
            }
            let socket = t.sockets.get_mut::<udp::Socket>(handle);
            while let Ok((msg, _)) = socket.recv() {
                match dns::parse(msg) {
                    Ok(r) if r.id == id => return Ok(r),
                    _ => continue,
                }
            }
        }
    }
    bail!("no answer from the org's DNS at [{server}]:53 through the tunnel ({TRIES} tries)")
}

/// `host` as an address: itself if it is one, else its first AAAA record.
pub fn address(t: &mut UserspaceTunnel, host: &str) -> Result<Ipv6Addr> {
    if let Ok(a) = host.parse::<Ipv6Addr>() {
        return Ok(a);
    }
    let r = ask(t, host, QType::Aaaa)?;
    if r.rcode != 0 {
        bail!("{host}: {}", dns::rcode_name(r.rcode));
    }
    r.answers
        .iter()
        .find_map(|rec| match rec.data {
            dns::RData::Aaaa(a) => Some(a),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("{host}: no AAAA record"))
}
