//! Command line and config file, merged and checked into one [`Mode`]. Flags win over the
//! file. Every rule broken is reported as `field: rule`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_INTERFACE: &str = "sixpn0";
pub const DEFAULT_KEY: &str = "/var/lib/sixpn/meshd.key";
/// How long a gateway keeps a laptop's or site's tunnel after its last packet: as long as
/// a WireGuard session may be used (REJECT_AFTER_TIME), so an evicted tunnel had no usable
/// session left unless the peer was quiet.
pub const DEFAULT_IDLE_EVICT: Duration = Duration::from_secs(180);

/// sixpn's data plane: joins this host to the org mesh over WireGuard.
///
/// With `--registry` (or a config file naming one) meshd runs a mesh node. With only an
/// interface name, it is a plain userspace WireGuard interface configured through the UAPI
/// socket (`wg set`, `wg setconf`), usable as `WG_QUICK_USERSPACE_IMPLEMENTATION=meshd`.
#[derive(Debug, Parser)]
#[command(name = "meshd", version = env!("SIXPN_VERSION"), args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log lines as text or as JSON objects (one per line, with the event's fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the public key of a key file (creating the key if the file is missing).
    Pubkey {
        /// The private key file.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: PathBuf,
    },
    /// Writes the man pages meshd.1, meshd-pubkey.1 and meshd-man.1 into DIR, e.g.
    /// /usr/local/share/man/man1.
    Man { dir: PathBuf },
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// A TOML file with the same settings (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Registry location: `sqlite:///path/registry.db`, a plain path, or
    /// `etcd[s]://[user[:password]@]host:port,...[/prefix][?cacert=..&cert=..&key=..]`.
    /// Messages show it without the password; a command line is readable by every local
    /// user, so leave the password to the config file or to `ETCDCTL_PASSWORD`.
    #[arg(long)]
    pub registry: Option<String>,
    /// This node's name in the registry.
    #[arg(long)]
    pub node: Option<String>,
    /// This node's region code, e.g. `iad`.
    #[arg(long)]
    pub region: Option<String>,
    /// The address other nodes reach this node's WireGuard port at, `ip:port`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Accept laptops and sites (the org's WireGuard peers) and forward for them.
    #[arg(long)]
    pub gateway: bool,
    /// Gateways: drop a laptop's or site's tunnel after this long without a packet from it
    /// (`500ms`, `30s`, `3m`); it is made again from its next handshake. Default 180s.
    #[arg(long)]
    pub idle_evict: Option<String>,
    /// Where to keep a local copy of what meshd reads from the registry (a base file and a
    /// journal beside it, mode 0600): a restart builds its peers and routes from it and then
    /// follows the registry from the copy's revision instead of reading it whole, and a start
    /// while the registry is down comes up with the peers it last had. Off unless given.
    #[arg(long, value_name = "FILE")]
    pub registry_copy: Option<PathBuf>,
    /// Gateways: also accept WireGuard over WebSockets on this address (e.g. `[::]:443`),
    /// framed as flyctl frames it (magic 0x2FACED77, then a 4-byte big-endian length per
    /// datagram), for laptops on networks that drop UDP.
    #[arg(long, value_name = "IP:PORT")]
    pub websocket_listen: Option<String>,
    /// The WebSocket listener's certificate chain (PEM). Without --tls-cert/--tls-key, a
    /// self-signed one is made beside the key file (websocket.crt, websocket.key) and kept;
    /// its SHA-256 fingerprint is logged for laptops to pin.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The WebSocket listener's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain `ws://` instead of `wss://` (for tests, or behind a TLS terminator).
    #[arg(long)]
    pub websocket_plain: bool,
    /// Most WebSocket connections open at once; more are refused (and counted). Default 1024.
    #[arg(long)]
    pub websocket_max_connections: Option<usize>,
    /// How long a WebSocket connection has for TLS, the upgrade and the magic before it is
    /// closed (and counted). Default 10s.
    #[arg(long)]
    pub websocket_handshake_timeout: Option<String>,
    /// Private key file; created (mode 0600) if missing.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Interface name (default sixpn0 in mesh mode).
    #[arg(long)]
    pub interface: Option<String>,
    /// UDP port to listen on (default: the endpoint's port).
    #[arg(long)]
    pub listen_port: Option<u16>,
    /// Serve Prometheus metrics on this address, `ip:port`.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Stay in the foreground (drop-in mode daemonises otherwise, as wireguard-go does).
    #[arg(short, long)]
    pub foreground: bool,
    /// Interface name, as wg-quick passes it.
    #[arg(value_name = "INTERFACE")]
    pub interface_arg: Option<String>,
}

