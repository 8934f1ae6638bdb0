//! A real etcd (Debian's etcd-server, 3.4) for end-to-end tests: one member on free loopback
//! ports of the test's own namespace, its data in a temp dir that outlives a kill, so it can
//! be stopped and started again with what it had. Killed on drop, panics included.
//!
//! Processes in the hosts' namespaces cannot see this loopback, so [`Etcd::reach_from`]
//! makes the same `127.0.0.1:<port>` work inside a namespace: a socat there relays each
//! connection over a Unix socket (file paths are not namespaced) to a socat here that
//! connects to etcd. With etcd gone, connections through the relay are closed at once, as a
//! load balancer in front of a dead etcd would close them. Everyone uses one registry URL.
#![allow(dead_code)] // each test file uses its own part

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sixpn_tests::{tempdir, Netns, Proc};

/// How long a (re)started etcd may take to answer a read.
const START: Duration = Duration::from_secs(20);

/// A port the kernel just handed out on 127.0.0.1, free again.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A process in this (the test's) namespace, in a process group of its own, which is
/// killed whole on drop (socat's per-connection children included).
pub struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Background> {
        let file = OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Background {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL to the whole group, then reaps the leader.
    pub fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: a plain kill(2) on the group this guard created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Etcd {
    client: u16,
    peer: u16,
    etcd: Option<Background>,
    relay: Background,
    // Last, so the files go after the processes.
    dir: tempdir::Dir,
}

impl Etcd {
    /// Starts a one-member cluster and waits until it answers.
    pub fn start() -> Result<Etcd> {
        let dir = tempdir::Dir::new()?;
        let client = free_port()?;
        let peer = free_port()?;
        let socket = dir.path().join("client.sock");
        let mut relay = Command::new("socat");
        relay.arg(format!("UNIX-LISTEN:{},fork", socket.display()));
        relay.arg(format!("TCP:127.0.0.1:{client}"));
        let relay = Background::spawn(relay, &dir.path().join("relay.log"))?;
        let mut etcd = Etcd {
            client,
            peer,
            etcd: None,
            relay,
            dir,
        };
        etcd.spawn()?;
        etcd.wait_ready()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the etcd relay never made {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(etcd)
    }

    fn spawn(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "m0"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m0={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"]);
        self.etcd = Some(
            Background::spawn(cmd, &self.dir.path().join("etcd.log"))
                .context("starting `etcd` (apt package etcd-server)")?,
        );
        Ok(())
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.etcd.take() {
            p.kill();
        }
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// Waits until a registry on it answers a read.
    pub fn wait_ready(&self) -> Result<()> {
        let reg = registry::open(&self.url("/ready"))?;
        let deadline = Instant::now() + START;
        loop {
            match reg.snapshot() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("etcd did not answer within {START:?}: {e}\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `etcd://127.0.0.1:<port><prefix>`; `prefix` starts with `/`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}{prefix}", self.client)
    }

    /// Makes `127.0.0.1:<port>` inside `ns` lead to this etcd; the relay lives as long as
    /// the returned guard (and dies with the namespace in any case).
    pub fn reach_from(&self, ns: &Netns) -> Result<Proc> {
        let socket = self.dir.path().join("client.sock");
        let relay = ns.spawn(
            "socat",
            &[
                &format!("TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr", self.client),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        )?;
        ns.wait_for(
            &format!("ss -ltn | grep -q '127.0.0.1:{} '", self.client),
            Duration::from_secs(5),
        )?;
        Ok(relay)
    }

    /// The tail of etcd's log and the relay's, for failure messages.
    pub fn log(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "--- etcd ---\n{}\n--- relay ---\n{}",
            tail("etcd.log"),
            tail("relay.log")
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        self.relay.kill();
    }
}
