//! The multi-host backend: the registry under a key prefix in etcd (v3), one key per record.
//!
//! The [`Registry`] trait is synchronous and its callers may sit inside a tokio runtime of
//! their own (meshd registers its node from async main), so the etcd client runs on this
//! backend's own small runtime and every call is handed to it and waited for on a plain
//! channel; nothing here calls `block_on` on the caller's thread.
//!
//! Writes read the whole range at one etcd revision, run the pure [`change::plan`], and commit
//! a transaction that compares `meta/revision`'s mod-revision with the one read, so two
//! writers on different hosts never both allocate from the same state: the loser re-reads and
//! plans again. Readers learn of new revisions from a watch on `meta/revision` that a
//! background task keeps open, re-reading and re-watching when the watch breaks or is
//! compacted; only the latest revision matters, so nothing is missed or repeated.
//!
//! Each endpoint of the URL is its own client; a call goes to the one that last answered and
//! moves on to the next when a member does not answer, so losing a member costs one retry.

mod keys;
pub mod location;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    WatchOptions,
};

use crate::change::{self, Change, Plan, SystemContext, Write};
use crate::delta::Delta;
use crate::error::{Error, Result};
use crate::model::{Revision, Snapshot};
use crate::{Applied, Registry};

use keys::{Keys, RevisionMark};
pub use location::Location;

/// How long to wait for a TCP (and TLS) connection to one member.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long one request to one member may take before the next member is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a write re-plans after losing a race to another writer.
const WRITE_TRIES: u32 = 32;
/// Keys per range request when reading the registry.
const PAGE: i64 = 1000;
/// etcd refuses transactions of more than 128 operations by default; imports go in batches.
const IMPORT_BATCH: usize = 100;
/// Back-off bounds of the revision watcher while etcd cannot be read.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub struct EtcdRegistry {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    watching: Once,
}

struct Shared {
    location: Location,
    keys: Keys,
    options: ConnectOptions,
    /// One client per endpoint, made when first needed.
    clients: Mutex<Vec<Option<Client>>>,
    /// The endpoint that answered last.
    current: Mutex<usize>,
    seen: Mutex<Seen>,
    seen_changed: Condvar,
    /// How many revisions the change log keeps.
    keep_changes: AtomicU64,
}

/// What the revision watcher knows.
#[derive(Default)]
struct Seen {
    latest: Option<u64>,
    /// Why etcd cannot be read right now, if it cannot.
    down: Option<String>,
}

/// Why a call to etcd failed.
enum Failure {
    /// No member answered: the message names each endpoint and what went wrong there.
    Unreachable(String),
    /// A member answered with an error that another member would give too.
    Refused(String),
}

