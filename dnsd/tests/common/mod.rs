//! The end-to-end harness: a fresh registry in a temp dir, the real `dnsd` binary as a child
//! process (killed on drop), `dig`/`kdig`, and a stub upstream resolver; namespaces, ports
//! and processes come from `sixpn-testkit`.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::{Change, Machine, NodeSpec, Registry};
use sixpn_testkit::metrics::Scrape;
use sixpn_testkit::{in_netns, Proc};

pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub reg: Arc<dyn Registry>,
    keys: AtomicU32,
}

impl TestRegistry {
    pub fn new() -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registry.db");
        let reg = registry::open(path.to_str().expect("utf-8 path")).expect("open registry");
        TestRegistry {
            dir,
            path,
            reg,
            keys: AtomicU32::new(1),
        }
    }

    pub fn url(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    pub fn apply(&self, change: Change) -> Option<registry::Record> {
        self.reg.apply(&change).expect("registry write").record
    }

    pub fn org(&self, name: &str) -> registry::Org {
        self.apply(Change::CreateOrg { name: name.into() });
        self.reg.snapshot().unwrap().orgs[name].clone()
    }

    pub fn node(&self, name: &str, region: &str, gateway: bool) {
        let n = self.keys.fetch_add(1, Ordering::Relaxed);
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_be_bytes());
        let public_key = key.into();
        self.apply(Change::AddNode(NodeSpec {
            name: name.into(),
            region: region.into(),
            public_key,
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            gateway,
        }));
    }

    pub fn machine(&self, org: &str, app: &str, region: &str, node: &str) -> Machine {
        match self.apply(Change::AddMachine {
            org: org.into(),
            app: app.into(),
            region: region.into(),
            node: node.into(),
            process_group: None,
        }) {
            Some(registry::Record::Machine(m)) => m,
            other => panic!("add machine gave {other:?}"),
        }
    }
}

/// The `dnsd` binary, running; killed when dropped.
pub struct Dnsd {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Dnsd {
    /// Starts `dnsd` (optionally inside network namespace `netns`) listening on `addr`.
    pub fn start(netns: Option<&str>, addr: SocketAddr, args: &[&str]) -> Dnsd {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("dnsd.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dnsd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dnsd")),
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, &log).expect("start dnsd");
        let d = Dnsd {
            proc,
            addr,
            log,
            _logdir: logdir,
        };
        d.wait_ready(netns);
        d
    }

    fn wait_ready(&self, netns: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = dig(
                netns,
                self.addr,
                &["+short", "+time=1", "+tries=1", "internal", "SOA"],
            );
            if !out.contains("connection refused")
                && !out.contains("timed out")
                && !out.contains("no servers")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsd did not come up; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics page (HTTP head included) from `--metrics addr`.
    pub fn metrics(addr: SocketAddr) -> String {
        Scrape::from_here(addr).expect("metrics").text().to_string()
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn tool(netns: Option<&str>, tool: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tool]);
            c
        }
        None => Command::new(tool),
    }
}

/// `dig @server -p port ARGS`, stdout and stderr together.
pub fn dig(netns: Option<&str>, server: SocketAddr, args: &[&str]) -> String {
    let out = run(tool(netns, "dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kdig @server -p port ARGS`.
pub fn kdig(server: SocketAddr, args: &[&str]) -> String {
    let out = run(Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lines of `dig +short`-style output, sorted.
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Record lines with whitespace runs collapsed to one space.
pub fn records(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A tiny upstream resolver on loopback: answers every question with one A record
/// (`192.0.2.1`, TTL `ttl`), counting the queries it got. Stops (port closed) on drop.
pub struct StubUpstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicU32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubUpstream {
    pub fn start(ttl: u32) -> StubUpstream {
        StubUpstream::serve(UdpSocket::bind("127.0.0.1:0").unwrap(), ttl)
    }

    /// The same, on loopback inside network namespace `netns`.
    pub fn start_in(netns: &str, ttl: u32) -> StubUpstream {
        let sock = in_netns(netns, || UdpSocket::bind("127.0.0.1:0").unwrap());
        StubUpstream::serve(sock, ttl)
    }

    fn serve(sock: UdpSocket, ttl: u32) -> StubUpstream {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let p = &buf[..n];
                // Header + question, as asked.
                let mut end = 12;
                while end < n && p[end] != 0 {
                    end += 1 + usize::from(p[end]);
                }
                end += 5;
                let mut r = p[..end.min(n)].to_vec();
                r[2] |= 0x80;
                r[3] = 0x80;
                r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
                r.extend_from_slice(&ttl.to_be_bytes());
                r.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
                let _ = sock.send_to(&r, src);
            }
        });
        StubUpstream {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> u32 {
        self.queries.load(Ordering::Relaxed)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}
