//! Keeping the index live: follow the registry change by change, apply each delta to the
//! index in the size of the change (a whole build only for a reset), and swap the new
//! revision in atomically, so a query sees one revision or the next, never a mix. Peers with
//! an expiry leave at it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry::local::{CopyAt, Keeper, Verdict};
use registry::{
    Changes, Chunk, Chunker, Delta, Health, Kind, LocalCopy, MachineBatch, Record, RecordRef,
    Registry, Revision, Update,
};

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
///
/// With a local copy (`copy`), the index is built from it instead when it is of this
/// registry's own history (see [`from_copy`]), and following starts at the copy's revision;
/// either way the copy is kept from then on.
pub fn start(
    registry: Arc<dyn Registry>,
    opts: &Options,
    copy: Option<LocalCopy>,
) -> (Changes, IndexBuilder, Option<Keeper>) {
    let keeper = copy
        .as_ref()
        .map(|c| Keeper::start(c.clone(), registry.clone()));
    if let (Some(copy), Some(keeper)) = (&copy, &keeper) {
        if let Some((builder, at)) = from_copy(registry.as_ref(), copy, opts) {
            let changes = registry::follow_changes_from(registry, at);
            keeper.resume(at.revision);
            return (changes, builder, Some(keeper.clone()));
        }
    }
    let mut built = None;
    let changes = registry::follow_changes_with(registry, |reg| {
        let (build, read) = read_and_build(reg, opts, keeper.as_ref());
        let revision = read?;
        built = Some(build.finish(revision.0));
        Ok(revision)
    });
    // After a failed read, what was built is not one whole revision: start empty.
    let builder = built.unwrap_or_else(|| IndexBuilder::new(opts.clone(), unix_now()));
    (changes, builder, keeper)
}

/// Builds the index from the local copy, if there is one of `reg` and the registry's history
/// goes on from it ([`registry::local::verdict`]); also when the registry cannot be reached
/// (the copy is then the best there is; the follower checks it once the registry answers).
/// `None` (logged) means: read the registry whole.
fn from_copy(
    reg: &dyn Registry,
    copy: &LocalCopy,
    opts: &Options,
) -> Option<(IndexBuilder, CopyAt)> {
    if !registry::local::is_copy_of(copy, reg) {
        return None;
    }
    let started = std::time::Instant::now();
    let (builder, loaded) = match load_and_build(copy, opts) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(copy = %copy.path().display(), error = %e, "the local copy is unreadable; reading the registry whole");
            return None;
        }
    };
    match registry::local::verdict(copy, reg, loaded.revision, loaded.last) {
        Verdict::Follow(at) => {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(copy = %copy.path().display(), revision = at.revision.0, deltas = loaded.deltas, ms, "index built from the local copy; following the registry from its revision");
            Some((builder, at))
        }
        Verdict::ReadWhole(_) => {
            drop(builder);
            release_freed_memory();
            None
        }
    }
}

/// What a reading thread hands the building one: machines in one buffer (no strings made
/// for each), other records whole, and a copy's journal deltas.
enum Item {
    Machines(MachineBatch),
    Records(Vec<Record>),
    Delta(Delta),
}

