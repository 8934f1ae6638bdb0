//! meshd end to end: real meshd processes in network namespaces on a bridge underlay,
//! real traffic, stock wireguard-go and wg on the other side where it matters.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use registry::Change;
use sixpn_tests::meshd_harness::{
    meshd_pubkey, wait_address, wait_ping, wg_keypair, wireguard_go, Host, Mesh, PORT,
};
use sixpn_tests::{bin, sh, unique, Netns, Underlay};

const SECS10: Duration = Duration::from_secs(10);

/// Serves `file` once on `[addr]:port` from `host` and returns its sha256 as fetched from
/// `client` (bound to `src`).
fn fetch_sha(
    server: &Netns,
    client: &Netns,
    file: &str,
    addr: Ipv6Addr,
    src: Ipv6Addr,
    port: u16,
) -> Result<String> {
    let _srv = server.spawn(
        "socat",
        &[
            "-u",
            &format!("OPEN:{file}"),
            &format!("TCP6-LISTEN:{port},bind=[{addr}],reuseaddr"),
        ],
    )?;
    server.wait_for(&format!("ss -ltn | grep -q ':{port} '"), SECS10)?;
    client.sh(&format!(
        "socat -u TCP6:[{addr}]:{port},bind=[{src}] - | sha256sum | cut -d' ' -f1"
    ))
}

fn two_hosts(mesh: &mut Mesh) -> Result<(Host, Host)> {
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut a)?;
    mesh.start(&mut b)?;
    Ok((a, b))
}

#[test]
fn machines_on_two_hosts_exchange_icmp_and_10mb_tcp() -> Result<()> {
    let mut mesh = Mesh::new()?;
    let (a, b) = two_hosts(&mut mesh)?;
    let (ma, mb) = mesh.web_and_db(&a, &b)?;
    a.ns.sh(&format!(
        "ping -6 -c 3 -i 0.2 -W 2 -I {} {}",
        ma.addr, mb.addr
    ))?;
    b.ns.sh(&format!(
        "ping -6 -c 3 -i 0.2 -W 2 -I {} {}",
        mb.addr, ma.addr
    ))?;

    let file = mesh.dir.path().join("blob").to_string_lossy().into_owned();
    sh(&format!("head -c 10485760 /dev/urandom > {file}"))?;
    let want = sh(&format!("sha256sum < {file} | cut -d' ' -f1"))?;
    let got = fetch_sha(&b.ns, &a.ns, &file, mb.addr, ma.addr, 9000)?;
    ensure!(got == want, "10 MB b→a arrived damaged: {got} != {want}");
    let got = fetch_sha(&a.ns, &b.ns, &file, ma.addr, mb.addr, 9001)?;
    ensure!(got == want, "10 MB a→b arrived damaged: {got} != {want}");
    Ok(())
}

/// A laptop made with `wgtool create`, running stock wireguard-go.
struct Laptop {
    ns: Netns,
    iface: String,
    addr: Ipv6Addr,
    _wg: sixpn_tests::Proc,
}

fn laptop(mesh: &mut Mesh, org: &str, name: &str) -> Result<Laptop> {
    let (ns, _) = mesh.underlay.host("ml")?;
    let iface = unique("ml");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy();
    sh(&format!(
        "{} --registry {} create {org} iad {name} {conf}",
        bin("wgtool").display(),
        mesh.location
    ))?;
    let text = std::fs::read_to_string(&*conf)?;
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .and_then(|a| a.split('/').next())
        .context("tunnel file has no Address")?
        .parse()?;
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("AllowedIPs = "))
        .context("tunnel file has no AllowedIPs")?
        .trim()
        .to_string();
    let wg = wireguard_go(&ns, &iface)?;
    // wg-quick strip drops Address/DNS (DNS would rewrite the host's resolv.conf).
    ns.sh(&format!(
        "wg-quick strip {conf} > {conf}.stripped && wg setconf {iface} {conf}.stripped && \
         ip -6 addr add {addr}/128 dev {iface} && ip link set {iface} up && \
         ip -6 route add {prefix} dev {iface}"
    ))?;
    Ok(Laptop {
        ns,
        iface,
        addr,
        _wg: wg,
    })
}

