//! `wgtool wsproxy --config F`: flyctl's plugboard for kernel WireGuard. A UDP port on
//! loopback takes the interface's datagrams and carries them to the tunnel file's gateway
//! over a WebSocket (and the answers back); the tunnel's `Endpoint` points at the port.

use anyhow::{Context, Result};

use std::net::SocketAddr;
use std::path::Path;

use crate::websocket::bridge::{self, Target};
use crate::{config, shutdown, usage, ReachArgs};

/// `reach.transport` is not looked at: this is always a WebSocket.
pub fn run(config: &Path, listen: SocketAddr, reach: &ReachArgs) -> Result<()> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        usage(format!(
            "tunnel file `{}`: cannot read: {e}",
            config.display()
        ))
    })?;
    let endpoint = config::endpoint(&text)
        .map_err(|e| usage(format!("tunnel file `{}`: {e}", config.display())))?;
    let fingerprint = reach
        .websocket_fingerprint
        .as_deref()
        .map(crate::websocket::parse_fingerprint)
        .transpose()
        .map_err(usage)?;
    let target = Target {
        gateway: SocketAddr::new(endpoint.ip(), reach.websocket_port),
        plain: reach.websocket_plain,
        fingerprint,
    };
    let local =
        std::net::UdpSocket::bind(listen).with_context(|| format!("listening on {listen}"))?;
    shutdown::install();
    let url = target.url();
    let b = bridge::start(local, None, target)?;
    println!("Endpoint = {}", b.local);
    eprintln!(
        "wgtool: carrying WireGuard from {} to {url} (was Endpoint = {endpoint}); Ctrl-C ends",
        b.local
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while !shutdown::requested() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}
