//! One command of the in-process tunnel, as wgtool parsed it, and the way it reaches the
//! `wgtool-tunnel` binary: an argument list that [`Job::parse`] reads back exactly.
//!
//! Why a second binary: a laptop's `wgtool proxy` holds little memory of its own (about
//! 1 MiB), and most of its resident set is pages of the binary's code that the kernel maps
//! around what runs. wgtool's text is the registry, the API, etcd's client and SQLite too;
//! this crate's binary is the tunnel's code and little else.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::websocket::Transport;

/// The binary [`launch`] looks for beside the running one.
pub const TUNNEL_BIN: &str = "wgtool-tunnel";

/// How the tunnel reaches its gateway, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachArgs {
    pub transport: Transport,
    /// The gateway's WebSocket port (meshd --websocket-listen).
    pub websocket_port: u16,
    /// The SHA-256 of the gateway's WebSocket certificate, as given (checked when used).
    pub websocket_fingerprint: Option<String>,
    /// ws:// instead of wss://.
    pub websocket_plain: bool,
}

impl Default for ReachArgs {
    fn default() -> ReachArgs {
        ReachArgs {
            transport: Transport::Auto,
            websocket_port: 443,
            websocket_fingerprint: None,
            websocket_plain: false,
        }
    }
}

/// A command of the in-process tunnel, with its tunnel file found.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Dig {
        config: PathBuf,
        reach: ReachArgs,
        /// `[TYPE] NAME`.
        question: Vec<String>,
        short: bool,
    },
    Ping {
        config: PathBuf,
        reach: ReachArgs,
        target: String,
        count: Option<u32>,
        interval: f64,
    },
    Proxy {
        config: PathBuf,
        reach: ReachArgs,
        local: String,
        remote: String,
        verbose: bool,
    },
    /// Always a WebSocket: `reach.transport` is not used (nor passed on).
    Wsproxy {
        config: PathBuf,
        listen: SocketAddr,
        reach: ReachArgs,
    },
}

/// `wgtool-tunnel --help`.
pub const HELP: &str = "\
wgtool-tunnel: the in-process tunnel that `wgtool dig|ping|proxy|wsproxy` run (wgtool execs
it after finding the tunnel file). wgtool's options, each its own argument (`-c 3`,
`--config F` or `--config=F`):

  wgtool-tunnel dig --config FILE [REACH] [--short] [TYPE] NAME
  wgtool-tunnel ping --config FILE [REACH] [-c N] [-i SECONDS] TARGET
  wgtool-tunnel proxy --config FILE [REACH] [--verbose] [BIND:]PORT HOST:PORT
  wgtool-tunnel wsproxy --config FILE [--listen ADDR] [--websocket-port PORT]
                        [--websocket-fingerprint SHA256] [--websocket-plain]

REACH: [--transport udp|websocket|auto] [--websocket-port PORT]
       [--websocket-fingerprint SHA256] [--websocket-plain]

  wgtool-tunnel --version
";

