//! `.internal` names over UDP and TCP, asked with real clients (`dig`, `kdig`) of the real
//! `dnsd` binary on loopback.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use registry::{Change, MachineState};
use sixpn_testkit::free_port;

struct World {
    reg: TestRegistry,
    dnsd: Dnsd,
    metrics: SocketAddr,
    web: Vec<registry::Machine>,
}

/// acme: web in iad (2) and ams (1, stopped: no); db in ams. Loopback clients see acme.
fn world() -> World {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.org("globex");
    reg.node("host-iad", "iad", true);
    reg.node("host-ams", "ams", false);
    let mut web = vec![
        reg.machine("acme", "web", "iad", "host-iad"),
        reg.machine("acme", "web", "iad", "host-iad"),
        reg.machine("acme", "web", "ams", "host-ams"),
    ];
    reg.apply(Change::SetMachineState {
        id: web[2].id,
        state: MachineState::Stopped,
    });
    web[2].state = MachineState::Stopped;
    reg.machine("acme", "db", "ams", "host-ams");
    reg.machine("globex", "secret", "iad", "host-iad");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let dnsd = Dnsd::start(
        None,
        addr,
        &[
            "--registry",
            &reg.url(),
            "--default-org",
            "acme",
            "--metrics",
            &metrics.to_string(),
            "--upstream",
            "127.0.0.1:9",
        ],
    );
    World {
        reg,
        dnsd,
        metrics,
        web,
    }
}

