//! The multi-host backend: the registry under a key prefix in etcd (v3), one key per record.
//!
//! The [`Registry`] trait is synchronous and its callers may sit inside a tokio runtime of
//! their own (meshd registers its node from async main), so the etcd client runs on this
//! backend's own small runtime and every call is handed to it and waited for on a plain
//! channel; nothing here calls `block_on` on the caller's thread.
//!
//! A write reads only what its change needs, all at one etcd revision: every org, node and
//! peering (few), the records the change names, and the keys of the index (`index`: runs of
//! used slots, counts, lookups by public key) that its plan asks about; it runs the pure
//! [`change::plan_with`] on them (`write`) and commits one transaction that writes the records,
//! the index edits and the change log entry, and compares `meta/revision`'s mod-revision with
//! the one read, so two writers on different hosts never both allocate from the same state:
//! the loser re-reads and plans again. A registry whose mark names no index (one written by a
//! version without it) gets one built from a whole read before the write. Readers learn of new revisions from a watch on `meta/revision` that a
//! background task keeps open, re-reading and re-watching when the watch breaks or is
//! compacted; only the latest revision matters, so nothing is missed or repeated.
//!
//! Each endpoint of the URL is its own client; a call goes to the one that last answered and
//! moves on to the next when a member does not answer, so losing a member costs one retry.

mod index;
mod keys;
pub mod location;
mod reads;
mod spans;
mod write;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::change::{Change, SystemContext};
use crate::delta::Delta;
use crate::error::{Error, Kind, Result};
use crate::model::{RecordKey, Revision, Snapshot};
use crate::{Applied, Record, RecordRef, Registry};

use index::Index;
use keys::{Keys, RevisionMark};
pub use location::Location;
use reads::{Kv, Query, Reads};
use write::{Op, Replay, Step, Writer};

