//! The registry going away: meshd and dnsd keep serving the last snapshot, say in their
//! metrics and logs that they cannot reach it, and catch up once it is back. A real etcd,
//! killed with SIGKILL and restarted on its data dir and port; two meshd hosts in network
//! namespaces; dnsd on this namespace's loopback, asked with `dig`.

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sixpn_testkit::metrics::Scrape;
use sixpn_testkit::{free_port, Etcd, Proc};
use sixpn_tests::meshd_harness::{wait_address, wait_ping, Host, Mesh};
use sixpn_tests::{bin, ping_summary, sh, tempdir, unique, Underlay};

const SECS10: Duration = Duration::from_secs(10);
/// How long, after etcd answers again, everyone may take to show a change made then.
const CATCH_UP: Duration = Duration::from_secs(15);
/// What `registry::follow` logs when a read fails, and when reads work again.
const LOG_UNREACHABLE: &str = "registry unreachable; serving the last snapshot";
const LOG_REACHABLE: &str = "registry reachable";

/// A dnsd on 127.0.0.1 in the test's own namespace.
struct Dnsd {
    proc: Proc,
    port: u16,
    metrics: u16,
}

impl Dnsd {
    fn start(url: &str, dir: &tempdir::Dir) -> Result<Dnsd> {
        let port = free_port()?;
        let metrics = free_port()?;
        let mut cmd = Command::new(bin("dnsd"));
        cmd.args(["--registry", url])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--default-org", "acme"])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            // Nothing listens there: names outside `.internal` are not this test's business.
            .args(["--upstream", "127.0.0.1:9"]);
        let proc = Proc::spawn(cmd, &dir.path().join("dnsd.log"))?;
        Ok(Dnsd {
            proc,
            port,
            metrics,
        })
    }

    /// The AAAA records dnsd gives for `name`, sorted; an error if it does not answer.
    fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>> {
        let out = sh(&format!(
            "dig @127.0.0.1 -p {} +short +time=1 +tries=1 {name} AAAA",
            self.port
        ))?;
        let mut addrs = out
            .lines()
            .map(|l| {
                l.trim()
                    .parse()
                    .with_context(|| format!("dig said {out:?}"))
            })
            .collect::<Result<Vec<Ipv6Addr>>>()?;
        addrs.sort();
        Ok(addrs)
    }

    fn answers(&self, name: &str, addr: Ipv6Addr) -> bool {
        self.aaaa(name).is_ok_and(|a| a == [addr])
    }

    fn metric(&self, name: &str) -> Result<u64> {
        Scrape::from_here(([127, 0, 0, 1], self.metrics).into())?.value(name)
    }

    fn log(&self) -> String {
        self.proc.log()
    }
}

/// Waits until a registry on `etcd` answers a read.
fn etcd_ready(etcd: &Etcd) -> Result<()> {
    let reg = registry::open(&etcd.url("/ready"))?;
    etcd.wait_ready(|| reg.snapshot().map(drop))
}

/// Polls `done` every 50 ms until it holds; returns how long that took.
fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if done().unwrap_or(false) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_address(host: &Host, addr: Ipv6Addr) -> bool {
    host.ns
        .sh(&format!(
            "ip -6 addr show dev {} | grep -q ' {addr}/'",
            host.iface
        ))
        .is_ok()
}

fn meshd_reachable(host: &Host) -> Result<u64> {
    host.metric("meshd_registry_reachable ")
}

fn meshd_failures(host: &Host) -> Result<u64> {
    host.metric("meshd_registry_failures_total ")
}

/// Everything the failure messages need: both meshd logs, dnsd's and etcd's.
fn logs(a: &Host, b: &Host, dnsd: &Dnsd, etcd: &Etcd) -> String {
    format!(
        "--- meshd a ---\n{}\n--- meshd b ---\n{}\n--- dnsd ---\n{}\n{}",
        a.log(),
        b.log(),
        dnsd.log(),
        etcd.logs()
    )
}

