//! A real etcd (Debian's etcd-server, 3.4) started by the test itself: one or more members
//! on free loopback ports, plain or serving clients over TLS, their data in a temp dir that
//! outlives a kill, so a member can be stopped and started again with what it had. Killed on
//! drop, panics included.
//!
//! Processes in other network namespaces cannot see this loopback, so [`Etcd::reach_from`]
//! makes the same `127.0.0.1:<port>` work inside one: a socat there relays each connection
//! over a Unix socket (file paths are not namespaced) to a socat here that connects to etcd.
//! With etcd gone, connections through the relay are closed at once, as a load balancer in
//! front of a dead etcd would close them.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, tempdir, Netns, Proc};

/// How long a (re)started cluster may take to answer a read.
const START: Duration = Duration::from_secs(20);

/// What a member behind TLS serves with and asks of its clients.
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must show a certificate this CA signed (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    proc: Option<Proc>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    members: Vec<Member>,
    token: String,
    tls: Option<ServerTls>,
    /// More flags for every member, e.g. a short `--auth-token-ttl`.
    extra: Vec<String>,
    /// The host side of [`Etcd::reach_from`]'s relays, started by the first.
    relay: Mutex<Option<Proc>>,
    // Last, so the files go after the processes.
    dir: tempdir::Dir,
}

impl Etcd {
    /// Starts `size` members (clients over TLS with `tls`, each with `flags` besides the
    /// usual ones); [`Etcd::wait_ready`] waits until they answer.
    pub fn launch(size: usize, tls: Option<ServerTls>, flags: &[&str]) -> Result<Etcd> {
        let dir = tempdir::Dir::new()?;
        let members = (0..size)
            .map(|i| {
                Ok(Member {
                    name: format!("m{i}"),
                    client: free_port()?,
                    peer: free_port()?,
                    proc: None,
                })
            })
            .collect::<Result<_>>()?;
        let mut etcd = Etcd {
            token: format!("sixpn-test-{}", dir.path().display()),
            members,
            tls,
            extra: flags.iter().map(|f| f.to_string()).collect(),
            relay: Mutex::new(None),
            dir,
        };
        for i in 0..size {
            etcd.start(i)?;
        }
        Ok(etcd)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or starts again, with its data and ports) member `i`; does not wait.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let cluster = self.initial_cluster();
        let dir = self.dir.path().to_path_buf();
        let m = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .args(&self.extra);
        let log = dir.join(format!("{}.log", m.name));
        m.proc = Some(Proc::spawn(cmd, &log).context("starting `etcd` (apt package etcd-server)")?);
        Ok(())
    }

    /// Kills member `i` (SIGKILL: no goodbye to the others or the clients).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Polls `read` (a read through a client of the cluster) until it works, for at most
    /// 20 s; the error then has the last failure and the members' logs.
    pub fn wait_ready<E: Display>(&self, mut read: impl FnMut() -> Result<(), E>) -> Result<()> {
        let deadline = Instant::now() + START;
        loop {
            match read() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("etcd did not answer within {START:?}: {e}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// `etcd://127.0.0.1:<port>,...<prefix>` naming every member; `prefix` starts with `/`
    /// (and may carry a query).
    pub fn url(&self, prefix: &str) -> String {
        self.url_starting_at(0, prefix)
    }

    /// The same with member `first`'s endpoint first, so clients talk to it until it fails.
    pub fn url_starting_at(&self, first: usize, prefix: &str) -> String {
        let n = self.members.len();
        let endpoints: Vec<String> = (0..n)
            .map(|k| format!("127.0.0.1:{}", self.members[(first + k) % n].client))
            .collect();
        format!("etcd://{}{prefix}", endpoints.join(","))
    }

    /// Makes `127.0.0.1:<port of member 0>` inside `ns` lead to this etcd; the relay lives
    /// as long as the returned guard (and dies with the namespace in any case).
    pub fn reach_from(&self, ns: &Netns) -> Result<Proc> {
        let socket = self.dir.path().join("client.sock");
        let client = self.members[0].client;
        {
            let mut relay = self.relay.lock().unwrap_or_else(|e| e.into_inner());
            if relay.is_none() {
                let mut cmd = Command::new("socat");
                cmd.arg(format!("UNIX-LISTEN:{},fork", socket.display()))
                    .arg(format!("TCP:127.0.0.1:{client}"));
                *relay = Some(Proc::spawn(cmd, &self.dir.path().join("relay.log"))?);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !socket.exists() {
                    if Instant::now() > deadline {
                        bail!("the etcd relay never made {}", socket.display());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let relay = ns.spawn(
            "socat",
            &[
                &format!("TCP-LISTEN:{client},bind=127.0.0.1,fork,reuseaddr"),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        )?;
        ns.wait_for(
            &format!("ss -ltn | grep -q '127.0.0.1:{client} '"),
            Duration::from_secs(5),
        )?;
        Ok(relay)
    }

    /// The tail of each member's log (and the relay's), for failure messages.
    pub fn logs(&self) -> String {
        let tail = |file: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let mut out: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, tail(&format!("{}.log", m.name))))
            .collect();
        if self.dir.path().join("relay.log").exists() {
            out.push(format!("--- relay ---\n{}", tail("relay.log")));
        }
        out.join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if let Some(mut relay) = self.relay.lock().unwrap_or_else(|e| e.into_inner()).take() {
            relay.kill();
        }
    }
}
