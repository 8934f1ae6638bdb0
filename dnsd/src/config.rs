//! Configuration: command-line flags, optionally on top of a TOML file (`--config`).
//! Flags win over the file. Every bad value is one [`ConfigError`] naming the field and rule.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// sixpn's DNS server: answers `.internal` names from the registry, scoped to the querier's
/// org, and forwards every other name upstream.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Writes the man page dnsd.1 (and dnsd-man.1) into DIR, e.g. /usr/local/share/man/man1.
    Man { dir: PathBuf },
}

#[derive(Debug, Parser)]
#[command(name = "dnsd", version = env!("SIXPN_VERSION"), args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines as text or as JSON objects (one per line, with the event's fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Registry location: a SQLite path, `sqlite:///path` or `etcd[s]://host:port,...[/prefix]`
    /// [default: /var/lib/sixpn/registry.db].
    #[arg(long, env = "SIXPN_REGISTRY", hide_env_values = true)]
    pub registry: Option<String>,
    /// Where to keep a local copy of the registry (a base file and a journal beside it, mode
    /// 0600), as a DNS secondary keeps its zone file: a restart answers from it at once and
    /// then follows the registry from the copy's revision, and a start while the registry is
    /// down answers from it too. Off unless given.
    #[arg(long, value_name = "FILE")]
    pub registry_copy: Option<PathBuf>,
    /// Address to serve DNS on, over UDP and TCP; repeat for several [default: [::]:53].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Org whose names loopback clients and `--allow`ed networks see; without it they get
    /// REFUSED for `.internal` (names outside it are still forwarded for them).
    #[arg(long, value_name = "ORG")]
    pub default_org: Option<String>,
    /// Network (e.g. `10.0.0.0/8`, `2001:db8::/32`, or one address) whose clients are trusted
    /// like loopback: they see the default org and get other names forwarded; repeat for
    /// several. Anyone else outside every org is REFUSED.
    #[arg(long, value_name = "NET", value_parser = parse_allow)]
    pub allow: Vec<IpNet>,
    /// Upstream resolver for names outside `.internal` (`ip` or `ip:port`); repeat for
    /// failover [default: the nameservers in /etc/resolv.conf].
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,
    /// How long to wait for one upstream before trying the next (e.g. `2s`, `500ms`).
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<humantime::Duration>,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// This host's region, for `top<N>.nearest.of.<app>` when the querier's is unknown.
    #[arg(long, value_name = "CODE")]
    pub region: Option<String>,
    /// UDP worker threads per listen address [default: 1].
    #[arg(long, value_name = "N")]
    pub udp_workers: Option<usize>,
    /// Most forwarded answers kept in the cache [default: 100000].
    #[arg(long, value_name = "N")]
    pub cache_size: Option<usize>,
    /// Most bytes the forwarding cache holds (`33554432`, `512KiB`, `32MiB`, `1GiB`); the
    /// least recently used answers go first [default: 32MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub cache_bytes: Option<usize>,
    /// Most questions waiting on upstreams at once; past it a forwarded name gets SERVFAIL
    /// (counted in dnsd_forward_overload_total) [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_forwards: Option<usize>,
    /// Most of those from one client (an IPv4 address or an IPv6 /112, one machine's block);
    /// past it that client's forwarded names get SERVFAIL (counted in
    /// dnsd_forward_source_limited_total) [default: an eighth of max_forwards].
    #[arg(long, value_name = "N")]
    pub max_forwards_per_source: Option<usize>,
    /// Most TCP client connections open at once; more are closed at once (counted in
    /// dnsd_tcp_overload_total) [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_tcp_connections: Option<usize>,
    /// How long a TCP client may be idle between queries [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub tcp_idle_timeout: Option<humantime::Duration>,
    /// How long writing one TCP answer may take [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub tcp_write_timeout: Option<humantime::Duration>,
    /// TOML file with any of the settings above (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub registry: Option<String>,
    pub registry_copy: Option<PathBuf>,
    pub listen: Option<Vec<SocketAddr>>,
    pub default_org: Option<String>,
    pub allow: Option<Vec<String>>,
    pub upstreams: Option<Vec<String>>,
    pub upstream_timeout: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub region: Option<String>,
    pub udp_workers: Option<usize>,
    pub cache_size: Option<usize>,
    pub cache_bytes: Option<String>,
    pub max_forwards: Option<usize>,
    pub max_forwards_per_source: Option<usize>,
    pub max_tcp_connections: Option<usize>,
    pub tcp_idle_timeout: Option<String>,
    pub tcp_write_timeout: Option<String>,
}

