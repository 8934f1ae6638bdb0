//! Stateful NAT64 at a site's gateway (4via6): an org's IPv6 packet to `<site /96>::a.b.c.d`
//! leaves for the site's IPv4 LAN as an IPv4 packet to `a.b.c.d` from an address of the pool
//! that stands for its IPv6 source; the answer comes back to that pool address and goes on
//! as IPv6 from `<site /96>::<LAN host>` to the source. Header translation follows RFC 7915
//! (SIIT) for TCP, UDP and ICMP echo; the mapping is one pool address per IPv6 source
//! (RFC 6146's binding, without port translation: the pool has room enough, and ports and
//! echo identifiers then pass unchanged).
//!
//! Left out, and dropped as untranslatable: fragments (either family), IPv6 extension
//! headers, ICMP errors and every ICMP type but echo.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP4: u8 = 1;
const ICMP6: u8 = 58;

/// Why a packet was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untranslatable {
    /// Too short, the wrong version, lengths that disagree.
    Malformed,
    /// A protocol, header or ICMP type the translator does not carry.
    Unsupported,
}

/// One's-complement sum of `data` added to `sum`, for Internet checksums.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u32::from(proto) + len as u32
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let acc = sum(sum(0, &src.octets()), &dst.octets());
    acc + u32::from(proto) + len as u32
}

/// Where the transport checksum sits, after the ICMP type is translated in place;
/// `Unsupported` for what is not carried.
fn prepare_l4(proto: u8, l4: &mut [u8], to_v4: bool) -> Result<usize, Untranslatable> {
    match proto {
        TCP if l4.len() >= 20 => Ok(16),
        UDP if l4.len() >= 8 => Ok(6),
        ICMP6 | ICMP4 if l4.len() >= 8 => {
            let (ty, code) = (l4[0], l4[1]);
            l4[0] = match (to_v4, ty, code) {
                (true, 128, 0) => 8,
                (true, 129, 0) => 0,
                (false, 8, 0) => 128,
                (false, 0, 0) => 129,
                _ => return Err(Untranslatable::Unsupported),
            };
            Ok(2)
        }
        TCP | UDP | ICMP4 | ICMP6 => Err(Untranslatable::Malformed),
        _ => Err(Untranslatable::Unsupported),
    }
}

/// Translates the IPv6 `packet` into `out` as IPv4 from `src` to the low 32 bits of its
/// destination; returns the IPv4 packet's length.
pub fn six_to_four(packet: &[u8], src: Ipv4Addr, out: &mut [u8]) -> Result<usize, Untranslatable> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return Err(Untranslatable::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if payload_len == 0 || 40 + payload_len > packet.len() {
        return Err(Untranslatable::Malformed);
    }
    let total = 20 + payload_len;
    if total > usize::from(u16::MAX) || total > out.len() {
        return Err(Untranslatable::Unsupported);
    }
    let next = packet[6];
    let proto = match next {
        TCP | UDP => next,
        ICMP6 => ICMP4,
        _ => return Err(Untranslatable::Unsupported),
    };
    let dst = Ipv4Addr::new(packet[36], packet[37], packet[38], packet[39]);
    let traffic_class = (packet[0] << 4) | (packet[1] >> 4);
    let h = &mut out[..20];
    h[0] = 0x45;
    h[1] = traffic_class;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    // Don't Fragment: the IPv6 sender does path MTU discovery and never expects a router
    // to split its packets.
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    h[8] = packet[7];
    h[9] = proto;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let check = fold(sum(0, h));
    h[10..12].copy_from_slice(&check.to_be_bytes());
    let l4 = &mut out[20..total];
    l4.copy_from_slice(&packet[40..40 + payload_len]);
    let at = prepare_l4(next, l4, true)?;
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let acc = if proto == ICMP4 {
        sum(0, l4)
    } else {
        sum(pseudo4(src, dst, proto, payload_len), l4)
    };
    let mut check = fold(acc);
    if proto == UDP && check == 0 {
        check = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&check.to_be_bytes());
    Ok(total)
}

/// Translates the IPv4 `packet` into `out` as IPv6 from `src` to `dst`; returns the IPv6
/// packet's length.
pub fn four_to_six(
    packet: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    out: &mut [u8],
) -> Result<usize, Untranslatable> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(Untranslatable::Malformed);
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header < 20 || total < header || total > packet.len() {
        return Err(Untranslatable::Malformed);
    }
    let fragment = u16::from_be_bytes([packet[6], packet[7]]);
    if fragment & 0x3fff != 0 {
        // More Fragments or an offset: reassembly is not the translator's job here.
        return Err(Untranslatable::Unsupported);
    }
    let proto = packet[9];
    let next = match proto {
        TCP | UDP => proto,
        ICMP4 => ICMP6,
        _ => return Err(Untranslatable::Unsupported),
    };
    let payload_len = total - header;
    if 40 + payload_len > out.len() {
        return Err(Untranslatable::Unsupported);
    }
    let tos = packet[1];
    let h = &mut out[..40];
    h[0] = 0x60 | (tos >> 4);
    h[1] = tos << 4;
    h[2..4].copy_from_slice(&[0, 0]);
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next;
    h[7] = packet[8];
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    let l4 = &mut out[40..40 + payload_len];
    l4.copy_from_slice(&packet[header..total]);
    let at = prepare_l4(proto, l4, false)?;
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let mut check = fold(sum(pseudo6(src, dst, next, payload_len), l4));
    if next == UDP && check == 0 {
        check = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&check.to_be_bytes());
    Ok(40 + payload_len)
}

/// The bindings: one pool address per IPv6 source, handed out in turn. When the pool has
/// gone round, the oldest binding is reused, so memory is bounded by the pool's size.
#[derive(Debug)]
pub struct Bindings {
    pool: Ipv4Net,
    by_v6: HashMap<Ipv6Addr, Ipv4Addr>,
    by_v4: HashMap<Ipv4Addr, Ipv6Addr>,
    /// Offset in the pool of the next address to hand out.
    next: u32,
}

impl Bindings {
    pub fn new(pool: Ipv4Net) -> Bindings {
        Bindings {
            pool,
            by_v6: HashMap::new(),
            by_v4: HashMap::new(),
            next: 1,
        }
    }

    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    pub fn len(&self) -> usize {
        self.by_v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_v6.is_empty()
    }

    /// The pool address standing for `v6`, binding one if it has none.
    pub fn outbound(&mut self, v6: Ipv6Addr) -> Ipv4Addr {
        if let Some(v4) = self.by_v6.get(&v6) {
            return *v4;
        }
        let size = 1u64 << (32 - self.pool.prefix_len());
        // Skip the pool's first and last address (network and broadcast on a LAN).
        let usable = size.saturating_sub(2).max(1) as u32;
        let offset = 1 + (self.next - 1) % usable;
        self.next = offset % usable + 1;
        let v4 = Ipv4Addr::from(u32::from(self.pool.network()) + offset);
        if let Some(old) = self.by_v4.insert(v4, v6) {
            self.by_v6.remove(&old);
        }
        self.by_v6.insert(v6, v4);
        v4
    }

    /// The IPv6 source a pool address stands for.
    pub fn inbound(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.by_v4.get(&v4).copied()
    }
}

#[cfg(test)]
mod tests;
