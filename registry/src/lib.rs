//! sixpn's registry: the data model, the 6PN address plan, name rules, and storage.
//!
//! Writers (`wgtool`, each meshd for its own node) send [`Change`]s; readers (meshd, dnsd)
//! take a [`Snapshot`] and then [`follow`] newer ones. Nothing here knows about packets or DNS.

pub mod addr;
pub mod change;
pub mod delta;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod follow;
pub mod key;
pub mod local;
pub mod machine_id;
pub mod model;
pub mod name;
#[cfg(test)]
mod random_changes;
pub mod region;
pub mod sqlite;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

pub use addr::OrgNetwork;
pub use change::{check_token, Change, NodeSpec};
pub use delta::{Delta, RecordChange};
pub use error::{Error, Kind, Result};
pub use follow::{
    follow, follow_changes, follow_changes_from, follow_changes_with, Changes, Follower, Health,
    Update,
};
pub use key::PublicKey;
pub use local::LocalCopy;
pub use machine_id::MachineId;
pub use model::{
    App, Machine, MachineState, Node, Org, Peer, Peering, Record, RecordKey, Revision, Snapshot,
    Token, TokenScope,
};
pub use view::{Chunk, Chunker, MachineBatch, MachineView, RecordRef};

/// Where the registry lives when nobody says.
pub const DEFAULT_LOCATION: &str = "/var/lib/sixpn/registry.db";
/// The environment variable that overrides the default location.
pub const LOCATION_ENV: &str = "SIXPN_REGISTRY";

/// What a successful write returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The revision that holds the write (unchanged if the write changed nothing).
    pub revision: Revision,
    /// The record made or changed.
    pub record: Option<Record>,
}

/// The one interface every reader and writer uses, whatever the backend.
pub trait Registry: Send + Sync {
    /// Where it is, for messages.
    fn location(&self) -> &str;

    /// Everything, at one revision.
    fn snapshot(&self) -> Result<Snapshot>;

    /// Everything at one revision, record by record, for a reader that keeps its own
    /// structures and need not hold a [`Snapshot`] too: orgs first, then nodes, apps,
    /// machines, peers, peerings and tokens (in no order within a kind). Returns the
    /// revision. On an error, what `each` was given is not a whole revision.
    fn visit(&self, each: &mut dyn FnMut(Record)) -> Result<Revision> {
        let snap = self.snapshot()?;
        snap.records().for_each(each);
        Ok(snap.revision)
    }

    /// The records of `kinds` only, at one revision, in [`Registry::visit`]'s order: what a
    /// command about one kind reads (`wgtool peer list`, `machine list`), in the size of
    /// those kinds rather than of the whole registry. Returns the revision.
    fn visit_kinds(&self, kinds: &[Kind], each: &mut dyn FnMut(Record)) -> Result<Revision> {
        self.visit(&mut |r| {
            if kinds.contains(&r.kind()) {
                each(r)
            }
        })
    }

    /// [`Registry::visit_kinds`], with each machine borrowed from what the backend read
    /// ([`RecordRef::Machine`]) rather than made whole: a reader that keeps structures of its
    /// own makes no strings for a million machines. Other kinds come whole.
    fn visit_refs(&self, kinds: &[Kind], each: &mut dyn FnMut(RecordRef<'_>)) -> Result<Revision> {
        self.visit_kinds(kinds, &mut |r| match r {
            Record::Machine(m) => each(RecordRef::Machine(MachineView::from(&m))),
            other => each(RecordRef::Record(other)),
        })
    }

    /// A snapshot of the records of `kinds` only, at one revision ([`Registry::visit_kinds`]);
    /// its `next_network` is not read (0).
    fn snapshot_of(&self, kinds: &[Kind]) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let revision = self.visit_kinds(kinds, &mut |r| snap.put(r))?;
        snap.revision = revision;
        Ok(snap)
    }