/// How long to wait for a TCP (and TLS) connection to one member.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long one request to one member may take before the next member is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a write re-plans after losing a race to another writer.
const WRITE_TRIES: u32 = 32;
/// Keys per range request when reading the registry. Each request costs etcd 3.4 a walk of
/// its range besides the keys it answers: at a million machines, pages of 1,000 kept etcd
/// busy 9.6 s and pages of 10,000 5.2 s (records are ~200 bytes, so a page is ~2 MB).
const PAGE: u64 = 10_000;
/// The largest answer a range request may bring (tonic's default is 4 MiB); a page that
/// comes to more is read again in smaller pages.
const ANSWER_LIMIT: usize = 64 << 20;
/// What a page's answer aims at once a range's records have been seen: within the
/// [`REQUEST_TIMEOUT`] a request may take, a member 3 MB/s away still sends it, where an
/// answer near [`ANSWER_LIMIT`] would time out and count as the member failing.
const PAGE_BYTES: usize = 8 << 20;
/// etcd refuses transactions of more than 128 operations by default; imports, index builds
/// and a write's reads go in batches.
const IMPORT_BATCH: usize = 100;
/// How many rounds of reads one try of a write may take; more is a bug, not a busy registry.
const READ_ROUNDS: usize = 16;
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
    /// Keys per range request when reading a whole range.
    page: AtomicU64,
    /// The largest answer a range request may bring.
    answer_limit: AtomicUsize,
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
                page: AtomicU64::new(PAGE),
                answer_limit: AtomicUsize::new(ANSWER_LIMIT),
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

    /// Reads whole ranges `keys` at a time instead of [`PAGE`] (at least one): tests make
    /// small registries take the paths of large ones.
    pub fn reading_pages_of(self, keys: u64) -> Self {
        self.shared.page.store(keys.max(1), Ordering::Relaxed);
        self
    }

    /// Takes answers of at most `bytes` instead of [`ANSWER_LIMIT`]: tests make small
    /// records overflow a page.
    pub fn taking_answers_of(self, bytes: usize) -> Self {
        self.shared.answer_limit.store(bytes, Ordering::Relaxed);
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

/// The page after one of `asked` records that came to `bytes`: twice as many (after a
/// record too large for an answer made pages small, they grow back), at most `full`, and at
/// most what keeps an answer of records this size near [`PAGE_BYTES`].
fn next_page(asked: u64, bytes: usize, records: usize, full: u64) -> u64 {
    let per_record = (bytes / records.max(1)).max(1) as u64;
    (asked * 2)
        .min(full)
        .min((PAGE_BYTES as u64 / per_record).max(1))
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

/// Whether an answer was larger than this client takes: tonic refuses it before decoding,
/// with a status of its own (etcd's own `OutOfRange`, a future revision, reads otherwise).
fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("decoded message length too large"))
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
        // Decoded on a thread of its own as the pages arrive: a million records take etcd
        // and the decoding seconds each, which this way overlap.
        let (pages, arriving) = std::sync::mpsc::sync_channel::<Vec<(String, Vec<u8>, i64)>>(4);
        let keys = self.keys.clone();
        let decoding = tokio::task::spawn_blocking(move || {
            let mut decoder = keys::Decoder::new(&keys);
            for page in arriving {
                for (key, value, mod_revision) in page {
                    decoder.take(&key, &value, mod_revision)?;
                }
            }
            Ok(decoder.finish())
        });
        let mut at = 0;
        let mut read = Ok(());
        for (start, end) in self.record_ranges() {
            let sent = self
                .read_pages(start, end, at, |page| {
                    tokio::task::block_in_place(|| pages.send(page))
                        .map_err(|_| self.storage("the registry's decoder stopped".into()))
                })
                .await;
            match sent {
                Ok(now) => at = now,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        drop(pages);
        let decoded = decoding
            .await
            .map_err(|e| self.storage(format!("the registry's decoder failed: {e}")))?
            .map_err(|m: String| self.corrupt(m));
        // A corrupt record stops the decoder, which the read then reports as stopped: the
        // record is the cause.
        match (decoded, read) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(got), Ok(())) => Ok(got),
        }
    }

    /// The frame ([`Registry::frame`]) at one etcd revision: the small kinds whole, and the
    /// site-routing peers through the index's `routed/` marks (every peer, paged, when the
    /// last writer kept no index); and the records `also` names, read with the small kinds.
    /// Starts over if etcd compacts the revision meanwhile.
    async fn frame(&self, also: &[RecordKey]) -> Result<Snapshot> {
        let k = &self.keys;
        let also: Vec<String> = also.iter().map(|key| k.record(key)).collect();
        for _ in 0..WRITE_TRIES {
            const SMALL: [&str; 4] = ["orgs", "nodes", "peerings", "tokens"];
            let mut reads = Reads::default();
            let heads = [k.revision(), k.next_network()];
            let queries: Vec<Query> = (heads.iter().cloned().map(Query::Get))
                .chain(SMALL.map(|c| Query::Prefix(k.kind(c))))
                .chain(also.iter().cloned().map(Query::Get))
                .collect();
            let Some(at) = self.answer(&queries, 0, &mut reads).await? else {
                continue;
            };
            let mut named: Vec<(String, Vec<u8>, i64)> = Vec::new();
            for key in &also {
                if let Ok(Some(kv)) = reads.get(key) {
                    named.push((kv.key.clone(), kv.value.clone(), kv.mod_revision));
                }
            }
            let mut kvs: Vec<(String, Vec<u8>, i64)> = Vec::new();
            let heads = heads.iter().filter_map(|key| reads.get(key).ok().flatten());
            let small = SMALL
                .iter()
                .flat_map(|c| reads.prefix(&k.kind(c)).unwrap_or_default());
            for kv in heads.chain(small) {
                kvs.push((kv.key.clone(), kv.value.clone(), kv.mod_revision));
            }
            let gen = reads
                .get(&k.revision())
                .ok()
                .flatten()
                .and_then(|kv| serde_json::from_slice::<RevisionMark>(&kv.value).ok())
                .and_then(|m| m.index)
                .filter(|g| Index::readable(g));
            let Some(gen) = gen else {
                let (start, end) = (k.kind("peers"), k.kind_end("peers"));
                self.read_range(start, end, at, &mut kvs).await?;
                return self.framed(kvs, &named);
            };
            let folder = Index::new(k.index(&gen)).routed();
            let listed = Query::Prefix(folder.clone());
            if self
                .answer(std::slice::from_ref(&listed), at, &mut reads)
                .await?
                .is_none()
            {
                continue;
            }
            let peers: Vec<Query> = reads
                .prefix(&folder)
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| {
                    let (org, name) = kv.key[folder.len()..].rsplit_once('/')?;
                    Some(Query::Get(k.record(&crate::RecordKey::Peer {
                        org: org.to_string(),
                        name: name.to_string(),
                    })))
                })
                .collect();
            if self.answer(&peers, at, &mut reads).await?.is_none() {
                continue;
            }
            for q in &peers {
                if let Query::Get(key) = q {
                    // A mark whose peer is gone is the index's fault, not the frame's: skip it.
                    if let Ok(Some(kv)) = reads.get(key) {
                        kvs.push((kv.key.clone(), kv.value.clone(), kv.mod_revision));
                    }
                }
            }
            return self.framed(kvs, &named);
        }
        Err(self.storage(format!(
            "etcd compacted the revision being read {WRITE_TRIES} times in a row"
        )))
    }

    /// The frame of what `kvs` holds, with the records of `named` put in.
    fn framed(
        &self,
        kvs: Vec<(String, Vec<u8>, i64)>,
        named: &[(String, Vec<u8>, i64)],
    ) -> Result<Snapshot> {
        let (snap, _) = keys::decode(&self.keys, &kvs).map_err(|m| self.corrupt(m))?;
        let mut frame = snap.framed();
        let (extra, _) = keys::decode(&self.keys, named).map_err(|m| self.corrupt(m))?;
        for r in extra.records() {
            frame.put(r);
        }
        Ok(frame)
    }

    /// Every key but the change log's and the index's, and the etcd revision read at.
    async fn load_kvs(&self) -> Result<(Vec<(String, Vec<u8>, i64)>, i64)> {
        let mut kvs = Vec::new();
        let mut at = 0;
        for (start, end) in self.record_ranges() {
            at = self.read_range(start, end, at, &mut kvs).await?;
        }
        Ok((kvs, at))
    }

    /// The ranges a whole read reads: the registry's, less the index and the change log.
    fn record_ranges(&self) -> [(String, String); 3] {
        [
            (self.keys.start(), self.keys.index_start()),
            (self.keys.index_end(), self.keys.log_start()),
            (self.keys.log_end(), self.keys.end()),
        ]
    }

    /// Sends the records' key-values to `pages` a page at a time, kind by kind in the order
    /// [`Registry::visit`] promises, all at one etcd revision; returns the registry's
    /// revision. Blocks this runtime's worker only through `block_in_place` while the reader
    /// is behind, so that a slow reader holds back the read rather than piling it up.
    async fn stream(
        &self,
        kinds: &[Kind],
        pages: std::sync::mpsc::SyncSender<Vec<(String, Vec<u8>, i64)>>,
    ) -> Result<Revision> {
        let mut mark = Vec::new();
        let at = self
            .read_range(
                self.keys.revision(),
                format!("{}\0", self.keys.revision()),
                0,
                &mut mark,
            )
            .await?;
        let revision = match mark.first() {
            Some((key, value, _)) => serde_json::from_slice::<RevisionMark>(value)
                .map(|m| Revision(m.revision))
                .map_err(|e| self.corrupt(format!("key `{key}` is not a revision mark: {e}")))?,
            None => Revision(0),
        };
        for (kind, prefix) in [
            (Kind::Org, "orgs"),
            (Kind::Node, "nodes"),
            (Kind::App, "apps"),
            (Kind::Machine, "machines"),
            (Kind::Peer, "peers"),
            (Kind::Peering, "peerings"),
            (Kind::Token, "tokens"),
        ] {
            if !kinds.contains(&kind) {
                continue;
            }
            let (start, end) = (self.keys.kind(prefix), self.keys.kind_end(prefix));
            self.read_pages(start, end, at, |page| {
                tokio::task::block_in_place(|| pages.send(page))
                    .map_err(|_| self.storage("the registry's reader stopped".into()))
            })
            .await?;
        }
        Ok(revision)
    }

    /// Appends the key-values of [`start`, `end`) at etcd revision `at` (0: the latest) to
    /// `kvs` in key order; returns the revision read at.
    async fn read_range(
        &self,
        start: String,
        end: String,
        at: i64,
        kvs: &mut Vec<(String, Vec<u8>, i64)>,
    ) -> Result<i64> {
        self.read_pages(start, end, at, |page| {
            kvs.extend(page);
            Ok(())
        })
        .await
    }

    /// Hands the key-values of [`start`, `end`) at etcd revision `at` (0: the latest) to
    /// `each_page` in key order, a page at a time and in narrowing spans (`spans`), so that
    /// etcd walks each key a few times rather than once per page; returns the revision read
    /// at.
    async fn read_pages(
        &self,
        start: String,
        end: String,
        mut at: i64,
        mut each_page: impl FnMut(Vec<(String, Vec<u8>, i64)>) -> Result<()>,
    ) -> Result<i64> {
        let full = self.page.load(Ordering::Relaxed).max(1);
        let mut page = full;
        let limit = self.answer_limit.load(Ordering::Relaxed);
        let mut todo = vec![(start.into_bytes(), end.into_bytes())];
        while let Some((from, to)) = todo.pop() {
            let options = GetOptions::new()
                .with_range(to.clone())
                .with_limit(page as i64)
                .with_revision(at);
            let (answer, _) = self
                .attempt(|c| {
                    let (key, options) = (from.clone(), options.clone());
                    async move {
                        let got = c
                            .kv_client()
                            .max_decoding_message_size(limit)
                            .get(key, Some(options))
                            .await;
                        match got {
                            Err(e) if too_large(&e) => Ok(None),
                            got => got.map(Some),
                        }
                    }
                })
                .await
                .map_err(|f| self.failed("read the registry", f))?;
            let Some(mut resp) = answer else {
                // Larger records than the page was made for: an eighth of the page, which
                // grows back (below) while answers fit.
                if page == 1 {
                    // Which record: its key alone fits.
                    let first = GetOptions::new()
                        .with_range(to.clone())
                        .with_limit(1)
                        .with_keys_only()
                        .with_revision(at);
                    let key = (self.attempt(|c| {
                        let (key, options) = (from.clone(), first.clone());
                        async move { c.kv_client().get(key, Some(options)).await }
                    }))
                    .await
                    .ok()
                    .and_then(|(r, _)| r.kvs().first().map(|kv| kv.key().to_vec()))
                    .unwrap_or(from);
                    return Err(self.storage(format!(
                        "the value at `{}` is larger than the {limit} bytes an answer may hold",
                        String::from_utf8_lossy(&key)
                    )));
                }
                page = (page / 8).max(1);
                todo.push((from, to));
                continue;
            };
            let asked = page;
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let left = (resp.count() as u64).saturating_sub(resp.kvs().len() as u64);
            let mut got: Vec<(String, Vec<u8>, i64)> = Vec::with_capacity(resp.kvs().len());
            for kv in resp.take_kvs() {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                let key = String::from_utf8(key)
                    .map_err(|_| self.corrupt("a key is not UTF-8".into()))?;
                got.push((key, value, mod_revision));
            }
            let bytes = got.iter().map(|(k, v, _)| k.len() + v.len()).sum();
            page = next_page(asked, bytes, got.len(), full);
            if let (Some((head, _, _)), Some((last, _, _)), true) = (got.first(), got.last(), more)
            {
                let rest = spans::rest(head.as_bytes(), last.as_bytes(), &to, left, asked);
                todo.extend(rest.into_iter().rev());
            }
            if !got.is_empty() {
                each_page(got)?;
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

    /// A transaction of `ops` that applies only if nobody wrote since `mark_mod`.
    fn guarded_ops(&self, mark_mod: i64, ops: Vec<Op>) -> Txn {
        self.guarded(mark_mod, ops.into_iter().map(txn_op).collect())
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
        let mut built = false;
        let mut attempt = 0;
        while attempt < WRITE_TRIES {
            attempt += 1;
            match self.try_write(change).await? {
                Tried::Done(applied) => return Ok(applied),
                // Progress, not a race: the part is in, and the rest is smaller.
                Tried::Partial => {
                    attempt = 0;
                    continue;
                }
                Tried::NoIndex if !built => {
                    self.build_index().await?;
                    built = true;
                    continue;
                }
                // Another writer without an index wrote since ours was built: build again.
                Tried::NoIndex => built = false,
                Tried::Raced => {}
            }
            tracing::debug!(attempt, "registry changed during the write; planning again");
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(Error::Conflict)
    }

    /// One try of a write: read what it asks for, round by round at one etcd revision, then
    /// commit.
    async fn try_write(&self, change: &Change) -> Result<Tried> {
        let writer = Writer {
            keys: &self.keys,
            location: &self.location.shown,
            keep_changes: self.keep_changes.load(Ordering::Relaxed),
        };
        let write = write_id();
        let mut ctx = Replay::new(SystemContext);
        let mut reads = Reads::default();
        let mut at = 0;
        for _ in 0..READ_ROUNDS {
            ctx.rewind();
            match writer.step(change, &reads, &mut ctx, &write)? {
                Step::Read(queries) => match self.answer(&queries, at, &mut reads).await? {
                    Some(read_at) => at = read_at,
                    // Compacted under us: start over at the newest revision.
                    None => return Ok(Tried::Raced),
                },
                Step::NoIndex => return Ok(Tried::NoIndex),
                Step::Unchanged(applied) => return Ok(Tried::Done(applied)),
                Step::Commit {
                    mark_mod,
                    ops,
                    applied,
                    partial,
                } => {
                    let txn = self.guarded_ops(mark_mod, ops);
                    return Ok(match self.commit(txn, mark_mod, &write).await? {
                        false => Tried::Raced,
                        true if partial => Tried::Partial,
                        true => Tried::Done(applied),
                    });
                }
            }
        }
        Err(self.storage(format!(
            "a write still asked for more keys after {READ_ROUNDS} rounds of reads (a bug in \
             the etcd backend)"
        )))
    }

    /// Reads `queries` at etcd revision `at` (0: the newest) into `reads`; returns the
    /// revision read at, or `None` when etcd has compacted `at` away.
    async fn answer(&self, queries: &[Query], at: i64, reads: &mut Reads) -> Result<Option<i64>> {
        let mut at = at;
        for batch in queries.chunks(IMPORT_BATCH) {
            let ops: Vec<TxnOp> = batch.iter().map(|q| get_op(q, at)).collect();
            let txn = Txn::new().and_then(ops);
            // Whole small kinds come in one answer: an org's tokens can pass tonic's 4 MiB.
            let limit = self.answer_limit.load(Ordering::Relaxed);
            let sent = self
                .attempt(|c| {
                    let txn = txn.clone();
                    async move {
                        c.kv_client()
                            .max_decoding_message_size(limit)
                            .txn(txn)
                            .await
                    }
                })
                .await;
            let resp = match sent {
                Ok((resp, _)) => resp,
                Err(Failure::Refused(m)) if m.contains("compacted") => return Ok(None),
                Err(f) => return Err(self.failed("read the registry", f)),
            };
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for (query, op) in batch.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(got) = op else {
                    return Err(self.storage("etcd answered a read with something else".into()));
                };
                let mut found = Vec::with_capacity(got.kvs().len());
                for kv in got.kvs() {
                    let key = kv
                        .key_str()
                        .map_err(|_| self.corrupt("a key is not UTF-8".into()))?;
                    found.push(Kv {
                        key: key.to_string(),
                        value: kv.value().to_vec(),
                        mod_revision: kv.mod_revision(),
                    });
                }
                reads.answer(query.clone(), found);
            }
        }
        Ok(Some(at))
    }

    /// Builds the index from a whole read, in a generation of its own, and points the mark at
    /// it (same registry revision: readers see nothing new). Writes nothing if the registry
    /// changes meanwhile; the write that asked tries again either way.
    async fn build_index(&self) -> Result<()> {
        let (kvs, _) = self.load_kvs().await?;
        let (snap, mark_mod) = keys::decode(&self.keys, &kvs).map_err(|m| self.corrupt(m))?;
        let write = write_id();
        let gen = format!("{}-{write}", index::LAYOUT);
        let index = Index::new(self.keys.index(&gen));
        let entries: Vec<Op> = index
            .build(&snap)
            .into_iter()
            .map(|(k, v)| Op::Put(k, v))
            .collect();
        tracing::info!(
            registry = %self.location.shown,
            keys = entries.len(),
            "building the etcd registry's index (the last write came from a version without one)"
        );
        let mut ops: Vec<Op> = write::other_generations(&self.keys, &gen).into();
        ops.push(write::mark_op(
            &self.keys,
            snap.revision,
            &write,
            Some(gen.clone()),
        ));
        if !self.put_generation(mark_mod, entries, ops, &write).await? {
            self.drop_generation(&index).await;
        }
        Ok(())
    }

    /// Writes a generation's `entries` in batches, then `last` (which points the mark at it),
    /// each only if the mark is still at `mark_mod`; `Ok(false)` when it moved.
    async fn put_generation(
        &self,
        mark_mod: i64,
        entries: Vec<Op>,
        last: Vec<Op>,
        write: &str,
    ) -> Result<bool> {
        for batch in entries.chunks(IMPORT_BATCH) {
            let txn = self.guarded_ops(mark_mod, batch.to_vec());
            if !self.commit(txn, mark_mod, "").await? {
                return Ok(false);
            }
        }
        self.commit(self.guarded_ops(mark_mod, last), mark_mod, write)
            .await
    }

    /// Removes a generation that lost its race (nobody reads it: no mark names it).
    async fn drop_generation(&self, index: &Index) {
        let root = index.root().to_string();
        let gone = self
            .attempt(|mut c| {
                let root = root.clone();
                async move {
                    c.delete(root, Some(DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .await;
        if gone.is_err() {
            tracing::debug!(generation = %root, "could not remove an unused index generation; the next build does");
        }
    }

    async fn import(&self, source: &Snapshot) -> Result<Revision> {
        let (have, mark_mod) = self.load().await?;
        crate::refuse_unless_empty(&have, &self.location.shown)?;
        if source.revision.0 == 0 && source.records().next().is_none() {
            return Ok(have.revision);
        }
        let write = write_id();
        let gen = format!("{}-{write}", index::LAYOUT);
        let index = Index::new(self.keys.index(&gen));
        let mut entries: Vec<Op> = source
            .records()
            .map(|r| write::record_op(&self.keys, &r))
            .collect();
        entries.extend(index.build(source).into_iter().map(|(k, v)| Op::Put(k, v)));
        let revision = Revision(source.revision.0.max(1));
        let mut last = vec![
            Op::Put(
                self.keys.next_network(),
                source.next_network.to_string().into_bytes(),
            ),
            // Readers of whatever was here before start again from a snapshot.
            Op::DeleteRange(self.keys.log_start(), self.keys.log_end()),
        ];
        last.extend(write::other_generations(&self.keys, &gen));
        last.push(write::mark_op(&self.keys, revision, &write, Some(gen)));
        if !self.put_generation(mark_mod, entries, last, &write).await? {
            return Err(Error::Conflict);
        }
        Ok(revision)
    }

    /// Checks the index against the records, both read at one etcd revision: `Ok(None)`
    /// when the mark names no index, `Ok(Some(keys))` when it holds exactly what the records
    /// make, a `Corrupt` error naming the first key that differs otherwise.
    async fn check_index(&self) -> Result<Option<usize>> {
        let (kvs, at) = self.load_kvs().await?;
        let (snap, _) = keys::decode(&self.keys, &kvs).map_err(|m| self.corrupt(m))?;
        let mark = kvs
            .iter()
            .find(|(k, _, _)| *k == self.keys.revision())
            .map(|(_, v, _)| serde_json::from_slice::<RevisionMark>(v))
            .transpose()
            .map_err(|e| self.corrupt(format!("bad revision mark: {e}")))?;
        let Some(gen) = mark.and_then(|m| m.index) else {
            return Ok(None);
        };
        let index = Index::new(self.keys.index(&gen));
        let want = index.build(&snap);
        let mut stored = Vec::new();
        let root = index.root().to_string();
        let end = format!("{}0", root.trim_end_matches('/'));
        self.read_range(root, end, at, &mut stored).await?;
        let mut have: std::collections::BTreeMap<String, Vec<u8>> =
            stored.into_iter().map(|(k, v, _)| (k, v)).collect();
        for (key, value) in &want {
            match have.remove(key) {
                Some(v) if v == *value => {}
                Some(v) => {
                    return Err(self.corrupt(format!(
                        "index key `{key}` holds `{}`, the records make `{}`",
                        String::from_utf8_lossy(&v),
                        String::from_utf8_lossy(value)
                    )))
                }
                None => {
                    return Err(self.corrupt(format!(
                        "index key `{key}` is missing (the records make `{}`)",
                        String::from_utf8_lossy(value)
                    )))
                }
            }
        }
        if let Some(key) = have.keys().next() {
            return Err(self.corrupt(format!(
                "index key `{key}` is stored, but the records make no such key"
            )));
        }
        Ok(Some(want.len()))
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

/// How one try of a write ended, short of an error.
enum Tried {
    Done(Applied),
    /// The first part of the change is written (see `Step::Commit`); run it again.
    Partial,
    /// Another write came first; plan again.
    Raced,
    /// The registry has no index the records agree with.
    NoIndex,
}

fn txn_op(op: Op) -> TxnOp {
    match op {
        Op::Put(key, value) => TxnOp::put(key, value, None),
        Op::Delete(key) => TxnOp::delete(key, None),
        Op::DeleteRange(start, end) => {
            TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
        }
    }
}

/// The read of `query` at etcd revision `at` (0: the newest).
fn get_op(query: &Query, at: i64) -> TxnOp {
    let options = GetOptions::new().with_revision(at);
    match query {
        Query::Get(key) => TxnOp::get(key.clone(), Some(options)),
        Query::Prefix(prefix) => TxnOp::get(prefix.clone(), Some(options.with_prefix())),
        Query::First { prefix, from } => {
            let end = format!("{}0", prefix.trim_end_matches('/'));
            let options = options.with_range(end).with_limit(1);
            TxnOp::get(from.clone(), Some(options))
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

    fn frame(&self) -> Result<Snapshot> {
        self.run(|s| async move { s.frame(&[]).await })
    }

    fn frame_with(&self, also: &[RecordKey]) -> Result<Snapshot> {
        let also = also.to_vec();
        self.run(|s| async move { s.frame(&also).await })
    }

    /// Reads on the backend's runtime while `each` takes the records on this thread, a few
    /// pages behind at most, so that neither a whole snapshot nor every key-value is held.
    fn visit(&self, each: &mut dyn FnMut(Record)) -> Result<Revision> {
        self.visit_kinds(&Kind::RECORDS, each)
    }

    fn visit_kinds(&self, kinds: &[Kind], each: &mut dyn FnMut(Record)) -> Result<Revision> {
        self.visit_refs(kinds, &mut |r| each(r.into_record()))
    }

    fn visit_refs(&self, kinds: &[Kind], each: &mut dyn FnMut(RecordRef<'_>)) -> Result<Revision> {
        let (pages, arriving) = std::sync::mpsc::sync_channel(4);
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let shared = self.shared.clone();
        let kinds = kinds.to_vec();
        self.runtime().spawn(async move {
            let _ = done.send(shared.stream(&kinds, pages).await);
        });
        for page in arriving {
            for (key, value, _) in page {
                (self.shared.keys.decode_ref(&key, &value, each))
                    .map_err(|m| self.shared.corrupt(m))?;
            }
        }
        finished
            .recv()
            .map_err(|_| self.shared.storage("the etcd client stopped".into()))?
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

impl EtcdRegistry {
    /// Checks that the index a write reads agrees with the records: `Ok(None)` when there is
    /// none yet (the last write came from a version without it; the next write builds it),
    /// `Ok(Some(keys))` when it holds exactly what the records make, and a
    /// [`Error::Corrupt`] naming the first key that differs otherwise.
    pub fn check_index(&self) -> Result<Option<usize>> {
        self.run(|s| async move { s.check_index().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_answers_near_their_size_and_grow_back_after_a_large_record() {
        // A million machines of ~230 bytes: full pages (10,000 records, 2.3 MB).
        assert_eq!(next_page(PAGE, 2_300_000, 10_000, PAGE), PAGE);
        // Records of 6 KB: 1,398 a page, 8 MiB.
        let six_kb = next_page(PAGE, 10_000 * 6_000, 10_000, PAGE);
        assert_eq!(six_kb, (PAGE_BYTES / 6_000) as u64);
        assert!(six_kb as usize * 6_000 <= PAGE_BYTES);
        // One record larger than the aim: one a page.
        assert_eq!(next_page(8, 9 * PAGE_BYTES, 1, PAGE), 1);
        // After a record too large for an answer shrank the page to 1: doubling back.
        let mut page = 1;
        let mut seen = Vec::new();
        while page < PAGE {
            page = next_page(page, page as usize * 200, page as usize, PAGE);
            seen.push(page);
        }
        assert_eq!(seen[..4], [2, 4, 8, 16]);
        assert_eq!(*seen.last().unwrap(), PAGE);
        // An empty answer (nothing left) asks for no fewer.
        assert_eq!(next_page(PAGE, 0, 0, PAGE), PAGE);
    }
}
