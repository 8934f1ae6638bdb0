//! WireGuard over WebSockets (flyctl's framing): a gateway meshd with `--websocket-listen`,
//! laptops whose network drops UDP to it, and hostile clients on its WebSocket port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sixpn_testkit::metrics::Scrape;
use sixpn_tests::meshd_harness::{Host, Mesh};
use sixpn_tests::site_harness::{logs, machine, peer_up, reaches, request, serve, wg_peer, wgtool};
use sixpn_tests::{bin, unique, Netns, Proc};

const SECS15: Duration = Duration::from_secs(15);
const NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/// A gateway listening for WebSockets on 443 (`extra`: more meshd flags), a host with a
/// machine of app web, and web's address.
fn gateway_and_web(extra: &[&str]) -> Result<(Mesh, Host, Host, registry::Machine)> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut gw = mesh.host("gw", true)?;
    gw.extra_args = ["--websocket-listen", "[::]:443"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;
    gw.ns.wait_for("ss -ltn | grep -q ':443 '", SECS15)?;
    let web = machine(&mesh, "acme", &b)?;
    Ok((mesh, gw, b, web))
}

/// Drops UDP between `ns` and the gateway at `gw_ip`, both ways (nftables).
fn block_udp(ns: &Netns, gw_ip: &str) -> Result<()> {
    ns.sh(&format!(
        "nft add table inet wsblock && \
         nft add chain inet wsblock out '{{ type filter hook output priority 0; }}' && \
         nft add chain inet wsblock in '{{ type filter hook input priority 0; }}' && \
         nft add rule inet wsblock out ip daddr {gw_ip} udp dport 51820 drop && \
         nft add rule inet wsblock in ip saddr {gw_ip} udp sport 51820 drop"
    ))?;
    Ok(())
}

/// A tunnel file from `wgtool create` and a state directory, both where uid 65534 can use
/// them (and only it).
fn laptop_files(mesh: &mut Mesh, name: &str) -> Result<(PathBuf, PathBuf)> {
    let conf = mesh.dir.path().join(format!("{}.conf", unique("lt")));
    wgtool(mesh, &format!("create acme iad {name} {}", conf.display()))?;
    let dir = std::env::temp_dir().join(unique("wsl"));
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let file = dir.join("tunnel.conf");
    std::fs::copy(&conf, &file)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(&file, Some(65534), Some(65534))?;
    std::os::unix::fs::chown(dir.join("state"), Some(65534), Some(65534))?;
    Ok((file, dir.join("state")))
}