    /// Every record [`Snapshot::scoped`] to `org` can keep, at one revision: all orgs, nodes,
    /// peerings and tokens; `org`'s apps and machines; its peers and every org's sites
    /// (peers with routes). So `org_part(org)?.scoped(org)` is `snapshot()?.scoped(org)`,
    /// read without holding the other orgs' apps and machines (what the API's
    /// `/v1/snapshot` serves a token of one org). Its `next_network` is the frame's, read
    /// just before, or past every org it holds where one was made in between.
    fn org_part(&self, org: &str) -> Result<Snapshot> {
        let frame_next = self.frame()?.next_network;
        let mut snap = Snapshot::default();
        snap.revision = self.visit_refs(&Kind::RECORDS, &mut |r| match r {
            RecordRef::Machine(m) if m.org == org => snap.put(Record::Machine(m.to_machine())),
            RecordRef::Machine(_) => {}
            RecordRef::Record(Record::App(a)) if a.org != org => {}
            RecordRef::Record(Record::Machine(m)) if m.org != org => {}
            RecordRef::Record(Record::Peer(p)) if p.org != org && p.routes.is_empty() => {}
            RecordRef::Record(r) => snap.put(r),
        })?;
        let past_orgs = snap.orgs.values().map(|o| o.network.0 + 1).max();
        snap.next_network = frame_next.max(past_orgs.unwrap_or(0));
        Ok(snap)
    }

    /// The registry's frame at one revision ([`Snapshot::framed`]): every org, node,
    /// peering and token, and the peers that route sites; no apps, no machines, no other
    /// peers. What a tunnel file is made from and a token checked against, at a cost in the
    /// size of those kinds rather than of the whole registry.
    fn frame(&self) -> Result<Snapshot> {
        Ok(self.snapshot()?.framed())
    }

    /// The frame and, at the same revision, the records `also` names that exist: what a
    /// command about one peer or machine reads (`wgtool config`), in the size of the frame.
    fn frame_with(&self, also: &[RecordKey]) -> Result<Snapshot> {
        Ok(self.snapshot()?.framed_with(also))
    }

    /// Blocks until the registry holds a revision newer than `than`, or `timeout` passes
    /// (then `Ok(None)`).
    fn wait_newer(&self, than: Revision, timeout: Duration) -> Result<Option<Revision>>;

    /// Applies a change whole, or not at all.
    fn apply(&self, change: &Change) -> Result<Applied>;

    /// Loads `snapshot` into a registry that has never been written, keeping its revision,
    /// network ids, host parts, addresses and machine ids as they are; refuses a registry
    /// that holds anything. For moving a registry between backends (see [`copy`]).
    fn import(&self, snapshot: &Snapshot) -> Result<Revision>;

    /// The deltas of the revisions after `after`, oldest first, at most `limit` of them;
    /// empty when `after` is the newest. `Ok(None)` when this backend cannot say (it keeps no
    /// change log, or has trimmed it past `after`): the reader takes a [`Registry::snapshot`].
    fn changes_since(&self, after: Revision, limit: usize) -> Result<Option<Vec<Delta>>> {
        let _ = (after, limit);
        Ok(None)
    }
}

/// `import` writes only into a registry that has never been written.
pub(crate) fn refuse_unless_empty(have: &Snapshot, location: &str) -> Result<()> {
    let records = have.records().count();
    if have.revision.0 == 0 && records == 0 {
        return Ok(());
    }
    Err(Error::invalid(
        "target registry",
        location,
        format!(
            "must be empty to import into, but holds revision {} with {records} record(s)",
            have.revision.0
        ),
    ))
}

/// What [`copy`] moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    pub revision: Revision,
    pub records: usize,
}