/// Reads the copy on a second thread while this one builds: its records as a whole build,
/// then its journal's deltas applied one by one.
fn load_and_build(
    copy: &LocalCopy,
    opts: &Options,
) -> registry::Result<Option<(IndexBuilder, registry::local::Loaded)>> {
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(CHUNKS_AHEAD);
    // Record chunks go back to the reading thread to be freed where they were allocated:
    // freeing another thread's blocks contends for its malloc arena. (Machine batches are
    // two blocks each, freed here.)
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Record>>();
    let mut whole = Some(WholeBuild::new(opts.clone(), unix_now()));
    let mut built: Option<IndexBuilder> = None;
    let mut out_of_order = None;
    let loaded = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("registry-copy-read".into())
            .spawn_scoped(s, move || {
                // Both callbacks hand chunks on; only one runs at a time.
                let chunks = std::cell::RefCell::new(Chunks::new(tx, Some(back_rx)));
                let loaded = copy.load_refs(&mut |r| chunks.borrow_mut().put(r), &mut |d| {
                    let mut c = chunks.borrow_mut();
                    c.flush();
                    c.send(Item::Delta(d.clone()));
                });
                chunks.into_inner().finish();
                loaded
            })
            .expect("spawning a thread at start-up");
        for item in rx {
            match item {
                Item::Machines(batch) => {
                    if let Some(w) = &mut whole {
                        for m in batch.iter() {
                            w.put_machine(m);
                        }
                    }
                }
                Item::Records(chunk) => {
                    if let Some(w) = &mut whole {
                        for r in &chunk {
                            w.put(r);
                        }
                    }
                    let _ = back_tx.send(chunk);
                }
                Item::Delta(d) => {
                    if let Some(w) = whole.take() {
                        built = Some(w.finish(d.revision.0.saturating_sub(1)));
                    }
                    if let Some(b) = &mut built {
                        if let Err(e) = b.apply(&d, unix_now()) {
                            out_of_order.get_or_insert(e);
                        }
                    }
                }
            }
        }
        drop(back_tx);
        reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    let Some(loaded) = loaded? else {
        return Ok(None);
    };
    if let Some(e) = out_of_order {
        return Err(registry::Error::Corrupt {
            location: copy.path().display().to_string(),
            message: format!("its journal does not apply: {e}"),
        });
    }
    let read_ms = started.elapsed().as_millis() as u64;
    let builder = match (built, whole) {
        (Some(b), _) => b,
        (None, Some(w)) => w.finish(loaded.revision.0),
        (None, None) => unreachable!("a build is either whole or built"),
    };
    tracing::debug!(
        read_ms,
        finish_ms = started.elapsed().as_millis() as u64 - read_ms,
        "local copy read"
    );
    Ok(Some((builder, loaded)))
}

