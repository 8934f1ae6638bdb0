//! Reading the registry at start into the model of this node's desired state: from the local
//! copy when there is one of this registry's history, else whole, record by record (no
//! snapshot is held beside the model), writing the copy beside.

use std::sync::Arc;
use std::time::Instant;

use registry::local::{CopyAt, Keeper, Verdict};
use registry::{Changes, Chunk, Chunker, Kind, LocalCopy, Registry, Revision};

use super::registry_sync::{release_freed_memory, unix_now};
use crate::sync::model::Model;

/// Records handed to the copy's keeper at a time.
const CHUNK: usize = 4096;

/// What the registry loop starts from.
pub(super) struct Started {
    pub changes: Changes,
    pub model: Model,
    pub keeper: Option<Keeper>,
}

/// Fills the model for node `me` and starts following the registry from its revision. If
/// the registry cannot be read and there is no copy, the model is empty at revision 0 and
/// following catches up once it can.
pub(super) fn start(registry: Arc<dyn Registry>, me: &str, copy: Option<LocalCopy>) -> Started {
    let keeper = copy
        .as_ref()
        .map(|c| Keeper::start(c.clone(), registry.clone()));
    let mut model = Model::new(me);
    if let (Some(copy), Some(keeper)) = (&copy, &keeper) {
        if let Some(at) = from_copy(registry.as_ref(), copy, &mut model) {
            let changes = registry::follow_changes_from(registry, at);
            keeper.resume(at.revision);
            return Started {
                changes,
                model,
                keeper: Some(keeper.clone()),
            };
        }
    }
    let changes =
        registry::follow_changes_with(registry, |reg| read_whole(reg, &mut model, keeper.as_ref()));
    Started {
        changes,
        model,
        keeper,
    }
}

/// Fills the model from the copy, if it is of `reg` and the registry's history goes on from
/// it (also when the registry cannot be asked: the follower checks once it answers).
fn from_copy(reg: &dyn Registry, copy: &LocalCopy, model: &mut Model) -> Option<CopyAt> {
    if !registry::local::is_copy_of(copy, reg) {
        return None;
    }
    let shown = copy.path().display();
    let started = Instant::now();
    model.clear(unix_now());
    // Both callbacks fill the model; only one runs at a time.
    let cell = std::cell::RefCell::new(&mut *model);
    let loaded = copy.load_refs(&mut |r| cell.borrow_mut().put_ref(&r), &mut |d| {
        cell.borrow_mut().apply(d)
    });
    let loaded = match loaded {
        Ok(Some(l)) => l,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(copy = %shown, error = %e, "the local copy is unreadable; reading the registry whole");
            model.clear(unix_now());
            return None;
        }
    };
    match registry::local::verdict(copy, reg, loaded.revision, loaded.last) {
        Verdict::Follow(at) => {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(copy = %shown, revision = at.revision.0, deltas = loaded.deltas, ms, "peers and routes built from the local copy; following the registry from its revision");
            Some(at)
        }
        Verdict::ReadWhole(_) => {
            model.clear(unix_now());
            release_freed_memory();
            None
        }
    }
}

/// Reads every record of `reg` into the model (and the copy's keeper, if any). On an error
/// the model is left empty: what it was given is not a whole revision.
fn read_whole(
    reg: &dyn Registry,
    model: &mut Model,
    keeper: Option<&Keeper>,
) -> registry::Result<Revision> {
    let started = Instant::now();
    model.clear(unix_now());
    if let Some(k) = keeper {
        k.begin();
    }
    // For the keeper, in the order read: machines in batches, other records whole.
    let mut chunker = Chunker::new(CHUNK);
    let mut keep = |c: Chunk| match (keeper, c) {
        (Some(k), Chunk::Machines(b)) => k.machines(b),
        (Some(k), Chunk::Records(r)) => k.records(r),
        (None, _) => {}
    };
    let read = reg.visit_refs(&Kind::RECORDS, &mut |r| {
        model.put_ref(&r);
        if keeper.is_some() {
            chunker.put(r, &mut keep);
        }
    });
    if let Some(k) = keeper {
        chunker.flush(&mut keep);
        match &read {
            Ok(revision) => k.end(*revision),
            Err(_) => k.abort(),
        }
    }
    match &read {
        Ok(revision) => tracing::info!(
            revision = revision.0,
            ms = started.elapsed().as_millis() as u64,
            "registry read whole"
        ),
        Err(_) => model.clear(unix_now()),
    }
    read
}
