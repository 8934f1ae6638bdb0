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
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A packet with a correct transport checksum, for the families both ways.
    fn packet6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60 | 0x0b;
        p[1] = 0x80;
        p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        p[6] = next;
        p[7] = 61;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        let at = match next {
            TCP => 40 + 16,
            UDP => 40 + 6,
            _ => 40 + 2,
        };
        p[at..at + 2].copy_from_slice(&[0, 0]);
        let c = fold(sum(pseudo6(src, dst, next, l4.len()), &p[40..]));
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn valid_v4(p: &[u8]) -> bool {
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let header_ok = fold(sum(0, &p[..20])) == 0;
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let l4 = &p[20..total];
        let l4_ok = if p[9] == ICMP4 {
            fold(sum(0, l4)) == 0
        } else {
            fold(sum(pseudo4(src, dst, p[9], l4.len()), l4)) == 0
        };
        header_ok && l4_ok && total == p.len()
    }

    fn valid_v6(p: &[u8]) -> bool {
        let len = usize::from(u16::from_be_bytes([p[4], p[5]]));
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
        fold(sum(pseudo6(src, dst, p[6], len), &p[40..40 + len])) == 0 && p.len() == 40 + len
    }

    #[test]
    fn tcp_round_trip_keeps_ports_payload_and_valid_checksums() {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n!");
        let src = v6("fdaa:0:18:a7b:2:0:1:2");
        let dst = v6("fdaa:0:18:b1a:1:1:a14:5");
        let p = packet6(src, dst, TCP, &tcp);
        let mut out = [0u8; 2000];
        let n = six_to_four(&p, Ipv4Addr::new(100, 127, 0, 1), &mut out).unwrap();
        let v4 = out[..n].to_vec();
        assert!(valid_v4(&v4));
        assert_eq!(&v4[16..20], &[10, 20, 0, 5]);
        assert_eq!(v4[8], 61, "hop limit becomes TTL");
        assert_eq!(v4[1], 0xb8, "traffic class becomes TOS");
        assert_eq!(&v4[20..24], &tcp[0..4]);
        assert_eq!(&v4[40..], b"GET / HTTP/1.0\r\n\r\n!");
        let back_src = v6("fdaa:0:18:b1a:1:1:a14:5");
        let mut out6 = [0u8; 2000];
        let m = four_to_six(&v4, back_src, src, &mut out6).unwrap();
        assert!(valid_v6(&out6[..m]));
        assert_eq!(&out6[40..m], &p[40..]);
        assert_eq!(out6[1] >> 4, 0x8);
    }

    #[test]
    fn udp_with_odd_length_and_zero_v4_checksum_is_carried() {
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp.extend_from_slice(b"odd");
        let len = udp.len() as u16;
        udp[4..6].copy_from_slice(&len.to_be_bytes());
        let p = packet6(v6("fdaa:0:1::2"), v6("fdaa:0:1:b1a::a00:1"), UDP, &udp);
        let mut out = [0u8; 200];
        let n = six_to_four(&p, Ipv4Addr::new(100, 127, 0, 9), &mut out).unwrap();
        assert!(valid_v4(&out[..n]));
        // An IPv4 UDP datagram may carry no checksum; IPv6 needs one.
        let mut v4 = out[..n].to_vec();
        v4[26..28].copy_from_slice(&[0, 0]);
        let mut out6 = [0u8; 200];
        let m = four_to_six(&v4, v6("fdaa:0:1:b1a::a00:1"), v6("fdaa:0:1::2"), &mut out6).unwrap();
        assert!(valid_v6(&out6[..m]));
    }

    #[test]
    fn echo_types_are_mapped_and_other_icmp_is_not() {
        let echo = [128u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
        let p = packet6(v6("fdaa:0:1::2"), v6("fdaa:0:1:b1a::a00:1"), ICMP6, &echo);
        let mut out = [0u8; 200];
        let n = six_to_four(&p, Ipv4Addr::new(100, 127, 0, 9), &mut out).unwrap();
        assert!(valid_v4(&out[..n]));
        assert_eq!(out[20], 8);
        assert_eq!(&out[24..26], &[0x12, 0x34], "echo identifier unchanged");
        let mut reply = out[..n].to_vec();
        reply[20] = 0;
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(100, 127, 0, 9));
        reply[12..16].copy_from_slice(&s.octets());
        reply[16..20].copy_from_slice(&d.octets());
        let mut out6 = [0u8; 200];
        let m = four_to_six(
            &reply,
            v6("fdaa:0:1:b1a::a00:1"),
            v6("fdaa:0:1::2"),
            &mut out6,
        )
        .unwrap();
        assert!(valid_v6(&out6[..m]));
        assert_eq!(out6[40], 129);
        let unreachable = [1u8, 4, 0, 0, 0, 0, 0, 0];
        let p = packet6(
            v6("fdaa:0:1::2"),
            v6("fdaa:0:1:b1a::a00:1"),
            ICMP6,
            &unreachable,
        );
        assert_eq!(
            six_to_four(&p, d, &mut out),
            Err(Untranslatable::Unsupported)
        );
    }

    #[test]
    fn bad_packets_are_refused_not_panicked_on() {
        let mut out = [0u8; 100];
        for len in 0..60 {
            let junk = vec![0x60u8; len];
            let _ = six_to_four(&junk, Ipv4Addr::LOCALHOST, &mut out);
            let junk = vec![0x45u8; len];
            let _ = four_to_six(&junk, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &mut out);
        }
        // A fragment header, and an IPv4 fragment.
        let p = packet6(v6("fdaa::1"), v6("fdaa::2"), 44, &[0u8; 16]);
        assert_eq!(
            six_to_four(&p, Ipv4Addr::LOCALHOST, &mut out),
            Err(Untranslatable::Unsupported)
        );
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&28u16.to_be_bytes());
        v4[6] = 0x20;
        v4[9] = UDP;
        assert_eq!(
            four_to_six(&v4, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &mut out),
            Err(Untranslatable::Unsupported)
        );
        // Too big for the output buffer.
        let big = packet6(v6("fdaa::1"), v6("fdaa::2"), UDP, &[0u8; 200]);
        assert_eq!(
            six_to_four(&big, Ipv4Addr::LOCALHOST, &mut out),
            Err(Untranslatable::Unsupported)
        );
    }

    #[test]
    fn bindings_are_stable_distinct_and_bounded() {
        let mut b = Bindings::new("100.127.0.0/29".parse().unwrap());
        let a = b.outbound(v6("fdaa::a"));
        assert_eq!(a, Ipv4Addr::new(100, 127, 0, 1));
        assert_eq!(b.outbound(v6("fdaa::a")), a);
        let mut seen = vec![a];
        for i in 1..6u16 {
            seen.push(b.outbound(Ipv6Addr::new(0xfdaa, 0, 0, 0, 0, 0, 0, 0x100 + i)));
        }
        // Six usable addresses: .1 to .6, never .0 or .7.
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(sorted
            .iter()
            .all(|a| a.octets()[3] >= 1 && a.octets()[3] <= 6));
        assert_eq!(b.inbound(a), Some(v6("fdaa::a")));
        // The seventh source takes the oldest binding.
        let g = b.outbound(v6("fdaa::ffff"));
        assert_eq!(g, a);
        assert_eq!(b.inbound(a), Some(v6("fdaa::ffff")));
        assert_eq!(b.len(), 6);
    }
}