/// Reads every record of `reg` on a second thread while this one puts them into a build
/// (and hands them on to the local copy's keeper, if any).
fn read_and_build(
    reg: &dyn Registry,
    opts: &Options,
    keeper: Option<&Keeper>,
) -> (WholeBuild, registry::Result<Revision>) {
    let mut build = WholeBuild::new(opts.clone(), unix_now());
    if let Some(k) = keeper {
        k.begin();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(CHUNKS_AHEAD);
    let read = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("registry-read".into())
            .spawn_scoped(s, move || {
                let mut chunks = Chunks::new(tx, None);
                let read = reg.visit_refs(&Kind::RECORDS, &mut |r| chunks.put(r));
                chunks.finish();
                read
            })
            .expect("spawning a thread at start-up");
        for item in rx {
            match item {
                Item::Machines(batch) => {
                    for m in batch.iter() {
                        build.put_machine(m);
                    }
                    if let Some(k) = keeper {
                        k.machines(batch);
                    }
                }
                Item::Records(records) => {
                    for r in &records {
                        build.put(r);
                    }
                    if let Some(k) = keeper {
                        k.records(records);
                    }
                }
                Item::Delta(_) => unreachable!("a registry's whole read has no deltas"),
            }
        }
        reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if let Some(k) = keeper {
        match &read {
            Ok(revision) => k.end(*revision),
            Err(_) => k.abort(),
        }
    }
    (build, read)
}

/// Hands what a reading thread reads on to the builder in [`Chunk`]s of up to [`CHUNK`]
/// records, in the order read.
struct Chunks {
    tx: std::sync::mpsc::SyncSender<Item>,
    /// Record chunks the builder is done with, to be freed on this thread: freeing another
    /// thread's blocks contends for its malloc arena.
    back: Option<std::sync::mpsc::Receiver<Vec<Record>>>,
    chunker: Chunker,
}

impl Chunks {
    fn new(
        tx: std::sync::mpsc::SyncSender<Item>,
        back: Option<std::sync::mpsc::Receiver<Vec<Record>>>,
    ) -> Self {
        Chunks {
            tx,
            back,
            chunker: Chunker::new(CHUNK),
        }
    }

    fn put(&mut self, r: RecordRef<'_>) {
        let tx = &self.tx;
        if self.chunker.put(r, &mut |c| send(tx, c.into())) {
            if let Some(back) = &self.back {
                while let Ok(used) = back.try_recv() {
                    drop(used);
                }
            }
        }
    }

    /// Sends what is gathered.
    fn flush(&mut self) {
        let tx = &self.tx;
        self.chunker.flush(&mut |c| send(tx, c.into()));
    }

    fn send(&self, item: Item) {
        send(&self.tx, item);
    }

    /// Sends the rest, and frees what comes back until the builder is done.
    fn finish(mut self) {
        self.flush();
        drop(self.tx);
        for used in self.back.into_iter().flatten() {
            drop(used);
        }
    }
}

/// The builder only goes away by panicking, which ends the scope.
fn send(tx: &std::sync::mpsc::SyncSender<Item>, item: Item) {
    let _ = tx.send(item);
}

impl From<Chunk> for Item {
    fn from(c: Chunk) -> Item {
        match c {
            Chunk::Machines(b) => Item::Machines(b),
            Chunk::Records(r) => Item::Records(r),
        }
    }
}

/// What applying one update asks of the loop.
enum Step {
    Applied,
    Skipped,
    /// The updates skipped a revision: start following again from a fresh snapshot.
    Resync,
}

fn apply(
    builder: &mut IndexBuilder,
    update: Update,
    opts: &Options,
    keeper: Option<&Keeper>,
) -> Step {
    match update {
        Update::Reset(snap) => {
            if let Some(k) = keeper {
                k.snapshot(snap.clone());
            }
            // Drop the old builder's own state before making the new one.
            *builder = IndexBuilder::new(opts.clone(), unix_now());
            *builder = IndexBuilder::from_snapshot(&snap, opts.clone(), unix_now());
            drop(snap);
            release_freed_memory();
            tracing::debug!(revision = builder.revision(), "index built whole");
            Step::Applied
        }
        Update::Delta(delta) => match builder.apply(&delta, unix_now()) {
            Ok(()) => {
                if let Some(k) = keeper {
                    k.delta(delta);
                }
                Step::Applied
            }
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
    keeper: Option<Keeper>,
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
            match apply(&mut builder, u, &opts, keeper.as_ref()) {
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
                    if let Some(k) = &keeper {
                        k.snapshot(fresh.first.clone());
                    }
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
            if let Some(k) = &keeper {
                k.flush();
            }
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

#[cfg(test)]
mod tests {
    use registry::{App, Machine, MachineId, MachineState, MachineView, Org, OrgNetwork};

    use super::*;

    fn machine(n: u64) -> Machine {
        Machine {
            id: MachineId::from_bits(n),
            org: "acme".into(),
            app: format!("app{n}"),
            region: "iad".into(),
            node: "iad-1".into(),
            process_group: "app".into(),
            state: MachineState::Started,
            addr: std::net::Ipv6Addr::new(0xfdaa, 0, 1, 0, 0, 0, 0, n as u16),
        }
    }

    /// What a read hands over arrives in chunks of at most the chunk size, in the order read,
    /// a kind switching a chunk, nothing lost at a chunk's end or the read's; chunks that come
    /// back are freed, and the end waits for the builder to be done with them.
    #[test]
    fn a_read_arrives_in_chunks_in_the_order_read() {
        let org = |n: u32| {
            Record::Org(Org {
                name: format!("org{n}"),
                network: OrgNetwork(n),
            })
        };
        let app = Record::App(App {
            org: "acme".into(),
            name: "app1".into(),
        });
        let machines: Vec<Machine> = (1..=7).map(machine).collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(100);
        let (back_tx, back_rx) = std::sync::mpsc::channel();
        let mut chunks = Chunks::new(tx, Some(back_rx));
        chunks.chunker = Chunker::new(3);
        for r in [org(1), org(2), org(3), org(4), app.clone()] {
            chunks.put(RecordRef::Record(r));
        }
        for m in &machines {
            chunks.put(RecordRef::Machine(MachineView::from(m)));
        }
        // A machine read whole goes with the records.
        chunks.put(RecordRef::Record(Record::Machine(machine(8))));
        back_tx.send(vec![org(9)]).unwrap();
        let reader = std::thread::spawn(move || chunks.finish());

        let mut got = Vec::new();
        for item in rx {
            got.push(match item {
                Item::Machines(b) => (b.iter().map(|m| m.to_machine().id).collect(), Vec::new()),
                Item::Records(r) => (Vec::new(), r),
                Item::Delta(_) => unreachable!(),
            });
        }
        let ids = |r: std::ops::RangeInclusive<u64>| r.map(MachineId::from_bits).collect();
        assert_eq!(
            got,
            vec![
                (Vec::new(), vec![org(1), org(2), org(3)]),
                (Vec::new(), vec![org(4), app]),
                (ids(1..=3), Vec::new()),
                (ids(4..=6), Vec::new()),
                (ids(7..=7), Vec::new()),
                (Vec::new(), vec![Record::Machine(machine(8))]),
            ]
        );
        assert!(
            !reader.is_finished(),
            "the end waits for the builder's chunks"
        );
        drop(back_tx);
        reader.join().unwrap();
    }
}