/// The config file; every field is optional and unknown fields are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub registry: Option<String>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub gateway: Option<bool>,
    pub idle_evict: Option<String>,
    pub registry_copy: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub interface: Option<String>,
    pub listen_port: Option<u16>,
    pub metrics: Option<String>,
    pub websocket_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub websocket_plain: Option<bool>,
    pub websocket_max_connections: Option<usize>,
    pub websocket_handshake_timeout: Option<String>,
}

/// The gateway's WebSocket listener.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    pub listen: SocketAddr,
    /// Given certificate and key; `None`: self-signed, kept beside the node's key.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub plain: bool,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

pub const DEFAULT_WEBSOCKET_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct MeshConfig {
    pub registry: String,
    pub node: String,
    pub region: String,
    pub endpoint: SocketAddr,
    pub gateway: bool,
    pub idle_evict: Duration,
    pub registry_copy: Option<PathBuf>,
    pub key: PathBuf,
    pub interface: String,
    pub listen_port: u16,
    pub metrics: Option<SocketAddr>,
    pub websocket: Option<WebSocketConfig>,
}

impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand, so that a password in the registry URL never reaches a log through `{:?}`.
        f.debug_struct("MeshConfig")
            .field("registry", &registry::shown(&self.registry))
            .field("node", &self.node)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("gateway", &self.gateway)
            .field("idle_evict", &self.idle_evict)
            .field("registry_copy", &self.registry_copy)
            .field("key", &self.key)
            .field("interface", &self.interface)
            .field("listen_port", &self.listen_port)
            .field("metrics", &self.metrics)
            .field("websocket", &self.websocket)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct DropInConfig {
    pub interface: String,
    pub foreground: bool,
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Mesh(Box<MeshConfig>),
    DropIn(DropInConfig),
}

pub fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
        path: path.into(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| Error::ConfigFile {
        path: path.into(),
        message: e.message().to_string(),
    })
}

/// Interface names: what Linux accepts and what fits a socket path.
pub fn check_interface(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "interface",
            format!("`{name}`: 1 to 15 characters of a-z, A-Z, 0-9, '_', '-', '.'"),
        ))
    }
}

/// A duration as `250ms`, `30s`, `3m` or `1h`; at least 100 ms.
pub fn duration(field: &str, value: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            field,
            format!("`{value}`: use a whole number with ms, s, m or h, e.g. 180s (at least 100ms)"),
        )
    };
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = value.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    if ms < 100 {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms))
}

fn socket_addr(field: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        Error::invalid(
            field,
            format!("`{value}`: use ip:port, e.g. 10.0.0.1:51820"),
        )
    })
}