fn serve_pong(host: &Host, addr: Ipv6Addr, port: u16) -> Result<sixpn_tests::Proc> {
    let p = host.ns.spawn(
        "socat",
        &[
            &format!("TCP6-LISTEN:{port},bind=[{addr}],reuseaddr,fork"),
            &format!("SYSTEM:echo pong-{}", host.node),
        ],
    )?;
    host.ns
        .wait_for(&format!("ss -ltn | grep -q ':{port} '"), SECS10)?;
    Ok(p)
}

fn request(ns: &Netns, addr: Ipv6Addr, port: u16) -> String {
    ns.sh(&format!(
        "socat -T 3 - TCP6:[{addr}]:{port},connect-timeout=2 </dev/null"
    ))
    .unwrap_or_default()
    .trim()
    .to_string()
}

#[test]
fn laptop_reaches_machine_through_gateway() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut gw = mesh.host("gw", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;
    let m = mesh.machine("acme", "web", &b)?;
    wait_address(&b, m.addr)?;
    let _srv = serve_pong(&b, m.addr, 8080)?;
    let lap = laptop(&mut mesh, "acme", "alice")?;
    let start = Instant::now();
    loop {
        if request(&lap.ns, m.addr, 8080) == "pong-b" {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!(
                "laptop never reached {} through the gateway\nwg: {}\ngw:\n{}\nb:\n{}",
                m.addr,
                lap.ns
                    .sh(&format!("wg show {}", lap.iface))
                    .unwrap_or_default(),
                gw.log(),
                b.log()
            );
        }
    }
    // And it keeps working: ten requests in a row.
    for i in 0..10 {
        ensure!(
            request(&lap.ns, m.addr, 8080) == "pong-b",
            "request {i} failed"
        );
    }
    ensure!(gw.metric("meshd_forwarded_total")? >= 10);
    let _ = lap.addr;
    Ok(())
}

#[test]
fn org_isolation_drops_and_counts_cross_org_packets() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    mesh.org("rival")?;
    let mut a = mesh.host("a", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut a)?;
    mesh.start(&mut b)?;
    let ma = mesh.machine("acme", "web", &a)?;
    let mb = mesh.machine("acme", "db", &b)?;
    let mr = mesh.machine("rival", "web", &b)?;
    for (h, m) in [(&a, &ma), (&b, &mb), (&b, &mr)] {
        wait_address(h, m.addr)?;
    }
    // Same org: fine.
    wait_ping(&a.ns, Some(ma.addr), mb.addr, SECS10)?;
    // Other org, from a machine: nothing comes back, and a counts the drop.
    let before = a.metric("meshd_drops_total{reason=\"org_mismatch\"}")?;
    let out = a.ns.output(&format!(
        "ping -6 -c 3 -i 0.2 -W 1 -I {} {}",
        ma.addr, mr.addr
    ))?;
    ensure!(
        !out.status.success(),
        "acme machine reached rival's machine"
    );
    let after = a.metric("meshd_drops_total{reason=\"org_mismatch\"}")?;
    ensure!(after >= before + 3, "org_mismatch drops {before} → {after}");

    // From acme's laptop, even when it routes the whole mesh prefix at the gateway.
    let lap = laptop(&mut mesh, "acme", "alice")?;
    let gw_key = meshd_pubkey(&a.key)?;
    lap.ns.sh(&format!(
        "wg set {i} peer {gw_key} allowed-ips fdaa::/16 && ip -6 route add fdaa::/16 dev {i}",
        i = lap.iface
    ))?;
    wait_ping(&lap.ns, None, mb.addr, Duration::from_secs(15))
        .with_context(|| format!("laptop cannot reach its own org\n{}", a.log()))?;
    let before = a.metric("meshd_drops_total{reason=\"org_mismatch\"}")?;
    let out = lap
        .ns
        .output(&format!("ping -6 -c 3 -i 0.2 -W 1 {}", mr.addr))?;
    ensure!(!out.status.success(), "acme laptop reached rival's machine");
    let after = a.metric("meshd_drops_total{reason=\"org_mismatch\"}")?;
    ensure!(
        after >= before + 3,
        "gateway org_mismatch drops {before} → {after}"
    );
    Ok(())
}

