//! dnsd: sixpn's DNS server. `.internal` names come from the registry, scoped to the
//! querier's org by its source address; other names are forwarded upstream with a cache.
//!
//! What the answer is ([`index`], [`scope`], [`answer`]) is kept apart from how it travels
//! ([`wire`], [`server`], [`forward`], [`cache`]).

pub mod answer;
pub mod cache;
pub mod config;
pub mod forward;
pub mod index;
pub mod live;
pub mod metrics;
pub mod scope;
pub mod server;
pub mod shuffle;
pub mod udp_batch;
pub mod wire;
