//! Keeping a reader's local copy (dnsd's and meshd's `--registry-copy`): written on a thread of
//! its own from what the reader reads anyway (the records of a whole read, each delta it
//! applies, a snapshot when it reads whole again), so keeping it costs the reader nothing but
//! a channel send.
//! A copy that cannot be written is logged and left as it last was: its journal ends where
//! writing stopped, and a start from it follows the registry from there.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BaseWriter, Journal, LocalCopy};
use crate::{Delta, MachineBatch, Record, Registry, Revision, Snapshot};

/// Journal lines kept before they are folded into the base (at a write a second, about
/// three hours; a start then reads at most this many deltas after the base).
const FOLD_EVERY: u64 = 10_000;
/// Jobs that may wait for the writer. A whole read waits for it when they are all taken; a
/// delta that finds none free is not written, and the journal stops there (see [`Keeper`]).
const QUEUE: usize = 1024;

enum Job {
    /// A whole read begins: its records follow.
    Begin,
    Records(Vec<Record>),
    Machines(MachineBatch),
    /// The whole read ended at this revision.
    End(Revision),
    /// The whole read failed: drop what was written of it; the reader starts empty.
    Abort,
    /// The registry read whole again.
    Snapshot(Arc<Snapshot>),
    /// The reader started from the copy, loaded up to this revision: append to its journal.
    Resume(Revision),
    Delta(Arc<Delta>),
    Flush,
    /// Flush, then say so.
    Sync(mpsc::SyncSender<()>),
}

/// The handle the start and the follow loop hold. What it queues is bounded: when the disk
/// stalls, a whole read waits for it, but the follow loop never does: a delta that finds the
/// queue full is dropped, and the journal stops before it (the copy stays whole at an older
/// revision, which a restart follows the registry from) until the registry is read whole
/// again.
#[derive(Clone)]
pub struct Keeper {
    tx: mpsc::SyncSender<Job>,
}

impl Keeper {
    /// Starts the thread that writes `copy`, a copy of `registry`.
    pub fn start(copy: LocalCopy, registry: Arc<dyn Registry>) -> Keeper {
        Keeper::with_queue(copy, registry, QUEUE)
    }

    pub(super) fn with_queue(copy: LocalCopy, registry: Arc<dyn Registry>, queue: usize) -> Keeper {
        let (tx, rx) = mpsc::sync_channel(queue);
        let location = crate::shown(registry.location());
        copy.remove_stale_temps();
        let mut state = State {
            copy,
            registry,
            location,
            base: None,
            journal: None,
            at: Revision(0),
            warned: false,
        };
        std::thread::Builder::new()
            .name("registry-copy".into())
            .spawn(move || {
                for job in rx {
                    if let Err(e) = state.run(job) {
                        state.failed(&e);
                    }
                }
            })
            .expect("spawning a thread at start-up");
        Keeper { tx }
    }

    fn send(&self, job: Job) {
        // The thread only ends with the process.
        let _ = self.tx.send(job);
    }

    /// Queues `job` if there is room. A delta dropped here leaves a gap the writer sees in
    /// the next one's revision: the journal stops there.
    fn offer(&self, job: Job) {
        let _ = self.tx.try_send(job);
    }

    /// A whole read of the registry begins: a new base, whose records follow.
    pub fn begin(&self) {
        self.send(Job::Begin);
    }

    /// Records of the whole read, in the order [`Registry::visit`] gives them.
    pub fn records(&self, chunk: Vec<Record>) {
        self.send(Job::Records(chunk));
    }

    /// Machines of the whole read, in their place in [`Registry::visit`]'s order among the
    /// [`Keeper::records`] (as [`Registry::visit_refs`] gives them).
    pub fn machines(&self, batch: MachineBatch) {
        self.send(Job::Machines(batch));
    }

    /// The whole read ended at `revision`: the base is finished and a journal begins.
    pub fn end(&self, revision: Revision) {
        self.send(Job::End(revision));
    }

    /// The whole read failed: what was written of it is dropped. Where there is no copy yet,
    /// the copy starts empty at revision 0 as the reader does, so that the deltas the follower
    /// then hands on from revision 1 are kept too, not only a later whole read; a copy already
    /// there is left as it is.
    pub fn abort(&self) {
        self.send(Job::Abort);
    }

    /// The reader read the registry whole again: the copy becomes `snap`.
    pub fn snapshot(&self, snap: Arc<Snapshot>) {
        self.send(Job::Snapshot(snap));
    }

    /// The reader started from the copy, loaded up to `revision`.
    pub fn resume(&self, revision: Revision) {
        self.send(Job::Resume(revision));
    }

    /// A delta the reader applied.
    pub fn delta(&self, delta: Arc<Delta>) {
        self.offer(Job::Delta(delta));
    }

    /// The reader has applied what was queued: the journal goes to the file.
    pub fn flush(&self) {
        self.offer(Job::Flush);
    }

