//! Test fixtures: a registry of either backend, and real `etcd` members (from Debian's
//! etcd-server, started by `sixpn-testkit`) plain or behind TLS, with what the registry's
//! tests ask of them: a fresh key prefix per URL, readiness as a registry read, the leader.
#![allow(dead_code)]

pub mod churn;
pub mod pki;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use registry::{Change, NodeSpec, Registry};
use sixpn_testkit::etcd::ServerTls;

use pki::Pki;

pub const KEY_A: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
pub const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

/// A key prefix no other test in this process uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    inner: sixpn_testkit::Etcd,
    /// What `url()` appends so the fixture's own clients get in (TLS client files).
    client_query: String,
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
        let tls = ServerTls {
            cert: pki.server_cert(),
            key: pki.server_key(),
            client_ca: pki.ca(),
        };
        Etcd::launch(1, Some((tls, pki.client_query())), &[])
    }

    fn launch(size: usize, tls: Option<(ServerTls, String)>, flags: &[&str]) -> Etcd {
        let (tls, client_query) = match tls {
            Some((tls, query)) => (Some(tls), query),
            None => (None, String::new()),
        };
        let etcd = Etcd {
            inner: sixpn_testkit::Etcd::launch(size, tls, flags).expect("starting etcd"),
            client_query,
        };
        etcd.wait_ready();
        etcd
    }

    /// Starts (or restarts, with its data) member `i`.
    pub fn start(&mut self, i: usize) {
        self.inner.start(i).expect("starting an etcd member");
    }

    /// Kills member `i` (SIGKILL: no goodbye to the others).
    pub fn kill(&mut self, i: usize) {
        self.inner.kill(i);
    }

    /// `etcd://` URL naming every member, with a fresh prefix.
    pub fn url(&self) -> String {
        self.url_with(&unique_prefix())
    }

    pub fn url_with(&self, prefix: &str) -> String {
        self.inner.url(&format!("{prefix}{}", self.client_query))
    }

    /// The URL with member `first`'s endpoint first, so clients talk to it until it fails.
    pub fn url_starting_at(&self, first: usize) -> String {
        self.inner.url_starting_at(first, &unique_prefix())
    }

    /// The index of the member that leads the cluster now.
    pub fn leader(&self) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for i in 0..self.inner.size() {
                let url = format!("http://127.0.0.1:{}", self.inner.client_port(i));
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
        self.inner.client_port(i)
    }

    /// Waits until the cluster answers a linearizable read.
    pub fn wait_ready(&self) {
        let reg = registry::open(&self.url()).expect("etcd URL");
        if let Err(e) = self.inner.wait_ready(|| reg.snapshot().map(drop)) {
            panic!("etcd did not become ready: {e}");
        }
    }

    pub fn logs(&self) -> String {
        self.inner.logs()
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

    /// Makes every stored machine unreadable behind the registry's back (an id that is not
    /// one), so that a read which decodes machines fails and one that does not cannot tell.
    pub fn spoil_machines(&self) {
        match &self._etcd {
            None => {
                let path = self.url.strip_prefix("sqlite://").expect("an SQLite URL");
                let db = rusqlite::Connection::open(path).expect("the registry file");
                let spoiled = db
                    .execute("UPDATE machines SET id = 'nope-' || id", [])
                    .expect("spoiling the machines");
                assert!(spoiled > 0, "no machines in {path}");
            }
            Some(etcd) => {
                let after_scheme = self.url.split_once("//").expect("an etcd URL").1;
                let path = &after_scheme[after_scheme.find('/').expect("a prefix")..];
                let machines = format!("{}/machines/", path.split('?').next().unwrap_or(path));
                let url = format!("http://127.0.0.1:{}", etcd.client_port(0));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let mut c = etcd_client::Client::connect([url], None).await.unwrap();
                    let options = etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only();
                    let keys = c.get(machines.clone(), Some(options)).await.unwrap();
                    assert!(!keys.kvs().is_empty(), "no machines under {machines}");
                    for kv in keys.kvs() {
                        let bad = br#"{"kind":"machine","id":"nope"}"#.to_vec();
                        c.put(kv.key().to_vec(), bad, None).await.unwrap();
                    }
                });
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
        public_key: key.parse().unwrap(),
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