#[test]
fn interop_with_stock_wireguard_go_host() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    mesh.start(&mut a)?;
    let (c, _) = (mesh.host("c", false)?, ());
    let (private, public) = wg_keypair()?;
    mesh.foreign_node("c", &public, &c.endpoint())?;
    let ma = mesh.machine("acme", "web", &a)?;
    let mc = mesh.machine("acme", "db", &c)?;
    wait_address(&a, ma.addr)?;
    let snap = mesh.reg.snapshot()?;
    let a_prefix = snap.orgs["acme"].network.node_prefix(snap.nodes["a"].host);
    let keyfile = mesh.dir.path().join("c.key");
    std::fs::write(&keyfile, format!("{private}\n"))?;
    let _wg = wireguard_go(&c.ns, &c.iface)?;
    c.ns.sh(&format!(
        "wg set {i} private-key {k} listen-port {PORT} peer {a_key} endpoint {a_ep} allowed-ips {a_prefix} && \
         ip -6 addr add {mc}/128 dev {i} && ip link set {i} up && ip -6 route add fdaa::/16 dev {i}",
        i = c.iface,
        k = keyfile.display(),
        a_key = meshd_pubkey(&a.key)?,
        a_ep = a.endpoint(),
        mc = mc.addr,
    ))?;
    wait_ping(&a.ns, Some(ma.addr), mc.addr, SECS10)
        .with_context(|| format!("meshd → wireguard-go\n{}", a.log()))?;
    c.ns.sh(&format!(
        "ping -6 -c 3 -i 0.2 -W 2 -I {} {}",
        mc.addr, ma.addr
    ))?;
    let file = mesh.dir.path().join("blob").to_string_lossy().into_owned();
    sh(&format!("head -c 2097152 /dev/urandom > {file}"))?;
    let want = sh(&format!("sha256sum < {file} | cut -d' ' -f1"))?;
    ensure!(fetch_sha(&c.ns, &a.ns, &file, mc.addr, ma.addr, 9000)? == want);
    ensure!(fetch_sha(&a.ns, &c.ns, &file, ma.addr, mc.addr, 9001)? == want);
    Ok(())
}

