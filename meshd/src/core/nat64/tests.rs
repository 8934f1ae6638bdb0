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
