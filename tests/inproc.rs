//! The in-process tunnel (`wgtool dig`, `wgtool ping`, `wgtool proxy`): a laptop namespace
//! with no WireGuard interface and no root-only set-up reaches the org network through
//! wgtool alone, run as an unprivileged user (uid 65534).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sixpn_tests::meshd_harness::{Host, Mesh};
use sixpn_tests::site_harness::{logs, machine, serve, wg_peer, wgtool};
use sixpn_tests::{bin, ping_summary, unique, Netns, Proc};

const SECS15: Duration = Duration::from_secs(15);
const NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/// A tunnel file from `wgtool create`, copied where uid 65534 can read it (and only it).
fn laptop_file(mesh: &mut Mesh, name: &str) -> Result<PathBuf> {
    let conf = mesh.dir.path().join(format!("{}.conf", unique("lt")));
    wgtool(mesh, &format!("create acme iad {name} {}", conf.display()))?;
    let dir = std::env::temp_dir().join(unique("inproc"));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let file = dir.join("tunnel.conf");
    std::fs::copy(&conf, &file)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(&file, Some(65534), Some(65534))?;
    Ok(file)
}

/// `wgtool ARGS` in `ns` as uid 65534: (exit code, stdout, stderr).
fn wgtool_as_nobody(ns: &Netns, args: &str) -> Result<(i32, String, String)> {
    let out = ns.output(&format!("{NOBODY} {} {args}", bin("wgtool").display()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `wgtool proxy` as uid 65534 in `ns`; its local port once it listens.
fn proxy(ns: &Netns, conf: &std::path::Path, remote: &str) -> Result<(Proc, u16)> {
    let cmd = format!(
        "exec {NOBODY} {} proxy -v --config {} 0 {remote}",
        bin("wgtool").display(),
        conf.display()
    );
    let p = ns.spawn("sh", &["-c", &cmd])?;
    let log = p.wait_log("listening on 127.0.0.1:", SECS15)?;
    let port = log
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no port")?
        .parse()?;
    Ok((p, port))
}

/// The sha256 of what a connection to 127.0.0.1:`port` in `ns` reads, as uid 65534.
fn fetch_sha(ns: &Netns, port: u16) -> Result<String> {
    let out = ns.sh(&format!(
        "{NOBODY} socat -u -T 10 TCP4:127.0.0.1:{port} - | sha256sum"
    ))?;
    Ok(out.split_whitespace().next().unwrap_or("").to_string())
}

fn gateway_and_web() -> Result<(Mesh, Host, Host, registry::Machine)> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut gw = mesh.host("gw", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;
    let web = machine(&mesh, "acme", &b)?;
    Ok((mesh, gw, b, web))
}

#[test]
fn a_laptop_without_an_interface_digs_pings_and_proxies_through_wgtool() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web()?;
    let _web_srv = serve(&b.ns, 8080, "hello-from-web")?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let conf = laptop_file(&mut mesh, "lap-inproc")?;
    let (lap, _) = mesh.underlay.host("lp")?;
    let c = conf.display().to_string();

    // dig AAAA --short: web's address (dnsd may still be starting: retry).
    let start = Instant::now();
    let short = loop {
        let (code, out, err) =
            wgtool_as_nobody(&lap, &format!("dig --config {c} AAAA web.internal --short"))?;
        if code == 0 && !out.trim().is_empty() {
            break out;
        }
        ensure!(
            start.elapsed() < SECS15,
            "dig failed ({code}): {out}{err}\n{}",
            logs(&[&gw, &b])
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(short.trim() == web.addr.to_string(), "dig --short: {short}");
    let (code, out, err) = wgtool_as_nobody(&lap, &format!("dig --config {c} web.internal"))?;
    ensure!(
        code == 0
            && out.contains("status: NOERROR")
            && out.contains(&format!("IN\tAAAA\t{}", web.addr)),
        "dig: {out}{err}"
    );
    let (code, out, err) = wgtool_as_nobody(&lap, &format!("dig --config {c} TXT _apps.internal"))?;
    ensure!(
        code == 0 && out.contains("TXT\t\"") && out.contains("web"),
        "dig TXT: {out}{err}"
    );

    // ping: three echo requests, three replies.
    let (code, out, err) =
        wgtool_as_nobody(&lap, &format!("ping --config {c} web.internal -c 3 -i 0.2"))?;
    eprintln!("{out}");
    ensure!(code == 0, "ping failed ({code}): {out}{err}");
    ensure!(ping_summary(&out)? == (3, 3), "ping: {out}");
    ensure!(out.matches(" time=").count() == 3, "ping: {out}");

    // proxy: the served text through a local port.
    let (mut p, port) = proxy(&lap, &conf, "web.internal:8080")?;
    // wgtool became the tunnel's own binary (exec, same pid): that carries the tunnel.
    let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid()))?;
    ensure!(
        exe.file_name() == Some(std::ffi::OsStr::new("wgtool-tunnel")),
        "the proxy runs as {}",
        exe.display()
    );
    let page = lap.sh(&format!(
        "{NOBODY} socat -t 5 -T 5 - TCP4:127.0.0.1:{port} </dev/null"
    ))?;
    ensure!(
        page.trim() == "hello-from-web",
        "page: {page:?}\n{}",
        p.log()
    );
    stops_cleanly_on_sigterm(&lap, &mut p)?;

    // 1 MB byte-exact, then 10 at once.
    let file = mesh.dir.path().join("one-mb");
    sixpn_tests::sh(&format!(
        "head -c 1048576 /dev/urandom > {}",
        file.display()
    ))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
    let want = sixpn_tests::sh(&format!("sha256sum {}", file.display()))?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let _file_srv = b.ns.spawn(
        "socat",
        &[
            // The client half-closes at once: keep sending after its FIN (socat's default
            // gives the other direction only 0.5 s). socat's listen backlog is 5: ten SYNs at
            // once overflow it (syncookies, dropped ACKs) and a half-closed client can then
            // wait forever, through wgtool or a kernel laptop alike (with backlog=1, 4-8 of
            // 10 wireguard-go fetches were exact in 20 s), so give it room as real servers do.
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
    let (p, port) = proxy(&lap, &conf, "web.internal:8090")?;
    let got = fetch_sha(&lap, port)?;
    ensure!(
        got == want,
        "1 MB through the proxy: {got} != {want}\n{}",
        p.log()
    );
    let script = format!(
        "for i in $(seq 10); do ({NOBODY} socat -u -T 20 TCP4:127.0.0.1:{port} - | sha256sum) & done; wait"
    );
    let sums = lap.sh(&script)?;
    let exact = sums.lines().filter(|l| l.starts_with(&want)).count();
    if exact != 10 {
        // Its account of each connection still open.
        let _ = lap.sh(&format!("kill -TERM {}", p.pid()));
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(
        exact == 10,
        "10 concurrent fetches, {exact} exact:\n{sums}\n{}\nb: {}\nlaptop: {}",
        p.log(),
        b.ns.sh("ss -tan").unwrap_or_default(),
        lap.sh("ss -tan").unwrap_or_default()
    );
    drop(p);

    // Speed, side by side: 100 MB through wgtool proxy, then through a wireguard-go laptop.
    const SIZE: u64 = 100_000_000;
    let _bulk = b.ns.spawn(
        "socat",
        &[
            "-t",
            "30",
            &format!("TCP6-LISTEN:8091,bind=[{}],reuseaddr,fork", web.addr),
            &format!("SYSTEM:head -c {SIZE} /dev/zero"),
        ],
    )?;
    b.ns.wait_for("ss -ltn | grep -q ':8091 '", SECS15)?;
    let (p, port) = proxy(&lap, &conf, "web.internal:8091")?;
    let start = Instant::now();
    let n = lap.sh(&format!(
        "{NOBODY} socat -u -T 20 TCP4:127.0.0.1:{port} - | wc -c"
    ))?;
    let proxy_secs = start.elapsed().as_secs_f64();
    ensure!(
        n.trim() == SIZE.to_string(),
        "100 MB through the proxy: {n} bytes"
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    drop(p);

    let wg = wg_peer(&mut mesh, "acme", "lap-wggo", &[])?;
    wg.ns
        .wait_for(&format!("ping -6 -c 1 -W 1 {}", web.addr), SECS15)?;

    // wgtool dig says what dig on a kernel laptop gets.
    let dns = std::fs::read_to_string(&conf)?
        .lines()
        .find_map(|l| l.strip_prefix("DNS = ").map(|v| v.trim().to_string()))
        .context("DNS line")?;
    for question in ["AAAA web.internal", "TXT _apps.internal"] {
        let theirs = wg.ns.sh(&format!("dig @{dns} +short {question}"))?;
        let (code, ours, err) =
            wgtool_as_nobody(&lap, &format!("dig --config {c} {question} --short"))?;
        ensure!(
            code == 0 && ours == theirs,
            "{question}: wgtool dig {ours:?} ({err}), dig {theirs:?}"
        );
    }
    let start = Instant::now();
    let n = wg.ns.sh(&format!(
        "socat -u -T 20 TCP6:[{}]:8091 - | wc -c",
        web.addr
    ))?;
    let wg_secs = start.elapsed().as_secs_f64();
    ensure!(
        n.trim() == SIZE.to_string(),
        "100 MB through wireguard-go: {n} bytes"
    );
    let mb = SIZE as f64 / 1e6;
    eprintln!(
        "100 MB: wgtool proxy {:.1} MB/s (peak RSS {}), wireguard-go laptop {:.1} MB/s",
        mb / proxy_secs,
        rss.trim_start_matches("VmHWM:").trim(),
        mb / wg_secs
    );
    Ok(())
}

/// SIGTERM ends `wgtool proxy` within 2 s, saying so.
fn stops_cleanly_on_sigterm(ns: &Netns, p: &mut Proc) -> Result<()> {
    ns.sh(&format!("kill -TERM {}", p.pid()))?;
    let start = Instant::now();
    while p.running() {
        ensure!(
            start.elapsed() < Duration::from_secs(2),
            "proxy ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(p.log().contains("proxy stopped"), "proxy log: {}", p.log());
    Ok(())
}

#[test]
fn bad_input_is_one_line_naming_the_field_and_exit_2() -> Result<()> {
    let dir = std::env::temp_dir().join(unique("inproc-bad"));
    std::fs::create_dir_all(&dir)?;
    let good = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                Address = fdaa:0:18:a7b:1:0:1:2/128\nDNS = fdaa:0:18::3\n\n[Peer]\n\
                PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                AllowedIPs = fdaa:0:18::/48\nEndpoint = 192.0.2.1:51820\n";
    let no_dns = dir.join("no-dns.conf");
    std::fs::write(&no_dns, good.replace("DNS = fdaa:0:18::3\n", ""))?;
    let ok_file = dir.join("ok.conf");
    std::fs::write(&ok_file, good)?;
    let missing = dir.join("missing.conf");
    let cases = [
        (
            format!("dig --config {} web.internal", missing.display()),
            "missing.conf`: cannot read",
        ),
        (
            format!("dig --config {} web.internal", no_dns.display()),
            "no DNS line",
        ),
        (
            format!("ping --config {} web.internal", no_dns.display()),
            "no DNS line",
        ),
        (
            format!("dig --config {} MX web.internal", ok_file.display()),
            "type `MX`",
        ),
        (
            format!("proxy --config {} 0 web.internal", ok_file.display()),
            "HOST:PORT",
        ),
        (
            format!("proxy --config {} 0 10.0.0.1:80", ok_file.display()),
            "the org network is IPv6",
        ),
        (
            format!("proxy --config {} x web.internal:80", ok_file.display()),
            "local port `x`",
        ),
        (
            format!("ping --config {} web.internal -i 0", ok_file.display()),
            "-i 0",
        ),
        (
            format!("ping --config {} web.internal -i 1e20", ok_file.display()),
            "to a day",
        ),
    ];
    // wgtool as built (it execs wgtool-tunnel beside it), and a wgtool alone in a folder,
    // which runs the tunnel itself: the same words and exit either way.
    let wgtool = bin("wgtool");
    let alone_dir = wgtool.with_file_name(unique("alone"));
    std::fs::create_dir_all(&alone_dir)?;
    let alone = alone_dir.join("wgtool");
    if std::fs::hard_link(&wgtool, &alone).is_err() {
        std::fs::copy(&wgtool, &alone)?;
    }
    ensure!(
        wgtool.with_file_name("wgtool-tunnel").is_file(),
        "no wgtool-tunnel beside wgtool"
    );
    for (args, want) in cases {
        for exe in [&wgtool, &alone] {
            let out = std::process::Command::new(exe)
                .args(args.split_whitespace())
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(2),
                "`{args}` ({}) exited {}: {err}",
                exe.display(),
                out.status
            );
            ensure!(
                err.lines().count() == 1 && err.starts_with("wgtool: ") && err.contains(want),
                "`{args}` ({}): {err}",
                exe.display()
            );
            ensure!(
                out.stdout.is_empty(),
                "`{args}` printed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // wgtool-tunnel run by a wgtool of another build (arguments it does not read): it says so.
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(wgtool.with_file_name("wgtool-tunnel"))
            .arg0("wgtool")
            .args([
                "dig",
                "--config",
                "f.conf",
                "--newer-option",
                "web.internal",
            ])
            .output()?
    };
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2)
            && err.starts_with("wgtool: dig: unknown option `--newer-option`")
            && err.contains("install both from one build"),
        "a mismatched wgtool-tunnel: {err}"
    );
    // Run by a wgtool of another version with arguments it reads: it warns, then runs.
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(wgtool.with_file_name("wgtool-tunnel"))
            .arg0("wgtool")
            .env("SIXPN_TUNNEL_LAUNCHED_BY", "0.0.1 (git 00000000)")
            .args([
                "dig",
                "--config",
                &missing.display().to_string(),
                "web.internal",
            ])
            .output()?
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    ensure!(
        out.status.code() == Some(2)
            && lines.len() == 2
            && lines[0].contains("the wgtool that ran it 0.0.1 (git 00000000)")
            && lines[1].contains("cannot read"),
        "a wgtool-tunnel of another version: {err}"
    );
    // A wgtool-tunnel others may write to is not run: the job runs in wgtool (exit 2 on the
    // missing file); the same file private to its owner is (this one says so and exits 7).
    let planted = alone_dir.join("wgtool-tunnel");
    std::fs::write(&planted, "#!/bin/sh\necho planted >&2\nexit 7\n")?;
    let dig = format!("dig --config {} web.internal", missing.display());
    for (mode, code, says) in [(0o777, 2, "cannot read"), (0o755, 7, "planted")] {
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(mode))?;
        let out = std::process::Command::new(&alone)
            .args(dig.split_whitespace())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(code) && err.contains(says),
            "wgtool-tunnel mode {mode:o}: exit {}, {err}",
            out.status
        );
    }
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&alone_dir)?;
    Ok(())
}

/// The names of the ✗ lines of a doctor report.
fn failed(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("✗ "))
        .map(|l| l.split(':').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn doctor_inproc_checks_the_way_in_without_an_interface_and_names_what_broke() -> Result<()> {
    let (mut mesh, mut gw, _b, web) = gateway_and_web()?;
    let mut dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let conf = laptop_file(&mut mesh, "lap-doctor")?;
    let (lap, _) = mesh.underlay.host("lp")?;
    let doctor = || -> Result<(i32, String)> {
        let (code, out, err) = wgtool_as_nobody(
            &lap,
            &format!("doctor --inproc --transport udp {}", conf.display()),
        )?;
        eprintln!("--- doctor --inproc:\n{out}{err}");
        Ok((code, out))
    };

    // Working (dnsd may still be starting: retry).
    let start = Instant::now();
    let report = loop {
        let (code, out) = doctor()?;
        if code == 0 {
            break out;
        }
        ensure!(start.elapsed() < SECS15, "doctor --inproc fails: {out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(
        report.matches("✓ ").count() == 5 && report.contains("all checks passed"),
        "{report}"
    );
    ensure!(
        report.contains(&format!("web.internal → {}", web.addr)),
        "{report}"
    );
    let links = lap.sh("ip -o link show | awk -F': ' '{print $2}'")?;
    ensure!(
        links.lines().all(|l| l == "lo" || l.starts_with("eth0")),
        "the laptop has an interface of its own: {links}"
    );

    // dnsd stopped: the DNS check and the name fail, the gateway still answers.
    dnsd.kill();
    let (code, report) = doctor()?;
    ensure!(code == 1, "{report}");
    let f = failed(&report);
    ensure!(
        f.len() == 2
            && f[0].starts_with("org DNS")
            && f[1].starts_with("an app's name")
            && report.contains("✓ gateway answers ICMPv6 echo"),
        "with dnsd stopped: {f:?}\n{report}"
    );

    // The gateway's meshd stopped: no handshake, the rest not run.
    gw.meshd.as_mut().context("gw meshd")?.kill();
    let (code, report) = doctor()?;
    ensure!(code == 1, "{report}");
    let f = failed(&report);
    ensure!(
        f.len() == 4 && f[0] == "handshake through the in-process tunnel",
        "with the gateway's meshd stopped: {f:?}\n{report}"
    );
    ensure!(report.matches("not run").count() == 3, "{report}");
    Ok(())
}