impl EtcdRegistry {
    /// Opens the registry at an `etcd://` URL. Nothing is contacted yet: a daemon may start
    /// while etcd is down and catch up when it returns; the first call says if it is.
    pub fn open(url: &str) -> Result<Self> {
        let location = Location::parse(url)?;
        let options = connect_options(&location)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage {
                location: location.shown.clone(),
                message: format!("cannot start the etcd client's runtime: {e}"),
            })?;
        let clients = vec![None; location.endpoints.len()];
        Ok(EtcdRegistry {
            shared: Arc::new(Shared {
                keys: Keys::new(&location.prefix),
                location,
                options,
                clients: Mutex::new(clients),
                current: Mutex::new(0),
                seen: Mutex::new(Seen::default()),
                seen_changed: Condvar::new(),
                keep_changes: AtomicU64::new(crate::delta::KEEP),
            }),
            runtime: Some(runtime),
            watching: Once::new(),
        })
    }

    /// Keeps the newest `revisions` in the change log instead of [`crate::delta::KEEP`] (at
    /// least one); a reader further behind reads a whole snapshot.
    pub fn keeping_changes(self, revisions: u64) -> Self {
        self.shared
            .keep_changes
            .store(revisions.max(1), Ordering::Relaxed);
        self
    }

    /// Runs `work` on the backend's runtime and waits for it on this thread, which may be
    /// a plain thread or a worker of another runtime.
    fn run<T, F>(&self, work: impl FnOnce(Arc<Shared>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = work(self.shared.clone());
        self.runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| self.shared.storage("the etcd client stopped".into()))?
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Only `drop` takes it out.
        self.runtime.as_ref().expect("runtime present until drop")
    }

    fn start_watching(&self) {
        self.watching.call_once(|| {
            let shared = self.shared.clone();
            self.runtime().spawn(shared.watch_revisions());
        });
    }
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and panics inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn connect_options(location: &Location) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        // etcd's default floor for client pings is 5 s; slower than that is left alone.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        // A member cut off from the others answers "no leader" at once instead of hanging.
        .with_require_leader(true);
    if let Some((name, password)) = &location.user {
        options = options
            .with_user(name.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &location.tls {
        options = with_tls(options, tls, location)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
fn with_tls(
    options: ConnectOptions,
    tls: &location::TlsFiles,
    _location: &Location,
) -> Result<ConnectOptions> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let mut config = TlsOptions::new();
    let ca = match (&tls.cacert, &tls.system_ca) {
        (Some(path), _) => Some(("cacert", path)),
        (None, Some(path)) => Some(("system CA bundle", path)),
        (None, None) => None,
    };
    if let Some((field, path)) = ca {
        config = config.ca_certificate(Certificate::from_pem(pem::certificates(field, path)?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let cert = pem::certificates("cert", cert)?;
        let key = pem::private_key("key", key)?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok(options.with_tls(config))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _options: ConnectOptions,
    _tls: &location::TlsFiles,
    location: &Location,
) -> Result<ConnectOptions> {
    Err(Error::invalid(
        "etcd registry URL",
        &location.shown,
        "asks for TLS (etcds://, cacert/cert/key or ETCDCTL_CACERT/CERT/KEY), but this build \
         has no TLS support: sixpn-registry was built without its `tls` feature",
    ))
}

/// The TLS files, read and checked before any connection: rustls would otherwise only say
/// "certificate parse error" at the first call, without saying which file.
#[cfg(feature = "tls")]
mod pem {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use crate::error::{Error, Result};

    fn read(field: &'static str, path: &str) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::invalid(field, path, format!("cannot read: {e}")))
    }

    /// A file of one or more PEM certificates (`cacert`, `cert`).
    pub fn certificates(field: &'static str, path: &str) -> Result<Vec<u8>> {
        let bytes = read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(field, path, format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(
                field,
                path,
                "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            ));
        }
        Ok(bytes)
    }

    /// A PEM private key (`key`): PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub fn private_key(field: &'static str, path: &str) -> Result<Vec<u8>> {
        let bytes = read(field, path)?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            Error::invalid(
                field,
                path,
                format!("holds no usable private key (expected PEM: -----BEGIN ... PRIVATE KEY-----): {e}"),
            )
        })?;
        Ok(bytes)
    }
}

/// Whether another member might answer where this one failed.
fn member_failure(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
        // Cancelled, Unknown, DeadlineExceeded, ResourceExhausted, Aborted, Internal,
        // Unavailable: what a dying, overloaded or leaderless member answers.
        E::GRpcStatus(s) => matches!(i32::from(s.code()), 1 | 2 | 4 | 8 | 10 | 13 | 14),
        _ => false,
    }
}

/// One line about an etcd error, without gRPC metadata dumps: the message and what the
/// transport said under it, since "transport error" alone says nothing.
fn brief(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    use std::error::Error as _;
    let (mut text, mut source) = match e {
        E::GRpcStatus(s) if s.message().is_empty() => (format!("{:?}", s.code()), s.source()),
        E::GRpcStatus(s) => (s.message().to_string(), s.source()),
        E::TransportError(t) => (t.to_string(), t.source()),
        other => return other.to_string(),
    };
    while let Some(s) = source {
        let more = s.to_string();
        // tonic's wrapper, whose cause comes next.
        if more == "transport error" {
            source = s.source();
            continue;
        }
        if more.contains(&text) {
            text = more;
        } else if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What went wrong with TLS, or for want of it, as far as the client can tell.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsTrouble {
    /// The member took the connection and hung up, or sent a TLS alert: what a TLS member
    /// does to a plain-text client or to one without an acceptable certificate.
    HungUp,
    /// The member's certificate is not signed by a CA we were given.
    UntrustedServer,
}

fn tls_trouble(e: &etcd_client::Error) -> Option<TlsTrouble> {
    use etcd_client::Error as E;
    use std::io::ErrorKind as K;
    let text = brief(e);
    if text.contains("invalid peer certificate") {
        return Some(TlsTrouble::UntrustedServer);
    }
    // hyper's words when the member closes the connection under a request in flight.
    if text.contains("received fatal alert") || text.contains("connection closed") {
        return Some(TlsTrouble::HungUp);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        E::GRpcStatus(s) => std::error::Error::source(s),
        E::TransportError(t) => std::error::Error::source(t),
        E::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(s) = source {
        let cut = s.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted
            )
        });
        if cut {
            return Some(TlsTrouble::HungUp);
        }
        source = s.source();
    }
    None
}

fn write_id() -> String {
    use rand_core::RngCore;
    format!("{:016x}", rand_core::OsRng.next_u64())
}

impl Shared {
    fn storage(&self, message: String) -> Error {
        Error::Storage {
            location: self.location.shown.clone(),
            message,
        }
    }

    fn failed(&self, what: &str, f: Failure) -> Error {
        match f {
            Failure::Unreachable(m) => {
                self.storage(format!("cannot {what}: no etcd member answered ({m})"))
            }
            Failure::Refused(m) => {
                let hint = self.auth_hint(&m);
                self.storage(format!("cannot {what}: etcd refused: {m}{hint}"))
            }
        }
    }

    /// What to do about etcd's refusals for want of credentials or permission.
    fn auth_hint(&self, refusal: &str) -> String {
        if refusal.contains("user name is empty") {
            return "; etcd has authentication on: give etcd://USER:PASSWORD@host:port/... \
                    (or ETCDCTL_USER and ETCDCTL_PASSWORD)"
                .into();
        }
        if let (true, Some((user, _))) = (
            refusal.contains("permission denied"),
            self.location.user.as_ref(),
        ) {
            let keys = self.keys.start();
            return format!(
                "; etcd user `{user}` needs a role that may read and write the keys under \
                 `{keys}` (etcdctl role grant-permission ROLE --prefix readwrite {keys})"
            );
        }
        String::new()
    }

    async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        if let Some(c) = self.clients.lock().unwrap_or_else(|p| p.into_inner())[i].clone() {
            return Ok(c);
        }
        let endpoint = &self.location.endpoints[i];
        let scheme = if self.location.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{endpoint}");
        let c = Client::connect([url], Some(self.options.clone())).await?;
        self.clients.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(c.clone());
        Ok(c)
    }

    fn current(&self) -> usize {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` against the member that answered last, then each other member in turn.
    /// Returns what it got and whether some member failed before one answered (the operation
    /// may then have reached etcd twice).
    async fn attempt<T, F, Fut>(&self, mut op: F) -> Result<(T, bool), Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.location.endpoints.len();
        let start = self.current();
        let mut failures: Vec<String> = Vec::new();
        // Some while every member failed the same way TLS fails, so that a member dying under
        // a request, with others refusing connections, is not read as a TLS problem.
        let mut trouble: Option<Option<TlsTrouble>> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let endpoint = &self.location.endpoints[i];
            let result = match self.client(i).await {
                Ok(client) => op(client).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => {
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = i;
                    return Ok((v, !failures.is_empty()));
                }
                Err(e) if member_failure(&e) => {
                    tracing::debug!(endpoint = %endpoint, error = %brief(&e), "etcd member did not answer");
                    failures.push(format!("{endpoint}: {}", brief(&e)));
                    let this = tls_trouble(&e);
                    trouble = Some(trouble.map_or(this, |all| all.and(this)));
                }
                Err(e) => return Err(Failure::Refused(brief(&e))),
            }
        }
        let mut why = failures.join("; ");
        if let Some(Some(t)) = trouble {
            why.push_str(&self.tls_hint(t));
        }
        Err(Failure::Unreachable(why))
    }

    /// What to check when TLS failed, by what this client offered.
    fn tls_hint(&self, trouble: TlsTrouble) -> String {
        let tls = self.location.tls.as_ref();
        let hint = match (trouble, tls) {
            (TlsTrouble::UntrustedServer, Some(t)) if t.cacert.is_some() => {
                "; `cacert` must hold the CA that signed the members' certificates"
            }
            (TlsTrouble::UntrustedServer, Some(t)) if t.system_ca.is_some() => {
                return format!(
                    "; the system's trusted CAs ({}) do not include the CA that signed the \
                     members' certificates: give ?cacert=PATH with that CA",
                    t.system_ca.as_deref().unwrap_or_default()
                );
            }
            (TlsTrouble::UntrustedServer, _) => {
                "; give ?cacert=PATH with the CA that signed the members' certificates"
            }
            (TlsTrouble::HungUp, None) => {
                "; a member that hangs up at once may serve TLS only: give ?cacert=PATH, \
                 and &cert=PATH&key=PATH if it checks client certificates"
            }
            (TlsTrouble::HungUp, Some(t)) if t.cert.is_none() => {
                "; a member that hangs up on TLS may want a client certificate: give \
                 &cert=PATH&key=PATH"
            }
            (TlsTrouble::HungUp, Some(_)) => {
                "; a member that hangs up on TLS may not trust the client certificate: its \
                 --trusted-ca-file must hold the CA that signed `cert`"
            }
        };
        hint.to_string()
    }

    /// The whole registry at one etcd revision, and the mod-revision of `meta/revision`.
    async fn load(&self) -> Result<(Snapshot, i64)> {
        let mut kvs = Vec::new();
        let mut at = 0;
        // Everything but the change log, at one etcd revision.
        for (start, end) in [
            (self.keys.start(), self.keys.log_start()),
            (self.keys.log_end(), self.keys.end()),
        ] {
            at = self.read_range(start, end, at, &mut kvs).await?;
        }
        keys::decode(&self.keys, &kvs).map_err(|m| self.corrupt(m))
    }

    /// Appends the key-values of [`start`, `end`) at etcd revision `at` (0: the latest) to
    /// `kvs`, a page at a time; returns the revision read at.
    async fn read_range(
        &self,
        start: String,
        end: String,
        mut at: i64,
        kvs: &mut Vec<(String, Vec<u8>, i64)>,
    ) -> Result<i64> {
        let mut from = start;
        let first = kvs.len();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(at);
            let key = from.clone();
            let (resp, _) = self
                .attempt(|mut c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                })
                .await
                .map_err(|f| self.failed("read the registry", f))?;
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                let key = kv
                    .key_str()
                    .map_err(|_| self.corrupt("a key is not UTF-8".into()))?;
                kvs.push((key.to_string(), kv.value().to_vec(), kv.mod_revision()));
            }
            match (resp.more(), kvs[first..].last()) {
                (true, Some((last, _, _))) => from = format!("{last}\0"),
                _ => break,
            }
        }
        Ok(at)
    }

    /// The deltas after `after`, at most `limit`; `None` when the log does not hold them all
    /// (trimmed, written by a version without a log, or emptied by an import).
    async fn changes_since(&self, after: Revision, limit: usize) -> Result<Option<Vec<Delta>>> {
        let mut marks = Vec::new();
        let at = self
            .read_range(
                self.keys.revision(),
                format!("{}\0", self.keys.revision()),
                0,
                &mut marks,
            )
            .await?;
        let now = match marks.first() {
            Some((key, value, _)) => {
                serde_json::from_slice::<RevisionMark>(value)
                    .map_err(|e| self.corrupt(format!("key `{key}` is not a revision mark: {e}")))?
                    .revision
            }
            None => 0,
        };
        if after.0 > now {
            return Ok(None);
        }
        let want = (now - after.0).min(limit as u64);
        if want == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut entries = Vec::new();
        self.read_range(
            self.keys.log(after.0 + 1),
            self.keys.log(after.0 + want + 1),
            at,
            &mut entries,
        )
        .await?;
        let mut deltas = Vec::with_capacity(entries.len());
        for (key, value, _) in entries {
            let delta: Delta = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(format!("change log entry `{key}`: {e}")))?;
            if delta.revision.0 != after.0 + 1 + deltas.len() as u64 {
                return Ok(None);
            }
            deltas.push(delta);
        }
        if deltas.len() as u64 != want {
            return Ok(None);
        }
        Ok(Some(deltas))
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            location: self.location.shown.clone(),
            message,
        }
    }

    /// A transaction that writes `ops` only if nobody wrote since `mark_mod`.
    fn guarded(&self, mark_mod: i64, ops: Vec<TxnOp>) -> Txn {
        Txn::new()
            .when([Compare::mod_revision(
                self.keys.revision(),
                CompareOp::Equal,
                mark_mod,
            )])
            .and_then(ops)
    }

    fn mark_op(&self, revision: Revision, write: &str) -> TxnOp {
        let mark = RevisionMark {
            revision: revision.0,
            write: write.to_string(),
        };
        let value = serde_json::to_vec(&mark).unwrap_or_default();
        TxnOp::put(self.keys.revision(), value, None)
    }

    /// The writes of `plan`, its change log entry (the records before as `snap` holds them)
    /// and the trim of the log, and the new revision mark.
    fn plan_ops(
        &self,
        snap: &Snapshot,
        plan: &Plan,
        revision: Revision,
        write: &str,
    ) -> Vec<TxnOp> {
        let delta = Delta {
            revision,
            next_network: plan.next_network.unwrap_or(snap.next_network),
            changes: crate::delta::record_changes(snap, &plan.writes),
        };
        let mut ops = self.record_ops(plan, revision, write);
        ops.push(TxnOp::put(
            self.keys.log(revision.0),
            serde_json::to_vec(&delta).unwrap_or_default(),
            None,
        ));
        let keep = self.keep_changes.load(Ordering::Relaxed);
        if revision.0 > keep {
            ops.push(TxnOp::delete(
                self.keys.log_start(),
                Some(DeleteOptions::new().with_range(self.keys.log(revision.0 - keep + 1))),
            ));
        }
        ops
    }

    fn record_ops(&self, plan: &Plan, revision: Revision, write: &str) -> Vec<TxnOp> {
        let mut ops: Vec<TxnOp> = plan
            .writes
            .iter()
            .map(|w| match w {
                Write::Put(r) => TxnOp::put(
                    self.keys.record(&r.key()),
                    serde_json::to_vec(r).unwrap_or_default(),
                    None,
                ),
                Write::Delete(k) => TxnOp::delete(self.keys.record(k), None),
            })
            .collect();
        if let Some(n) = plan.next_network {
            ops.push(TxnOp::put(self.keys.next_network(), n.to_string(), None));
        }
        ops.push(self.mark_op(revision, write));
        ops
    }

    /// Commits `txn`; `Ok(true)` if it (or an earlier copy of it sent to a member that died
    /// before answering) took effect.
    async fn commit(&self, txn: Txn, mark_mod: i64, write: &str) -> Result<bool> {
        let sent = self
            .attempt(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        match sent {
            Ok((resp, _)) if resp.succeeded() => Ok(true),
            Ok((_, false)) => Ok(false),
            // A member failed first: the compare may have failed because our own write landed.
            Ok((_, true)) => self.landed(mark_mod, write).await,
            Err(Failure::Unreachable(m)) => Err(self.storage(format!(
                "cannot write: no etcd member confirmed the write, which may or may not have \
                 been applied ({m})"
            ))),
            Err(f) => Err(self.failed("write", f)),
        }
    }

    /// Whether the first write after `mark_mod` was the one named `write`.
    async fn landed(&self, mark_mod: i64, write: &str) -> Result<bool> {
        let key = self.keys.revision();
        let (resp, _) = self
            .attempt(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|f| self.failed("check the write", f))?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        if kv.mod_revision() == mark_mod {
            return Ok(false);
        }
        let first_after = self
            .attempt(|mut c| {
                let key = key.clone();
                async move {
                    let options = WatchOptions::new().with_start_revision(mark_mod + 1);
                    let mut stream = c.watch(key, Some(options)).await?;
                    loop {
                        let Some(msg) = stream.message().await? else {
                            return Err(etcd_client::Error::WatchError("watch ended".into()));
                        };
                        if msg.canceled() {
                            return Ok(None);
                        }
                        if let Some(kv) = msg.events().first().and_then(|e| e.kv()) {
                            return Ok(Some(kv.value().to_vec()));
                        }
                    }
                }
            })
            .await;
        match first_after {
            Ok((Some(value), _)) => Ok(serde_json::from_slice::<RevisionMark>(&value)
                .map(|m| m.write == write)
                .unwrap_or(false)),
            Ok((None, _)) => Err(self.storage(
                "a member failed during the write and etcd's history was compacted since, so \
                 whether the write landed is unknown; check with a fresh read"
                    .into(),
            )),
            Err(f) => Err(self.failed("check the write", f)),
        }
    }

    async fn apply(&self, change: &Change) -> Result<Applied> {
        for attempt in 0..WRITE_TRIES {
            let (snap, mark_mod) = self.load().await?;
            let plan = change::plan(&snap, change, &mut SystemContext)?;
            if plan.writes.is_empty() && plan.next_network.is_none() {
                return Ok(Applied {
                    revision: snap.revision,
                    record: plan.result,
                });
            }
            let revision = Revision(snap.revision.0 + 1);
            let write = write_id();
            let txn = self.guarded(mark_mod, self.plan_ops(&snap, &plan, revision, &write));
            if self.commit(txn, mark_mod, &write).await? {
                return Ok(Applied {
                    revision,
                    record: plan.result,
                });
            }
            tracing::debug!(attempt, "registry changed during the write; planning again");
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(Error::Conflict)
    }

    async fn import(&self, source: &Snapshot) -> Result<Revision> {
        let (have, mark_mod) = self.load().await?;
        crate::refuse_unless_empty(&have, &self.location.shown)?;
        if source.revision.0 == 0 && source.records().next().is_none() {
            return Ok(have.revision);
        }
        let write = write_id();
        let records: Vec<_> = source.records().collect();
        for batch in records.chunks(IMPORT_BATCH) {
            let ops = batch
                .iter()
                .map(|r| {
                    TxnOp::put(
                        self.keys.record(&r.key()),
                        serde_json::to_vec(r).unwrap_or_default(),
                        None,
                    )
                })
                .collect();
            if !self
                .commit(self.guarded(mark_mod, ops), mark_mod, "")
                .await?
            {
                return Err(Error::Conflict);
            }
        }
        let revision = Revision(source.revision.0.max(1));
        let ops = vec![
            TxnOp::put(
                self.keys.next_network(),
                source.next_network.to_string(),
                None,
            ),
            // Readers of whatever was here before start again from a snapshot.
            TxnOp::delete(
                self.keys.log_start(),
                Some(DeleteOptions::new().with_range(self.keys.log_end())),
            ),
            self.mark_op(revision, &write),
        ];
        if !self
            .commit(self.guarded(mark_mod, ops), mark_mod, &write)
            .await?
        {
            return Err(Error::Conflict);
        }
        Ok(revision)
    }

    fn publish(&self, revision: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.down.take().is_some() {
            tracing::info!(registry = %self.location.shown, "etcd reachable again");
        }
        seen.latest = Some(seen.latest.map_or(revision, |l| l.max(revision)));
        self.seen_changed.notify_all();
    }

    fn mark_down(&self, why: String) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.down.is_none() {
            tracing::warn!(registry = %self.location.shown, error = %why, "etcd unreachable");
        }
        seen.down = Some(why);
        self.seen_changed.notify_all();
    }

    /// Keeps the latest revision known: read it, watch from there, and start over when the
    /// watch breaks (member lost, history compacted, leader lost).
    async fn watch_revisions(self: Arc<Self>) {
        let mut delay = RETRY_MIN;
        loop {
            let read = self.read_mark().await;
            let header = match read {
                Ok((revision, header)) => {
                    self.publish(revision);
                    delay = RETRY_MIN;
                    header
                }
                Err(e) => {
                    self.mark_down(match e {
                        Error::Storage { message, .. } => message,
                        other => other.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let why = self.follow_from(header + 1).await;
            tracing::debug!(registry = %self.location.shown, why = %why, "revision watch ended; re-reading");
            // A watch that fails at once (member without leader) must not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The registry revision now, and the etcd revision it was read at.
    async fn read_mark(&self) -> Result<(u64, i64)> {
        let key = self.keys.revision();
        let (resp, _) = self
            .attempt(|mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|f| self.failed("read the revision", f))?;
        let header = resp.header().map(|h| h.revision()).unwrap_or(0);
        let revision = match resp.kvs().first() {
            Some(kv) => {
                serde_json::from_slice::<RevisionMark>(kv.value())
                    .map_err(|e| self.corrupt(format!("bad revision mark: {e}")))?
                    .revision
            }
            None => 0,
        };
        Ok((revision, header))
    }

    /// Publishes each new revision from a watch starting at etcd revision `from`, until the
    /// watch ends; returns why it ended.
    async fn follow_from(&self, from: i64) -> String {
        let i = self.current();
        let mut client = match self.client(i).await {
            Ok(c) => c,
            Err(e) => return brief(&e),
        };
        let options = WatchOptions::new().with_start_revision(from);
        let mut stream = match client.watch(self.keys.revision(), Some(options)).await {
            Ok(s) => s,
            Err(e) => return brief(&e),
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return "the watch stream ended".into(),
                Err(e) => return brief(&e),
            };
            if msg.canceled() {
                return format!(
                    "etcd cancelled the watch ({}; compacted at {})",
                    msg.cancel_reason(),
                    msg.compact_revision()
                );
            }
            for event in msg.events() {
                if event.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = event.kv() else { continue };
                match serde_json::from_slice::<RevisionMark>(kv.value()) {
                    Ok(mark) => self.publish(mark.revision),
                    Err(e) => return format!("bad revision mark: {e}"),
                }
            }
        }
    }
}

/// Jittered back-off between write attempts that lost a race.
fn backoff(attempt: u32) -> Duration {
    use rand_core::RngCore;
    let cap_ms = 5u64 << attempt.min(5);
    Duration::from_millis(1 + rand_core::OsRng.next_u64() % cap_ms)
}

impl Registry for EtcdRegistry {
    fn location(&self) -> &str {
        &self.shared.location.shown
    }

    fn snapshot(&self) -> Result<Snapshot> {
        self.run(|s| async move { s.load().await.map(|(snap, _)| snap) })
    }

    fn wait_newer(&self, than: Revision, timeout: Duration) -> Result<Option<Revision>> {
        self.start_watching();
        let deadline = Instant::now() + timeout;
        let mut seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(latest) = seen.latest.filter(|l| *l > than.0) {
                return Ok(Some(Revision(latest)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return match &seen.down {
                    Some(why) => Err(self.shared.storage(why.clone())),
                    None => Ok(None),
                };
            }
            seen = self
                .shared
                .seen_changed
                .wait_timeout(seen, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn apply(&self, change: &Change) -> Result<Applied> {
        let change = change.clone();
        self.run(|s| async move { s.apply(&change).await })
    }

    fn import(&self, snapshot: &Snapshot) -> Result<Revision> {
        let snapshot = snapshot.clone();
        self.run(|s| async move { s.import(&snapshot).await })
    }

    fn changes_since(&self, after: Revision, limit: usize) -> Result<Option<Vec<Delta>>> {
        self.run(move |s| async move { s.changes_since(after, limit).await })
    }
}
