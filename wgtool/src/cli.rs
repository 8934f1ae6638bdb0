//! The command line, as clap reads it. Help text comes from these doc comments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::tunnel::Format;

/// Keys, tunnel files and registry administration for sixpn.
#[derive(Debug, Parser)]
#[command(name = "wgtool", version, propagate_version = true)]
pub struct Cli {
    /// The registry: a SQLite path, sqlite:///path, or etcd[s]://host:port,...[/prefix].
    #[arg(long, global = true, env = registry::LOCATION_ENV, hide_env_values = true, default_value = registry::DEFAULT_LOCATION)]
    pub registry: String,

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
