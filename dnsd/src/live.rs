//! Keeping the index live: follow the registry change by change, apply each delta to the
//! index in the size of the change (a whole build only for a reset), and swap the new
//! revision in atomically, so a query sees one revision or the next, never a mix. Peers with
//! an expiry leave at it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry::{Changes, Health, Record, Registry, Revision, Update};

use crate::index::{ApplyError, IndexBuilder, Options, WholeBuild};
use crate::server::Shared;

/// How often the registry health gauge is refreshed when nothing changes.
const HEALTH_TICK: Duration = Duration::from_secs(1);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Records handed from the reading thread to the building one at a time.
const CHUNK: usize = 4096;
/// Chunks that may wait for the builder: bounds what the read holds beyond the index.
const CHUNKS_AHEAD: usize = 16;

/// Reads the registry and builds the first index (before serving starts), then follows
/// its changes from that revision. The read (one thread) and the build (this one) overlap,
/// record chunk by chunk, and no snapshot is held beside the index. If the registry cannot
/// be read, the index is empty at revision 0 and following catches up once it can.
pub fn start(registry: Arc<dyn Registry>, opts: &Options) -> (Changes, IndexBuilder) {
    let mut built = None;
    let changes = registry::follow_changes_with(registry, |reg| {
        let (build, read) = read_and_build(reg, opts);
        let revision = read?;
        built = Some(build.finish(revision.0));
        Ok(revision)
    });
    // After a failed read, what was built is not one whole revision: start empty.
    let builder = built.unwrap_or_else(|| IndexBuilder::new(opts.clone(), unix_now()));
    (changes, builder)
}

/// Reads every record of `reg` on a second thread while this one puts them into a build.
fn read_and_build(reg: &dyn Registry, opts: &Options) -> (WholeBuild, registry::Result<Revision>) {
    let mut build = WholeBuild::new(opts.clone(), unix_now());
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(CHUNKS_AHEAD);
    let read = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("registry-read".into())
            .spawn_scoped(s, move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                let read = reg.visit(&mut |r| {
                    chunk.push(r);
                    if chunk.len() == CHUNK {
                        // The builder only goes away by panicking, which ends the scope.
                        let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                    }
                });
                let _ = tx.send(chunk);
                read
            })
            .expect("spawning a thread at start-up");
        for chunk in rx {
            for r in &chunk {
                build.put(r);
            }
        }
        reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    (build, read)
}

/// What applying one update asks of the loop.
enum Step {
    Applied,
    Skipped,
    /// The updates skipped a revision: start following again from a fresh snapshot.
    Resync,
}

fn apply(builder: &mut IndexBuilder, update: Update, opts: &Options) -> Step {
    match update {
        Update::Reset(snap) => {
            // Drop the old builder's own state before making the new one.
            *builder = IndexBuilder::new(opts.clone(), unix_now());
            *builder = IndexBuilder::from_snapshot(&snap, opts.clone(), unix_now());
            drop(snap);
            release_freed_memory();
            tracing::debug!(revision = builder.revision(), "index built whole");
            Step::Applied
        }
        Update::Delta(delta) => match builder.apply(&delta, unix_now()) {
            Ok(()) => Step::Applied,
            Err(ApplyError::OutOfOrder { have, got }) if got <= have => {
                tracing::debug!(have, got, "a delta the index already holds; skipped");
                Step::Skipped
            }
            Err(e) => {
                tracing::warn!(error = %e, "the registry's changes skipped a revision; reading it whole again");
                Step::Resync
            }
        },
    }
}

/// Follows the registry until its change stream ends. `builder` holds the index `shared`
/// serves; `registry` is read again whole if the change stream ever skips a revision.
pub async fn follow(
    registry: Arc<dyn Registry>,
    mut changes: Changes,
    mut builder: IndexBuilder,
    opts: Options,
    shared: Arc<Shared>,
) {
    // The first snapshot is in the index now; holding it too would double the memory.
    changes.first = Arc::default();
    release_freed_memory();
    publish_health(&shared, &changes.health);
    loop {
        let wait = builder
            .index()
            .next_expiry
            .map(|e| Duration::from_secs(u64::try_from(e - unix_now()).unwrap_or(0)))
            .unwrap_or(HEALTH_TICK)
            .min(HEALTH_TICK);
        let first = tokio::select! {
            u = changes.updates.recv() => match u {
                Some(u) => Some(u),
                None => return,
            },
            _ = tokio::time::sleep(wait) => None,
        };
        let mut changed = false;
        let mut resync = false;
        // Everything already queued goes into one swap: a burst of writes costs one publish.
        let queued = std::iter::from_fn(|| changes.updates.try_recv().ok());
        for u in first.into_iter().chain(queued) {
            match apply(&mut builder, u, &opts) {
                Step::Applied => changed = true,
                Step::Skipped => {}
                Step::Resync => {
                    resync = true;
                    break;
                }
            }
        }
        if resync {
            let reg = registry.clone();
            match tokio::task::spawn_blocking(move || registry::follow_changes(reg)).await {
                Ok(fresh) => {
                    builder = IndexBuilder::from_snapshot(&fresh.first, opts.clone(), unix_now());
                    changes = fresh;
                    changes.first = Arc::default();
                    release_freed_memory();
                    changed = true;
                }
                Err(e) => tracing::warn!(error = %e, "following the registry again failed"),
            }
        }
        changed |= builder.advance(unix_now());
        if changed {
            publish(&shared, &builder);
        }
        publish_health(&shared, &changes.health);
    }
}

/// Hands the memory of a dropped snapshot back to the OS: glibc keeps freed small blocks
/// in its arenas, so without this a whole read of a big registry stays in RSS for good.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn publish(shared: &Shared, builder: &IndexBuilder) {
    let index = builder.index();
    if index.default_org.is_none() && builder_wants_default(builder) {
        tracing::debug!("the default org is not in the registry (yet)");
    }
    let names = index.names() as u64;
    tracing::debug!(revision = index.revision, names, "index updated");
    shared.metrics.revision.store(index.revision, Relaxed);
    shared.metrics.index_names.store(names, Relaxed);
    shared.index.store(Arc::new(index.clone()));
}

fn builder_wants_default(builder: &IndexBuilder) -> bool {
    builder.options().default_org.is_some()
}

fn publish_health(shared: &Shared, health: &Health) {
    let m = &shared.metrics;
    m.registry_reachable
        .store(u64::from(health.reachable()), Relaxed);
    let index = shared.index.load();
    m.revision.store(index.revision, Relaxed);
    m.index_names.store(index.names() as u64, Relaxed);
}
