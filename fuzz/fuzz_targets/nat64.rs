//! meshd's 4via6 translator (`core::nat64`) on its own. Whatever it returns must be a
//! well-formed packet of the other family with a valid checksum; and a packet that
//! translates there and back keeps its payload (all but the checksum field) and its
//! addresses.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use meshd::core::nat64::{four_to_six, six_to_four};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP4: u8 = 1;
const ICMP6: u8 = 58;

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

fn folds_to_ones(mut acc: u32) -> bool {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc == 0xffff
}

fn checksum_at(proto: u8) -> usize {
    match proto {
        TCP => 16,
        UDP => 6,
        _ => 2,
    }
}

/// Checks an IPv4 packet the translator wrote; returns its payload.
fn check_v4(p: &[u8], src: Ipv4Addr) -> &[u8] {
    assert_eq!(p[0], 0x45, "{p:02x?}");
    assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
    assert!(folds_to_ones(sum(0, &p[..20])), "IPv4 header checksum: {p:02x?}");
    assert_eq!(p[12..16], src.octets());
    let l4 = &p[20..];
    let acc = match p[9] {
        ICMP4 => sum(0, l4),
        proto => {
            let pseudo = sum(sum(0, &p[12..20]), &[0, proto]) + l4.len() as u32;
            sum(pseudo, l4)
        }
    };
    assert!(folds_to_ones(acc), "IPv4 transport checksum: {p:02x?}");
    l4
}

/// Checks an IPv6 packet the translator wrote; returns its payload.
fn check_v6(p: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> &[u8] {
    assert_eq!(p[0] >> 4, 6, "{p:02x?}");
    assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len());
    assert_eq!(p[8..24], src.octets());
    assert_eq!(p[24..40], dst.octets());
    let l4 = &p[40..];
    let pseudo = sum(sum(0, &p[8..40]), &[0, p[6]]) + l4.len() as u32;
    assert!(folds_to_ones(sum(pseudo, l4)), "IPv6 transport checksum: {p:02x?}");
    l4
}

/// `a` and `b` alike but for the two checksum bytes at `at`.
fn same_but_checksum(a: &[u8], b: &[u8], at: usize) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a[..at], b[..at]);
    assert_eq!(a[at + 2..], b[at + 2..]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, packet)) = data.split_first() else {
        return;
    };
    let mut out = vec![0u8; 65_536 + 256];
    let mut back = vec![0u8; 65_536 + 256];
    let pool = Ipv4Addr::new(100, 127, 0, how);
    let machine: Ipv6Addr = "fdaa:0:1:a7b:1:0:1:2".parse().unwrap();
    if how & 1 == 0 {
        // IPv6 out to a site, and the translation back as the site's answer would go.
        let Ok(n) = six_to_four(packet, pool, &mut out) else {
            return;
        };
        let v4 = &out[..n];
        let l4 = check_v4(v4, pool);
        let next = packet[6];
        let at = checksum_at(v4[9]);
        let orig = &packet[40..40 + l4.len()];
        if next == ICMP6 {
            assert_eq!(l4[0], if orig[0] == 128 { 8 } else { 0 });
            same_but_checksum(&l4[1..], &orig[1..], at - 1);
        } else {
            same_but_checksum(l4, orig, at);
        }
        let src6 = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).unwrap());
        let dst6 = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).unwrap());
        let m = four_to_six(v4, src6, dst6, &mut back)
            .unwrap_or_else(|e| panic!("its own IPv4 packet does not translate back: {e:?}"));
        let v6 = &back[..m];
        let l4_back = check_v6(v6, src6, dst6);
        assert_eq!(v6[6], next);
        assert_eq!(v6[7], packet[7], "hop limit");
        assert_eq!((v6[0] << 4) | (v6[1] >> 4), (packet[0] << 4) | (packet[1] >> 4), "traffic class");
        same_but_checksum(l4_back, orig, at);
    } else {
        let via: ipnet::Ipv6Net = "fdaa:0:1:b1a:1:5::/96".parse().unwrap();
        let Some(src4) = packet.get(12..16) else {
            return;
        };
        let src4 = Ipv4Addr::new(src4[0], src4[1], src4[2], src4[3]);
        let src6 = registry::addr::via_addr(via, src4);
        let Ok(n) = four_to_six(packet, src6, machine, &mut out) else {
            return;
        };
        let v6 = &out[..n];
        let l4 = check_v6(v6, src6, machine);
        let header = usize::from(packet[0] & 0x0f) * 4;
        let orig = &packet[header..header + l4.len()];
        let at = checksum_at(packet[9]);
        if packet[9] == ICMP4 {
            assert_eq!(l4[0], if orig[0] == 8 { 128 } else { 129 });
            same_but_checksum(&l4[1..], &orig[1..], at - 1);
        } else {
            same_but_checksum(l4, orig, at);
        }
        let dst4 = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let mut answer = v6.to_vec();
        answer[24..40].copy_from_slice(&registry::addr::via_addr(via, dst4).octets());
        let m = six_to_four(&answer, pool, &mut back)
            .unwrap_or_else(|e| panic!("its own IPv6 packet does not translate back: {e:?}"));
        let v4 = &back[..m];
        assert_eq!(v4[16..20], dst4.octets());
        assert_eq!(v4[9], packet[9]);
        assert_eq!(v4[8], packet[8], "TTL");
        assert_eq!(v4[1], packet[1], "TOS");
        let l4_back = check_v4(v4, pool);
        same_but_checksum(l4_back, orig, at);
    }
});
