//! Bad input from the network: garbage, truncated messages, data for indexes nobody holds,
//! forged counters, replays, handshake floods and initiations from keys nobody registered.
//! Each is dropped and counted under its own reason in `meshd_drops_total`, meshd keeps
//! running, and the machines behind it keep talking.
//!
//! The hostile datagrams come from a third namespace on the underlay, sent by a small
//! Python script (standard library only) at a bounded rate; real datagrams to replay are
//! captured with an AF_PACKET socket on host b as they leave for host a.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use registry::Machine;
use sixpn_testkit::metrics::Scrape;
use sixpn_tests::meshd_harness::{
    meshd_pubkey, wg_keypair, wireguard_go, Host, Mesh, METRICS_PORT, PORT,
};
use sixpn_tests::{ping_summary, Netns, Proc};

const SECS10: Duration = Duration::from_secs(10);
/// The drop reasons only a datagram from the network can cause.
const NETWORK_REASONS: [&str; 9] = [
    "malformed",
    "unknown_peer",
    "unknown_index",
    "invalid_mac",
    "replay",
    "decrypt",
    "under_load",
    "cookie_limited",
    "no_session",
];

/// Two meshd hosts with a machine each, and an attacker on the same underlay.
struct World {
    mesh: Mesh,
    a: Host,
    b: Host,
    web: Machine,
    db: Machine,
    attacker: Netns,
    script: String,
    /// Datagrams b sent a, one per message type asked for: `<type> <hex>` lines.
    capture: Option<String>,
}

/// Sets the world up; with `capture`, host b's first datagrams to a of those WireGuard
/// types (e.g. "1,4") are kept, watched for from before either meshd starts.
fn world(capture: Option<&str>) -> Result<World> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    let mut b = mesh.host("b", false)?;
    let (attacker, _) = mesh.underlay.host("hx")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/meshd_hostile.py").to_string();
    let mut capturing: Option<(Proc, String)> = None;
    if let Some(types) = capture {
        let file = mesh
            .dir
            .path()
            .join("capture")
            .to_string_lossy()
            .into_owned();
        let p = b.ns.spawn(
            "python3",
            &[
                &script,
                "capture",
                "eth0",
                &a.ip,
                &PORT.to_string(),
                &file,
                "20",
                types,
            ],
        )?;
        p.wait_log("capturing", SECS10)?;
        capturing = Some((p, file));
    }
    if capturing.is_some() {
        // a must already know b when b's first initiation (the one captured) arrives, or it
        // drops it, the session comes from a's own initiation, and a never holds a timestamp
        // of b's for the replay to be stale against. So b's node is in the registry before
        // a starts.
        mesh.apply(registry::Change::RegisterNode(registry::NodeSpec {
            name: b.node.clone(),
            region: "iad".into(),
            public_key: meshd_pubkey(&b.key)?.parse()?,
            endpoint: b.endpoint().parse()?,
            gateway: false,
        }))?;
    }
    mesh.start(&mut a)?;
    mesh.start(&mut b)?;
    let (web, db) = mesh.web_and_db(&a, &b)?;
    let capture = match capturing {
        None => None,
        Some((p, file)) => {
            p.wait_log("captured", Duration::from_secs(25))?;
            let text = std::fs::read_to_string(&file)?;
            let types: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
            let want: Vec<&str> = capture.unwrap_or("").split(',').collect();
            ensure!(
                types == want,
                "captured message types {types:?}, wanted {want:?}:\n{}",
                p.log()
            );
            Some(file)
        }
    };
    Ok(World {
        mesh,
        a,
        b,
        web,
        db,
        attacker,
        script,
        capture,
    })
}

/// Every `meshd_*` sample on host's metrics port, by name and labels.
fn scrape(host: &Host) -> Result<BTreeMap<String, u64>> {
    let addr = format!("127.0.0.1:{METRICS_PORT}");
    Ok(Scrape::from_netns(&host.ns, &addr)?.samples("meshd_"))
}

