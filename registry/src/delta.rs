//! What one revision changed, so that readers can follow the registry in the size of each
//! change instead of re-reading it whole.
//!
//! A [`Delta`] names, for every record the write touched, the record before and after (either
//! may be absent: made, removed). Readers keep their own indexes and apply deltas in revision
//! order; a reader that has fallen behind what a backend still holds gets a whole snapshot
//! again ([`crate::follow::Update::Reset`]).

use serde::{Deserialize, Serialize};

use crate::change::Write;
use crate::model::{Record, RecordKey, Revision, Snapshot};

/// How many revisions a backend's change log keeps by default: at a write a second, a reader
/// may be away for almost three hours and still catch up change by change.
pub const KEEP: u64 = 10_000;

/// One record as one write left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordChange {
    pub key: RecordKey,
    /// `None`: the write made it.
    pub before: Option<Record>,
    /// `None`: the write removed it.
    pub after: Option<Record>,
}

impl RecordChange {
    /// A record that changed from `before` to `after`; `None` when both are the same (a write
    /// that put back what was there changes nothing a reader can see).
    pub fn new(key: RecordKey, before: Option<Record>, after: Option<Record>) -> Option<Self> {
        if before == after {
            return None;
        }
        Some(RecordChange { key, before, after })
    }
}

/// Everything one revision changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The revision this delta makes; it applies to a snapshot at `revision - 1`.
    pub revision: Revision,
    /// The next network id after the write.
    pub next_network: u32,
    pub changes: Vec<RecordChange>,
}

impl Snapshot {
    /// Applies `delta` in place: the records it made or changed are put, those it removed
    /// deleted, and the revision becomes the delta's. Refuses (returns `false`, changing
    /// nothing) a delta that does not follow this snapshot's revision.
    pub fn apply_delta(&mut self, delta: &Delta) -> bool {
        if delta.revision.0 != self.revision.0 + 1 {
            return false;
        }
        for c in &delta.changes {
            match &c.after {
                Some(r) => self.put(r.clone()),
                None => self.delete(&c.key),
            }
        }
        self.next_network = delta.next_network;
        self.revision = delta.revision;
        true
    }

    /// The record stored under `key`, if any.
    pub fn get(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Org { name } => self.orgs.get(name).cloned().map(Record::Org),
            RecordKey::Node { name } => self.nodes.get(name).cloned().map(Record::Node),
            RecordKey::App { org, name } => self
                .apps
                .get(&(org.clone(), name.clone()))
                .cloned()
                .map(Record::App),
            RecordKey::Machine { id } => self.machines.get(id).cloned().map(Record::Machine),
            RecordKey::Peer { org, name } => self
                .peers
                .get(&(org.clone(), name.clone()))
                .cloned()
                .map(Record::Peer),
            RecordKey::Peering { a, b } => {
                let p = crate::model::Peering::new(a.clone(), b.clone());
                self.peerings
                    .contains(&(p.a.clone(), p.b.clone()))
                    .then_some(Record::Peering(p))
            }
            RecordKey::Token { id } => self.tokens.get(id).cloned().map(Record::Token),
        }
    }
}

/// What `writes` change, each record once, before (as `snap` holds it: it must hold every
/// record the writes touch) and after; records put back as they were are left out.
pub(crate) fn record_changes(snap: &Snapshot, writes: &[Write]) -> Vec<RecordChange> {
    let mut changes: Vec<RecordChange> = Vec::with_capacity(writes.len());
    let mut seen: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(writes.len());
    for w in writes {
        let (key, after) = match w {
            Write::Put(r) => (r.key(), Some(r.clone())),
            Write::Delete(k) => (k.clone(), None),
        };
        let id = format!("{key:?}");
        match seen.get(&id) {
            Some(&i) => changes[i].after = after,
            None => {
                seen.insert(id, changes.len());
                let before = snap.get(&key);
                changes.push(RecordChange { key, before, after });
            }
        }
    }
    changes.retain(|c| c.before != c.after);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{App, Org};
    use crate::OrgNetwork;

    fn app(name: &str) -> Record {
        Record::App(App {
            org: "acme".into(),
            name: name.into(),
        })
    }

    #[test]
    fn a_delta_applies_in_order_only() {
        let mut s = Snapshot::default();
        let org = Record::Org(Org {
            name: "acme".into(),
            network: OrgNetwork(1),
        });
        let d1 = Delta {
            revision: Revision(1),
            next_network: 2,
            changes: vec![
                RecordChange::new(org.key(), None, Some(org.clone())).unwrap(),
                RecordChange::new(app("web").key(), None, Some(app("web"))).unwrap(),
            ],
        };
        let d2 = Delta {
            revision: Revision(2),
            next_network: 2,
            changes: vec![RecordChange::new(app("web").key(), Some(app("web")), None).unwrap()],
        };
        assert!(
            !s.apply_delta(&d2),
            "a delta two revisions ahead is refused"
        );
        assert_eq!(s, Snapshot::default());
        assert!(s.apply_delta(&d1));
        assert_eq!(s.get(&app("web").key()), Some(app("web")));
        assert_eq!(s.get(&org.key()), Some(org));
        assert!(s.apply_delta(&d2));
        assert_eq!(s.get(&app("web").key()), None);
        assert_eq!((s.revision, s.next_network), (Revision(2), 2));
        assert!(!s.apply_delta(&d2), "the same delta twice is refused");
    }

    #[test]
    fn putting_back_what_was_there_is_no_change() {
        assert_eq!(
            RecordChange::new(app("web").key(), Some(app("web")), Some(app("web"))),
            None
        );
    }
}
