//! Following the registry: a background thread that waits for newer revisions and publishes
//! each new snapshot whole, so readers swap their indexes atomically. When the registry cannot
//! be read, the last snapshot stays published, the failure is logged and reported through
//! [`Health`], and the thread retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::{Registry, Revision, Snapshot};

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
    let first = match registry.snapshot() {
        Ok(s) => {
            health.reachable.store(true, Ordering::Relaxed);
            s
        }
        Err(e) => {
            tracing::warn!(error = %e, "registry unreadable at start; serving nothing until it is");
            health.failures.fetch_add(1, Ordering::Relaxed);
            Snapshot::default()
        }
    };
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
            Err(e) => {
                if health.reachable.swap(false, Ordering::Relaxed) || health.failures() == 0 {
                    tracing::warn!(error = %e, "registry unreachable; serving the last snapshot");
                }
                health.failures.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

fn mark_up(health: &Health, location: &str) {
    if !health.reachable.swap(true, Ordering::Relaxed) {
        tracing::info!(registry = location, "registry reachable");
    }
}