fn drops(m: &BTreeMap<String, u64>, reason: &str) -> u64 {
    m.get(&format!("meshd_drops_total{{reason=\"{reason}\"}}"))
        .copied()
        .unwrap_or(0)
}

fn udp_rx(m: &BTreeMap<String, u64>) -> u64 {
    m.get("meshd_udp_packets_total{direction=\"rx\"}")
        .copied()
        .unwrap_or(0)
}

/// How much each network drop reason rose between two scrapes (zeros left out).
fn drop_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<&'static str, u64> {
    NETWORK_REASONS
        .iter()
        .map(|r| (*r, drops(after, r) - drops(before, r)))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// Scrapes until meshd has taken in everything queued (received datagrams stop rising).
fn settle(host: &Host) -> Result<BTreeMap<String, u64>> {
    let start = Instant::now();
    let mut last = scrape(host)?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = scrape(host)?;
        if udp_rx(&now) == udp_rx(&last) {
            return Ok(now);
        }
        if start.elapsed() > SECS10 {
            bail!(
                "meshd on {} was still taking datagrams in after {SECS10:?}",
                host.node
            );
        }
        last = now;
    }
}

/// What the script reported: `sent`, `replies`, `reply_type_<t>`, and `seconds` (kept in
/// milliseconds).
struct Sent(BTreeMap<String, u64>);

impl Sent {
    fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

impl World {
    /// Sends one kind of hostile traffic to host a's WireGuard port, `rate` a second at most.
    fn attack(&self, rate: u32, kind: &[&str]) -> Result<Sent> {
        let out = self.attacker.sh(&format!(
            "python3 {} send {} {PORT} {rate} {}",
            self.script,
            self.a.ip,
            kind.join(" ")
        ))?;
        let mut m = BTreeMap::new();
        for line in out.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let v = match k {
                "seconds" => (v.parse::<f64>()? * 1000.0) as u64,
                _ => v.parse()?,
            };
            m.insert(k.to_string(), v);
        }
        ensure!(m.contains_key("sent"), "the sender said:\n{out}");
        Ok(Sent(m))
    }

    /// The session still carries traffic both ways, with nothing lost.
    fn traffic_flows(&self) -> Result<()> {
        for (host, from, to) in [
            (&self.a, &self.web, &self.db),
            (&self.b, &self.db, &self.web),
        ] {
            host.ns
                .sh(&format!(
                    "ping -6 -c 3 -i 0.2 -W 2 -I {} {}",
                    from.addr, to.addr
                ))
                .with_context(|| format!("ping from {}:\n{}", host.node, host.log()))?;
        }
        Ok(())
    }

    /// meshd on a is alive and has not panicked or logged per packet.
    fn a_unharmed(&mut self, log_lines_before: usize) -> Result<()> {
        let log = self.a.log();
        let running = self.a.meshd.as_mut().is_some_and(|p| p.running());
        ensure!(running, "meshd on a exited:\n{log}");
        ensure!(!log.contains("panicked"), "meshd on a panicked:\n{log}");
        let new_lines = log.lines().count() - log_lines_before;
        ensure!(
            new_lines <= 5,
            "meshd on a logged {new_lines} lines under attack (at info, per packet?):\n{log}"
        );
        Ok(())
    }

    fn log_lines(&self) -> usize {
        self.a.log().lines().count()
    }
}

/// Checks that drops of `reason` rose by what was `sent` (less what the kernel may have
/// lost on the way: at most 2%) and no other network reason rose; returns the rise.
fn only_reason(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    reason: &str,
    sent: u64,
) -> Result<u64> {
    let deltas = drop_deltas(before, after);
    let got = deltas.get(reason).copied().unwrap_or(0);
    let received = udp_rx(after) - udp_rx(before);
    ensure!(
        got <= sent && got * 100 >= sent * 98,
        "sent {sent} that should count as {reason}; drops rose by {deltas:?} \
         ({received} datagrams received)"
    );
    ensure!(
        deltas.len() == 1,
        "other reasons rose too: {deltas:?} ({sent} sent, all {reason})"
    );
    Ok(got)
}

