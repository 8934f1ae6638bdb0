//! Whether a local copy may stand for the registry: it is of the same registry, and the
//! registry's history goes on from the copy's revision.

use std::time::Duration;

use super::{digest, LocalCopy};
use crate::{Delta, Registry, Revision};

/// Whether the registry's change at the copy's revision is the one the copy holds (a copy
/// that does not know its last change cannot tell, and is taken as the same).
pub fn same_change(copy_last: Option<u64>, registry_delta: &Delta) -> bool {
    copy_last.is_none_or(|last| last == digest(registry_delta))
}

/// Whether the registry's history goes on from a copy at `revision` whose last delta has
/// digest `last`: the registry's change at that revision is the copy's, or the registry no
/// longer holds that change but is not behind the copy. `Ok(Err(why))` when it does not;
/// `Err` when the registry cannot be asked.
pub fn continues(
    reg: &dyn Registry,
    revision: Revision,
    last: Option<u64>,
) -> crate::Result<Result<(), &'static str>> {
    let behind = "the registry is at an older revision than the copy (restored from a backup?)";
    let Some(before) = revision.0.checked_sub(1) else {
        return Ok(Err("the copy is empty"));
    };
    match reg.changes_since(Revision(before), 1)? {
        Some(v) => Ok(match v.first() {
            None => Err(behind),
            Some(d) if d.revision == revision && !same_change(last, d) => Err(
                "the registry's change at the copy's revision is not the copy's (another history)",
            ),
            Some(_) => Ok(()),
        }),
        None => reg.wait_newer(Revision(before), Duration::ZERO).map(|now| {
            if now.is_some() {
                Ok(())
            } else {
                Err(behind)
            }
        }),
    }
}

/// Whether `copy` exists and is a copy of `reg` (logged when it is not, or is unreadable).
pub fn is_copy_of(copy: &LocalCopy, reg: &dyn Registry) -> bool {
    let want = crate::shown(reg.location());
    let shown = copy.path().display();
    match copy.location() {
        Ok(None) => false,
        Ok(Some(of)) if of != want => {
            tracing::info!(copy = %shown, of = %of, "the local copy is of another registry; reading the registry whole");
            false
        }
        Ok(Some(_)) => true,
        Err(e) => {
            tracing::warn!(copy = %shown, error = %e, "the local copy is unreadable; reading the registry whole");
            false
        }
    }
}

/// Where a reader that loaded a copy follows the registry from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyAt {
    /// The revision the loaded copy makes.
    pub revision: Revision,
    /// The digest of the copy's last delta, when known.
    pub last: Option<u64>,
    /// Whether [`continues`] said yes already; if not (the registry was down), the follower
    /// asks once the registry answers, before any change, and reads the registry whole
    /// (an [`crate::Update::Reset`]) when the history differs.
    pub checked: bool,
}

/// What a reader does with a copy it loaded, asking the registry once ([`continues`]).
#[derive(Debug)]
pub enum Verdict {
    /// Follow from the copy's revision.
    Follow(CopyAt),
    /// Not of the registry's history: drop what was loaded and read the registry whole.
    ReadWhole(&'static str),
}

/// Asks the registry whether a copy loaded at `revision` (last digest `last`) stands for it;
/// logs the answer. A registry that cannot be asked leaves the copy standing, unchecked.
pub fn verdict(
    copy: &LocalCopy,
    reg: &dyn Registry,
    revision: Revision,
    last: Option<u64>,
) -> Verdict {
    let shown = copy.path().display();
    let at = CopyAt {
        revision,
        last,
        checked: true,
    };
    match continues(reg, revision, last) {
        Ok(Ok(())) => {
            tracing::debug!(copy = %shown, revision = revision.0, "the registry's history goes on from the local copy's");
            Verdict::Follow(at)
        }
        Err(e) => {
            tracing::warn!(copy = %shown, revision = revision.0, error = %e, "registry unreachable; serving from the local copy until it is");
            Verdict::Follow(CopyAt {
                checked: false,
                ..at
            })
        }
        Ok(Err(why)) => {
            tracing::warn!(copy = %shown, revision = revision.0, why, "local copy not used; reading the registry whole");
            Verdict::ReadWhole(why)
        }
    }
}