/// A bad setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{field} `{value}`: {rule}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: String,
    },
}

fn invalid(field: &'static str, value: impl ToString, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        rule: rule.into(),
    }
}

/// Everything dnsd runs with, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub registry: String,
    pub registry_copy: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    pub default_org: Option<String>,
    /// Trusted networks besides loopback.
    pub allow: Vec<IpNet>,
    /// Empty: names outside `.internal` get REFUSED.
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub metrics: Option<SocketAddr>,
    pub region: Option<String>,
    pub udp_workers: usize,
    pub cache_size: usize,
    pub cache_bytes: usize,
    pub max_forwards: usize,
    pub max_forwards_per_source: usize,
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_write_timeout: Duration,
}

/// Descriptors dnsd needs besides one per forward and per TCP connection: listeners, the
/// registry, metrics, the runtime's own.
pub const FD_RESERVE: usize = 64;

/// A byte count: a number, optionally with `K`/`KiB`, `M`/`MiB` or `G`/`GiB` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err("use a byte count such as 33554432, 512KiB or 32MiB".into()),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| "use a byte count such as 33554432, 512KiB or 32MiB".to_string())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| "too big".to_string())
}

fn duration(
    field: &'static str,
    flag: Option<humantime::Duration>,
    file: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match (flag, file) {
        (Some(d), _) => Ok(d.into()),
        (None, Some(s)) => {
            humantime::parse_duration(&s).map_err(|e| invalid(field, &s, e.to_string()))
        }
        (None, None) => Ok(default),
    }
}

/// `ip` (port 53) or `ip:port`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| "use an IP address or IP:PORT".to_string())
}

/// A trusted network: `addr/len` with no host bits set, or one address. Not everything
/// (`/0` would make dnsd an open resolver) and not IPv4-mapped IPv6 (IPv4 clients are
/// matched as IPv4).
pub fn parse_allow(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| "use a network such as 10.0.0.0/8 or 2001:db8::/32, or one address")?,
    };
    if net.trunc() != net {
        return Err(format!("host bits set: the network is {}", net.trunc()));
    }
    if net.prefix_len() == 0 {
        return Err("allowing everyone would make dnsd an open resolver".into());
    }
    if let IpNet::V6(n) = net {
        if n.network().to_ipv4_mapped().is_some() {
            return Err(
                "an IPv4-mapped network: write it as IPv4 (IPv4 clients are matched as IPv4)"
                    .into(),
            );
        }
    }
    Ok(net)
}