#[test]
fn garbage_and_truncated_messages_are_counted_as_malformed() -> Result<()> {
    let mut w = world(None)?;
    let lines = w.log_lines();
    let before = settle(&w.a)?;
    let garbage = w.attack(20_000, &["garbage", "6000"])?;
    let mid = settle(&w.a)?;
    let counted = only_reason(&before, &mid, "malformed", garbage.get("sent"))?;
    let truncated = w.attack(20_000, &["truncated"])?;
    let after = settle(&w.a)?;
    let counted_t = only_reason(&mid, &after, "malformed", truncated.get("sent"))?;
    ensure!(
        garbage.get("replies") + truncated.get("replies") == 0,
        "meshd answered garbage"
    );
    w.traffic_flows()?;
    w.a_unharmed(lines)?;
    eprintln!(
        "garbage: {counted}/{} malformed; truncated: {counted_t}/{} malformed",
        garbage.get("sent"),
        truncated.get("sent")
    );
    Ok(())
}

/// The kernel's count of UDP datagrams delivered to sockets in `ns` (`InDatagrams`).
fn kernel_udp_in(ns: &Netns) -> Result<u64> {
    let snmp = ns.sh("cat /proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next(), udp.next());
    let (names, values) = names
        .zip(values)
        .context("no Udp lines in /proc/net/snmp")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "InDatagrams").then(|| v.parse().ok()).flatten())
        .with_context(|| format!("no InDatagrams in:\n{names}\n{values}"))
}

#[test]
fn empty_datagrams_are_counted_as_malformed() -> Result<()> {
    let mut w = world(None)?;
    let lines = w.log_lines();
    let before = settle(&w.a)?;
    let kernel_before = kernel_udp_in(&w.a.ns)?;
    let empty = w.attack(5_000, &["empty", "500"])?;
    let after = settle(&w.a)?;
    let delivered = kernel_udp_in(&w.a.ns)? - kernel_before;
    ensure!(
        delivered >= 500,
        "the kernel delivered only {delivered} datagrams to a's sockets"
    );
    let received = udp_rx(&after) - udp_rx(&before);
    ensure!(
        received >= 500,
        "the kernel delivered {delivered} datagrams (500 of them empty), meshd counted \
         {received} received"
    );
    only_reason(&before, &after, "malformed", empty.get("sent"))?;
    w.traffic_flows()?;
    w.a_unharmed(lines)?;
    Ok(())
}

/// The receiver index of the data message in the capture.
fn live_index(capture: &str) -> Result<u32> {
    let text = std::fs::read_to_string(capture)?;
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("4 "))
        .context("no data message captured")?;
    let byte = |i: usize| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16);
    Ok(u32::from_le_bytes([byte(4)?, byte(5)?, byte(6)?, byte(7)?]))
}

#[test]
fn unknown_indexes_and_forged_counters_are_dropped_and_the_session_carries_on() -> Result<()> {
    let mut w = world(Some("4"))?;
    let capture = w.capture.clone().context("no capture")?;
    let live = live_index(&capture)?;
    let lines = w.log_lines();
    let before = settle(&w.a)?;
    let a_key = meshd_pubkey(&w.a.key)?;
    let unknown = w.attack(
        20_000,
        &["unknown-index", "3000", &live.to_string(), &a_key],
    )?;
    let mid = settle(&w.a)?;
    let counted_u = only_reason(&before, &mid, "unknown_index", unknown.get("sent"))?;
    // The live index with counters a million ahead: if they moved the replay window before
    // failing to authenticate, the real counters after them would be refused as replays.
    let forged = w.attack(5_000, &["forged-counter", "2000", &capture])?;
    let after = settle(&w.a)?;
    let counted_f = only_reason(&mid, &after, "decrypt", forged.get("sent"))?;
    w.traffic_flows()?;
    let last = settle(&w.a)?;
    ensure!(
        drop_deltas(&after, &last).is_empty(),
        "real traffic after the forgeries was dropped: {:?}",
        drop_deltas(&after, &last)
    );
    w.a_unharmed(lines)?;
    eprintln!(
        "unknown indexes: {counted_u}/{} unknown_index; forged counters on index {live:#x}: \
         {counted_f}/{} decrypt",
        unknown.get("sent"),
        forged.get("sent")
    );
    Ok(())
}