#[test]
fn registry_outage_serves_the_last_snapshot_says_so_and_catches_up() -> Result<()> {
    let mut etcd = Etcd::launch(1, None, &[])?;
    etcd_ready(&etcd)?;
    let url = etcd.url(&format!("/{}", unique("ro")));
    let mut mesh = Mesh {
        underlay: Underlay::new()?,
        dir: tempdir::Dir::new()?,
        location: url.clone(),
        reg: registry::open(&url)?,
    };
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    let mut b = mesh.host("b", false)?;
    let _relay_a = etcd.reach_from(&a.ns)?;
    let _relay_b = etcd.reach_from(&b.ns)?;
    mesh.start(&mut a)?;
    mesh.start(&mut b)?;
    let (web, db) = mesh.web_and_db(&a, &b)?;
    let dnsd = Dnsd::start(&url, &mesh.dir)?;
    wait_until("dnsd to answer web and db", SECS10, || {
        Ok(dnsd.answers("web.internal", web.addr) && dnsd.answers("db.internal", db.addr))
    })
    .with_context(|| dnsd.log())?;
    ensure!(meshd_reachable(&a)? == 1 && meshd_reachable(&b)? == 1);
    ensure!(dnsd.metric("dnsd_registry_reachable")? == 1);
    let failures_at_kill = (meshd_failures(&a)?, meshd_failures(&b)?);

    // etcd dies.
    etcd.kill(0);
    let noticed = wait_until("meshd a, meshd b and dnsd to say so", SECS10, || {
        Ok(meshd_reachable(&a)? == 0
            && meshd_reachable(&b)? == 0
            && dnsd.metric("dnsd_registry_reachable")? == 0)
    })
    .with_context(|| logs(&a, &b, &dnsd, &etcd))?;
    let failures_noticed = (meshd_failures(&a)?, meshd_failures(&b)?);
    ensure!(
        mesh.reg.snapshot().is_err(),
        "the registry still answers the test: the outage is not real"
    );

    // Five seconds of pings across the mesh while dnsd is asked the old names.
    let mut ping = a.ns.spawn(
        "ping",
        &[
            "-6",
            "-c",
            "25",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            &web.addr.to_string(),
            &db.addr.to_string(),
        ],
    )?;
    let mut dns_asked = 0;
    while ping.running() {
        ensure!(
            dnsd.aaaa("web.internal")? == [web.addr] && dnsd.aaaa("db.internal")? == [db.addr],
            "dnsd forgot a name while etcd was down:\n{}",
            dnsd.log()
        );
        dns_asked += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sent, received) = ping_summary(&ping.log())?;
    ensure!(
        sent == 25 && received == sent,
        "pings during the outage: {received}/{sent}\n{}",
        logs(&a, &b, &dnsd, &etcd)
    );
    b.ns.sh(&format!(
        "ping -6 -c 3 -i 0.2 -W 1 -I {} {}",
        db.addr, web.addr
    ))
    .context("b → a during the outage")?;
    ensure!(has_address(&a, web.addr) && has_address(&b, db.addr));
    // Still unreachable, and the failures go on being counted while it is.
    ensure!(meshd_reachable(&a)? == 0 && meshd_reachable(&b)? == 0);
    ensure!(dnsd.metric("dnsd_registry_reachable")? == 0);
    let failures_later = (meshd_failures(&a)?, meshd_failures(&b)?);
    ensure!(
        failures_noticed.0 > failures_at_kill.0 && failures_later.0 > failures_noticed.0,
        "meshd a failures: {failures_at_kill:?} at the kill, {failures_noticed:?} when noticed, \
         {failures_later:?} 5 s later"
    );
    ensure!(
        failures_noticed.1 > failures_at_kill.1 && failures_later.1 > failures_noticed.1,
        "meshd b failures: {failures_at_kill:?} at the kill, {failures_noticed:?} when noticed, \
         {failures_later:?} 5 s later"
    );
    for (who, log) in [
        ("meshd a", a.log()),
        ("meshd b", b.log()),
        ("dnsd", dnsd.log()),
    ] {
        ensure!(
            log.contains(LOG_UNREACHABLE),
            "{who} did not log `{LOG_UNREACHABLE}`:\n{log}"
        );
    }

    // etcd comes back with its data; a machine added then shows up everywhere.
    let restarting = Instant::now();
    etcd.kill(0);
    etcd.start(0)?;
    etcd_ready(&etcd)?;
    let etcd_back = restarting.elapsed();
    let api = mesh.machine("acme", "api", &b)?;
    let added = Instant::now();
    let (mut dns_at, mut addr_at, mut up_at) = (None, None, None);
    wait_until(
        "dnsd, meshd b and the metrics to catch up",
        CATCH_UP,
        || {
            if dns_at.is_none() && dnsd.answers("api.internal", api.addr) {
                dns_at = Some(added.elapsed());
            }
            if addr_at.is_none() && has_address(&b, api.addr) {
                addr_at = Some(added.elapsed());
            }
            if up_at.is_none()
                && meshd_reachable(&a)? == 1
                && meshd_reachable(&b)? == 1
                && dnsd.metric("dnsd_registry_reachable")? == 1
            {
                up_at = Some(added.elapsed());
            }
            Ok(dns_at.is_some() && addr_at.is_some() && up_at.is_some())
        },
    )
    .with_context(|| {
        format!(
            "dnsd answered after {dns_at:?}, address on b after {addr_at:?}, all reachable \
             after {up_at:?}\n{}",
            logs(&a, &b, &dnsd, &etcd)
        )
    })?;
    ensure!(!has_address(&a, api.addr), "api's address is on a, not b");
    // What was written before the outage survived it.
    ensure!(dnsd.aaaa("web.internal")? == [web.addr] && dnsd.aaaa("db.internal")? == [db.addr]);
    wait_ping(&a.ns, Some(web.addr), api.addr, SECS10).context("web → api after catch-up")?;
    for (who, log) in [
        ("meshd a", a.log()),
        ("meshd b", b.log()),
        ("dnsd", dnsd.log()),
    ] {
        let down = log.find(LOG_UNREACHABLE).unwrap_or(0);
        ensure!(
            log[down..].contains(LOG_REACHABLE),
            "{who} did not log `{LOG_REACHABLE}` after the outage:\n{log}"
        );
    }
    eprintln!(
        "outage: noticed after {noticed:?}; {received}/{sent} pings and {dns_asked} rounds of \
         dig answered while down; meshd failures a {:?} b {:?} (kill → noticed → +5 s); \
         etcd answered {etcd_back:?} after restart; after the write: dnsd {dns_at:?}, \
         address {addr_at:?}, reachable {up_at:?}",
        (failures_at_kill.0, failures_noticed.0, failures_later.0),
        (failures_at_kill.1, failures_noticed.1, failures_later.1),
    );
    Ok(())
}

