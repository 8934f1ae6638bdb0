//! Test fixtures: a registry of either backend, and real `etcd` members (from Debian's
//! etcd-server) on free loopback ports with their data in a temp dir, plain or behind TLS.
//! Members are killed and their files removed on drop, panics included.
#![allow(dead_code)]

pub mod churn;
pub mod pki;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::{Change, NodeSpec, Registry};

use pki::Pki;

pub const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
pub const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

/// How long an etcd member may take to start and elect a leader.
const START: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A key prefix no other test in this process uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// What a member behind TLS serves with and asks of its clients.
struct ServerTls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    /// Clients must show a certificate this CA signed (`--client-cert-auth`).
    client_ca: std::path::PathBuf,
    /// What `url()` appends so the fixture's own clients get in.
    client_query: String,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    tls: Option<ServerTls>,
    /// More flags for every member, e.g. a short `--auth-token-ttl`.
    extra: Vec<String>,
}

impl Etcd {
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    pub fn cluster(size: usize) -> Etcd {
        Etcd::launch(size, None, &[])
    }

    /// One member started with `flags` besides the usual ones.
    pub fn single_with(flags: &[&str]) -> Etcd {
        Etcd::launch(1, None, flags)
    }

    /// One member serving clients only over TLS with `pki`'s server certificate, and only to
    /// clients with a certificate from `pki`'s CA. `pki` must outlive the member: etcd reads
    /// its files again at each handshake.
    pub fn single_tls(pki: &Pki) -> Etcd {
        Etcd::launch(
            1,
            Some(ServerTls {
                cert: pki.server_cert(),
                key: pki.server_key(),
                client_ca: pki.ca(),
                client_query: pki.client_query(),
            }),
            &[],
        )
    }

    fn launch(size: usize, tls: Option<ServerTls>, flags: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut etcd = Etcd {
            token: format!("sixpn-test-{}", dir.path().display()),
            dir,
            members,
            tls,
            extra: flags.iter().map(|f| f.to_string()).collect(),
        };
        for i in 0..size {
            etcd.start(i);
        }
        etcd.wait_ready();
        etcd
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts, with its data) member `i`.
    pub fn start(&mut self, i: usize) {
        let cluster = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .expect("log file");
        let m = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting `etcd` (apt package etcd-server)");
        m.child = Some(child);
    }

    /// Kills member `i` (SIGKILL: no goodbye to the others).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcd://` URL naming every member, with a fresh prefix.
    pub fn url(&self) -> String {
        self.url_with(&unique_prefix())
    }

    pub fn url_with(&self, prefix: &str) -> String {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        let query = self.tls.as_ref().map_or("", |t| &t.client_query);
        format!("etcd://{}{prefix}{query}", endpoints.join(","))
    }

    /// The URL with member `first`'s endpoint first, so clients talk to it until it fails.
    pub fn url_starting_at(&self, first: usize) -> String {
        let n = self.members.len();
        let endpoints: Vec<String> = (0..n)
            .map(|k| format!("127.0.0.1:{}", self.members[(first + k) % n].client))
            .collect();
        format!("etcd://{}{}", endpoints.join(","), unique_prefix())
    }

    /// The index of the member that leads the cluster now.
    pub fn leader(&self) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for (i, m) in self.members.iter().enumerate() {
                let url = format!("http://127.0.0.1:{}", m.client);
                let Ok(mut c) = etcd_client::Client::connect([url], None).await else {
                    continue;
                };
                let Ok(status) = c.status().await else {
                    continue;
                };
                let me = status.header().map(|h| h.member_id());
                if me == Some(status.leader()) {
                    return i;
                }
            }
            panic!("no member leads the cluster")
        })
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// Waits until the cluster answers a linearizable read.
    pub fn wait_ready(&self) {
        let reg = registry::open(&self.url()).expect("etcd URL");
        let deadline = Instant::now() + START;
        loop {
            match reg.snapshot() {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let logs = self.logs();
                    panic!("etcd did not become ready: {e}\n{logs}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A registry of one backend, for tests that run against both.
pub struct Fixture {
    pub url: String,
    pub backend: &'static str,
    _etcd: Option<Etcd>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        Fixture {
            url,
            backend: "sqlite",
            _etcd: None,
            _dir: Some(dir),
        }
    }

    pub fn etcd() -> Fixture {
        let etcd = Etcd::single();
        Fixture {
            url: etcd.url(),
            backend: "etcd",
            _etcd: Some(etcd),
            _dir: None,
        }
    }

    /// Another empty registry of the same backend (same etcd, another prefix).
    pub fn sibling(&self) -> (String, Option<tempfile::TempDir>) {
        match &self._etcd {
            Some(etcd) => (etcd.url(), None),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("other.db").display());
                (url, Some(dir))
            }
        }
    }

    /// A new handle, as another process would have.
    pub fn open(&self) -> Arc<dyn Registry> {
        registry::open(&self.url).expect("opening the test registry")
    }
}

pub fn node(name: &str, key: &str, gateway: bool) -> Change {
    Change::AddNode(NodeSpec {
        name: name.into(),
        region: "iad".into(),
        public_key: key.into(),
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        gateway,
    })
}

pub fn machine(app: &str) -> Change {
    Change::AddMachine {
        org: "acme".into(),
        app: app.into(),
        region: "iad".into(),
        node: "host-a".into(),
        process_group: None,
    }
}

/// An org and a gateway node.
pub fn setup(reg: &dyn Registry) {
    reg.apply(&Change::CreateOrg {
        name: "acme".into(),
    })
    .unwrap();
    reg.apply(&node("host-a", KEY_A, true)).unwrap();
}
