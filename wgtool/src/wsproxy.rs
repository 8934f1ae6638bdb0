//! `wgtool wsproxy --config F`: flyctl's plugboard for kernel WireGuard. A UDP port on
//! loopback takes the interface's datagrams and carries them to the tunnel file's gateway
//! over a WebSocket (and the answers back); the tunnel's `Endpoint` points at the port.

use anyhow::{Context, Result};

use crate::cli::WsproxyArgs;
use crate::inproc::{config, shutdown};
use crate::usage;
use crate::websocket::bridge::{self, Target};

pub fn run(a: &WsproxyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.config).map_err(|e| {
        usage(format!(
            "tunnel file `{}`: cannot read: {e}",
            a.config.display()
        ))
    })?;
    let endpoint = config::endpoint(&text)
        .map_err(|e| usage(format!("tunnel file `{}`: {e}", a.config.display())))?;
    let fingerprint = a
        .websocket_fingerprint
        .as_deref()
        .map(crate::websocket::parse_fingerprint)
        .transpose()
        .map_err(usage)?;
    let target = Target {
        gateway: std::net::SocketAddr::new(endpoint.ip(), a.websocket_port),
        plain: a.websocket_plain,
        fingerprint,
    };
    let local = std::net::UdpSocket::bind(a.listen)
        .with_context(|| format!("listening on {}", a.listen))?;
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