#[test]
fn replayed_datagrams_are_counted_and_do_not_move_the_peer() -> Result<()> {
    let mut w = world(Some("1,4"))?;
    let capture = w.capture.clone().context("no capture")?;
    let lines = w.log_lines();
    let before = settle(&w.a)?;
    // b's handshake initiation and one of its data messages, ten times each, from the
    // attacker's address.
    let replayed = w.attack(1_000, &["replay", &capture, "10"])?;
    let after = settle(&w.a)?;
    let deltas = drop_deltas(&before, &after);
    ensure!(
        replayed.get("sent") == 20 && deltas.get("replay") == Some(&10),
        "10 replayed data messages: drops rose by {deltas:?}"
    );
    ensure!(
        deltas.get("decrypt") == Some(&10) && deltas.len() == 2,
        "10 replayed initiations (a stale timestamp): drops rose by {deltas:?}"
    );
    let handshakes = |m: &BTreeMap<String, u64>| m.get("meshd_handshakes_total").copied();
    ensure!(
        handshakes(&after) == handshakes(&before),
        "a replay completed a handshake step"
    );
    ensure!(
        replayed.get("replies") == 0,
        "meshd answered a replay ({} replies)",
        replayed.get("replies")
    );
    // a still sends to b where b is, not to the attacker.
    let b_key = meshd_pubkey(&w.b.key)?;
    let endpoints = w.a.ns.sh(&format!("wg show {} endpoints", w.a.iface))?;
    let want = format!("{b_key}\t{}", w.b.endpoint());
    ensure!(
        endpoints.lines().any(|l| l == want),
        "b's endpoint on a moved: {endpoints}"
    );
    w.traffic_flows()?;
    w.a_unharmed(lines)?;
    eprintln!("replays: 10 data messages and 10 initiations → {deltas:?}");
    Ok(())
}

#[test]
fn handshake_floods_are_counted_and_answered_with_cookies_under_load() -> Result<()> {
    let mut w = world(None)?;
    let lines = w.log_lines();
    let a_key = meshd_pubkey(&w.a.key)?;
    let before = settle(&w.a)?;
    // Pings all through both floods (about 9 s).
    let mut ping = w.a.ns.spawn(
        "ping",
        &[
            "-6",
            "-c",
            "45",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            &w.web.addr.to_string(),
            &w.db.addr.to_string(),
        ],
    )?;
    let bad = w.attack(10_000, &["bad-mac-init", "20000"])?;
    let mid = settle(&w.a)?;
    let counted_bad = only_reason(&before, &mid, "invalid_mac", bad.get("sent"))?;
    // Initiations with the right mac1 for a's key but random contents: meshd does the
    // Diffie-Hellman for 100 a second, then asks for cookies.
    let valid = w.attack(1_000, &["valid-mac-init", "4000", &a_key])?;
    let after = settle(&w.a)?;
    let deltas = drop_deltas(&mid, &after);
    let decrypt = deltas.get("decrypt").copied().unwrap_or(0);
    let under_load = deltas.get("under_load").copied().unwrap_or(0);
    let limited = deltas.get("cookie_limited").copied().unwrap_or(0);
    let sent = valid.get("sent");
    let secs = valid.get("seconds") as f64 / 1000.0;
    ensure!(
        deltas.len() == 3 && (decrypt + under_load + limited) * 100 >= sent * 98,
        "{sent} valid-MAC initiations in {secs:.1} s: drops rose by {deltas:?}"
    );
    // One source gets at most 10 cookie replies a second and a burst of 20; the rest of its
    // initiations under load are dropped without one.
    let budget = (10.0 * (secs + 1.0) + 20.0) as u64;
    ensure!(
        under_load >= 20 && under_load <= budget,
        "{under_load} cookie replies to one source in {secs:.1} s (at most {budget})"
    );
    // 100 a second pass the limiter (reset every 1-1.25 s), plus two seconds' worth of
    // slack.
    let most = (100.0 * (secs + 2.0)) as u64;
    ensure!(
        decrypt >= 100 && decrypt <= most,
        "{decrypt} initiations got past the limiter in {secs:.1} s (at most {most})"
    );
    let cookies = valid.get("reply_type_3");
    ensure!(
        cookies == valid.get("replies")
            && cookies * 100 >= under_load * 98
            && cookies <= under_load,
        "{under_load} initiations under load, {cookies} cookie replies ({} replies in all)",
        valid.get("replies")
    );
    while ping.running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (psent, preceived) = ping_summary(&ping.log())?;
    ensure!(
        psent == 45 && preceived * 10 >= psent * 9,
        "pings during the floods: {preceived}/{psent}"
    );
    w.traffic_flows()?;
    w.a_unharmed(lines)?;
    eprintln!(
        "floods: {counted_bad}/{} bad-MAC initiations in {:.1} s → invalid_mac; {sent} valid-MAC \
         initiations in {secs:.1} s → {decrypt} decrypt, {under_load} under_load, {limited} \
         cookie_limited, {cookies} cookie replies; pings {preceived}/{psent}",
        bad.get("sent"),
        bad.get("seconds") as f64 / 1000.0,
    );
    Ok(())
}