    /// Waits until everything queued before is written and the journal flushed.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Sync(tx));
        let _ = rx.recv();
    }

    /// At a clean stop: waits at most `within` until everything queued before is written and
    /// the journal flushed, so that a restart finds the last changes it applied. False if the
    /// writer did not get there in time (a stalled disk must not hold up a stop; the copy is
    /// then whole up to where it got, as after a crash).
    pub fn settle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (tx, rx) = mpsc::sync_channel(1);
        let mut job = Job::Sync(tx);
        loop {
            match self.tx.try_send(job) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if Instant::now() < deadline => {
                    job = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

struct State {
    copy: LocalCopy,
    registry: Arc<dyn Registry>,
    location: String,
    base: Option<BaseWriter>,
    journal: Option<Journal>,
    /// The revision the copy makes with its journal, while the journal is open.
    at: Revision,
    warned: bool,
}

impl State {
    fn run(&mut self, job: Job) -> crate::Result<()> {
        match job {
            Job::Begin => {
                self.journal = None;
                self.base = Some(self.copy.write_base(&self.location)?);
            }
            Job::Records(chunk) => {
                if let Some(base) = &mut self.base {
                    for r in &chunk {
                        base.put(r)?;
                    }
                }
            }
            Job::Machines(batch) => {
                if let Some(base) = &mut self.base {
                    for m in batch.iter() {
                        base.put_machine(&m)?;
                    }
                }
            }
            Job::End(revision) => {
                if let Some(base) = self.base.take() {
                    self.finish(base, revision, None)?;
                }
            }
            Job::Abort => {
                self.base = None;
                // Only where there is no copy: one the reader could not use now (unreadable
                // for a while, another spelling of the registry's location) may serve a
                // later start, and is left as it is.
                if matches!(self.copy.location(), Ok(None)) {
                    self.run(Job::Snapshot(Arc::new(Snapshot::default())))?;
                }
            }
            Job::Snapshot(snap) => {
                self.journal = None;
                let started = Instant::now();
                let mut base = self.copy.write_base(&self.location)?;
                for r in snap.records() {
                    base.put(&r)?;
                }
                self.finish(base, snap.revision, Some(snap.next_network))?;
                tracing::debug!(
                    revision = snap.revision.0,
                    ms = started.elapsed().as_millis() as u64,
                    "local copy written whole"
                );
            }
            Job::Resume(revision) => {
                self.journal = Some(self.copy.resume_journal(revision)?);
                self.at = revision;
            }
            Job::Delta(d) => {
                if self.journal.is_some() && d.revision.0 != self.at.0 + 1 {
                    // A delta dropped on the way (the writer fell behind): nothing may follow
                    // the gap. The copy stays whole at its revision until a whole read.
                    self.journal = None;
                    tracing::warn!(copy = %self.copy.path().display(), revision = self.at.0, "the local copy's writer fell behind the registry; the copy stays at its revision until the registry is read whole");
                }
                if let Some(journal) = &mut self.journal {
                    journal.append(&d)?;
                    self.at = d.revision;
                    if journal.lines() >= FOLD_EVERY && journal.rotate()? {
                        let started = Instant::now();
                        self.copy.compact()?;
                        tracing::debug!(
                            revision = d.revision.0,
                            ms = started.elapsed().as_millis() as u64,
                            "local copy's journal folded into its base"
                        );
                    }
                }
            }
            Job::Flush => {
                if let Some(journal) = &mut self.journal {
                    journal.flush()?;
                }
            }
            Job::Sync(done) => {
                if let Some(journal) = &mut self.journal {
                    journal.flush()?;
                }
                let _ = done.send(());
            }
        }
        Ok(())
    }

    /// Ends a base at `revision`, with the registry's delta for it when the log still has it
    /// (a later start compares it with the registry's), and opens a fresh journal.
    fn finish(
        &mut self,
        base: BaseWriter,
        revision: Revision,
        next_network: Option<u32>,
    ) -> crate::Result<()> {
        let last = match revision.0.checked_sub(1) {
            Some(before) => self
                .registry
                .changes_since(Revision(before), 1)
                .ok()
                .flatten()
                .and_then(|v| v.into_iter().next())
                .filter(|d| d.revision == revision),
            None => None,
        };
        let next_network = next_network
            .or(last.as_ref().map(|d| d.next_network))
            .unwrap_or(0);
        base.finish(revision, next_network, last.as_ref())?;
        self.journal = Some(self.copy.journal()?);
        self.at = revision;
        if self.warned {
            tracing::info!(copy = %self.copy.path().display(), revision = revision.0, "local copy written again");
            self.warned = false;
        }
        Ok(())
    }

    fn failed(&mut self, e: &crate::Error) {
        if !self.warned {
            tracing::warn!(copy = %self.copy.path().display(), error = %e, "cannot keep the local copy of the registry; it stays as it last was");
            self.warned = true;
        }
        self.base = None;
        self.journal = None;
    }
}
