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

/// Applies the follower's updates to `built` until it reaches `want` (10 s for each);
/// a whole read again (a reset) is refused unless `resets`.
fn follow_to(
    changes: &mut registry::Changes,
    built: &mut IndexBuilder,
    want: Revision,
    resets: bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    while built.revision() < want.0 {
        let update = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), changes.updates.recv()).await
            })
            .expect("an update within 10 s")
            .expect("the follower runs");
        match update {
            Update::Delta(d) => built.apply(&d, now()).unwrap(),
            Update::Reset(snap) if resets => {
                *built = IndexBuilder::from_snapshot(&snap, options(), now())
            }
            Update::Reset(_) => panic!("the change log holds every change since the copy"),
        }
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
    let (changes, built, _) = dnsd::live::start(reg.reg.clone(), &options(), None);
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
    let (mut changes, mut built, _) = dnsd::live::start(flaky, &options(), None);
    assert_eq!(changes.first.revision, Revision(0));
    assert_eq!(built.revision(), 0);
    assert_eq!(built.index().names(), 0, "{:?}", built.index().dump());
    assert_eq!(changes.health.failures(), 1);

    let want = reg.reg.snapshot().unwrap();
    follow_to(&mut changes, &mut built, want.revision, true);
    let whole = IndexBuilder::from_snapshot(&want, options(), now());
    assert_eq!(built.index().dump(), whole.index().dump());
    assert!(changes.health.reachable());
}

/// A copy's bytes with the registry its header names changed from `from` to `to`.
fn relocated(copy: &[u8], from: &str, to: &str) -> Vec<u8> {
    let head_end = copy.iter().position(|&b| b == b'\n').unwrap();
    let head = std::str::from_utf8(&copy[..head_end]).unwrap();
    assert!(head.contains(from), "{head}");
    let mut out = head.replacen(from, to, 1).into_bytes();
    out.extend_from_slice(&copy[head_end..]);
    out
}

/// The copy's revision once its keeper has written it (waits up to 10 s).
fn copy_at(path: &std::path::Path, revision: Revision) {
    let copy = registry::LocalCopy::new(path);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let loaded = copy.load(&mut |_| {}, &mut |_| {}).ok().flatten();
        if loaded.as_ref().map(|l| l.revision) == Some(revision) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy did not reach revision {}: {loaded:?}",
            revision.0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn some_registry() -> TestRegistry {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.org("globex");
    reg.node("iad-1", "iad", true);
    reg.node("ams-1", "ams", false);
    for i in 0..120 {
        let (org, region, node) = match i % 3 {
            0 => ("acme", "iad", "iad-1"),
            1 => ("acme", "ams", "ams-1"),
            _ => ("globex", "iad", "iad-1"),
        };
        reg.machine(org, &format!("app{}", i % 7), region, node);
    }
    reg
}

#[test]
fn a_restart_builds_from_the_local_copy_and_follows_the_registry_from_its_revision() {
    let reg = some_registry();
    let path = reg.dir.path().join("dnsd.copy");
    let copy = || Some(registry::LocalCopy::new(&path));
    let at_first = reg.reg.snapshot().unwrap();
    let (changes, _, keeper) = dnsd::live::start(reg.reg.clone(), &options(), copy());
    assert!(keeper.is_some());
    assert_eq!(changes.first.revision, at_first.revision);
    copy_at(&path, at_first.revision);
    drop(changes);

    // Written while dnsd was away.
    reg.machine("acme", "late", "iad", "iad-1");
    reg.machine("globex", "later", "ams", "ams-1");
    let (mut changes, mut built, _) = dnsd::live::start(reg.reg.clone(), &options(), copy());
    assert_eq!(
        built.revision(),
        at_first.revision.0,
        "the index is the copy's"
    );
    assert_eq!(changes.first.revision, at_first.revision);
    assert!(changes.health.reachable());
    let from_copy = IndexBuilder::from_snapshot(&at_first, options(), now());
    assert_eq!(built.index().dump(), from_copy.index().dump());

    // Following goes on from the copy's revision, change by change.
    let want = reg.reg.snapshot().unwrap();
    follow_to(&mut changes, &mut built, want.revision, false);
    let whole = IndexBuilder::from_snapshot(&want, options(), now());
    assert_eq!(built.index().dump(), whole.index().dump());
}

#[test]
fn an_unreachable_registry_is_answered_from_the_local_copy() {
    let reg = some_registry();
    let path = reg.dir.path().join("dnsd.copy");
    let snap = reg.reg.snapshot().unwrap();
    let (changes, _, _) = dnsd::live::start(
        reg.reg.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path)),
    );
    copy_at(&path, snap.revision);
    drop(changes);

    let down = Arc::new(Switched {
        inner: reg.reg.clone(),
        up: AtomicBool::new(false),
    });
    let (changes, built, _) =
        dnsd::live::start(down, &options(), Some(registry::LocalCopy::new(&path)));
    assert_eq!(built.revision(), snap.revision.0);
    assert!(!changes.health.reachable());
    // The start's failed check counts once; the follower's retries may have counted more.
    assert!(changes.health.failures() >= 1);
    let whole = IndexBuilder::from_snapshot(&snap, options(), now());
    assert_eq!(built.index().dump(), whole.index().dump());

    // Without a copy, the same start serves nothing.
    let down = Arc::new(Switched {
        inner: reg.reg.clone(),
        up: AtomicBool::new(false),
    });
    let (_, built, _) = dnsd::live::start(down, &options(), None);
    assert_eq!(built.index().names(), 0);
}

