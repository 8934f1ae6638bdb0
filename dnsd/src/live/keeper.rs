//! dnsd's local copy of the registry (`--registry-copy`): written on a thread of its own from
//! what dnsd reads anyway (the records of a whole read, each delta it applies, a snapshot when
//! it reads whole again), so keeping it costs the serving path nothing but a channel send.
//! A copy that cannot be written is logged and left as it last was: its journal ends where
//! writing stopped, and a start from it follows the registry from there.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use registry::local::{digest, BaseWriter, Journal};
use registry::{Delta, LocalCopy, Record, Registry, Revision, Snapshot};

/// Journal lines kept before they are folded into the base (at a write a second, about
/// three hours; a start then reads at most this many deltas after the base).
const FOLD_EVERY: u64 = 10_000;

enum Job {
    /// A whole read begins: its records follow.
    Begin,
    Records(Vec<Record>),
    /// The whole read ended at this revision.
    End(Revision),
    /// The whole read failed: drop what was written of it.
    Abort,
    /// The registry read whole again.
    Snapshot(Arc<Snapshot>),
    /// dnsd started from the copy, loaded up to this revision: append to its journal.
    Resume(Revision),
    Delta(Arc<Delta>),
    Flush,
}

/// A copy's revision and the digest of its last delta (when known).
type CopyAt = (Revision, Option<u64>);

/// The handle the start and the follow loop hold.
#[derive(Clone)]
pub struct Keeper {
    tx: mpsc::Sender<Job>,
    /// A copy dnsd started from without checking it against the registry (which was
    /// down): its revision and last delta's digest, for the follow loop to check.
    unchecked: Arc<std::sync::Mutex<Option<CopyAt>>>,
}

impl Keeper {
    pub fn start(copy: LocalCopy, registry: Arc<dyn Registry>) -> Keeper {
        let (tx, rx) = mpsc::channel();
        let location = registry::shown(registry.location());
        copy.remove_stale_temps();
        let mut state = State {
            copy,
            registry,
            location,
            base: None,
            journal: None,
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
        Keeper {
            tx,
            unchecked: Arc::default(),
        }
    }

    /// Marks the copy dnsd started from as not yet checked against the registry.
    pub fn set_unchecked(&self, revision: Revision, last: Option<u64>) {
        *self.unchecked.lock().unwrap_or_else(|p| p.into_inner()) = Some((revision, last));
    }

    /// The copy's revision and last digest, once, if it still needs checking.
    pub fn take_unchecked(&self) -> Option<CopyAt> {
        self.unchecked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn send(&self, job: Job) {
        // The thread only ends with the process.
        let _ = self.tx.send(job);
    }

    pub fn begin(&self) {
        self.send(Job::Begin);
    }

    pub fn records(&self, chunk: Vec<Record>) {
        self.send(Job::Records(chunk));
    }

    pub fn end(&self, revision: Revision) {
        self.send(Job::End(revision));
    }

    pub fn abort(&self) {
        self.send(Job::Abort);
    }

    pub fn snapshot(&self, snap: Arc<Snapshot>) {
        self.send(Job::Snapshot(snap));
    }

    pub fn resume(&self, revision: Revision) {
        self.send(Job::Resume(revision));
    }

    pub fn delta(&self, delta: Arc<Delta>) {
        self.send(Job::Delta(delta));
    }

    pub fn flush(&self) {
        self.send(Job::Flush);
    }
}

struct State {
    copy: LocalCopy,
    registry: Arc<dyn Registry>,
    location: String,
    base: Option<BaseWriter>,
    journal: Option<Journal>,
    warned: bool,
}

impl State {
    fn run(&mut self, job: Job) -> registry::Result<()> {
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
            Job::End(revision) => {
                if let Some(base) = self.base.take() {
                    self.finish(base, revision, None)?;
                }
            }
            Job::Abort => self.base = None,
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
            Job::Resume(revision) => self.journal = Some(self.copy.resume_journal(revision)?),
            Job::Delta(d) => {
                if let Some(journal) = &mut self.journal {
                    journal.append(&d)?;
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
    ) -> registry::Result<()> {
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
        if self.warned {
            tracing::info!(copy = %self.copy.path().display(), revision = revision.0, "local copy written again");
            self.warned = false;
        }
        Ok(())
    }

    fn failed(&mut self, e: &registry::Error) {
        if !self.warned {
            tracing::warn!(copy = %self.copy.path().display(), error = %e, "cannot keep the local copy of the registry; it stays as it last was");
            self.warned = true;
        }
        self.base = None;
        self.journal = None;
    }
}

/// Whether the registry's change at the copy's revision is the one the copy holds (a copy
/// that does not know its last change cannot tell, and is taken as the same).
pub fn same_change(copy_last: Option<u64>, registry_delta: &Delta) -> bool {
    copy_last.is_none_or(|last| last == digest(registry_delta))
}
