//! The command line, as clap reads it. Help text comes from these doc comments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::tunnel::Format;

/// Keys, tunnel files and registry administration for sixpn.
#[derive(Debug, Parser)]
#[command(name = "wgtool", version = env!("SIXPN_VERSION"), propagate_version = true)]
pub struct Cli {
    /// The registry: a SQLite path, sqlite:///path, or etcd[s]://host:port,...[/prefix].
    #[arg(long, global = true, env = registry::LOCATION_ENV, hide_env_values = true, default_value = registry::DEFAULT_LOCATION)]
    pub registry: String,

    /// Use the enrollment API at this URL (https://HOST:PORT) instead of the registry;
    /// defaults to the URL inside --token.
    #[arg(long, global = true, env = "SIXPN_API")]
    pub api: Option<String>,

    /// A token from `wgtool token create`: work through the API with it instead of the
    /// registry.
    #[arg(long, global = true, env = "SIXPN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The SHA-256 of the API's certificate (as `wgtool serve` prints it); defaults to the
    /// one inside --token.
    #[arg(long, global = true, env = "SIXPN_API_FINGERPRINT")]
    pub api_fingerprint: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Organisations: each has its own private network.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Hosts running meshd.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Workloads with stable addresses.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Apps and their machines.
    #[command(subcommand)]
    App(AppCommand),
    /// Prints a new private key (like `wg genkey`).
    Genkey,
    /// Reads a private key on stdin and prints its public key (like `wg pubkey`).
    Pubkey,
    /// Prints a shell completion script: `wgtool completions bash > /etc/bash_completion.d/wgtool`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Writes man pages (wgtool.1 and one per subcommand, e.g. wgtool-create.1) into DIR.
    Man { dir: PathBuf },
    /// Makes a key pair here, registers the public key as a peer and writes a tunnel file.
    Create(CreateArgs),
    /// Lists WireGuard peers.
    List(ListPeersArgs),
    /// Removes a WireGuard peer.
    Remove(RemovePeerArgs),
    /// Prints a peer's configuration again from the registry (e.g. after the org's sites
    /// changed), with a placeholder where the private key goes.
    Config(ConfigArgs),
    /// The registry itself.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Enrollment tokens for the API: scoped to an org, limited in time, uses, region and
    /// names.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Shows each peer with its gateway, address, endpoint, latest handshake and bytes, as
    /// the gateways' meshd see them now.
    Status(StatusArgs),
    /// Removes expired peers, or peers idle for a while (by their gateway's latest
    /// handshake); their addresses go to the next peers.
    Prune(PruneArgs),
    /// Checks a tunnel step by step (interface, address, route, handshake, gateway, org DNS,
    /// system resolver) and says how to fix what fails; `--host` checks a mesh host.
    Doctor {
        /// A tunnel file or a WireGuard interface (default: the one sixpn interface up).
        target: Option<String>,
        /// Check this host instead: meshd and dnsd running, the registry, meshd's UDP port.
        #[arg(long, conflicts_with = "target")]
        host: bool,
        /// Check the tunnel file through an in-process tunnel (no interface, no root): the
        /// handshake over --transport, the gateway's echo, the org's DNS, an app's name.
        #[arg(long, conflicts_with = "host", requires = "target")]
        inproc: bool,
        #[command(flatten)]
        reach: TransportArgs,
    },
    /// Serves the enrollment API over HTTPS in front of the registry (like `headscale
    /// serve`), for holders of tokens.
    Serve(ServeArgs),
    /// Asks the org's DNS through an in-process tunnel (no root, no interface), like dig.
    Dig(DigArgs),
    /// ICMPv6 echo through an in-process tunnel (no root, no interface), like ping.
    Ping(PingArgs),
    /// Forwards a local TCP port through an in-process tunnel (no root, no interface) to a
    /// machine on the org network.
    Proxy(ProxyArgs),
    /// Carries a tunnel's WireGuard datagrams to its gateway over a WebSocket (wss://, port
    /// 443), for kernel WireGuard, wg-quick or wireguard-go on networks that drop UDP: set
    /// the tunnel's `Endpoint =` to the address this prints.
    Wsproxy(WsproxyArgs),
}

/// Without --config: a peer of the org kept in the state directory, made on first use.
#[derive(Debug, Args)]
pub struct KeptPeerArgs {
    /// Use (and on first use create, through the registry or --token) a peer of this org
    /// kept in ~/.local/state/sixpn/peers/ORG.conf ($SIXPN_STATE_DIR or
    /// $XDG_STATE_HOME/sixpn), mode 0600, named interactive-HOST-UID-RANDOM.
    #[arg(long, conflicts_with = "config")]
    pub org: Option<String>,
    /// The region of the gateway for that peer when it is created.
    #[arg(long, requires = "org")]
    pub region: Option<String>,
}

