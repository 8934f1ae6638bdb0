//! meshd: sixpn's data plane. The files follow the packet path:
//! `tun` → `core` (`send`: route, org check, encapsulate) → `udp`, and back `udp` → `core`
//! (`receive`: decapsulate, allowed IPs, org check, forward) → `reassembly` → `tun`, with
//! `batch` gathering what the core writes under its lock (and, at gateways, `websocket`).
//! Around it: `uapi` (the configuration protocol), `sync` (registry → peers), `metrics`, and
//! `daemon` (the threads: `io_loop`, `uapi_socket`, `signals`, `registry_sync`).

pub mod batch;
pub mod config;
pub mod core;
pub mod daemon;
pub mod error;
pub mod key;
pub mod metrics;
pub mod reassembly;
pub mod sync;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod websocket;