/// What meshd logs when it starts from its local copy, and when the registry, back, goes on
/// from the copy's history.
const LOG_FROM_COPY: &str = "peers and routes built from the local copy";
const LOG_COPY_CHECKED: &str = "its history goes on from the local copy's";

#[test]
fn meshd_restarted_while_the_registry_is_down_comes_up_from_its_local_copy() -> Result<()> {
    let mut etcd = Etcd::launch(1, None, &[])?;
    etcd_ready(&etcd)?;
    let url = etcd.url(&format!("/{}", unique("rc")));
    let mut mesh = Mesh {
        underlay: Underlay::new()?,
        dir: tempdir::Dir::new()?,
        location: url.clone(),
        reg: registry::open(&url)?,
    };
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    let mut b = mesh.host("b", false)?;
    let copy = mesh.dir.path().join("a.copy");
    a.extra_args = vec![
        "--registry-copy".into(),
        copy.to_string_lossy().into_owned(),
    ];
    let _relay_a = etcd.reach_from(&a.ns)?;
    let _relay_b = etcd.reach_from(&b.ns)?;
    mesh.start(&mut a)?;
    mesh.start(&mut b)?;
    let (web, db) = mesh.web_and_db(&a, &b)?;
    // The copy holds web: its base is written at start, web's change in its journal.
    let journal = copy.with_extension("copy.journal");
    wait_until("a's local copy to hold web", SECS10, || {
        Ok(std::fs::read_to_string(&journal)?.contains(&web.id.to_string()))
    })
    .with_context(|| a.log())?;
    let mode = std::fs::metadata(&copy)?.permissions();
    ensure!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077 == 0,
        "the copy is readable by others: {mode:?}"
    );

    // etcd dies, then a's meshd; it starts again with nothing to read but its copy.
    etcd.kill(0);
    ensure!(mesh.reg.snapshot().is_err(), "the registry still answers");
    a.meshd = None;
    mesh.start_without_registry(&mut a)?;
    wait_address(&a, web.addr).context("web's address from the copy")?;
    wait_ping(&a.ns, Some(web.addr), db.addr, SECS10)
        .with_context(|| format!("web → db from the copy:\n{}", logs_ab(&a, &b)))?;
    ensure!(a.log().contains(LOG_FROM_COPY), "{}", a.log());
    ensure!(
        meshd_reachable(&a)? == 0,
        "meshd a says the registry answers"
    );
    let from_copy = a.metric("meshd_registry_revision ")?;
    ensure!(
        from_copy > 0,
        "meshd a's revision after its restart: {from_copy}"
    );

    // etcd comes back: a checks its copy against it, then follows from the copy's revision.
    etcd.start(0)?;
    etcd_ready(&etcd)?;
    let api = mesh.machine("acme", "api", &a)?;
    wait_until("a to take api from the registry", CATCH_UP, || {
        Ok(has_address(&a, api.addr) && meshd_reachable(&a)? == 1)
    })
    .with_context(|| format!("{}\n{}", logs_ab(&a, &b), etcd.logs()))?;
    wait_ping(&b.ns, Some(db.addr), api.addr, SECS10).context("db → api")?;
    ensure!(a.metric("meshd_registry_revision ")? > from_copy);
    let log = a.log();
    ensure!(log.contains(LOG_COPY_CHECKED), "{log}");
    ensure!(
        !log.contains("registry read whole"),
        "a read the registry whole instead of following from its copy:\n{log}"
    );
    Ok(())
}

fn logs_ab(a: &Host, b: &Host) -> String {
    format!("--- meshd a ---\n{}\n--- meshd b ---\n{}", a.log(), b.log())
}
