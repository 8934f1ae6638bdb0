//! The in-process tunnel: WireGuard (boringtun's `Tunn`) over one UDP socket to the
//! gateway, and a userspace IPv6 stack (smoltcp) holding the peer's address from its tunnel
//! file. No TUN, no root, no change to the machine's routes or resolver: `wgtool dig`,
//! `wgtool ping` and `wgtool proxy` reach the org network from inside this process.

mod config;
mod device;
mod dig;
mod dns;
mod ping;
mod proxy;
mod resolve;
mod shutdown;
mod tunnel;

pub use dig::dig;
pub use ping::ping;
pub use proxy::proxy;
