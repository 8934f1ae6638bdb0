//! Following the registry: a background thread that waits for newer revisions and publishes
//! each new snapshot whole, so readers swap their indexes atomically. When the registry cannot
//! be read, the last snapshot stays published, the failure is logged and reported through
//! [`Health`], and the thread retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::local::CopyAt;
use crate::{Delta, Registry, Revision, Snapshot};

/// How long one wait for a newer revision lasts before the thread checks it is still wanted.
const WAIT: Duration = Duration::from_millis(500);
/// Back-off bounds after a failed read.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether the follower can reach the registry, for logs and metrics.
#[derive(Debug, Default)]
pub struct Health {
    reachable: AtomicBool,
    failures: AtomicU64,
}

impl Health {
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Failed reads since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// A reader's view: the latest snapshot, and a way to wait for the next.
#[derive(Clone)]
pub struct Follower {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub health: Arc<Health>,
}

/// Starts following `registry`. The first snapshot is read before this returns; if that
/// fails, the follower starts from an empty snapshot (revision 0) and keeps trying.
pub fn follow(registry: Arc<dyn Registry>) -> Follower {
    let health = Arc::new(Health::default());
    let first = first_snapshot(registry.as_ref(), &health);
    let (tx, rx) = watch::channel(Arc::new(first));
    let h = health.clone();
    std::thread::Builder::new()
        .name("registry-follow".into())
        .spawn(move || run(registry, tx, h))
        .expect("spawning a thread at start-up");
    Follower {
        snapshots: rx,
        health,
    }
}

fn run(registry: Arc<dyn Registry>, tx: watch::Sender<Arc<Snapshot>>, health: Arc<Health>) {
    let mut backoff = RETRY_MIN;
    while !tx.is_closed() {
        let have: Revision = tx.borrow().revision;
        let step = registry
            .wait_newer(have, WAIT)
            .and_then(|newer| newer.map(|_| registry.snapshot()).transpose());
        match step {
            Ok(Some(snap)) => {
                mark_up(&health, registry.location());
                backoff = RETRY_MIN;
                if snap.revision != have {
                    tracing::debug!(revision = snap.revision.0, "registry changed");
                    tx.send_replace(Arc::new(snap));
                }
            }
            Ok(None) => {
                mark_up(&health, registry.location());
                backoff = RETRY_MIN;
            }
            Err(e) => mark_down(&health, &e, &mut backoff),
        }
    }
}

/// The snapshot a reader starts from: the registry's, or an empty one (revision 0) when it
/// cannot be read, counted and logged.
fn first_snapshot(registry: &dyn Registry, health: &Health) -> Snapshot {
    match registry.snapshot() {
        Ok(s) => {
            health.reachable.store(true, Ordering::Relaxed);
            s
        }
        Err(e) => {
            unreadable_at_start(health, &e);
            Snapshot::default()
        }
    }
}

fn unreadable_at_start(health: &Health, e: &crate::Error) {
    tracing::warn!(error = %e, "registry unreadable at start; serving nothing until it is");
    health.failures.fetch_add(1, Ordering::Relaxed);
}

/// A failed read: logged when the registry was reachable (or at the first failure), counted,
/// then a wait that doubles each time, up to [`RETRY_MAX`].
fn mark_down(health: &Health, e: &crate::Error, backoff: &mut Duration) {
    if health.reachable.swap(false, Ordering::Relaxed) || health.failures() == 0 {
        tracing::warn!(error = %e, "registry unreachable; serving the last snapshot");
    }
    health.failures.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(*backoff);
    *backoff = (*backoff * 2).min(RETRY_MAX);
}

fn mark_up(health: &Health, location: &str) {
    if !health.reachable.swap(true, Ordering::Relaxed) {
        tracing::info!(registry = location, "registry reachable");
    }
}

/// What a reader following changes receives, in revision order.
#[derive(Debug, Clone)]
pub enum Update {
    /// Start again from this snapshot: the first one, or after falling behind what the
    /// backend's change log still holds (or on a backend without one).
    Reset(Arc<Snapshot>),
    /// The next revision, as a change to the previous one.
    Delta(Arc<Delta>),
}

impl Update {
    pub fn revision(&self) -> Revision {
        match self {
            Update::Reset(s) => s.revision,
            Update::Delta(d) => d.revision,
        }
    }
}

/// A reader's view when following changes: the first snapshot, then every later revision.
pub struct Changes {
    pub first: Arc<Snapshot>,
    pub updates: mpsc::Receiver<Update>,
    pub health: Arc<Health>,
}

/// How many deltas one read of the change log asks for.
const BATCH: usize = 1024;
/// How many updates may wait for a slow reader before the follower waits for it.
const QUEUE: usize = 4096;

/// Starts following `registry` change by change. The first snapshot is read before this
/// returns (an empty one, revision 0, if that fails, and the thread keeps trying); after it,
/// each newer revision arrives as an [`Update::Delta`] when the backend can tell what it
/// changed, else as an [`Update::Reset`]. The thread ends when `updates` is dropped.
pub fn follow_changes(registry: Arc<dyn Registry>) -> Changes {
    let health = Arc::new(Health::default());
    let first = Arc::new(first_snapshot(registry.as_ref(), &health));
    follow_changes_after(registry, first, health, None)
}

/// [`follow_changes`] for a reader that reads the first revision itself, record by record
/// (with [`Registry::visit`]) instead of holding a snapshot: `read` reads it and returns its
/// revision. A failed read counts and logs as an unreadable start does, and following
/// begins at revision 0 (`read` must then leave its reader empty). `first` is empty but
/// for its revision.
pub fn follow_changes_with(
    registry: Arc<dyn Registry>,
    read: impl FnOnce(&dyn Registry) -> crate::Result<Revision>,
) -> Changes {
    let health = Arc::new(Health::default());
    let revision = match read(registry.as_ref()) {
        Ok(r) => {
            health.reachable.store(true, Ordering::Relaxed);
            r
        }
        Err(e) => {
            unreadable_at_start(&health, &e);
            Revision(0)
        }
    };
    let first = Arc::new(Snapshot {
        revision,
        ..Snapshot::default()
    });
    follow_changes_after(registry, first, health, None)
}

/// Follows `registry` from a local copy's revision, which the reader already holds: every
/// later revision arrives as for [`follow_changes`]. A copy not yet checked against the
/// registry (it was down) is checked once it answers, before any change is handed on; when
/// the registry's history is not the copy's, the first update is a whole read
/// ([`Update::Reset`]).
pub fn follow_changes_from(registry: Arc<dyn Registry>, at: CopyAt) -> Changes {
    let health = Arc::new(Health::default());
    health.reachable.store(at.checked, Ordering::Relaxed);
    if !at.checked {
        health.failures.fetch_add(1, Ordering::Relaxed);
    }
    let first = Arc::new(Snapshot {
        revision: at.revision,
        ..Snapshot::default()
    });
    follow_changes_after(registry, first, health, (!at.checked).then_some(at))
}

fn follow_changes_after(
    registry: Arc<dyn Registry>,
    first: Arc<Snapshot>,
    health: Arc<Health>,
    unchecked: Option<CopyAt>,
) -> Changes {
    let (tx, rx) = mpsc::channel(QUEUE);
    let h = health.clone();
    let from = first.revision;
    std::thread::Builder::new()
        .name("registry-changes".into())
        .spawn(move || {
            let from = match unchecked {
                Some(at) => match check_copy(registry.as_ref(), &tx, &h, at) {
                    Some(from) => from,
                    None => return,
                },
                None => from,
            };
            run_changes(registry, tx, h, from)
        })
        .expect("spawning a thread at start-up");
    Changes {
        first,
        updates: rx,
        health,
    }
}

/// Waits for the registry to answer whether its history goes on from an unchecked copy's
/// revision; when it does not, reads it whole and hands that on. The revision to follow
/// from, or `None` when the reader went away.
fn check_copy(
    registry: &dyn Registry,
    tx: &mpsc::Sender<Update>,
    health: &Health,
    at: CopyAt,
) -> Option<Revision> {
    let mut backoff = RETRY_MIN;
    let mut differs = None;
    while !tx.is_closed() {
        if differs.is_none() {
            match crate::local::continues(registry, at.revision, at.last) {
                Ok(Ok(())) => {
                    mark_up(health, registry.location());
                    tracing::info!(
                        revision = at.revision.0,
                        "the registry answers, and its history goes on from the local copy's"
                    );
                    return Some(at.revision);
                }
                Ok(Err(why)) => {
                    tracing::warn!(revision = at.revision.0, why, "the registry answers, and the local copy served meanwhile is not of its history; reading it whole");
                    differs = Some(why);
                }
                Err(e) => {
                    mark_down(health, &e, &mut backoff);
                    continue;
                }
            }
        }
        match registry.snapshot() {
            Ok(snap) => {
                mark_up(health, registry.location());
                let revision = snap.revision;
                tx.blocking_send(Update::Reset(Arc::new(snap))).ok()?;
                return Some(revision);
            }
            Err(e) => mark_down(health, &e, &mut backoff),
        }
    }
    None
}

fn run_changes(
    registry: Arc<dyn Registry>,
    tx: mpsc::Sender<Update>,
    health: Arc<Health>,
    mut have: Revision,
) {
    let mut backoff = RETRY_MIN;
    while !tx.is_closed() {
        match next_updates(registry.as_ref(), have) {
            Ok(updates) => {
                mark_up(&health, registry.location());
                backoff = RETRY_MIN;
                for u in updates {
                    have = u.revision();
                    if tx.blocking_send(u).is_err() {
                        return;
                    }
                }
            }
            Err(e) => mark_down(&health, &e, &mut backoff),
        }
    }
}

/// What follows revision `have`: nothing if nothing newer came within [`WAIT`], the deltas
/// if the backend has them all, else a whole snapshot.
fn next_updates(registry: &dyn Registry, have: Revision) -> crate::Result<Vec<Update>> {
    if registry.wait_newer(have, WAIT)?.is_none() {
        return Ok(Vec::new());
    }
    if let Some(deltas) = registry.changes_since(have, BATCH)? {
        let in_order = deltas
            .iter()
            .enumerate()
            .all(|(i, d)| d.revision.0 == have.0 + 1 + i as u64);
        if in_order && !deltas.is_empty() {
            return Ok(deltas
                .into_iter()
                .map(|d| Update::Delta(Arc::new(d)))
                .collect());
        }
        if !in_order {
            tracing::warn!(
                from = have.0,
                "the change log skips a revision; reading the whole registry"
            );
        }
    }
    let snap = registry.snapshot()?;
    if snap.revision == have {
        return Ok(Vec::new());
    }
    tracing::debug!(revision = snap.revision.0, "registry changed; read whole");
    Ok(vec![Update::Reset(Arc::new(snap))])
}