fn started_addrs(w: &World) -> Vec<String> {
    let mut v: Vec<String> = w
        .web
        .iter()
        .filter(|m| m.started())
        .map(|m| m.addr.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn dig_over_udp_and_tcp_answers_aaaa_names() {
    let w = world();
    for transport in ["+notcp", "+tcp"] {
        let out = dig(
            None,
            w.dnsd.addr,
            &[transport, "+short", "web.internal", "AAAA"],
        );
        assert_eq!(sorted_lines(&out), started_addrs(&w), "{transport}");
        let out = dig(
            None,
            w.dnsd.addr,
            &[transport, "+short", "global.web.internal", "AAAA"],
        );
        assert_eq!(sorted_lines(&out), started_addrs(&w), "{transport}");
    }
    let out = dig(None, w.dnsd.addr, &["+short", "iad.web.internal", "AAAA"]);
    assert_eq!(sorted_lines(&out), started_addrs(&w));
    let one = &w.web[0];
    let name = format!("{}.vm.web.internal", one.id);
    let out = dig(None, w.dnsd.addr, &["+noall", "+answer", &name, "AAAA"]);
    assert_eq!(
        records(&out),
        vec![format!("{name}. 5 IN AAAA {}", one.addr)]
    );
    // Case-insensitive, case echoed.
    let out = dig(
        None,
        w.dnsd.addr,
        &["+noall", "+answer", "WeB.InTeRnAl", "AAAA"],
    );
    assert_eq!(records(&out).len(), 2);
    assert!(
        records(&out)[0].starts_with("WeB.InTeRnAl. 5 IN AAAA fdaa:"),
        "{out}"
    );
    // A machine's name as well: its id is read from the lowercased name.
    let upper = name.to_uppercase();
    let out = dig(None, w.dnsd.addr, &["+noall", "+answer", &upper, "AAAA"]);
    assert_eq!(
        records(&out),
        vec![format!("{upper}. 5 IN AAAA {}", one.addr)]
    );
}

#[test]
fn any_gets_one_rrset() {
    let w = world();
    let out = dig(
        None,
        w.dnsd.addr,
        &["+noall", "+answer", "web.internal", "ANY"],
    );
    let recs = records(&out);
    assert_eq!(recs.len(), started_addrs(&w).len(), "{out}");
    assert!(recs.iter().all(|r| r.contains(" IN AAAA ")), "{out}");
    let out = dig(
        None,
        w.dnsd.addr,
        &["+noall", "+answer", "_apps.internal", "ANY"],
    );
    assert_eq!(
        records(&out),
        vec!["_apps.internal. 5 IN TXT \"db,web\""],
        "{out}"
    );
    let out = dig(None, w.dnsd.addr, &["+noall", "+answer", "internal", "ANY"]);
    let recs = records(&out);
    assert!(recs.len() == 1 && recs[0].contains(" IN SOA "), "{out}");
}

#[test]
fn dig_and_kdig_get_txt_names_in_flys_formats() {
    let w = world();
    let out = dig(None, w.dnsd.addr, &["+short", "_apps.internal", "TXT"]);
    assert_eq!(out.trim(), "\"db,web\"");
    let out = dig(
        None,
        w.dnsd.addr,
        &["+tcp", "+short", "regions.web.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"iad\"");
    let out = dig(
        None,
        w.dnsd.addr,
        &["+short", "all.regions.web.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"ams,iad\"");
    let mut vms: Vec<&registry::Machine> = w.web.iter().filter(|m| m.started()).collect();
    vms.sort_by_key(|a| a.id);
    let want: Vec<String> = vms
        .iter()
        .map(|m| format!("{} {}", m.id, m.region))
        .collect();
    for transport in ["+notcp", "+tcp"] {
        let out = kdig(
            w.dnsd.addr,
            &[transport, "+short", "vms.web.internal", "TXT"],
        );
        assert_eq!(out.trim(), format!("\"{}\"", want.join(",")), "{transport}");
        let out = kdig(w.dnsd.addr, &[transport, "+short", "web.internal", "AAAA"]);
        assert_eq!(sorted_lines(&out), started_addrs(&w), "{transport}");
    }
    let out = dig(None, w.dnsd.addr, &["+short", "_instances.internal", "TXT"]);
    for m in w.web.iter().filter(|m| m.started()) {
        assert!(
            out.contains(&format!(
                "instance={},app=web,ip={},region=iad",
                m.id, m.addr
            )),
            "{out}"
        );
    }
    assert!(
        !out.contains(&w.web[2].id.to_string()),
        "stopped machine listed: {out}"
    );
    let out = dig(
        None,
        w.dnsd.addr,
        &["+short", "all._instances.internal", "TXT"],
    );
    assert!(out.contains(&w.web[2].id.to_string()));
}

#[test]
fn unknown_names_get_nxdomain_with_soa_and_other_types_nodata() {
    let w = world();
    let out = dig(None, w.dnsd.addr, &["nope.internal", "AAAA"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains("flags: qr aa rd ra;"), "{out}");
    let auth: Vec<String> = records(&dig(
        None,
        w.dnsd.addr,
        &["+noall", "+authority", "nope.internal", "AAAA"],
    ));
    assert_eq!(auth.len(), 1);
    assert!(
        auth[0].starts_with("internal. 5 IN SOA ns.internal. hostmaster.internal. "),
        "{auth:?}"
    );
    assert!(auth[0].ends_with(" 3600 600 86400 5"), "{auth:?}");
    let out = dig(None, w.dnsd.addr, &["web.internal", "TXT"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("ANSWER: 0, AUTHORITY: 1"), "{out}");
    // globex's app does not exist for acme's clients.
    let out = dig(None, w.dnsd.addr, &["secret.internal", "AAAA"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    // A stopped machine's region exists but has no address.
    let out = dig(None, w.dnsd.addr, &["ams.web.internal", "AAAA"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let w = world();
    for _ in 0..60 {
        w.reg.machine("acme", "big", "iad", "host-iad");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut whole = String::new();
    while Instant::now() < deadline {
        whole = dig(
            None,
            w.dnsd.addr,
            &["+tcp", "+short", "big.internal", "AAAA"],
        );
        if sorted_lines(&whole).len() == 60 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sorted_lines(&whole).len(), 60, "{whole}");
    let out = dig(
        None,
        w.dnsd.addr,
        &["+notcp", "+ignore", "big.internal", "AAAA"],
    );
    assert!(out.contains("flags: qr aa tc rd ra;"), "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    let out = dig(
        None,
        w.dnsd.addr,
        &["+notcp", "+ignore", "+noedns", "big.internal", "AAAA"],
    );
    assert!(out.contains(" tc "), "{out}");
    // dig retries over TCP by itself when it sees TC.
    let out = dig(
        None,
        w.dnsd.addr,
        &["+notcp", "+short", "big.internal", "AAAA"],
    );
    assert_eq!(sorted_lines(&out).len(), 60);
    let m = Dnsd::metrics(w.metrics);
    assert!(!m.contains("dnsd_truncated_total 0\n"), "{m}");
}

#[test]
fn answers_to_multi_address_names_are_shuffled() {
    let w = world();
    for _ in 0..4 {
        w.reg.machine("acme", "pool", "iad", "host-iad");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..30 {
        let out = dig(None, w.dnsd.addr, &["+short", "pool.internal", "AAAA"]);
        assert_eq!(sorted_lines(&out).len(), 5 - 1, "{out}");
        firsts.insert(out.lines().next().unwrap_or_default().to_string());
    }
    assert!(
        firsts.len() >= 2,
        "always the same first address: {firsts:?}"
    );
}

#[test]
fn a_machine_added_to_the_registry_is_answered_at_once() {
    let w = world();
    let start = Instant::now();
    let m = w.reg.machine("acme", "fresh", "iad", "host-iad");
    let written = start.elapsed();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let query = {
        let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["fresh", "internal"] {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 28, 0, 1]);
        p
    };
    let mut buf = [0u8; 512];
    let answered = loop {
        sock.send_to(&query, w.dnsd.addr).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            // ANCOUNT 1 and the machine's address at the end.
            if n >= 16 && buf[7] == 1 && buf[n - 16..n] == m.addr.octets() {
                break start.elapsed();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never answered");
        std::thread::sleep(Duration::from_millis(1));
    };
    println!(
        "registry write took {written:?}; write-to-answer {answered:?} (after the write: {:?})",
        answered - written
    );
}

#[test]
fn malformed_queries_get_formerr_or_are_dropped_and_counted() {
    let w = world();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 512];
    // Too short: dropped.
    sock.send_to(&[1, 2, 3], w.dnsd.addr).unwrap();
    assert!(sock.recv_from(&mut buf).is_err());
    // No question: FORMERR.
    sock.send_to(&[0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], w.dnsd.addr)
        .unwrap();
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0xab, 0xcd]);
    assert_eq!(buf[3] & 0xf, 1, "{:?}", &buf[..n]);
    // A name that runs off the end: FORMERR.
    sock.send_to(&[0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, b'a'], w.dnsd.addr)
        .unwrap();
    let (_, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(buf[3] & 0xf, 1);
    // Garbage of every length: still alive.
    for len in 0..200usize {
        let junk: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        sock.send_to(&junk, w.dnsd.addr).unwrap();
    }
    let out = dig(None, w.dnsd.addr, &["+short", "_apps.internal", "TXT"]);
    assert_eq!(out.trim(), "\"db,web\"");
    let m = Dnsd::metrics(w.metrics);
    assert!(!m.contains("dnsd_malformed_dropped_total 0\n"), "{m}");
    assert!(
        !m.contains("dnsd_queries_total{type=\"OTHER\",rcode=\"FORMERR\"} 0\n"),
        "{m}"
    );
}

#[test]
fn metrics_count_queries_by_type_and_rcode() {
    let w = world();
    dig(None, w.dnsd.addr, &["web.internal", "AAAA"]);
    dig(None, w.dnsd.addr, &["nope.internal", "TXT"]);
    let m = Dnsd::metrics(w.metrics);
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("dnsd_queries_total{type=\"AAAA\",rcode=\"NOERROR\"} "),
        "{m}"
    );
    assert!(
        m.contains("dnsd_queries_total{type=\"TXT\",rcode=\"NXDOMAIN\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("dnsd_query_duration_seconds_bucket{le=\"+Inf\"} "),
        "{m}"
    );
    let rev = w.reg.reg.snapshot().unwrap().revision.0;
    assert!(m.contains(&format!("dnsd_index_revision {rev}\n")), "{m}");
    assert!(m.contains("dnsd_registry_reachable 1\n"), "{m}");
}

#[test]
fn loopback_clients_are_refused_internal_names_without_a_default_org() {
    let reg = TestRegistry::new();
    reg.org("acme");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let d = Dnsd::start(
        None,
        addr,
        &["--registry", &reg.url(), "--upstream", "127.0.0.1:9"],
    );
    let out = dig(None, d.addr, &["_apps.internal", "TXT"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

/// The AAAA answers for `name`, sorted, as `dig +short` prints them.
fn aaaa(addr: SocketAddr, name: &str) -> Vec<String> {
    sorted_lines(&dig(
        None,
        addr,
        &["+short", "+time=2", "+tries=2", name, "AAAA"],
    ))
}

#[test]
fn a_restart_answers_from_the_local_copy_and_catches_up_with_what_it_missed() {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    let copy = reg.dir.path().join("dnsd.copy");
    let start = |reg: &TestRegistry| {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let args = [
            "--registry",
            &reg.url(),
            "--default-org",
            "acme",
            "--registry-copy",
            copy.to_str().unwrap(),
        ];
        Dnsd::start(None, addr, &args)
    };
    let mut dnsd = start(&reg);
    assert_eq!(aaaa(dnsd.addr, "web.internal"), vec![web.addr.to_string()]);
    // A change while it runs goes into the copy's journal before dnsd is killed outright.
    let db = reg.machine("acme", "db", "iad", "host-iad");
    let deadline = Instant::now() + Duration::from_secs(5);
    while aaaa(dnsd.addr, "db.internal") != vec![db.addr.to_string()] {
        assert!(Instant::now() < deadline, "db never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let journal = copy.with_extension("copy.journal");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .contains(&db.id.to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the change never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    dnsd.proc.kill();
    let log = dnsd.log_text();
    drop(dnsd);
    assert!(!log.contains("index built from the local copy"), "{log}");

    // Written while dnsd was down.
    let late = reg.machine("acme", "late", "iad", "host-iad");
    let dnsd = start(&reg);
    let deadline = Instant::now() + Duration::from_secs(5);
    while aaaa(dnsd.addr, "late.internal") != vec![late.addr.to_string()] {
        assert!(Instant::now() < deadline, "late never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(aaaa(dnsd.addr, "web.internal"), vec![web.addr.to_string()]);
    assert_eq!(aaaa(dnsd.addr, "db.internal"), vec![db.addr.to_string()]);
    let log = dnsd.log_text();
    assert!(log.contains("index built from the local copy"), "{log}");
    assert!(log.contains("deltas=1"), "db came from the journal: {log}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_registry_copy_in_a_missing_directory_is_refused_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsd"))
        .args([
            "--registry-copy",
            "/nonexistent-sixpn-dir/dnsd.copy",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("registry_copy") && err.contains("does not exist"),
        "{err}"
    );
}
