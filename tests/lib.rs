//! The end-to-end harness: "hosts" are network namespaces joined by veth pairs, processes
//! run inside them, and everything is torn down on drop, also when a test panics.
//! Names carry the test process id and a counter, so tests can run in parallel.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod meshd_harness;
pub mod site_harness;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process: `<prefix><pid hex><n>`, at most 15 characters
/// so it also fits interface names.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() & 0xfffff);
    assert!(
        name.len() <= 15,
        "name `{name}` is longer than an interface name may be"
    );
    name
}

/// Runs a command on the host, failing with its stderr when it exits non-zero.
pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("running `{cmd}`"))?;
    check(cmd, out)
}

fn check(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the workspace's binaries are: `scripts/test` builds them before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique(prefix);
        sh(&format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command line in the namespace (`sh -c`), failing with its stderr.
    pub fn sh(&self, cmd: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .with_context(|| format!("running `{cmd}` in {}", self.name))?;
        check(&format!("{cmd}` in `{}", self.name), out)
    }

    /// The same, returning the raw output whatever the exit status.
    pub fn output(&self, cmd: &str) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .with_context(|| format!("running `{cmd}` in {}", self.name))
    }

    /// Starts a long-running process in the namespace; it is killed when the guard drops.
    /// Its stderr goes to a log file whose text `Proc::log` returns for failure messages.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Proc> {
        let log = std::env::temp_dir().join(format!("{}-{}.log", self.name, unique("p")));
        let file = std::fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {program} in {}", self.name))?;
        Ok(Proc { child, log })
    }

    /// Writes `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` binds over /etc/resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) -> Result<()> {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), text)?;
        Ok(())
    }

    /// Polls `cmd` until it succeeds or `timeout` passes.
    pub fn wait_for(&self, cmd: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            match self.sh(cmd) {
                Ok(out) => return Ok(out),
                Err(e) if start.elapsed() > timeout => {
                    return Err(e.context(format!("waited {timeout:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then remove the namespace and its /etc files.
        if let Ok(pids) = sh(&format!("ip netns pids {}", self.name)) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = sh(&format!("ip netns del {}", self.name));
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// A child process, killed on drop.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the output holds `text`; returns the output then.
    pub fn wait_log(&self, text: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(text) {
                return Ok(log);
            }
            if start.elapsed() > limit {
                bail!("no `{text}` within {limit:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An underlay: a bridge in its own namespace and a veth from it into each host, with IPv4
/// addresses `10.<net>.0.<n>/24` (inside namespaces this test made, never reachable outside).
pub struct Underlay {
    pub bridge: Netns,
    net: u8,
    hosts: u8,
}

impl Underlay {
    pub fn new() -> Result<Underlay> {
        let bridge = Netns::new("ub")?;
        bridge.sh("ip link add br0 type bridge && ip link set br0 up")?;
        // Each underlay gets its own /24 so parallel tests never share addresses.
        let net = (COUNTER.fetch_add(1, Ordering::Relaxed) % 200 + 20) as u8;
        Ok(Underlay {
            bridge,
            net,
            hosts: 0,
        })
    }

    /// Makes a host namespace on the underlay; returns it with its underlay address.
    pub fn host(&mut self, prefix: &str) -> Result<(Netns, String)> {
        let ns = Netns::new(prefix)?;
        self.hosts += 1;
        let addr = format!("10.{}.0.{}", self.net, self.hosts);
        let (inner, outer) = (unique("vi"), unique("vo"));
        sh(&format!(
            "ip link add {inner} netns {} type veth peer name {outer} netns {}",
            ns.name(),
            self.bridge.name()
        ))?;
        self.bridge.sh(&format!(
            "ip link set {outer} master br0 && ip link set {outer} up"
        ))?;
        ns.sh(&format!(
            "ip link set {inner} name eth0 && ip addr add {addr}/24 dev eth0 && ip link set eth0 up"
        ))?;
        Ok((ns, addr))
    }
}

/// A temporary registry file for one test.
pub fn temp_registry() -> Result<(tempdir::Dir, String)> {
    let dir = tempdir::Dir::new()?;
    let path = dir
        .path()
        .join("registry.db")
        .to_string_lossy()
        .into_owned();
    Ok((dir, path))
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A folder under the system temp dir, removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Dir> {
            let p = std::env::temp_dir().join(super::unique("sixpn"));
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Sent and received counts from ping's summary line ("5 packets transmitted, 5 received").
pub fn ping_summary(text: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in:\n{text}"))?;
    let number = |word: &str| -> Result<u64> {
        let part = line
            .split(',')
            .find(|part| part.contains(word))
            .with_context(|| format!("no `{word}` in {line:?}"))?;
        Ok(part.split_whitespace().next().unwrap_or("").parse()?)
    };
    Ok((number("transmitted")?, number("received")?))
}
