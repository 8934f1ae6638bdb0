//! dnsd's start on a real registry file: the index it builds while reading equals one built
//! from a snapshot, and an unreadable registry starts empty and is caught up with later.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestRegistry;
use dnsd::index::{IndexBuilder, Options};
use registry::{Applied, Change, Delta, Record, Registry, Revision, Snapshot, Update};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn options() -> Options {
    Options {
        default_org: Some("acme".into()),
        local_region: Some("iad".into()),
        allow: Vec::new(),
    }
}

#[test]
fn the_index_built_while_reading_equals_one_from_a_snapshot() {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.org("globex");
    reg.node("iad-1", "iad", true);
    reg.node("ams-1", "ams", false);
    for i in 0..300 {
        let (org, region, node) = match i % 3 {
            0 => ("acme", "iad", "iad-1"),
            1 => ("acme", "ams", "ams-1"),
            _ => ("globex", "iad", "iad-1"),
        };
        reg.machine(org, &format!("app{}", i % 17), region, node);
    }
    let (changes, built) = dnsd::live::start(reg.reg.clone(), &options());
    let snap = reg.reg.snapshot().unwrap();
    assert_eq!(changes.first.revision, snap.revision);
    assert_eq!(built.revision(), snap.revision.0);
    let from_snapshot = IndexBuilder::from_snapshot(&snap, options(), now());
    assert_eq!(built.index().dump(), from_snapshot.index().dump());
    assert!(
        built.index().names() > 300,
        "{} names",
        built.index().names()
    );
}

/// The real registry, but its first read record by record fails half-way, as a registry
/// that goes away during dnsd's start does.
struct FailsFirstVisit {
    inner: Arc<dyn Registry>,
    failed: AtomicBool,
}

impl Registry for FailsFirstVisit {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn snapshot(&self) -> registry::Result<Snapshot> {
        self.inner.snapshot()
    }
    fn visit(&self, each: &mut dyn FnMut(Record)) -> registry::Result<Revision> {
        if self.failed.swap(true, Ordering::Relaxed) {
            return self.inner.visit(each);
        }
        let snap = self.inner.snapshot()?;
        snap.records().take(3).for_each(each);
        Err(registry::Error::Storage {
            location: self.location().into(),
            message: "the connection went away".into(),
        })
    }
    fn wait_newer(&self, than: Revision, timeout: Duration) -> registry::Result<Option<Revision>> {
        self.inner.wait_newer(than, timeout)
    }
    fn apply(&self, change: &Change) -> registry::Result<Applied> {
        self.inner.apply(change)
    }
    fn import(&self, snapshot: &Snapshot) -> registry::Result<Revision> {
        self.inner.import(snapshot)
    }
    fn changes_since(&self, after: Revision, limit: usize) -> registry::Result<Option<Vec<Delta>>> {
        self.inner.changes_since(after, limit)
    }
}

#[test]
fn a_read_failing_half_way_starts_empty_and_following_catches_up() {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.node("iad-1", "iad", true);
    reg.machine("acme", "web", "iad", "iad-1");
    let flaky = Arc::new(FailsFirstVisit {
        inner: reg.reg.clone(),
        failed: AtomicBool::new(false),
    });
    let (mut changes, mut built) = dnsd::live::start(flaky, &options());
    assert_eq!(changes.first.revision, Revision(0));
    assert_eq!(built.revision(), 0);
    assert_eq!(built.index().names(), 0, "{:?}", built.index().dump());
    assert_eq!(changes.health.failures(), 1);

    let want = reg.reg.snapshot().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    while built.revision() < want.revision.0 {
        let update = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), changes.updates.recv()).await
            })
            .expect("an update within 10 s")
            .expect("the follower runs");
        match update {
            Update::Reset(snap) => built = IndexBuilder::from_snapshot(&snap, options(), now()),
            Update::Delta(d) => built.apply(&d, now()).unwrap(),
        }
    }
    let whole = IndexBuilder::from_snapshot(&want, options(), now());
    assert_eq!(built.index().dump(), whole.index().dump());
    assert!(changes.health.reachable());
}