#[test]
fn wg_show_lists_peers_with_handshakes_and_transfer() -> Result<()> {
    let mut mesh = Mesh::new()?;
    let (a, b) = two_hosts(&mut mesh)?;
    let _ = mesh.web_and_db(&a, &b)?;
    let show = a.ns.sh(&format!("wg show {}", a.iface))?;
    let b_key = meshd_pubkey(&b.key)?;
    for want in [
        format!("peer: {b_key}"),
        format!("endpoint: {}", b.endpoint()),
        "latest handshake:".into(),
        "transfer:".into(),
        format!("listening port: {PORT}"),
    ] {
        ensure!(show.contains(&want), "`wg show` lacks {want:?}:\n{show}");
    }
    let conf = a.ns.sh(&format!("wg showconf {}", a.iface))?;
    ensure!(
        conf.contains("[Peer]") && conf.contains("AllowedIPs = fdaa:"),
        "{conf}"
    );
    // The metrics show the same peer, by name and key: bytes both ways, and a handshake
    // within the last minute.
    let labels = format!("{{peer=\"node/{}\",public_key=\"{b_key}\"}}", b.node);
    let tx = a.metric(&format!("meshd_peer_transmit_bytes_total{labels}"))?;
    let rx = a.metric(&format!("meshd_peer_receive_bytes_total{labels}"))?;
    ensure!(tx > 0 && rx > 0, "per-peer bytes: tx {tx}, rx {rx}");
    let handshake = a.metric(&format!("meshd_peer_latest_handshake_seconds{labels}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    ensure!(
        handshake <= now && now - handshake < 60,
        "latest handshake {handshake}, now {now}"
    );
    Ok(())
}

/// Two meshd drop-in interfaces configured only with `wg setconf`/`wg set`, and a third
/// brought up by wg-quick with meshd as its userspace implementation.
#[test]
fn drop_in_interfaces_configured_by_wg_and_wg_quick() -> Result<()> {
    let mut underlay = Underlay::new()?;
    let dir = sixpn_tests::tempdir::Dir::new()?;
    let (x, x_ip) = underlay.host("mdx")?;
    let (y, y_ip) = underlay.host("mdy")?;
    let (z, _) = underlay.host("mdz")?;
    let (xi, yi, zi) = (unique("mdx"), unique("mdy"), unique("mdz"));
    let meshd = bin("meshd");
    // x in the foreground, y daemonised the way wg-quick would start it.
    let _x = x.spawn(&meshd.to_string_lossy(), &["-f", &xi])?;
    x.wait_for(&format!("wg show {xi}"), SECS10)?;
    y.sh(&format!("{} {yi}", meshd.display()))?;
    y.wait_for(&format!("wg show {yi}"), SECS10)?;
    let (xk, xp) = wg_keypair()?;
    let (yk, yp) = wg_keypair()?;
    let (zk, zp) = wg_keypair()?;
    let write = |name: &str, text: String| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.to_string_lossy().into_owned())
    };
    let xconf = write(
        "x.conf",
        format!("[Interface]\nPrivateKey = {xk}\nListenPort = 40001\n\n[Peer]\nPublicKey = {yp}\nEndpoint = {y_ip}:40002\nAllowedIPs = fd00:77::2/128\n"),
    )?;
    let yconf = write(
        "y.conf",
        format!("[Interface]\nPrivateKey = {yk}\nListenPort = 40002\n\n[Peer]\nPublicKey = {xp}\nEndpoint = {x_ip}:40001\nAllowedIPs = fd00:77::1/128\n\n[Peer]\nPublicKey = {zp}\nAllowedIPs = fd00:77::3/128\n"),
    )?;
    x.sh(&format!("wg setconf {xi} {xconf} && ip -6 addr add fd00:77::1/64 dev {xi} nodad && ip link set {xi} up"))?;
    y.sh(&format!("wg setconf {yi} {yconf} && ip -6 addr add fd00:77::2/64 dev {yi} nodad && ip link set {yi} up"))?;
    wait_ping(&x, None, "fd00:77::2".parse()?, SECS10)?;
    let show = x.sh(&format!("wg show {xi}"))?;
    ensure!(
        show.contains("latest handshake") && show.contains("listening port: 40001"),
        "{show}"
    );

    // Modify an existing peer in place: the session stays, traffic still flows.
    x.sh(&format!(
        "wg set {xi} peer {yp} allowed-ips fd00:77::2/128,fd00:79::/64 persistent-keepalive 5"
    ))?;
    let ips = x.sh(&format!("wg show {xi} allowed-ips"))?;
    ensure!(ips.contains("fd00:79::/64"), "{ips}");
    x.sh("ping -6 -c 2 -W 2 fd00:77::2")?;
    // syncconf back to the file: the extra prefix goes away.
    x.sh(&format!("wg syncconf {xi} {xconf}"))?;
    let ips = x.sh(&format!("wg show {xi} allowed-ips"))?;
    ensure!(!ips.contains("fd00:79::/64"), "{ips}");

    // wg-quick with meshd as the userspace implementation.
    let zconf = write(
        &format!("{zi}.conf"),
        format!("[Interface]\nPrivateKey = {zk}\nAddress = fd00:77::3/128\n\n[Peer]\nPublicKey = {yp}\nEndpoint = {y_ip}:40002\nAllowedIPs = fd00:77::2/128\nPersistentKeepalive = 15\n"),
    )?;
    let path = format!(
        "{}:{}",
        meshd.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    z.sh(&format!(
        "WG_QUICK_USERSPACE_IMPLEMENTATION=meshd PATH={path} wg-quick up {zconf}"
    ))?;
    ensure!(
        std::path::Path::new(&format!("/var/run/wireguard/{zi}.sock")).exists(),
        "wg-quick did not use meshd"
    );
    wait_ping(&z, None, "fd00:77::2".parse()?, SECS10)?;
    z.sh(&format!("PATH={path} wg-quick down {zconf}"))?;
    // meshd leaves with its interface.
    let gone = Instant::now();
    while std::path::Path::new(&format!("/var/run/wireguard/{zi}.sock")).exists() {
        ensure!(
            gone.elapsed() < SECS10,
            "meshd did not exit after wg-quick down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn killed_meshd_recovers_within_two_seconds_of_restart() -> Result<()> {
    let mut mesh = Mesh::new()?;
    let (a, mut b) = two_hosts(&mut mesh)?;
    let (ma, mb) = mesh.web_and_db(&a, &b)?;
    if let Some(p) = b.meshd.as_mut() {
        p.kill();
    }
    let down =
        a.ns.output(&format!("ping -6 -c 1 -W 1 -I {} {}", ma.addr, mb.addr))?;
    ensure!(!down.status.success(), "b answered with meshd dead");
    let restarted = Instant::now();
    mesh.start(&mut b)?;
    wait_ping(&a.ns, Some(ma.addr), mb.addr, SECS10)?;
    let took = restarted.elapsed();
    ensure!(
        took < Duration::from_secs(2),
        "traffic resumed {took:?} after restart:\n{}",
        b.log()
    );
    eprintln!("traffic resumed {took:?} after restart");
    Ok(())
}

#[test]
fn moved_machine_keeps_answering_at_its_address() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    let mut b = mesh.host("b", false)?;
    let mut c = mesh.host("c", false)?;
    for h in [&mut a, &mut b, &mut c] {
        mesh.start(h)?;
    }
    let ma = mesh.machine("acme", "web", &a)?;
    let m = mesh.machine("acme", "db", &b)?;
    wait_address(&a, ma.addr)?;
    wait_address(&b, m.addr)?;
    let _on_b = serve_pong(&b, m.addr, 8080)?;
    a.ns.wait_for(
        &format!(
            "socat -T 3 - TCP6:[{}]:8080,bind=[{}] </dev/null | grep -q pong-b",
            m.addr, ma.addr
        ),
        SECS10,
    )?;
    sh(&format!(
        "{} --registry {} machine move {} --node c",
        bin("wgtool").display(),
        mesh.location,
        m.id
    ))?;
    wait_address(&c, m.addr)?;
    let _on_c = serve_pong(&c, m.addr, 8080)?;
    a.ns.wait_for(
        &format!(
            "socat -T 3 - TCP6:[{}]:8080,bind=[{}] </dev/null | grep -q pong-c",
            m.addr, ma.addr
        ),
        SECS10,
    )
    .with_context(|| format!("a:\n{}\nc:\n{}", a.log(), c.log()))?;
    a.ns.sh(&format!("ping -6 -c 2 -W 2 -I {} {}", ma.addr, m.addr))?;
    Ok(())
}

#[test]
fn live_changes_do_not_stall_a_running_transfer() -> Result<()> {
    let mut mesh = Mesh::new()?;
    let (a, b) = two_hosts(&mut mesh)?;
    let mut c = mesh.host("c", true)?;
    mesh.start(&mut c)?;
    let (ma, mb) = mesh.web_and_db(&a, &b)?;
    let _srv =
        b.ns.spawn("iperf3", &["-s", "-1", "-B", &mb.addr.to_string()])?;
    b.ns.wait_for("ss -ltn | grep -q ':5201 '", SECS10)?;
    let client = std::thread::spawn({
        let ns = a.ns.name().to_string();
        let cmd = format!("iperf3 -6 -c {} -B {} -t 8 -i 0.5 -J", mb.addr, ma.addr);
        move || sh(&format!("ip netns exec {ns} sh -c '{cmd}'"))
    });
    // Churn while it runs: machines, nodes and peers come and go.
    std::thread::sleep(Duration::from_millis(700));
    let mut made = Vec::new();
    for i in 0..5 {
        for h in [&a, &b, &c] {
            made.push(mesh.machine("acme", &format!("churn{i}"), h)?);
        }
        let (_, pk) = wg_keypair()?;
        mesh.apply(Change::AddPeer {
            org: "acme".into(),
            name: format!("p{i}"),
            region: Some("iad".into()),
            gateway: None,
            public_key: pk.parse()?,
            routes: vec![],
            expires: None,
        })?;
        let (_, nk) = wg_keypair()?;
        mesh.foreign_node(
            &format!("ghost{i}"),
            &nk,
            &format!("10.250.0.{}:51820", i + 1),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        if i > 0 {
            mesh.apply(Change::RemovePeer {
                org: "acme".into(),
                name: format!("p{}", i - 1),
            })?;
            mesh.apply(Change::RemoveNode {
                name: format!("ghost{}", i - 1),
            })?;
            let m = made.remove(0);
            mesh.apply(Change::MoveMachine {
                id: m.id,
                node: "c".into(),
            })?;
            let m = made.remove(0);
            mesh.apply(Change::RemoveMachine { id: m.id })?;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = client
        .join()
        .map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
    // Every half-second interval carried data: no stall of a second or more.
    let mut intervals = 0;
    for chunk in report.split("\"sum\":").skip(1) {
        let Some(bytes) = chunk
            .split("\"bytes\":")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|s| s.trim().parse::<f64>().ok())
        else {
            continue;
        };
        intervals += 1;
        ensure!(bytes > 0.0, "an interval carried nothing:\n{report}");
    }
    ensure!(
        intervals >= 14,
        "iperf3 reported {intervals} intervals:\n{report}"
    );
    Ok(())
}

/// A meshd ↔ wireguard-go session stays up across the 2-minute rekey: a request each way
/// every second for 4 minutes (MESHD_DURABILITY_SECS overrides), zero failures. Guards
/// against boringtun 0.7.1's reported one-way-deaf sessions.
#[test]
fn durability_session_survives_rekey_against_wireguard_go() -> Result<()> {
    let secs: u64 = std::env::var("MESHD_DURABILITY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut a = mesh.host("a", false)?;
    mesh.start(&mut a)?;
    let c = mesh.host("c", false)?;
    let (private, public) = wg_keypair()?;
    mesh.foreign_node("c", &public, &c.endpoint())?;
    let ma = mesh.machine("acme", "web", &a)?;
    let mc = mesh.machine("acme", "db", &c)?;
    wait_address(&a, ma.addr)?;
    let snap = mesh.reg.snapshot()?;
    let a_prefix = snap.orgs["acme"].network.node_prefix(snap.nodes["a"].host);
    let keyfile = mesh.dir.path().join("c.key");
    std::fs::write(&keyfile, format!("{private}\n"))?;
    let _wg = wireguard_go(&c.ns, &c.iface)?;
    c.ns.sh(&format!(
        "wg set {i} private-key {k} listen-port {PORT} peer {a_key} endpoint {a_ep} allowed-ips {a_prefix} && \
         ip -6 addr add {mc}/128 dev {i} && ip link set {i} up && ip -6 route add fdaa::/16 dev {i}",
        i = c.iface,
        k = keyfile.display(),
        a_key = meshd_pubkey(&a.key)?,
        a_ep = a.endpoint(),
        mc = mc.addr,
    ))?;
    let _on_c = serve_pong(&c, mc.addr, 8080)?;
    let _on_a = serve_pong(&a, ma.addr, 8080)?;
    a.ns.wait_for(
        &format!(
            "socat -T 2 - TCP6:[{}]:8080,bind=[{}] </dev/null | grep -q pong-c",
            mc.addr, ma.addr
        ),
        SECS10,
    )?;
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let tick = Instant::now();
        let t = start.elapsed().as_secs();
        if request(&a.ns, mc.addr, 8080) != "pong-c" {
            failures.push(format!("{t}s a→c"));
        }
        if request(&c.ns, ma.addr, 8080) != "pong-a" {
            failures.push(format!("{t}s c→a"));
        }
        n += 1;
        if let Some(rest) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let show = c.ns.sh(&format!("wg show {}", c.iface))?;
    ensure!(
        failures.is_empty(),
        "{} of {} request pairs failed: {failures:?}\nwireguard-go side: {show}\nmeshd:\n{}",
        failures.len(),
        n,
        a.log()
    );
    eprintln!("durability: {n} request pairs over {secs}s, 0 failures");
    Ok(())
}
