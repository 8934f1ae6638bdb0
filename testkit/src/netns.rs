//! A network namespace per test "host", deleted with everything in it on drop.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{check, sh, unique, Proc};

/// A network namespace with `lo` up, deleted (with every process in it and its
/// `/etc/netns` files) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace named [`unique`]`(prefix)`; one of that name left by an earlier process
    /// with the same id is removed first.
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique(prefix);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
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
        let out = self.output(cmd)?;
        check(&format!("{cmd}` in `{}", self.name), out)
    }

    /// The same, returning the raw output whatever the exit status.
    pub fn output(&self, cmd: &str) -> Result<Output> {
        self.command("sh")
            .args(["-c", cmd])
            .output()
            .with_context(|| format!("running `{cmd}` in {}", self.name))
    }

    /// A program and its arguments (no shell) in the namespace; its output if it exits 0,
    /// else an error with its stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("an empty command")?;
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {argv:?} in {}", self.name))?;
        check(&format!("{argv:?}` in `{}", self.name), out.clone())?;
        Ok(out)
    }

    /// `program` to run in the namespace (`ip netns exec`), for callers that set it up further.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts a long-running process in the namespace; it is killed when the guard drops.
    /// Its stdout and stderr go to a log file whose text [`Proc::log`] returns.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn_logged(cmd, &self.name)
            .with_context(|| format!("starting {program} in {}", self.name))
    }

    /// Puts `addr` on `lo`: an IPv6 address as a /128 (no duplicate detection), an IPv4
    /// one as a /32.
    pub fn add_loopback(&self, addr: &str) -> Result<()> {
        match addr.contains(':') {
            true => self.sh(&format!("ip -6 addr add {addr}/128 dev lo nodad"))?,
            false => self.sh(&format!("ip addr add {addr}/32 dev lo"))?,
        };
        Ok(())
    }

    /// `/etc/netns/<ns>`: `ip netns exec` binds its files over those in `/etc`.
    pub fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Writes `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` binds over /etc/resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) -> Result<()> {
        std::fs::create_dir_all(self.etc_dir())?;
        std::fs::write(self.etc_dir().join("resolv.conf"), text)?;
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

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live there.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.name, f)
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
                // SAFETY: a plain kill(2) of a process in a namespace this guard made.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = sh(&format!("ip netns del {}", self.name));
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Runs `f` on a thread that has entered network namespace `netns`: sockets it opens live
/// there (and keep working when used from other threads afterwards).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns only changes this (short-lived) thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in the namespace")
}
