//! dnsd under a flood it must not drown in: thousands of forwarded questions an upstream
//! never answers and more idle TCP connections than it takes. Its caps hold (descriptors
//! stay under them, the excess is counted) and `.internal` names are still answered at once.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sixpn_testkit::{in_netns, Netns};

const FORWARDS: usize = 2_000;
const TCP_CONNS: usize = 1_500;
const MAX_FORWARDS: usize = 256;
const MAX_TCP: usize = 256;
/// dnsd's descriptors besides forwards and TCP connections (as config::FD_RESERVE).
const FD_RESERVE: usize = 64;

/// A query packet for `name`, type `qtype`, id `id`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p
}

/// An upstream that reads every query and never answers. Stops on drop.
struct BlackHole {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start_in(netns: &str) -> BlackHole {
        let sock = in_netns(netns, || UdpSocket::bind("127.0.0.1:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let _ = sock.recv_from(&mut buf);
            }
        });
        BlackHole {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Raises every thread of `pid` (0: the calling thread) above the neighbours' builds on a
/// shared machine, so the latencies measured are dnsd's and not the scheduler's.
fn prioritise(pid: u32) {
    let tids: Vec<u32> = if pid == 0 {
        vec![0]
    } else {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for tid in tids {
        // SAFETY: setpriority only changes a nice value; failure leaves it as it was.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -15) };
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn a_flood_of_unanswered_forwards_and_idle_tcp_leaves_internal_names_fast_and_fds_capped() {
    let reg = TestRegistry::new();
    reg.org("acme");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    let ns = Netns::new("overload").unwrap();
    let hole = BlackHole::start_in(ns.name());
    let listen: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let metrics: SocketAddr = "127.0.0.1:9153".parse().unwrap();
    let d = Dnsd::start(
        Some(ns.name()),
        listen,
        &[
            "--registry",
            &reg.url(),
            "--default-org",
            "acme",
            "--upstream",
            &hole.addr.to_string(),
            // Long enough that every forward is still waiting when the load is measured.
            "--upstream-timeout",
            "5s",
            "--metrics",
            &metrics.to_string(),
            "--max-forwards",
            &MAX_FORWARDS.to_string(),
            // The flood comes from one source: let it reach the whole cap, which is what this
            // test checks (the per-source share has its own test in src/forward.rs).
            "--max-forwards-per-source",
            &MAX_FORWARDS.to_string(),
            "--max-tcp-connections",
            &MAX_TCP.to_string(),
        ],
    );
    let pid = d.proc.pid();
    prioritise(pid);
    let idle_fds = fds(pid);

    let (latencies, answered, tcp) = in_netns(ns.name(), move || {
        let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
        flood.connect(listen).unwrap();
        // Half the forwards at once, the other half between the measured queries.
        let mut sent = 0;
        let mut send_forwards = |n: usize| {
            for _ in 0..n {
                let name = format!("q{sent}.never.example");
                let _ = flood.send(&query(sent as u16, &name, 1));
                sent += 1;
            }
        };
        send_forwards(FORWARDS / 2);
        let mut tcp = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tcp.len() < TCP_CONNS && Instant::now() < deadline {
            if let Ok(c) = TcpStream::connect_timeout(&listen, Duration::from_secs(1)) {
                tcp.push(c);
            }
        }
        prioritise(0);
        let asker = UdpSocket::bind("127.0.0.1:0").unwrap();
        asker.connect(listen).unwrap();
        asker
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut latencies = Vec::new();
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        for i in 0..50u16 {
            send_forwards((FORWARDS / 2) / 50);
            let id = 0xa000 + i;
            let start = Instant::now();
            asker.send(&query(id, "web.internal", 28)).unwrap();
            loop {
                let Ok(n) = asker.recv(&mut buf) else {
                    latencies.push(Duration::from_secs(1));
                    break;
                };
                if n >= 12 && buf[0..2] == id.to_be_bytes() {
                    latencies.push(start.elapsed());
                    // NOERROR with one answer.
                    if buf[3] & 0xf == 0 && buf[6..8] == [0, 1] {
                        answered += 1;
                    }
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (latencies, answered, tcp)
    });
    let loaded_fds = fds(pid);
    let m = in_netns(ns.name(), move || Dnsd::metrics(metrics));
    drop(tcp);

    let mut sorted = latencies.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = *sorted.last().unwrap();
    eprintln!(
        "web.internal ({}) under load: median {median:?}, max {max:?}; dnsd fds {idle_fds} idle, {loaded_fds} loaded",
        web.addr
    );
    assert_eq!(answered, 50, "latencies {latencies:?}");
    assert!(median < Duration::from_millis(10), "median {median:?}");
    // On a 2-core machine shared with builds, the test's own thread is sometimes not
    // scheduled for tens of ms: 48 of 50 within 10 ms, and none beyond 50 ms.
    let p96 = sorted[sorted.len() - 3];
    assert!(
        p96 < Duration::from_millis(10),
        "48th of 50 {p96:?}: {latencies:?}"
    );
    assert!(
        max < Duration::from_millis(50),
        "max {max:?}: {latencies:?}"
    );
    let cap = MAX_FORWARDS + MAX_TCP + FD_RESERVE;
    assert!(
        loaded_fds <= cap,
        "dnsd holds {loaded_fds} descriptors, cap {cap}"
    );
    assert!(
        loaded_fds > idle_fds + MAX_FORWARDS / 2,
        "the load did not reach dnsd: {loaded_fds} fds"
    );
    assert!(
        metric(&m, "dnsd_forward_overload_total") >= (FORWARDS - MAX_FORWARDS) as u64 / 2,
        "{m}"
    );
    assert!(
        metric(&m, "dnsd_tcp_overload_total") >= (TCP_CONNS - MAX_TCP) as u64,
        "{m}"
    );
    assert!(metric(&m, "dnsd_tcp_connections") <= MAX_TCP as u64, "{m}");
    assert!(
        metric(&m, "dnsd_forwards_in_flight") <= MAX_FORWARDS as u64,
        "{m}"
    );
}
