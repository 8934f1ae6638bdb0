//! Names outside `.internal` go to the upstreams: failover, cache, stale answers when every
//! upstream is down, SERVFAIL when there is nothing to serve. The upstream is a stub
//! resolver on loopback that the test starts itself.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sixpn_testkit::free_port;

fn start(reg: &TestRegistry, upstreams: &[SocketAddr], metrics: SocketAddr) -> Dnsd {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let mut args = vec![
        "--registry".to_string(),
        reg.url(),
        "--upstream-timeout".into(),
        "300ms".into(),
        "--metrics".into(),
        metrics.to_string(),
    ];
    for u in upstreams {
        args.push("--upstream".into());
        args.push(u.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Dnsd::start(None, addr, &args)
}

#[test]
fn forwards_with_failover_cache_and_stale_answers_when_upstreams_are_down() {
    let reg = TestRegistry::new();
    let mut stub = StubUpstream::start(1);
    // The first upstream is dead (nothing listens there): dnsd must fail over.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let d = start(&reg, &[dead, stub.addr], metrics);

    let out = dig(None, d.addr, &["+noall", "+answer", "example.com", "A"]);
    assert_eq!(
        records(&out),
        vec!["example.com. 1 IN A 192.0.2.1"],
        "{out}"
    );
    assert_eq!(stub.count(), 1);
    // Cached: the upstream is not asked again while the TTL lasts.
    let out = dig(None, d.addr, &["+short", "EXAMPLE.com", "A"]);
    assert_eq!(out.trim(), "192.0.2.1");
    assert_eq!(
        stub.count(),
        1,
        "second query was not served from the cache"
    );
    // Over TCP too.
    let out = dig(None, d.addr, &["+tcp", "+short", "other.example", "A"]);
    assert_eq!(out.trim(), "192.0.2.1");
    assert_eq!(stub.count(), 2);

    // Every upstream down, TTL expired: the stale answer, with TTL 30.
    stub.stop();
    std::thread::sleep(Duration::from_millis(1100));
    let out = dig(
        None,
        d.addr,
        &["+noall", "+answer", "+time=3", "example.com", "A"],
    );
    assert_eq!(
        records(&out),
        vec!["example.com. 30 IN A 192.0.2.1"],
        "{out}"
    );
    // Nothing cached for this one: SERVFAIL.
    let out = dig(None, d.addr, &["+time=3", "never.example", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");

    let m = Dnsd::metrics(metrics);
    assert!(m.contains("dnsd_cache_hits_total 1\n"), "{m}");
    assert!(m.contains("dnsd_stale_answers_total 1\n"), "{m}");
    assert!(m.contains("dnsd_forwarded_total 4\n"), "{m}");
    assert!(!m.contains("dnsd_upstream_failures_total 0\n"), "{m}");
}