/// Copies everything in `from` into `to`, which must be empty, then reads `to` back and
/// checks it holds exactly what `from` held.
pub fn copy(from: &dyn Registry, to: &dyn Registry) -> Result<Copied> {
    let snap = from.snapshot()?;
    let revision = to.import(&snap)?;
    let copied = to.snapshot()?;
    let expected = Snapshot {
        revision: copied.revision,
        ..snap.clone()
    };
    if copied != expected {
        return Err(Error::Storage {
            location: to.location().into(),
            message: format!(
                "the copy does not read back as written (from `{}`); leave it unused",
                from.location()
            ),
        });
    }
    Ok(Copied {
        revision,
        records: snap.records().count(),
    })
}

/// Opens a registry by URL: `sqlite:///path/to.db` or a plain path (embedded), or
/// `etcd://host:port[,host:port...][/prefix]` or `etcds://...` for TLS (see [`etcd::location`]
/// for credentials and TLS).
pub fn open(location: &str) -> Result<Arc<dyn Registry>> {
    if let Some(rest) = location.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteRegistry::open(rest)?));
    }
    if location.starts_with("etcd://") || location.starts_with("etcds://") {
        #[cfg(feature = "etcd")]
        return Ok(Arc::new(etcd::EtcdRegistry::open(location)?));
        #[cfg(not(feature = "etcd"))]
        return Err(Error::invalid(
            "registry",
            shown(location),
            "this build has no etcd backend (it was built without the `etcd` feature; \
             rebuild with default features, or use sqlite:///path)",
        ));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(Error::invalid(
            "registry",
            shown(location),
            format!(
                "unknown scheme `{scheme}` (use sqlite:///path, a plain path, etcd://host:port or etcds://host:port)"
            ),
        ));
    }
    Ok(Arc::new(sqlite::SqliteRegistry::open(location)?))
}

/// A registry location as a message may print it: a URL's `user:password@` becomes
/// `user:***@`, as the etcd backend shows a URL it cannot parse, so that a password never
/// reaches a terminal or a log. Once parsed, an etcd location is shown without it
/// ([`etcd::Location`]'s `shown`, which its `Debug` prints). Everything after the scheme up
/// to the last `@` counts as credentials, so that a password holding an unencoded `/`, `?`
/// or `@` is hidden too. Plain paths pass unchanged.
pub fn shown(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return location.to_string();
    };
    let name = userinfo.split([':', '/', '?']).next().unwrap_or("");
    format!("{scheme}://{name}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_hides_the_password_of_any_url() {
        for (given, want) in [
            ("etcd://alice:s3cret@h:1/x", "etcd://alice:***@h:1/x"),
            ("etcds://alice:s3cret@h:1,g:2", "etcds://alice:***@h:1,g:2"),
            ("etcd://alice@h:1", "etcd://alice:***@h:1"),
            ("etcd://alice:s3/c?r@t@h:1/x", "etcd://alice:***@h:1/x"),
            ("etdc://alice:s3cret@h:1", "etdc://alice:***@h:1"),
            ("etcd://h:1/x", "etcd://h:1/x"),
            (
                "sqlite:///var/lib/sixpn/registry.db",
                "sqlite:///var/lib/sixpn/registry.db",
            ),
            ("/var/lib/sixpn/registry.db", "/var/lib/sixpn/registry.db"),
        ] {
            assert_eq!(shown(given), want, "{given}");
        }
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn shown_agrees_with_the_etcd_backend() {
        // The etcd URL parser masks a URL it refuses its own way; both must read the same.
        let url = "etcd://alice:s3cret@h:1/x?bogus=1";
        match etcd::Location::parse_with_env(url, |_| None) {
            Err(Error::Invalid { value, .. }) => assert_eq!(value, shown(url)),
            other => panic!("{other:?}"),
        }
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn an_etcd_url_is_refused_by_a_build_without_etcd() {
        let e = open("etcd://alice:s3cret@127.0.0.1:1/x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("built without the `etcd` feature"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_the_password() {
        let e = open("etdc://alice:s3cret@127.0.0.1:1/x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown scheme `etdc`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
