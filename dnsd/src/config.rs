//! Configuration: command-line flags, optionally on top of a TOML file (`--config`).
//! Flags win over the file. Every bad value is one [`ConfigError`] naming the field and rule.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

/// sixpn's DNS server: answers `.internal` names from the registry, scoped to the querier's
/// org, and forwards every other name upstream.
#[derive(Debug, Parser)]
#[command(name = "dnsd", version)]
pub struct Cli {
    /// Registry location: a SQLite path, `sqlite:///path` or `etcd[s]://host:port,...[/prefix]`
    /// [default: /var/lib/sixpn/registry.db].
    #[arg(long, env = "SIXPN_REGISTRY")]
    pub registry: Option<String>,
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
    /// Most forwarded answers kept in the cache [default: 10000].
    #[arg(long, value_name = "N")]
    pub cache_size: Option<usize>,
    /// TOML file with any of the settings above (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub registry: Option<String>,
    pub listen: Option<Vec<SocketAddr>>,
    pub default_org: Option<String>,
    pub allow: Option<Vec<String>>,
    pub upstreams: Option<Vec<String>>,
    pub upstream_timeout: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub region: Option<String>,
    pub udp_workers: Option<usize>,
    pub cache_size: Option<usize>,
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
        let timeout = match (cli.upstream_timeout, file.upstream_timeout) {
            (Some(d), _) => d.into(),
            (None, Some(s)) => humantime::parse_duration(&s)
                .map_err(|e| invalid("upstream_timeout", &s, e.to_string()))?,
            (None, None) => Duration::from_secs(2),
        };
        let listen = if cli.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| vec![SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 53))])
        } else {
            cli.listen
        };
        let config = Config {
            registry: cli
                .registry
                .or(file.registry)
                .unwrap_or_else(|| registry::DEFAULT_LOCATION.to_string()),
            listen,
            default_org: cli.default_org.or(file.default_org),
            allow,
            upstreams,
            upstream_timeout: timeout,
            metrics: cli.metrics.or(file.metrics),
            region: cli.region.or(file.region),
            udp_workers: cli.udp_workers.or(file.udp_workers).unwrap_or(1),
            cache_size: cli.cache_size.or(file.cache_size).unwrap_or(10_000),
        };
        config.check()?;
        Ok(config)
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
        Ok(())
    }

    /// The upstreams to use: the configured ones, else the system's, minus dnsd itself.
    pub fn effective_upstreams(&self, resolv_conf: Option<&str>) -> Vec<SocketAddr> {
        let candidates = if self.upstreams.is_empty() {
            resolv_conf.map(resolv_conf_nameservers).unwrap_or_default()
        } else {
            self.upstreams.clone()
        };
        candidates
            .into_iter()
            .filter(|u| !self.listen.contains(u))
            .collect()
    }
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
