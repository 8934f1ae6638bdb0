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

#[cfg(test)]
mod tests {
    use super::*;

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