/// `wgtool ARGS` in `ns` as uid 65534 with `state` as its state directory: (exit code,
/// stdout, stderr).
fn wgtool_as_nobody(ns: &Netns, state: &Path, args: &str) -> Result<(i32, String, String)> {
    let out = ns.output(&format!(
        "SIXPN_STATE_DIR={} {NOBODY} {} {args}",
        state.display(),
        bin("wgtool").display()
    ))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn sha256(path: &Path) -> Result<String> {
    Ok(sixpn_tests::sh(&format!("sha256sum {}", path.display()))?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// The gateway's WebSocket certificate fingerprint, from its metrics.
fn gateway_fingerprint(gw: &Host) -> Result<String> {
    let addr = format!("127.0.0.1:{}", sixpn_tests::meshd_harness::METRICS_PORT);
    let scrape = Scrape::from_netns(&gw.ns, &addr)?;
    scrape
        .text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("meshd_websocket_certificate_info{sha256=\"")?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .context("no meshd_websocket_certificate_info")
}

#[test]
fn a_laptop_whose_network_drops_udp_falls_back_to_websocket_and_digs_and_proxies() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web(&[])?;
    let _web_srv = serve(&b.ns, 8080, "hello-from-web")?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let (conf, state) = laptop_files(&mut mesh, "lap-ws")?;
    let (lap, _) = mesh.underlay.host("lw")?;
    block_udp(&lap, &gw.ip)?;
    let c = conf.display().to_string();

    // A pin that is not the gateway's: refused, and nothing is kept.
    let wrong = "00".repeat(32);
    let (code, _, err) = wgtool_as_nobody(
        &lap,
        &state,
        &format!(
            "dig --config {c} --transport websocket --websocket-fingerprint {wrong} web.internal"
        ),
    )?;
    ensure!(
        code != 0 && err.contains("fingerprint"),
        "a wrong pin: {code} {err}"
    );

    // --transport auto (the default): UDP gets 4 s, then the WebSocket; the whole dig well
    // within 10 s of the fallback (dnsd may still be starting: retry).
    let start = Instant::now();
    let (short, err) = loop {
        let attempt = Instant::now();
        let (code, out, err) = wgtool_as_nobody(
            &lap,
            &state,
            &format!("dig --config {c} AAAA web.internal --short"),
        )?;
        if code == 0 && !out.trim().is_empty() {
            ensure!(
                attempt.elapsed() < Duration::from_secs(10),
                "fell back and answered in {:?}:\n{err}",
                attempt.elapsed()
            );
            break (out, err);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(40),
            "dig failed ({code}): {out}{err}\n{}",
            logs(&[&gw, &b])
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(short.trim() == web.addr.to_string(), "dig --short: {short}");
    ensure!(
        err.contains("no handshake over UDP") && err.contains("tunnel up over wss://"),
        "no fallback said: {err}"
    );
    // Trust on first use: the gateway's fingerprint is kept for it.
    let pins = std::fs::read_to_string(state.join("websocket-pins"))?;
    let fp = gateway_fingerprint(&gw)?;
    ensure!(
        pins.trim() == format!("{}:443 {fp}", gw.ip),
        "pins: {pins:?}, gateway: {fp}"
    );
    let (code, out, err) = wgtool_as_nobody(
        &lap,
        &state,
        &format!("dig --config {c} TXT _apps.internal"),
    )?;
    ensure!(code == 0 && out.contains("web"), "dig TXT: {out}{err}");

    // 1 MB byte-exact through `wgtool proxy` on the WebSocket.
    let file = mesh.dir.path().join("one-mb");
    sixpn_tests::sh(&format!(
        "head -c 1048576 /dev/urandom > {}",
        file.display()
    ))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let want = sha256(&file)?;
    let _file_srv = b.ns.spawn(
        "socat",
        &[
            "-t",
            "30",
            &format!(
                "TCP6-LISTEN:8090,bind=[{}],reuseaddr,fork,backlog=64",
                web.addr
            ),
            &format!("SYSTEM:cat {}", file.display()),
        ],
    )?;
    b.ns.wait_for("ss -ltn | grep -q ':8090 '", SECS15)?;
    let cmd = format!(
        "SIXPN_STATE_DIR={} exec {NOBODY} {} proxy -v --config {c} 0 web.internal:8090",
        state.display(),
        bin("wgtool").display(),
    );
    let p = lap.spawn("sh", &["-c", &cmd])?;
    let log = p.wait_log("listening on 127.0.0.1:", Duration::from_secs(20))?;
    let port: u16 = log
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no port")?
        .parse()?;
    let got = lap.sh(&format!(
        "{NOBODY} socat -u -T 10 TCP4:127.0.0.1:{port} - | sha256sum"
    ))?;
    ensure!(
        got.starts_with(&want),
        "1 MB through the proxy over WebSocket: {got} != {want}\n{}",
        p.log()
    );
    ensure!(p.log().contains("tunnel up over wss://"), "{}", p.log());

    // The gateway saw it all on the WebSocket transport.
    let rx =
        gw.metric("meshd_transport_datagrams_total{transport=\"websocket\",direction=\"rx\"}")?;
    let tx =
        gw.metric("meshd_transport_datagrams_total{transport=\"websocket\",direction=\"tx\"}")?;
    ensure!(rx > 20 && tx > 700, "websocket datagrams rx {rx} tx {tx}");
    ensure!(gw.metric("meshd_peers_on_websocket")? >= 1);
    ensure!(gw.metric("meshd_websocket_connections")? >= 1);
    Ok(())
}

#[test]
fn a_wireguard_go_laptop_reaches_web_internal_by_name_through_wsproxy_when_udp_is_dropped(
) -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web(&[])?;
    let _web_srv = serve(&b.ns, 8080, "hello-from-web")?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let (ns, _) = mesh.underlay.host("lx")?;
    block_udp(&ns, &gw.ip)?;
    let conf = mesh.dir.path().join(format!("{}.conf", unique("wx")));
    let conf_s = conf.display().to_string();
    wgtool(&mesh, &format!("create acme iad lap-wsproxy {conf_s}"))?;
    let state = mesh.dir.path().join("wsproxy-state");
    let fp = gateway_fingerprint(&gw)?;
    let cmd = format!(
        "SIXPN_STATE_DIR={} exec {} wsproxy --config {conf_s} --websocket-fingerprint {fp}",
        state.display(),
        bin("wgtool").display()
    );
    let proxy = ns.spawn("sh", &["-c", &cmd])?;
    let log = proxy.wait_log("Endpoint = ", SECS15)?;
    let endpoint = log
        .lines()
        .find_map(|l| l.strip_prefix("Endpoint = "))
        .context("no Endpoint line")?
        .trim()
        .to_string();
    ensure!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    // The tunnel file with its Endpoint pointed at wsproxy, up on stock wireguard-go.
    let text = std::fs::read_to_string(&conf)?;
    let local: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Endpoint") {
                format!("Endpoint = {endpoint}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let local_conf = mesh.dir.path().join(format!("{}.conf", unique("wl")));
    std::fs::write(&local_conf, local)?;
    let peer = peer_up(ns, &unique("wg"), &local_conf.display().to_string())?;
    let page = reaches(
        &peer.ns,
        None,
        &web.addr.to_string(),
        8080,
        "hello-from-web",
    );
    ensure!(
        page.is_ok(),
        "no page over wsproxy: {page:?}\nwsproxy: {}\n{}",
        proxy.log(),
        logs(&[&gw, &b])
    );
    // By name: the org's DNS through the tunnel (as wg-quick's DNS line would set it up),
    // with dig, then the system resolver (getent) and curl.
    let dns = text
        .lines()
        .find_map(|l| l.strip_prefix("DNS = ").map(|v| v.trim().to_string()))
        .context("DNS line")?;
    let aaaa = peer
        .ns
        .wait_for(
            &format!("dig @{dns} +time=2 +tries=1 +short web.internal AAAA | grep ."),
            SECS15,
        )
        .with_context(|| format!("wsproxy: {}", proxy.log()))?;
    ensure!(
        aaaa.trim() == web.addr.to_string(),
        "dig web.internal AAAA through wsproxy: {aaaa}"
    );
    peer.ns.set_resolv_conf(&format!("nameserver {dns}\n"))?;
    let hosts = peer.ns.sh("getent ahostsv6 web.internal")?;
    ensure!(
        hosts.contains(&web.addr.to_string()),
        "getent web.internal: {hosts}"
    );
    let page = peer
        .ns
        .sh("curl -sS --http0.9 --max-time 5 http://web.internal:8080/")?;
    ensure!(
        page.trim() == "hello-from-web",
        "curl web.internal: {page:?}"
    );
    ensure!(
        gw.metric("meshd_transport_datagrams_total{transport=\"websocket\",direction=\"rx\"}")? > 0
    );
    ensure!(
        gw.metric("meshd_transport_datagrams_total{transport=\"udp\",direction=\"rx\"}")? > 0,
        "the mesh itself stays on UDP"
    );
    Ok(())
}

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn meshd_pid(gw: &Host) -> Result<u32> {
    let p: &Proc = gw.meshd.as_ref().context("gateway not started")?;
    Ok(p.pid())
}

#[test]
fn hostile_websocket_clients_are_closed_and_counted_while_udp_peers_are_served() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web(&[
        "--websocket-max-connections",
        "300",
        "--websocket-handshake-timeout",
        "3s",
    ])?;
    let _web_srv = serve(&b.ns, 8080, "hello-from-web")?;
    let wg = wg_peer(&mut mesh, "acme", "lap-udp", &[])?;
    wg.ns
        .wait_for(&format!("ping -6 -c 1 -W 1 {}", web.addr), SECS15)?;
    let (client, _) = mesh.underlay.host("hc")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("websocket_hostile.py");
    let script = script.display();
    let rss_before = rss_kb(meshd_pid(&gw)?)?;

    // Each bad stream closes its connection, with its reason counted.
    let out = client.sh(&format!("python3 {script} {} 443 frames", gw.ip))?;
    for case in [
        "bad_magic",
        "empty_frame",
        "frame_too_long",
        "truncated",
        "bad_message",
    ] {
        ensure!(
            out.lines().any(|l| l == format!("{case} closed")),
            "{case} not closed:\n{out}\n{}",
            gw.log()
        );
        let n = gw.metric(&format!(
            "meshd_websocket_closed_total{{reason=\"{case}\"}}"
        ))?;
        ensure!(n == 1, "{case} counted {n} times");
    }

    // 1,000 idle connections: at most 300 (the limit) are held, each until its handshake
    // timeout, the others refused at once; all closed and counted. The UDP laptop is served meanwhile.
    let flood = client.spawn(
        "sh",
        &[
            "-c",
            &format!(
                "ulimit -n 4096; exec python3 {script} {} 443 idle 1000 8",
                gw.ip
            ),
        ],
    )?;
    flood.wait_log("opened", SECS15)?;
    std::thread::sleep(Duration::from_millis(500));
    let open = gw.metric("meshd_websocket_connections")?;
    ensure!(open <= 300, "{open} connections open over the limit");
    let rss_flood = rss_kb(meshd_pid(&gw)?)?;
    let page = request(&wg.ns, None, &web.addr.to_string(), 8080);
    ensure!(
        page.trim() == "hello-from-web",
        "UDP laptop during the flood: {page:?}"
    );
    flood.wait_log("closed ", SECS15)?;
    let refused = gw.metric("meshd_websocket_connections_total{result=\"refused\"}")?;
    let timed_out = gw.metric("meshd_websocket_closed_total{reason=\"handshake_timeout\"}")?;
    ensure!(
        refused > 0 && refused + timed_out >= 1000,
        "refused {refused}, handshake timeouts {timed_out}\n{}",
        flood.log()
    );
    let line = flood.log();
    let closed: u64 = line
        .lines()
        .find_map(|l| l.strip_prefix("closed "))
        .and_then(|v| v.trim().parse().ok())
        .context("no count")?;
    ensure!(
        closed >= 990,
        "the gateway closed only {closed} of 1000:\n{line}"
    );
    ensure!(gw.metric("meshd_websocket_connections")? == 0);
    let rss_after = rss_kb(meshd_pid(&gw)?)?;
    eprintln!(
        "meshd RSS: {rss_before} kB before, {rss_flood} kB with 300 idle connections, {rss_after} kB after"
    );
    ensure!(
        rss_flood < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_flood} kB"
    );
    let page = request(&wg.ns, None, &web.addr.to_string(), 8080);
    ensure!(
        page.trim() == "hello-from-web",
        "UDP laptop after: {page:?}"
    );
    Ok(())
}

/// A 1 MB random file served over HTTP from web's address on `port` (python's threading
/// http.server); its sha256.
fn serve_one_mb(
    mesh: &Mesh,
    b: &Host,
    web: &registry::Machine,
    port: u16,
) -> Result<(Proc, String)> {
    let dir = mesh.dir.path().join(unique("www"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("one-mb");
    sixpn_tests::sh(&format!(
        "head -c 1048576 /dev/urandom > {}",
        file.display()
    ))?;
    let want = sha256(&file)?;
    let srv = b.ns.spawn(
        "python3",
        &[
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            &web.addr.to_string(),
            "--directory",
            &dir.display().to_string(),
        ],
    )?;
    b.ns.wait_for(&format!("ss -ltn | grep -q ':{port} '"), SECS15)?;
    Ok((srv, want))
}

#[test]
fn with_udp_dropped_ping_gets_three_replies_and_ten_curls_through_one_proxy_are_byte_exact(
) -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web(&[])?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let (conf, state) = laptop_files(&mut mesh, "lap-wsping")?;
    let (lap, _) = mesh.underlay.host("lw")?;
    block_udp(&lap, &gw.ip)?;
    let c = conf.display().to_string();

    // UDP really is dropped: over UDP alone there is no handshake.
    let (code, out, err) = wgtool_as_nobody(
        &lap,
        &state,
        &format!("ping --config {c} --transport udp gateway -c 1"),
    )?;
    ensure!(
        code == 1 && err.contains("no WireGuard handshake"),
        "ping over UDP with UDP dropped: {code} {out}{err}"
    );

    // `ping gateway`: the org's address on the gateway answers, over the WebSocket
    // (--transport auto falls back after 4 s).
    let (code, out, err) = wgtool_as_nobody(
        &lap,
        &state,
        &format!("ping --config {c} gateway -c 2 -i 0.2"),
    )?;
    ensure!(
        code == 0,
        "ping gateway failed ({code}): {out}{err}\n{}",
        gw.log()
    );
    ensure!(
        err.contains("tunnel up over wss://"),
        "ping gateway did not go over the WebSocket: {err}"
    );
    let dns = std::fs::read_to_string(&conf)?
        .lines()
        .find_map(|l| l.strip_prefix("DNS = ").map(|v| v.trim().to_string()))
        .context("DNS line")?;
    ensure!(
        out.starts_with(&format!("PING gateway ({dns})"))
            && out.contains(&format!("bytes from {dns}: ")),
        "ping gateway: {out}"
    );
    ensure!(
        sixpn_tests::ping_summary(&out)? == (2, 2),
        "ping gateway: {out}"
    );

    // ping web.internal -c 3: three replies from web (dnsd may still be starting: retry).
    let start = Instant::now();
    let out = loop {
        let (code, out, err) = wgtool_as_nobody(
            &lap,
            &state,
            &format!("ping --config {c} web.internal -c 3 -i 0.2"),
        )?;
        if code == 0 {
            ensure!(err.contains("tunnel up over wss://"), "{err}");
            break out;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(40),
            "ping web.internal failed ({code}): {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(
        sixpn_tests::ping_summary(&out)? == (3, 3),
        "ping web.internal: {out}"
    );
    ensure!(
        out.matches(&format!("bytes from {}: ", web.addr)).count() == 3,
        "ping web.internal: {out}"
    );

    // Ten curls at once through one proxy on the WebSocket, each 1 MB byte-exact.
    let (_srv, want) = serve_one_mb(&mesh, &b, &web, 8090)?;
    let cmd = format!(
        "SIXPN_STATE_DIR={} exec {NOBODY} {} proxy -v --config {c} 0 web.internal:8090",
        state.display(),
        bin("wgtool").display(),
    );
    let p = lap.spawn("sh", &["-c", &cmd])?;
    let log = p.wait_log("listening on 127.0.0.1:", Duration::from_secs(20))?;
    ensure!(log.contains("tunnel up over wss://"), "{log}");
    let port: u16 = log
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no port")?
        .parse()?;
    let script = format!(
        "for i in $(seq 10); do ({NOBODY} curl -sS --max-time 30 http://127.0.0.1:{port}/one-mb | sha256sum) & done; wait"
    );
    let sums = lap.sh(&script)?;
    let exact = sums.lines().filter(|l| l.starts_with(&want)).count();
    ensure!(
        exact == 10,
        "10 concurrent curls over the WebSocket, {exact} exact:\n{sums}\n{}",
        p.log()
    );
    let rx =
        gw.metric("meshd_transport_datagrams_total{transport=\"websocket\",direction=\"rx\"}")?;
    let tx =
        gw.metric("meshd_transport_datagrams_total{transport=\"websocket\",direction=\"tx\"}")?;
    // 10 MB down is some 7,400 datagrams of 1,420 bytes.
    ensure!(tx > 7000 && rx > 100, "websocket datagrams rx {rx} tx {tx}");
    Ok(())
}