#[test]
fn a_copy_of_another_history_or_a_newer_one_is_not_used() {
    let reg = some_registry();
    let path = reg.dir.path().join("dnsd.copy");
    let first = reg.reg.snapshot().unwrap();
    let (changes, _, _) = dnsd::live::start(
        reg.reg.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path)),
    );
    copy_at(&path, first.revision);
    drop(changes);
    let saved = std::fs::read(&path).unwrap();

    // The registry is made again at the same place with other records and more revisions:
    // its change at the copy's revision is another one.
    let other = TestRegistry::new();
    std::fs::copy(&path, other.dir.path().join("dnsd.copy")).unwrap();
    let path = other.dir.path().join("dnsd.copy");
    // The copy names the first registry's location; make it name this one's.
    std::fs::write(&path, relocated(&saved, &reg.url(), &other.url())).unwrap();
    other.org("acme");
    other.node("iad-1", "iad", true);
    while other.reg.snapshot().unwrap().revision.0 < first.revision.0 + 3 {
        other.machine("acme", "other", "iad", "iad-1");
    }
    let (changes, built, _) = dnsd::live::start(
        other.reg.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path)),
    );
    let want = other.reg.snapshot().unwrap();
    assert_eq!(built.revision(), want.revision.0, "read whole");
    assert_eq!(changes.first.revision, want.revision);
    let whole = IndexBuilder::from_snapshot(&want, options(), now());
    assert_eq!(built.index().dump(), whole.index().dump());
    // And the copy is written again, of this history.
    copy_at(&path, want.revision);
    drop(changes);

    // A registry behind the copy (restored from an older backup) is read whole too.
    let older = TestRegistry::new();
    let path2 = older.dir.path().join("dnsd.copy");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path2, relocated(&bytes, &other.url(), &older.url())).unwrap();
    older.org("acme");
    let (_, built, _) = dnsd::live::start(
        older.reg.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path2)),
    );
    let want = older.reg.snapshot().unwrap();
    assert_eq!(built.revision(), want.revision.0);
    assert_eq!(
        built.index().dump(),
        IndexBuilder::from_snapshot(&want, options(), now())
            .index()
            .dump()
    );
}

/// A registry that cannot be reached until switched up (its location is the real one's).
struct Switched {
    inner: Arc<dyn Registry>,
    up: AtomicBool,
}

impl Switched {
    fn check(&self) -> registry::Result<()> {
        if self.up.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(registry::Error::Storage {
            location: self.location().into(),
            message: "connection refused".into(),
        })
    }
}

impl Registry for Switched {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn snapshot(&self) -> registry::Result<Snapshot> {
        self.check()?;
        self.inner.snapshot()
    }
    fn visit(&self, each: &mut dyn FnMut(Record)) -> registry::Result<Revision> {
        self.check()?;
        self.inner.visit(each)
    }
    fn wait_newer(&self, than: Revision, timeout: Duration) -> registry::Result<Option<Revision>> {
        if self.check().is_err() {
            std::thread::sleep(timeout.min(Duration::from_millis(50)));
        }
        self.check()?;
        self.inner.wait_newer(than, timeout)
    }
    fn apply(&self, change: &Change) -> registry::Result<Applied> {
        self.check()?;
        self.inner.apply(change)
    }
    fn import(&self, snapshot: &Snapshot) -> registry::Result<Revision> {
        self.check()?;
        self.inner.import(snapshot)
    }
    fn changes_since(&self, after: Revision, limit: usize) -> registry::Result<Option<Vec<Delta>>> {
        self.check()?;
        self.inner.changes_since(after, limit)
    }
}

#[test]
fn a_copy_served_while_the_registry_was_down_is_checked_when_it_answers() {
    // A copy of one history...
    let first = some_registry();
    let path = first.dir.path().join("dnsd.copy");
    let at = first.reg.snapshot().unwrap().revision;
    let (changes, _, _) = dnsd::live::start(
        first.reg.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path)),
    );
    copy_at(&path, at);
    drop(changes);
    // ...and a registry at its place with another history, further on.
    let other = TestRegistry::new();
    let path2 = other.dir.path().join("dnsd.copy");
    std::fs::write(
        &path2,
        relocated(&std::fs::read(&path).unwrap(), &first.url(), &other.url()),
    )
    .unwrap();
    other.org("acme");
    other.node("iad-1", "iad", true);
    while other.reg.snapshot().unwrap().revision.0 < at.0 + 3 {
        other.machine("acme", "other", "iad", "iad-1");
    }
    let switched = Arc::new(Switched {
        inner: other.reg.clone(),
        up: AtomicBool::new(false),
    });
    let (changes, built, keeper) = dnsd::live::start(
        switched.clone(),
        &options(),
        Some(registry::LocalCopy::new(&path2)),
    );
    assert_eq!(
        built.revision(),
        at.0,
        "the copy is served while the registry is down"
    );
    assert!(!changes.health.reachable());

    let shared = Arc::new(dnsd::server::Shared {
        index: arc_swap::ArcSwap::from_pointee(built.index().clone()),
        forwarder: None,
        metrics: Arc::new(dnsd::metrics::Metrics::default()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(dnsd::live::follow(
        switched.clone(),
        changes,
        built,
        options(),
        shared.clone(),
        keeper,
    ));
    std::thread::sleep(Duration::from_millis(300));
    switched.up.store(true, Ordering::Relaxed);
    let want = other.reg.snapshot().unwrap();
    let whole = IndexBuilder::from_snapshot(&want, options(), now());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shared.index.load().dump() != whole.index().dump() {
        assert!(
            std::time::Instant::now() < deadline,
            "dnsd never came to the registry's own state (revision {} of {})",
            shared.index.load().revision,
            want.revision.0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the copy is rewritten of this history.
    copy_at(&path2, want.revision);
}
