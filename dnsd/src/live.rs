//! Keeping the index live: rebuild it from each new registry snapshot and swap it in whole,
//! so a query sees one revision or the next, never a mix. Also rebuilt when a peer expires.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry::Follower;

use crate::index::{Index, Options};
use crate::server::Shared;

/// How often the registry health gauge is refreshed when nothing changes.
const HEALTH_TICK: Duration = Duration::from_secs(1);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds the first index (before serving starts).
pub fn first_index(follower: &Follower, opts: &Options) -> Index {
    let snap = follower.snapshots.borrow().clone();
    Index::build(&snap, opts, unix_now())
}

/// Follows the registry until the follower ends.
pub async fn follow(mut follower: Follower, opts: Options, shared: Arc<Shared>) {
    let mut built_at = shared.index.load().revision;
    let mut next_expiry = shared.index.load().next_expiry;
    publish(&shared, &follower);
    loop {
        let wait = next_expiry
            .map(|e| Duration::from_secs(u64::try_from(e - unix_now()).unwrap_or(0)))
            .unwrap_or(HEALTH_TICK)
            .min(HEALTH_TICK);
        tokio::select! {
            r = follower.snapshots.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        publish(&shared, &follower);
        let snap = follower.snapshots.borrow_and_update().clone();
        let expired = next_expiry.is_some_and(|e| e <= unix_now());
        if snap.revision.0 == built_at && !expired {
            continue;
        }
        let index = Index::build(&snap, &opts, unix_now());
        if index.default_org.is_none() && opts.default_org.is_some() {
            tracing::debug!("the default org is not in the registry (yet)");
        }
        tracing::debug!(
            revision = index.revision,
            names = index.names(),
            "index rebuilt"
        );
        built_at = index.revision;
        next_expiry = index.next_expiry;
        shared.metrics.revision.store(index.revision, Relaxed);
        shared
            .metrics
            .index_names
            .store(index.names() as u64, Relaxed);
        shared.index.store(Arc::new(index));
    }
}

fn publish(shared: &Shared, follower: &Follower) {
    let m = &shared.metrics;
    m.registry_reachable
        .store(u64::from(follower.health.reachable()), Relaxed);
    let index = shared.index.load();
    m.revision.store(index.revision, Relaxed);
    m.index_names.store(index.names() as u64, Relaxed);
}