impl RunArgs {
    pub fn resolve(self) -> Result<Mode> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        if let (Some(a), Some(b)) = (&self.interface, &self.interface_arg) {
            if a != b {
                return Err(Error::invalid(
                    "interface",
                    "given both as --interface and as an argument, differently",
                ));
            }
        }
        let interface = self.interface.or(self.interface_arg).or(file.interface);
        let metrics = self
            .metrics
            .or(file.metrics)
            .map(|m| socket_addr("metrics", &m))
            .transpose()?;
        let Some(registry) = self.registry.or(file.registry) else {
            let Some(interface) = interface else {
                return Err(Error::invalid(
                    "registry",
                    "give --registry (mesh node) or an interface name (plain WireGuard interface)",
                ));
            };
            check_interface(&interface)?;
            return Ok(Mode::DropIn(DropInConfig {
                interface,
                foreground: self.foreground,
                metrics,
            }));
        };
        let node = self
            .node
            .or(file.node)
            .ok_or_else(|| Error::invalid("node", "required with a registry"))?;
        registry::name::label("node", &node).map_err(|e| Error::invalid("node", e.to_string()))?;
        let region = self
            .region
            .or(file.region)
            .ok_or_else(|| Error::invalid("region", "required with a registry"))?;
        if registry::region::find(&region).is_none() {
            return Err(Error::invalid(
                "region",
                format!("`{region}` is not a known region code"),
            ));
        }
        let endpoint = self
            .endpoint
            .or(file.endpoint)
            .ok_or_else(|| Error::invalid("endpoint", "required with a registry (ip:port)"))?;
        let endpoint = socket_addr("endpoint", &endpoint)?;
        if endpoint.port() == 0 || endpoint.ip().is_unspecified() {
            return Err(Error::invalid(
                "endpoint",
                format!(
                    "`{endpoint}`: other nodes must be able to reach it: no 0.0.0.0, no port 0"
                ),
            ));
        }
        let interface = interface.unwrap_or_else(|| DEFAULT_INTERFACE.into());
        check_interface(&interface)?;
        let listen_port = self
            .listen_port
            .or(file.listen_port)
            .unwrap_or(endpoint.port());
        if listen_port == 0 {
            return Err(Error::invalid("listen_port", "must be 1 to 65535"));
        }
        let idle_evict = match self.idle_evict.or(file.idle_evict) {
            Some(v) => duration("idle_evict", &v)?,
            None => DEFAULT_IDLE_EVICT,
        };
        let registry_copy = self.registry_copy.or(file.registry_copy);
        if let Some(copy) = &registry_copy {
            registry::local::check_path(copy).map_err(|rule| {
                Error::invalid("registry_copy", format!("`{}` {rule}", copy.display()))
            })?;
        }
        let gateway = self.gateway || file.gateway.unwrap_or(false);
        let websocket = match self.websocket_listen.or(file.websocket_listen) {
            None => None,
            Some(_) if !gateway => {
                return Err(Error::invalid(
                    "websocket_listen",
                    "only gateways accept WebSockets: add --gateway",
                ))
            }
            Some(listen) => {
                let tls = match (
                    self.tls_cert.or(file.tls_cert),
                    self.tls_key.or(file.tls_key),
                ) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    _ => return Err(Error::invalid(
                        "tls_cert",
                        "give tls_cert and tls_key both, or neither (a self-signed certificate)",
                    )),
                };
                let max_connections = self
                    .websocket_max_connections
                    .or(file.websocket_max_connections)
                    .unwrap_or(DEFAULT_WEBSOCKET_MAX_CONNECTIONS);
                if max_connections == 0 {
                    return Err(Error::invalid(
                        "websocket_max_connections",
                        "must be at least 1",
                    ));
                }
                let handshake_timeout = match self
                    .websocket_handshake_timeout
                    .or(file.websocket_handshake_timeout)
                {
                    Some(v) => duration("websocket_handshake_timeout", &v)?,
                    None => DEFAULT_WEBSOCKET_HANDSHAKE_TIMEOUT,
                };
                Some(WebSocketConfig {
                    listen: socket_addr("websocket_listen", &listen)?,
                    tls,
                    plain: self.websocket_plain || file.websocket_plain.unwrap_or(false),
                    max_connections,
                    handshake_timeout,
                })
            }
        };
        Ok(Mode::Mesh(Box::new(MeshConfig {
            registry,
            node,
            region,
            endpoint,
            gateway,
            idle_evict,
            registry_copy,
            key: self.key.or(file.key).unwrap_or_else(|| DEFAULT_KEY.into()),
            interface,
            listen_port,
            metrics,
            websocket,
        })))
    }
}

#[cfg(test)]
mod tests;
