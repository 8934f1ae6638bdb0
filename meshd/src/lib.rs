//! meshd: sixpn's data plane. The files follow the packet path:
//! `tun` → `core` (router, org filter, peer table, timers) → `udp` and back through
//! `reassembly` and `batch` (and, at gateways, `websocket`), with `uapi`, `sync`
//! (registry → peers), `metrics` and `daemon` (the threads) around it.

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
