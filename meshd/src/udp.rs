//! The UDP side: one dual-stack socket; IPv4 peers appear as IPv4 addresses everywhere
//! except on the socket itself, where they are v4-mapped.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// How long a blocked receive waits before the loop looks at the socket again (a `wg set
/// listen-port` swaps it).
pub const RECV_TIMEOUT: Duration = Duration::from_millis(500);
const BUFFER_BYTES: usize = 4 << 20;

pub fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    let _ = s.set_send_buffer_size(BUFFER_BYTES);
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(s.into())
}

/// The address as the socket wants it.
pub fn to_wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// The address as people read it.
pub fn from_wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => SocketAddr::V6(a),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips() {
        let a: SocketAddr = "10.1.0.1:51820".parse().unwrap();
        assert_eq!(to_wire(a).to_string(), "[::ffff:10.1.0.1]:51820");
        assert_eq!(from_wire(to_wire(a)), a);
        let b: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(from_wire(to_wire(b)), b);
    }
}
