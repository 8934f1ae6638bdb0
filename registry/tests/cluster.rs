//! A 3-member etcd cluster on loopback losing members under a stream of writes.

mod common;

use std::time::{Duration, Instant};

use common::{setup, Etcd};
use registry::{Change, Error, Revision};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn org(i: usize) -> Change {
    Change::CreateOrg {
        name: format!("org{i}"),
    }
}

#[test]
fn losing_one_member_of_three_loses_no_write_and_readers_keep_up() {
    const WRITES: usize = 60;
    const KILL_AT: usize = 20;
    let mut etcd = Etcd::cluster(3);
    // The worst member to lose: the leader, and the endpoint every client talks to.
    let leader = etcd.leader();
    let url = etcd.url_starting_at(leader);
    let writer = registry::open(&url).unwrap();
    let follower = registry::follow(registry::open(&url).unwrap());
    let mut acknowledged = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..WRITES {
        if i == KILL_AT {
            etcd.kill(leader);
        }
        let started = Instant::now();
        match writer.apply(&org(i)) {
            Ok(a) => acknowledged.push((i, a.revision)),
            Err(e) => panic!("write {i} failed with one member of three down: {e}"),
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest write across the member loss: {slowest:?}");
    let snap = writer.snapshot().unwrap();
    for (i, rev) in &acknowledged {
        let o = snap.orgs.get(&format!("org{i}"));
        assert!(
            o.is_some(),
            "acknowledged write {i} (revision {}) lost",
            rev.0
        );
    }
    assert_eq!(snap.orgs.len(), WRITES, "a write applied twice or lost");
    assert_eq!(snap.revision, Revision(WRITES as u64));
    let rx = follower.snapshots.clone();
    let caught = Instant::now();
    wait_until("the follower to keep up", Duration::from_secs(10), || {
        rx.borrow().revision == snap.revision
    });
    eprintln!(
        "follower at the last revision {:?} after the last write",
        caught.elapsed()
    );
    assert_eq!(**rx.borrow(), snap);
    assert!(follower.health.reachable());
}

#[test]
fn losing_two_members_of_three_fails_writes_clearly_and_readers_serve_on() {
    let mut etcd = Etcd::cluster(3);
    let url = etcd.url();
    let writer = registry::open(&url).unwrap();
    setup(&*writer);
    let follower = registry::follow(registry::open(&url).unwrap());
    let rx = follower.snapshots.clone();
    wait_until("the first snapshot", Duration::from_secs(5), || {
        rx.borrow().revision == Revision(2)
    });
    let before = rx.borrow().clone();

    etcd.kill(0);
    etcd.kill(1);
    let started = Instant::now();
    let err = writer.apply(&org(1)).unwrap_err();
    eprintln!(
        "write with two of three down failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert!(!err.is_user_error());
    let text = err.to_string();
    assert!(text.contains("no etcd member"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15));
    wait_until(
        "the follower to report etcd down",
        Duration::from_secs(15),
        || !follower.health.reachable(),
    );
    assert_eq!(
        *rx.borrow().clone(),
        *before,
        "readers keep the last snapshot"
    );

    // Quorum back: readers catch up and writes go through again.
    etcd.start(1);
    wait_until("writes to succeed again", Duration::from_secs(20), || {
        writer.apply(&org(2)).is_ok()
    });
    wait_until("the follower to catch up", Duration::from_secs(10), || {
        rx.borrow().orgs.contains_key("org2")
    });
    assert!(follower.health.reachable());
    assert!(
        !rx.borrow().orgs.contains_key("org1"),
        "the failed write did not land"
    );
}
