//! Just enough of an IP header view to route: checked once for length, then no panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source and destination of an IPv4 or IPv6 packet, if the header is there.
pub fn addrs(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

/// IPv6's Fragment extension header, as the next header value.
const IPV6_FRAGMENT: u8 = 44;

/// Whether `packet` is an IP fragment that is not the last of its datagram: IPv4 with
/// More Fragments set, or IPv6 whose Fragment header (directly after the fixed header, as
/// the kernel puts it) has the M flag set. Such a fragment completes nothing by itself, so
/// sending it ahead of other packets cannot change the order in which the receiver's
/// stack delivers datagrams; anything this does not recognise (other extension headers
/// first, short packets) counts as a last fragment and keeps its place.
pub fn is_leading_fragment(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.len() >= 20 && packet[6] & 0x20 != 0,
        Some(6) => packet.len() >= 48 && packet[6] == IPV6_FRAGMENT && packet[43] & 1 != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(flags_offset: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        p
    }

    fn v6_fragment(offset_flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; 56];
        p[0] = 0x60;
        p[6] = IPV6_FRAGMENT;
        p[40] = 17;
        p[42..44].copy_from_slice(&offset_flags.to_be_bytes());
        p
    }

    #[test]
    fn leading_fragments_are_those_with_more_to_come() {
        // IPv4: MF at offset 0 and further in; not the last fragment, DF or a whole packet.
        assert!(is_leading_fragment(&v4(0x2000)));
        assert!(is_leading_fragment(&v4(0x2000 | 185)));
        assert!(!is_leading_fragment(&v4(185)), "last fragment");
        assert!(!is_leading_fragment(&v4(0x4000)), "don't fragment");
        assert!(!is_leading_fragment(&v4(0)));
        // IPv6: the Fragment header's M flag (offset in the top 13 bits).
        assert!(is_leading_fragment(&v6_fragment(1)));
        assert!(is_leading_fragment(&v6_fragment(181 << 3 | 1)));
        assert!(
            !is_leading_fragment(&v6_fragment(181 << 3)),
            "last fragment"
        );
        let mut udp = v6_fragment(1);
        udp[6] = 17;
        assert!(!is_leading_fragment(&udp), "no fragment header");
        // Too short to tell: keeps its place.
        assert!(!is_leading_fragment(&v4(0x2000)[..19]));
        assert!(!is_leading_fragment(&v6_fragment(1)[..47]));
        assert!(!is_leading_fragment(&[]));
    }

    #[test]
    fn short_or_unknown_packets_have_no_addresses() {
        assert_eq!(addrs(&[]), None);
        assert_eq!(addrs(&[0x60; 39]), None);
        assert_eq!(addrs(&[0x45; 19]), None);
        assert_eq!(addrs(&[0x10; 64]), None);
    }

    #[test]
    fn reads_v6_header() {
        let mut p = [0u8; 40];
        p[0] = 0x60;
        p[8..24].copy_from_slice(&"fdaa::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fdaa::2".parse::<Ipv6Addr>().unwrap().octets());
        let (s, d) = addrs(&p).unwrap();
        assert_eq!(s.to_string(), "fdaa::1");
        assert_eq!(d.to_string(), "fdaa::2");
    }
}