/// The nameservers of a resolv.conf text.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Config {
    /// Reads the file named by `cli.config` (if any), merges and checks.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let mut upstreams = cli.upstream;
        if upstreams.is_empty() {
            for u in file.upstreams.unwrap_or_default() {
                upstreams.push(parse_upstream(&u).map_err(|rule| invalid("upstreams", &u, rule))?);
            }
        }
        let mut allow = cli.allow;
        if allow.is_empty() {
            for a in file.allow.unwrap_or_default() {
                allow.push(parse_allow(&a).map_err(|rule| invalid("allow", &a, rule))?);
            }
        }
        let timeout = duration(
            "upstream_timeout",
            cli.upstream_timeout,
            file.upstream_timeout,
            Duration::from_secs(2),
        )?;
        let tcp_idle_timeout = duration(
            "tcp_idle_timeout",
            cli.tcp_idle_timeout,
            file.tcp_idle_timeout,
            Duration::from_secs(10),
        )?;
        let tcp_write_timeout = duration(
            "tcp_write_timeout",
            cli.tcp_write_timeout,
            file.tcp_write_timeout,
            Duration::from_secs(5),
        )?;
        let cache_bytes = match (cli.cache_bytes, file.cache_bytes) {
            (Some(n), _) => n,
            (None, Some(s)) => parse_bytes(&s).map_err(|rule| invalid("cache_bytes", &s, rule))?,
            (None, None) => crate::cache::DEFAULT_BYTES,
        };
        let listen = if cli.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| vec![SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 53))])
        } else {
            cli.listen
        };
        let max_forwards = cli
            .max_forwards
            .or(file.max_forwards)
            .unwrap_or(crate::forward::DEFAULT_MAX_INFLIGHT);
        let config = Config {
            registry: cli
                .registry
                .or(file.registry)
                .unwrap_or_else(|| registry::DEFAULT_LOCATION.to_string()),
            registry_copy: cli.registry_copy.or(file.registry_copy),
            listen,
            default_org: cli.default_org.or(file.default_org),
            allow,
            upstreams,
            upstream_timeout: timeout,
            metrics: cli.metrics.or(file.metrics),
            region: cli.region.or(file.region),
            udp_workers: cli.udp_workers.or(file.udp_workers).unwrap_or(1),
            cache_size: cli.cache_size.or(file.cache_size).unwrap_or(100_000),
            cache_bytes,
            max_forwards,
            max_forwards_per_source: cli
                .max_forwards_per_source
                .or(file.max_forwards_per_source)
                .unwrap_or_else(|| crate::forward::default_max_per_source(max_forwards)),
            max_tcp_connections: cli
                .max_tcp_connections
                .or(file.max_tcp_connections)
                .unwrap_or(1024),
            tcp_idle_timeout,
            tcp_write_timeout,
        };
        config.check()?;
        Ok(config)
    }

    /// Checks what the settings name on this machine: the local copy's directory exists.
    /// Separate from loading, so that a file can be checked on another machine.
    pub fn check_paths(&self) -> Result<(), ConfigError> {
        if let Some(copy) = &self.registry_copy {
            registry::local::check_path(copy)
                .map_err(|rule| invalid("registry_copy", copy.display(), rule))?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "", "give at least one address"));
        }
        if let Some(org) = &self.default_org {
            registry::name::label("default_org", org)
                .map_err(|e| invalid("default_org", org, rule_of(e)))?;
        }
        if let Some(r) = &self.region {
            if registry::region::find(r).is_none() {
                return Err(invalid(
                    "region",
                    r,
                    "not a known region code (e.g. iad, ams)",
                ));
            }
        }
        if !(1..=64).contains(&self.udp_workers) {
            return Err(invalid("udp_workers", self.udp_workers, "must be 1 to 64"));
        }
        if self.upstream_timeout.is_zero() {
            return Err(invalid("upstream_timeout", "0s", "must be more than zero"));
        }
        if self.cache_size == 0 {
            return Err(invalid("cache_size", 0, "must be at least 1"));
        }
        if self.cache_bytes < 4096 {
            return Err(invalid(
                "cache_bytes",
                self.cache_bytes,
                "must be at least 4KiB",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_forwards) {
            return Err(invalid(
                "max_forwards",
                self.max_forwards,
                "must be 1 to 1000000",
            ));
        }
        if !(1..=self.max_forwards).contains(&self.max_forwards_per_source) {
            return Err(invalid(
                "max_forwards_per_source",
                self.max_forwards_per_source,
                format!("must be 1 to max_forwards ({})", self.max_forwards),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_tcp_connections) {
            return Err(invalid(
                "max_tcp_connections",
                self.max_tcp_connections,
                "must be 1 to 1000000",
            ));
        }
        for (field, d) in [
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            ("tcp_write_timeout", self.tcp_write_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "0s", "must be more than zero"));
            }
        }
        Ok(())
    }

    /// Open files dnsd may need at its caps: one per forward, one per TCP connection, and
    /// [`FD_RESERVE`].
    pub fn descriptors_needed(&self) -> usize {
        self.max_forwards + self.max_tcp_connections + FD_RESERVE
    }

    /// The upstreams to use: the configured ones, else the system's, minus dnsd itself
    /// (see [`Config::split_upstreams`]; this host's addresses are read from its interfaces).
    pub fn effective_upstreams(&self, resolv_conf: Option<&str>) -> Vec<SocketAddr> {
        self.split_upstreams(resolv_conf, &local_addrs()).0
    }

    /// The upstreams to use and the ones dropped because they are dnsd itself: an upstream
    /// on a port dnsd listens on, at an address that reaches that listener. A wildcard
    /// listener (`[::]`, `0.0.0.0`) is reached at every `local` address, the loopback range
    /// and the unspecified address (of its family; `[::]` takes IPv4 too); a listener on one
    /// address only at that address (or the unspecified one). Forwarding to either is a loop
    /// that ends only when descriptors run out.
    pub fn split_upstreams(
        &self,
        resolv_conf: Option<&str>,
        local: &[IpAddr],
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let candidates = if self.upstreams.is_empty() {
            resolv_conf.map(resolv_conf_nameservers).unwrap_or_default()
        } else {
            self.upstreams.clone()
        };
        candidates
            .into_iter()
            .partition(|u| !self.listen.iter().any(|l| reaches(*u, *l, local)))
    }
}