/// How an in-process tunnel (or wsproxy) reaches its gateway.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// udp, websocket (wss://ENDPOINT-HOST:443/, WireGuard framed as flyctl frames it), or
    /// auto: UDP first, then WebSocket if no handshake completes within 4 s.
    #[arg(long, value_enum, default_value_t = inproc::Transport::Auto, env = "SIXPN_TRANSPORT")]
    pub transport: inproc::Transport,
    /// The gateway's WebSocket port (meshd --websocket-listen).
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub websocket_port: u16,
    /// The SHA-256 of the gateway's WebSocket certificate, as meshd logs it at start. Without
    /// it the first certificate a gateway shows is trusted and kept in
    /// ~/.local/state/sixpn/websocket-pins ($SIXPN_STATE_DIR or $XDG_STATE_HOME/sixpn), and
    /// required from then on.
    #[arg(long, env = "SIXPN_WEBSOCKET_FINGERPRINT", value_name = "SHA256")]
    pub websocket_fingerprint: Option<String>,
    /// Plain ws:// instead of wss:// (a gateway run with meshd --websocket-plain, for tests
    /// or behind a TLS terminator that speaks ws:// onward).
    #[arg(long)]
    pub websocket_plain: bool,
}

#[derive(Debug, Args)]
pub struct WsproxyArgs {
    /// The tunnel file (wg-quick format); only its Endpoint is read.
    #[arg(long, env = "SIXPN_TUNNEL_FILE")]
    pub config: PathBuf,
    /// The local UDP address WireGuard sends to (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The gateway's WebSocket port (meshd --websocket-listen).
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub websocket_port: u16,
    /// The SHA-256 of the gateway's WebSocket certificate (see `wgtool proxy --help`).
    #[arg(long, env = "SIXPN_WEBSOCKET_FINGERPRINT", value_name = "SHA256")]
    pub websocket_fingerprint: Option<String>,
    /// Plain ws:// instead of wss://.
    #[arg(long)]
    pub websocket_plain: bool,
}

#[derive(Debug, Args)]
pub struct DigArgs {
    /// The tunnel file (wg-quick format, as `wgtool create` writes it); without it, the
    /// peer kept for --org in the state directory.
    #[arg(long, env = "SIXPN_TUNNEL_FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kept: KeptPeerArgs,
    #[command(flatten)]
    pub reach: TransportArgs,
    /// `[TYPE] NAME`: TYPE is AAAA (the default) or TXT.
    #[arg(num_args = 1..=2, required = true, value_name = "[TYPE] NAME")]
    pub question: Vec<String>,
    /// Only the answers' data, as `dig +short` prints it.
    #[arg(long)]
    pub short: bool,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The tunnel file (wg-quick format, as `wgtool create` writes it); without it, the
    /// peer kept for --org in the state directory.
    #[arg(long, env = "SIXPN_TUNNEL_FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kept: KeptPeerArgs,
    #[command(flatten)]
    pub reach: TransportArgs,
    /// A name (resolved through the org's DNS in the tunnel), an IPv6 address, or `gateway`:
    /// the org's service address on the tunnel's gateway (the file's DNS address).
    pub target: String,
    /// Stop after this many echo requests (default: until Ctrl-C).
    #[arg(short = 'c')]
    pub count: Option<u32>,
    /// Seconds between echo requests.
    #[arg(short = 'i', default_value_t = 1.0)]
    pub interval: f64,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The tunnel file (wg-quick format, as `wgtool create` writes it); without it, the
    /// peer kept for --org in the state directory.
    #[arg(long, env = "SIXPN_TUNNEL_FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kept: KeptPeerArgs,
    #[command(flatten)]
    pub reach: TransportArgs,
    /// `[BIND:]PORT` to listen on (default bind 127.0.0.1; port 0 picks a free one).
    pub local: String,
    /// `HOST:PORT`: a name resolved through the org's DNS in the tunnel, or `[fdaa:...]:PORT`.
    pub remote: String,
    /// A line on stderr for each connection as it ends (bytes each way, how long).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "[::]:8443")]
    pub listen: SocketAddr,
    /// The certificate chain (PEM); without it a self-signed one is made in --state-dir.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where a self-signed certificate and its key (0600) are kept.
    #[arg(long, default_value = "/var/lib/sixpn/api")]
    pub state_dir: PathBuf,
    /// A name or address to put in a self-signed certificate (repeatable; clients pin the
    /// fingerprint, so this is for people who look).
    #[arg(long = "name")]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Makes a token and prints it once; the registry keeps only its hash.
    Create(TokenCreateArgs),
    /// Lists tokens (never their secrets).
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: every later use is refused.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[arg(long)]
    pub org: String,
    /// `peer`: create, list and remove the org's peers; `admin`: what the local CLI does
    /// for the org.
    #[arg(long, default_value = "peer")]
    pub scope: registry::TokenScope,
    /// Refused after this long, e.g. 24h or 30d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Peers it may create (peer tokens).
    #[arg(long)]
    pub uses: Option<u32>,
    /// The only region it creates peers in (peer tokens).
    #[arg(long)]
    pub region: Option<String>,
    /// Names of the peers it creates must start with this (peer tokens).
    #[arg(long)]
    pub name_prefix: Option<String>,
    /// The API the token is for (https://HOST:PORT), put in the token with its
    /// certificate's fingerprint; defaults to --api when working through one.
    #[arg(long)]
    pub server: Option<String>,
    /// The server's certificate fingerprint; without it, it is read from the server.
    #[arg(long)]
    pub server_fingerprint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Prints the registry's revision and record counts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Copies every record into an empty registry (e.g. SQLite to etcd), keeping ids,
    /// network ids and addresses.
    Copy {
        /// The registry to read, e.g. sqlite:///var/lib/sixpn/registry.db
        from: String,
        /// The empty registry to fill, e.g. etcd://10.0.0.1:2379,10.0.0.2:2379/sixpn
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Creates an org and allocates its network id.
    Create { name: String },
    /// Lets two orgs' addresses talk to each other, both ways (the only way traffic crosses
    /// orgs).
    Peer { a: String, b: String },
    /// Ends the peering of two orgs.
    Unpeer { a: String, b: String },
    /// Lists orgs with their networks and the orgs each is peered with.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes an org that has no machines and no peers.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Adds a host to the mesh.
    Add(NodeAddArgs),
    /// Lists hosts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a host that no machine or peer uses.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct NodeAddArgs {
    pub name: String,
    /// Region code, e.g. iad.
    #[arg(long)]
    pub region: String,
    /// The host's WireGuard endpoint, ip:port.
    #[arg(long)]
    pub endpoint: SocketAddr,
    /// The host's WireGuard public key (base64); `meshd pubkey` prints it.
    #[arg(long)]
    pub public_key: String,
    /// The host accepts laptops and sites.
    #[arg(long)]
    pub gateway: bool,
}

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Adds a machine (and its app if new); prints its id and address.
    Add(MachineAddArgs),
    /// Lists machines.
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Marks a machine stopped: it leaves DNS answers but keeps its address.
    Stop { id: String },
    /// Marks a machine started.
    Start { id: String },
    /// Removes a machine; its address becomes free.
    Remove { id: String },
    /// Moves a machine to another host; it keeps its address.
    Move {
        id: String,
        #[arg(long)]
        node: String,
    },
}

