//! The in-process tunnel: WireGuard (boringtun's `Tunn`) over one UDP socket to the
//! gateway, or over a WebSocket as flyctl frames it, and a userspace IPv6 stack (smoltcp)
//! holding the peer's address from its tunnel file. No TUN, no root, no change to the
//! machine's routes or resolver: `wgtool dig`, `wgtool ping`, `wgtool proxy` and `wgtool
//! wsproxy` reach the org network from inside one process.
//!
//! wgtool parses a command and finds its tunnel file, then hands the [`Job`] to
//! [`launch`], which execs the `wgtool-tunnel` binary beside it (this crate's, and little
//! else) or, without one, runs the job itself.

pub mod config;
mod device;
pub mod dig;
pub mod dns;
mod job;
pub mod pin;
pub mod ping;
pub mod proxy;
pub mod resolve;
pub mod shutdown;
pub mod tunnel;
pub mod websocket;
pub mod wsproxy;

pub use job::{launch, Job, ReachArgs, HELP, LAUNCHED_BY, TUNNEL_BIN};
pub use websocket::Transport;

/// An error in what the user asked for (exit 2), as opposed to a failure of the system.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

/// The error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The tunnel's way to its gateway from the command line.
pub fn reach(cfg: &config::TunnelConfig, a: &ReachArgs) -> anyhow::Result<tunnel::Reach> {
    let fingerprint = a
        .websocket_fingerprint
        .as_deref()
        .map(websocket::parse_fingerprint)
        .transpose()
        .map_err(usage)?;
    Ok(tunnel::Reach::new(
        cfg,
        a.transport,
        a.websocket_port,
        a.websocket_plain,
        fingerprint,
    ))
}