impl Job {
    /// Runs the job in this process.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            Job::Dig {
                config,
                reach,
                question,
                short,
            } => crate::dig::dig(config, reach, question, *short),
            Job::Ping {
                config,
                reach,
                target,
                count,
                interval,
            } => crate::ping::ping(config, reach, target, *count, *interval),
            Job::Proxy {
                config,
                reach,
                local,
                remote,
                verbose,
            } => crate::proxy::proxy(config, reach, local, remote, *verbose),
            Job::Wsproxy {
                config,
                listen,
                reach,
            } => crate::wsproxy::run(config, *listen, reach),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Dig { .. } => "dig",
            Job::Ping { .. } => "ping",
            Job::Proxy { .. } => "proxy",
            Job::Wsproxy { .. } => "wsproxy",
        }
    }

    /// The arguments of `wgtool-tunnel` that make this job.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.name().into()];
        let (config, reach) = match self {
            Job::Dig { config, reach, .. }
            | Job::Ping { config, reach, .. }
            | Job::Proxy { config, reach, .. }
            | Job::Wsproxy { config, reach, .. } => (config, reach),
        };
        a.push("--config".into());
        a.push(config.into());
        if !matches!(self, Job::Wsproxy { .. }) {
            a.push("--transport".into());
            a.push(reach.transport.as_str().into());
        }
        a.push("--websocket-port".into());
        a.push(reach.websocket_port.to_string().into());
        if let Some(f) = &reach.websocket_fingerprint {
            a.push("--websocket-fingerprint".into());
            a.push(f.into());
        }
        if reach.websocket_plain {
            a.push("--websocket-plain".into());
        }
        let positional: Vec<&str> = match self {
            Job::Dig {
                question, short, ..
            } => {
                if *short {
                    a.push("--short".into());
                }
                question.iter().map(String::as_str).collect()
            }
            Job::Ping {
                target,
                count,
                interval,
                ..
            } => {
                if let Some(n) = count {
                    a.push("--count".into());
                    a.push(n.to_string().into());
                }
                a.push("--interval".into());
                a.push(interval.to_string().into());
                vec![target]
            }
            Job::Proxy {
                local,
                remote,
                verbose,
                ..
            } => {
                if *verbose {
                    a.push("--verbose".into());
                }
                vec![local, remote]
            }
            Job::Wsproxy { listen, .. } => {
                a.push("--listen".into());
                a.push(listen.to_string().into());
                vec![]
            }
        };
        a.push("--".into());
        a.extend(positional.into_iter().map(OsString::from));
        a
    }

    /// Reads `wgtool-tunnel`'s arguments (after the program's name). Each error names the
    /// argument and the rule.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Job, String> {
        let mut args = args.into_iter();
        let command = args
            .next()
            .ok_or("give a command: dig, ping, proxy or wsproxy (--help)")?;
        let command = command.to_str().unwrap_or("");
        if !["dig", "ping", "proxy", "wsproxy"].contains(&command) {
            return Err(format!(
                "command `{}`: dig, ping, proxy or wsproxy",
                command.escape_debug()
            ));
        }
        let mut config: Option<PathBuf> = None;
        let mut reach = ReachArgs::default();
        let (mut short, mut verbose) = (false, false);
        let (mut count, mut interval) = (None, 1.0);
        let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut positional: Vec<String> = Vec::new();
        let mut only_positional = false;
        while let Some(arg) = args.next() {
            let text = arg
                .to_str()
                .ok_or_else(|| format!("argument `{}`: not UTF-8", arg.to_string_lossy()))?;
            if only_positional || !text.starts_with('-') || text == "-" {
                positional.push(text.to_string());
                continue;
            }
            if text == "--" {
                only_positional = true;
                continue;
            }
            let (flag, inline) = match text.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(OsString::from(v))),
                _ => (text, None),
            };
            let known = matches!(
                (command, flag),
                (
                    _,
                    "--config"
                        | "--websocket-port"
                        | "--websocket-fingerprint"
                        | "--websocket-plain"
                ) | ("wsproxy", "--listen")
                    | ("dig" | "ping" | "proxy", "--transport")
                    | ("dig", "--short")
                    | ("ping", "-c" | "--count" | "-i" | "--interval")
                    | ("proxy", "-v" | "--verbose")
            );
            if !known {
                return Err(format!("{command}: unknown option `{flag}` (--help)"));
            }
            let switch = matches!(flag, "--websocket-plain" | "--short" | "-v" | "--verbose");
            if switch {
                if inline.is_some() {
                    return Err(format!("option `{flag}` takes no value"));
                }
                match flag {
                    "--websocket-plain" => reach.websocket_plain = true,
                    "--short" => short = true,
                    _ => verbose = true,
                }
                continue;
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("option `{flag}` needs a value"))?;
            if flag == "--config" {
                config = Some(value.into());
                continue;
            }
            let value = value
                .to_str()
                .ok_or_else(|| format!("option `{flag}`: the value is not UTF-8"))?;
            match flag {
                "--transport" => reach.transport = Transport::parse(value)?,
                "--websocket-port" => {
                    reach.websocket_port = value.parse().map_err(|_| {
                        format!("websocket-port `{value}`: a number from 0 to 65535")
                    })?
                }
                "--websocket-fingerprint" => reach.websocket_fingerprint = Some(value.into()),
                "--listen" => {
                    listen = value.parse().map_err(|_| {
                        format!("listen `{value}`: an address and port, e.g. 127.0.0.1:0")
                    })?
                }
                "-c" | "--count" => {
                    count = Some(value.parse().map_err(|_| {
                        format!("-c `{value}`: a number of echo requests (0 to 4294967295)")
                    })?)
                }
                _ => {
                    interval = value
                        .parse()
                        .map_err(|_| format!("-i `{value}`: a number of seconds"))?
                }
            }
        }
        let config = config.ok_or_else(|| format!("{command}: --config FILE is required"))?;
        let wanted = match command {
            "dig" => 1..=2,
            "ping" => 1..=1,
            "proxy" => 2..=2,
            _ => 0..=0,
        };
        if !wanted.contains(&positional.len()) {
            let what = match command {
                "dig" => "[TYPE] NAME",
                "ping" => "TARGET",
                "proxy" => "[BIND:]PORT HOST:PORT",
                _ => "no arguments",
            };
            return Err(format!(
                "{command}: takes {what}, not {} argument(s)",
                positional.len()
            ));
        }
        let mut p = positional.into_iter();
        Ok(match command {
            "dig" => Job::Dig {
                config,
                reach,
                question: p.collect(),
                short,
            },
            "ping" => Job::Ping {
                config,
                reach,
                target: p.next().unwrap_or_default(),
                count,
                interval,
            },
            "proxy" => Job::Proxy {
                config,
                reach,
                local: p.next().unwrap_or_default(),
                remote: p.next().unwrap_or_default(),
                verbose,
            },
            _ => Job::Wsproxy {
                config,
                listen,
                reach: ReachArgs {
                    transport: Transport::Websocket,
                    ..reach
                },
            },
        })
    }
}

