//! Free ports.

use std::net::{TcpListener, UdpSocket};

use anyhow::{bail, Result};

/// A port on 127.0.0.1 free for both TCP and UDP right now.
pub fn free_port() -> Result<u16> {
    free_port_on("127.0.0.1")
}

/// A port on `ip` free for both TCP and UDP right now: the kernel hands out a TCP port,
/// kept only if UDP's is free too (a DNS server wants both).
pub fn free_port_on(ip: &str) -> Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port on {ip} is free for both TCP and UDP");
}