#[test]
fn initiations_from_an_unregistered_key_are_counted_as_unknown_peer() -> Result<()> {
    let mut w = world(None)?;
    let lines = w.log_lines();
    let a_key = meshd_pubkey(&w.a.key)?;
    let before = settle(&w.a)?;
    // Stock wireguard-go with a key the registry has never heard of, pointed at a.
    let iface = sixpn_tests::unique("hw");
    let _wg = wireguard_go(&w.attacker, &iface)?;
    let (private, _) = wg_keypair()?;
    let key_file = w.mesh.dir.path().join("stranger.key");
    std::fs::write(&key_file, &private)?;
    w.attacker.sh(&format!(
        "wg set {iface} private-key {} peer {a_key} endpoint {} allowed-ips fd99::/64 && \
         ip -6 addr add fd99::1/64 dev {iface} && ip link set {iface} up",
        key_file.display(),
        w.a.endpoint()
    ))?;
    // Its first packet starts a handshake; it retries every 5 s while nobody answers.
    let _ = w.attacker.output("ping -6 -c 1 -W 1 fd99::2");
    let start = Instant::now();
    loop {
        let now = scrape(&w.a)?;
        if drops(&now, "unknown_peer") - drops(&before, "unknown_peer") >= 2 {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!(
                "wireguard-go's initiations were not counted as unknown_peer: {:?}",
                drop_deltas(&before, &now)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Down, it sends no more; its count of bytes sent stays readable.
    w.attacker.sh(&format!("ip link set {iface} down"))?;
    let transfer = w.attacker.sh(&format!("wg show {iface} transfer"))?;
    let (rx, tx) = transfer
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .and_then(|v| Some((*v.first()?, *v.get(1)?)))
        .with_context(|| format!("wg show transfer said {transfer:?}"))?;
    let after = settle(&w.a)?;
    let deltas = drop_deltas(&before, &after);
    // Every initiation it sent (148 bytes each) was counted, and none was answered: no
    // response, no cookie.
    ensure!(
        tx % 148 == 0 && deltas.get("unknown_peer") == Some(&(tx / 148)) && deltas.len() == 1,
        "wireguard-go sent {tx} bytes of initiations; drops rose by {deltas:?}"
    );
    ensure!(rx == 0, "meshd answered an unregistered key ({rx} bytes)");
    w.traffic_flows()?;
    w.a_unharmed(lines)?;
    eprintln!("unregistered wireguard-go: sent {tx} bytes, drops {deltas:?}");
    Ok(())
}
