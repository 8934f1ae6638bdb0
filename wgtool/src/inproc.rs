//! The in-process tunnel: WireGuard (boringtun's `Tunn`) over one UDP socket to the
//! gateway, and a userspace IPv6 stack (smoltcp) holding the peer's address from its tunnel
//! file. No TUN, no root, no change to the machine's routes or resolver: `wgtool dig`,
//! `wgtool ping` and `wgtool proxy` reach the org network from inside this process.

pub(crate) mod checkup;
pub(crate) mod config;
mod device;
mod dig;
mod dns;
pub(crate) mod kept;
mod ping;
mod proxy;
mod resolve;
pub(crate) mod shutdown;
mod tunnel;

pub use dig::dig;
pub use ping::ping;
pub use proxy::proxy;

/// The tunnel's way to its gateway from the command line.
fn reach(
    cfg: &config::TunnelConfig,
    a: &crate::cli::TransportArgs,
) -> anyhow::Result<tunnel::Reach> {
    let fingerprint = a
        .websocket_fingerprint
        .as_deref()
        .map(crate::websocket::parse_fingerprint)
        .transpose()
        .map_err(crate::usage)?;
    Ok(tunnel::Reach::new(
        cfg,
        a.transport,
        a.websocket_port,
        a.websocket_plain,
        fingerprint,
    ))
}