#[derive(Debug, Args)]
pub struct MachineAddArgs {
    pub app: String,
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub region: String,
    #[arg(long)]
    pub node: String,
    /// Process group (default `app`).
    #[arg(long)]
    pub process_group: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Lists apps with their machine counts.
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Org (asked for on a terminal if missing).
    pub org: Option<String>,
    /// Region of the gateway to use (asked for on a terminal if missing).
    pub region: Option<String>,
    /// Peer name, a DNS label (asked for on a terminal if missing).
    pub name: Option<String>,
    /// Where to write the tunnel file; `-` or nothing prints it.
    pub file: Option<PathBuf>,
    /// Use this gateway node instead of picking one in the region.
    #[arg(long)]
    pub gateway: Option<String>,
    /// A site prefix to route to this peer (repeatable), e.g. 10.1.0.0/24.
    #[arg(long = "route")]
    pub routes: Vec<ipnet::IpNet>,
    /// Let the peer in for this long only, e.g. 30d or 12h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// The configuration format; `networkd` writes FILE.netdev and FILE.network.
    #[arg(long, value_enum, default_value_t = Format::WgQuick)]
    pub format: Format,
    /// Print the tunnel file as a QR code for the WireGuard mobile apps instead of as text
    /// (still written to FILE if one is named).
    #[arg(long)]
    pub qr: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    pub org: String,
    /// The peer's name.
    pub name: String,
    /// The configuration format; `networkd` writes FILE.netdev and FILE.network.
    #[arg(long, value_enum, default_value_t = Format::WgQuick)]
    pub format: Format,
    /// Write here (new, mode 0600) instead of to stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListPeersArgs {
    /// Only this org's peers.
    pub org: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RemovePeerArgs {
    /// `<org> <name>`, or `<name>` when there is one org.
    #[arg(num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this org's peers (a token's org through the API).
    pub org: Option<String>,
    /// Only this peer.
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this org's peers.
    pub org: Option<String>,
    /// Remove peers whose expiry has passed.
    #[arg(long)]
    pub expired: bool,
    /// Remove peers without a handshake for this long (e.g. 30d), as their gateway says;
    /// peers whose gateway cannot be asked from here stay.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle: Option<std::time::Duration>,
    /// Print what would go, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}