/// Whether a query sent to `upstream` arrives at listener `listen` on this host.
fn reaches(upstream: SocketAddr, listen: SocketAddr, local: &[IpAddr]) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    let u = upstream.ip().to_canonical();
    let l = listen.ip().to_canonical();
    if u.is_unspecified() {
        // Sending to 0.0.0.0 / :: goes to this host.
        return l.is_unspecified() || u.is_ipv4() == l.is_ipv4();
    }
    if !l.is_unspecified() {
        return u == l;
    }
    let family_ok = match listen.ip() {
        // [::] also receives IPv4 (Linux's default bindv6only=0).
        IpAddr::V6(_) => true,
        IpAddr::V4(_) => u.is_ipv4(),
    };
    family_ok && (u.is_loopback() || local.iter().any(|a| a.to_canonical() == u))
}

/// Every address on this host's interfaces (empty if they cannot be read).
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET: a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6: a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn rule_of(e: registry::Error) -> String {
    match e {
        registry::Error::Invalid { rule, .. } => rule,
        other => other.to_string(),
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.into(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.into(),
        message: e.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["dnsd"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_example_file_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dnsd.toml");
        let c = Config::load(cli(&["--config", path])).unwrap();
        assert_eq!(c.default_org.as_deref(), Some("acme"));
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.allow, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(c.metrics, Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(
            c.registry_copy.as_deref(),
            Some(std::path::Path::new("/var/lib/sixpn/dnsd.copy"))
        );
    }

    #[test]
    fn defaults_listen_on_port_53_everywhere() {
        let c = Config::load(cli(&["--registry", "/tmp/x.db"])).unwrap();
        assert_eq!(c.listen, vec!["[::]:53".parse().unwrap()]);
        assert_eq!(c.upstream_timeout, Duration::from_secs(2));
        assert_eq!(c.udp_workers, 1);
    }

    #[test]
    fn upstream_without_port_gets_53() {
        let c = Config::load(cli(&[
            "--upstream",
            "192.0.2.1",
            "--upstream",
            "[::1]:5300",
        ]))
        .unwrap();
        assert_eq!(
            c.upstreams,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[::1]:5300".parse().unwrap()
            ]
        );
    }

    #[test]
    fn resolv_conf_nameservers_skip_dnsd_itself() {
        let text = "# x\nsearch example.com\nnameserver 127.0.0.1\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\n";
        let c = Config::load(cli(&["--listen", "127.0.0.1:53"])).unwrap();
        assert_eq!(
            c.effective_upstreams(Some(text)),
            vec![
                "[fe80::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstreams_that_are_dnsd_itself_are_dropped() {
        let local: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "fdaa:0:1::3".parse().unwrap()];
        let text = "nameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver fdaa:0:1::3\n\
                    nameserver 0.0.0.0\nnameserver ::ffff:127.0.0.1\nnameserver 10.9.9.9\n\
                    nameserver ::1\n";
        // On [::]:53: every local address, the loopback range, the unspecified address and
        // IPv4 (mapped or not) reach dnsd; 10.9.9.9 is another host.
        let c = Config::load(cli(&[])).unwrap();
        let (kept, dropped) = c.split_upstreams(Some(text), &local);
        assert_eq!(kept, vec!["10.9.9.9:53".parse().unwrap()]);
        assert_eq!(dropped.len(), 6, "{dropped:?}");
        // On one address: only that address (and 0.0.0.0) is dnsd; other local resolvers
        // on port 53 (systemd-resolved on 127.0.0.53) are not.
        let c = Config::load(cli(&["--listen", "10.1.2.3:53"])).unwrap();
        let (kept, dropped) = c.split_upstreams(Some(text), &local);
        assert_eq!(
            dropped,
            vec![
                "10.1.2.3:53".parse().unwrap(),
                "0.0.0.0:53".parse().unwrap()
            ]
        );
        assert_eq!(kept.len(), 5);
        // Another port is another server, configured upstreams are checked too.
        let c = Config::load(cli(&[
            "--upstream",
            "127.0.0.1:5300",
            "--upstream",
            "[fdaa:0:1::3]:53",
        ]))
        .unwrap();
        let (kept, dropped) = c.split_upstreams(None, &local);
        assert_eq!(kept, vec!["127.0.0.1:5300".parse().unwrap()]);
        assert_eq!(dropped, vec!["[fdaa:0:1::3]:53".parse().unwrap()]);
        // This host's own addresses are read from its interfaces: loopback at least.
        assert!(local_addrs().iter().any(|a| a.is_loopback()));
    }

    #[test]
    fn caps_have_defaults_flags_and_keys() {
        let c = Config::load(cli(&[])).unwrap();
        assert_eq!(c.cache_bytes, 32 << 20);
        assert_eq!((c.max_forwards, c.max_tcp_connections), (1024, 1024));
        assert_eq!(c.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.tcp_write_timeout, Duration::from_secs(5));
        assert_eq!(c.descriptors_needed(), 1024 + 1024 + FD_RESERVE);
        assert_eq!(c.max_forwards_per_source, 128, "an eighth of max_forwards");
        let c = Config::load(cli(&["--cache-bytes", "1MiB", "--max-forwards", "10"])).unwrap();
        assert_eq!((c.cache_bytes, c.max_forwards), (1 << 20, 10));
        assert_eq!(c.max_forwards_per_source, 1);
        let c = Config::load(cli(&["--max-forwards-per-source", "1024"])).unwrap();
        assert_eq!(c.max_forwards_per_source, 1024);
        let e = Config::load(cli(&[
            "--max-forwards",
            "10",
            "--max-forwards-per-source",
            "11",
        ]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "max_forwards_per_source `11`: must be 1 to max_forwards (10)"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsd.toml");
        std::fs::write(
            &path,
            "cache_bytes = \"512KiB\"\nmax_tcp_connections = 7\ntcp_idle_timeout = \"3s\"\nmax_forwards_per_source = 5\n",
        )
        .unwrap();
        let c = Config::load(cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!((c.cache_bytes, c.max_tcp_connections), (512 << 10, 7));
        assert_eq!(c.max_forwards_per_source, 5);
        assert_eq!(c.tcp_idle_timeout, Duration::from_secs(3));
        let e = Config::load(cli(&["--max-forwards", "0"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "max_forwards `0`: must be 1 to 1000000");
        assert!(Cli::try_parse_from(["dnsd", "--cache-bytes", "lots"]).is_err());
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Config::load(cli(&["--region", "xyz"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("region `xyz`: not a known region"), "{e}");
        let e = Config::load(cli(&["--default-org", "Acme"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("default_org `Acme`: use a-z"), "{e}");
        let e = Config::load(cli(&["--udp-workers", "0"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "udp_workers `0`: must be 1 to 64");
    }

    #[test]
    fn allow_takes_networks_and_single_addresses_from_flags_and_file() {
        let c = Config::load(cli(&["--allow", "10.0.0.0/8", "--allow", "2001:db8::7"])).unwrap();
        let want: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::7/128".parse().unwrap(),
        ];
        assert_eq!(c.allow, want);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsd.toml");
        std::fs::write(&path, "allow = [\"192.0.2.0/24\", \"192.0.2.9\"]\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p])).unwrap();
        let want: Vec<IpNet> = vec![
            "192.0.2.0/24".parse().unwrap(),
            "192.0.2.9/32".parse().unwrap(),
        ];
        assert_eq!(c.allow, want);
        // Flags win over the file.
        let c = Config::load(cli(&["--config", p, "--allow", "10.0.0.0/8"])).unwrap();
        assert_eq!(c.allow, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(Config::load(cli(&[])).unwrap().allow.is_empty());
    }

    #[test]
    fn bad_allow_entries_name_the_field_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsd.toml");
        let p = path.to_str().unwrap();
        for (entry, rule) in [
            ("10.0.0.0/33", "use a network such as 10.0.0.0/8"),
            ("example.com", "use a network such as 10.0.0.0/8"),
            ("10.1.2.3/8", "host bits set: the network is 10.0.0.0/8"),
            (
                "0.0.0.0/0",
                "allowing everyone would make dnsd an open resolver",
            ),
            ("::/0", "allowing everyone would make dnsd an open resolver"),
            (
                "::ffff:10.0.0.0/104",
                "an IPv4-mapped network: write it as IPv4",
            ),
        ] {
            std::fs::write(&path, format!("allow = [\"{entry}\"]\n")).unwrap();
            let e = Config::load(cli(&["--config", p])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("allow `{entry}`: {rule}")), "{e}");
            let e = Cli::try_parse_from(["dnsd", "--allow", entry])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--allow") && e.contains(rule), "{e}");
        }
    }

    #[test]
    fn file_rejects_unknown_fields_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsd.toml");
        std::fs::write(&path, "listen = [\"127.0.0.1:5353\"]\nregion = \"iad\"\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p, "--region", "ams"])).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.region.as_deref(), Some("ams"));
        std::fs::write(&path, "listn = []\n").unwrap();
        let e = Config::load(cli(&["--config", p])).unwrap_err().to_string();
        assert!(e.contains("unknown field `listn`"), "{e}");
    }
}