/// The variable by which [`launch`] tells `wgtool-tunnel` the version of the wgtool that
/// ran it; the tunnel warns when its own differs.
pub const LAUNCHED_BY: &str = "SIXPN_TUNNEL_LAUNCHED_BY";

/// Runs `job` in the `wgtool-tunnel` binary beside the running one, by exec (so this
/// process becomes it, with its pid, output and exit status), or here when there is none, it
/// is not to be trusted, or it cannot be run. `version` is the running wgtool's.
pub fn launch(job: &Job, version: &str) -> anyhow::Result<()> {
    if let Some(bin) = beside_me() {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let _ = std::io::stdout().flush();
        // exec returns only when it failed: then the job runs here instead.
        let _failed = std::process::Command::new(&bin)
            .arg0("wgtool")
            .args(job.to_args())
            .env(LAUNCHED_BY, version)
            .exec();
    }
    job.run()
}

/// `wgtool-tunnel` beside the running binary, if it is a file owned by the running
/// binary's owner (or root) that no one else may write: a folder others can write to (a
/// copy of wgtool in /tmp) must not get them a binary run as this user.
fn beside_me() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.join(TUNNEL_BIN);
    if exe.file_name() == bin.file_name() {
        return None;
    }
    let (ours, theirs) = (exe.metadata().ok()?, bin.metadata().ok()?);
    let owner_ok = theirs.uid() == ours.uid() || theirs.uid() == 0;
    let private = theirs.mode() & 0o022 == 0;
    (theirs.is_file() && owner_ok && private).then_some(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Job, String> {
        Job::parse(args.iter().map(OsString::from))
    }

    fn reach() -> ReachArgs {
        ReachArgs {
            transport: Transport::Websocket,
            websocket_port: 8443,
            websocket_fingerprint: Some("ab".repeat(32)),
            websocket_plain: true,
        }
    }

    #[test]
    fn every_job_reads_back_from_its_arguments() {
        let config = PathBuf::from("/tmp/a dir/-peer.conf");
        let jobs = [
            Job::Dig {
                config: config.clone(),
                reach: ReachArgs::default(),
                question: vec!["web.internal".into()],
                short: false,
            },
            Job::Dig {
                config: config.clone(),
                reach: reach(),
                question: vec!["TXT".into(), "_apps.internal".into()],
                short: true,
            },
            Job::Ping {
                config: config.clone(),
                reach: reach(),
                target: "gateway".into(),
                count: Some(3),
                interval: 0.2,
            },
            Job::Ping {
                config: config.clone(),
                reach: ReachArgs::default(),
                target: "fdaa::2".into(),
                count: None,
                interval: 1.0 / 3.0,
            },
            Job::Proxy {
                config: config.clone(),
                reach: ReachArgs {
                    transport: Transport::Udp,
                    ..ReachArgs::default()
                },
                local: "[::1]:0".into(),
                remote: "web.internal:8080".into(),
                verbose: true,
            },
            Job::Wsproxy {
                config: config.clone(),
                listen: "127.0.0.1:51999".parse().unwrap(),
                reach: ReachArgs {
                    transport: Transport::Websocket,
                    ..reach()
                },
            },
        ];
        for job in jobs {
            assert_eq!(Job::parse(job.to_args()).as_ref(), Ok(&job), "{job:?}");
        }
    }

    #[test]
    fn a_non_utf8_tunnel_file_path_is_passed_on() {
        use std::os::unix::ffi::OsStringExt;
        let config = PathBuf::from(OsString::from_vec(b"/tmp/\xff.conf".to_vec()));
        let job = Job::Proxy {
            config,
            reach: ReachArgs::default(),
            local: "0".into(),
            remote: "web.internal:80".into(),
            verbose: false,
        };
        assert_eq!(Job::parse(job.to_args()), Ok(job));
    }

    #[test]
    fn options_read_as_wgtool_spells_them() {
        let job = parse(&[
            "ping",
            "--config=f.conf",
            "-c",
            "2",
            "-i",
            "0.5",
            "--transport=udp",
            "web.internal",
        ])
        .unwrap();
        assert_eq!(
            job,
            Job::Ping {
                config: "f.conf".into(),
                reach: ReachArgs {
                    transport: Transport::Udp,
                    ..ReachArgs::default()
                },
                target: "web.internal".into(),
                count: Some(2),
                interval: 0.5,
            }
        );
    }

    #[test]
    fn bad_arguments_name_the_argument_and_the_rule() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "give a command: dig, ping, proxy or wsproxy (--help)"),
            (&["serve"], "command `serve`: dig, ping, proxy or wsproxy"),
            (&["dig", "web.internal"], "dig: --config FILE is required"),
            (
                &["dig", "--config", "f", "a", "b", "c"],
                "dig: takes [TYPE] NAME, not 3 argument(s)",
            ),
            (
                &["proxy", "--config", "f", "8080"],
                "proxy: takes [BIND:]PORT HOST:PORT, not 1 argument(s)",
            ),
            (
                &["wsproxy", "--config", "f", "--transport", "udp"],
                "wsproxy: unknown option `--transport` (--help)",
            ),
            (
                &["ping", "--config", "f", "--short", "x"],
                "ping: unknown option `--short` (--help)",
            ),
            (&["dig", "--config"], "option `--config` needs a value"),
            (
                &["dig", "--config", "f", "--transport", "tcp", "x"],
                "transport `tcp`: udp, websocket or auto",
            ),
            (
                &["dig", "--config", "f", "--websocket-port", "70000", "x"],
                "websocket-port `70000`: a number from 0 to 65535",
            ),
            (
                &["ping", "--config", "f", "-c", "-1", "x"],
                "-c `-1`: a number of echo requests (0 to 4294967295)",
            ),
            (
                &["wsproxy", "--config", "f", "--listen", "nowhere"],
                "listen `nowhere`: an address and port, e.g. 127.0.0.1:0",
            ),
            (
                &["dig", "--config", "f", "--short=yes", "x"],
                "option `--short` takes no value",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).unwrap_err(), *want, "{args:?}");
        }
    }
}
