//! Sites end to end: an on-prem router running stock wireguard-go from a `wgtool create
//! --route` file, a LAN behind it with an IPv6 prefix and an IPv4 /24, machines and laptops
//! reaching the LAN (IPv6 natively, IPv4 through 4via6) and the LAN reaching machines; and
//! the org boundary against a hostile site router and laptop of another org.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sixpn_tests::meshd_harness::{wait_ping, Host, Mesh};
use sixpn_tests::site_harness::{
    lan, listen, logs, machine, reaches, request, send_udp, serve, via_addr, wg_peer, wgtool, Lan,
    Peer,
};

const SECS15: Duration = Duration::from_secs(15);

/// Orgs acme and beta, and two meshd hosts: a gateway and one that is not.
fn acme_and_beta() -> Result<(Mesh, Host, Host)> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    mesh.org("beta")?;
    let mut gw = mesh.host("gw", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;
    Ok((mesh, gw, b))
}

/// acme's site-ams (2001:db8:20::/64 and 10.20.0.0/24) with its LAN.
fn acme_site(mesh: &mut Mesh) -> Result<(Peer, Lan)> {
    let site = wg_peer(
        mesh,
        "acme",
        "site-ams",
        &["10.20.0.0/24", "2001:db8:20::/64"],
    )?;
    let lan_a = lan(&site, "10.20.0", Some("2001:db8:20:0"))?;
    Ok((site, lan_a))
}

#[test]
fn sites_are_reached_both_ways_and_overlapping_ipv4_sites_stay_apart() -> Result<()> {
    let (mut mesh, gw, b) = acme_and_beta()?;
    let web = machine(&mesh, "acme", &b)?;
    let beta_web = machine(&mesh, "beta", &b)?;

    // acme's site: 2001:db8:20::/64 and 10.20.0.0/24; beta's: the same IPv4 /24.
    let (site, lan_a) = acme_site(&mut mesh)?;
    let beta_site = wg_peer(&mut mesh, "beta", "site-fra", &["10.20.0.0/24"])?;
    let lan_b = lan(&beta_site, "10.20.0", None)?;
    ensure!(
        site.allowed.iter().any(|a| a == "100.127.0.0/16"),
        "a site with IPv4 routes must route the NAT64 pool back: {:?}",
        site.allowed
    );
    let _srv_a = serve(&lan_a.ns, 8080, "lan-acme")?;
    let _srv_b = serve(&lan_b.ns, 8080, "lan-beta")?;
    let _srv_web = serve(&b.ns, 8081, "web-b")?;
    // Site routers speak first, as a router with PersistentKeepalive does.
    for (p, m) in [(&site, &web), (&beta_site, &beta_web)] {
        wait_ping(&p.ns, Some(p.addr), m.addr, SECS15).with_context(|| logs(&[&gw, &b]))?;
    }

    // A machine on a non-gateway host: IPv6 natively, IPv4 through 4via6.
    reaches(&b.ns, Some(web.addr), "2001:db8:20::5", 8080, "lan-acme")
        .with_context(|| logs(&[&gw, &b]))?;
    let lan_host = Ipv4Addr::new(10, 20, 0, 5);
    let acme_via = via_addr(&mesh, "acme", "site-ams", lan_host)?;
    let beta_via = via_addr(&mesh, "beta", "site-fra", lan_host)?;
    reaches(
        &b.ns,
        Some(web.addr),
        &acme_via.to_string(),
        8080,
        "lan-acme",
    )
    .with_context(|| logs(&[&gw, &b]))?;
    // Beta's machine reaches beta's 10.20.0.5 at the same time: the same IPv4 address,
    // another site, another org.
    reaches(
        &b.ns,
        Some(beta_web.addr),
        &beta_via.to_string(),
        8080,
        "lan-beta",
    )
    .with_context(|| logs(&[&gw, &b]))?;
    // Each org reaches only its own.
    ensure!(request(&b.ns, Some(web.addr), &beta_via.to_string(), 8080).is_empty());
    ensure!(request(&b.ns, Some(beta_web.addr), &acme_via.to_string(), 8080).is_empty());
    ensure!(request(&b.ns, Some(beta_web.addr), "2001:db8:20::5", 8080).is_empty());

    // The LAN host opens TCP to the machine by its fdaa address.
    reaches(&lan_a.ns, None, &web.addr.to_string(), 8081, "web-b")
        .with_context(|| logs(&[&gw, &b]))?;

    // An acme laptop: its tunnel file carries the site's IPv6 prefix.
    let lap = wg_peer(&mut mesh, "acme", "alice", &[])?;
    ensure!(
        lap.allowed.iter().any(|a| a == "2001:db8:20::/64"),
        "laptop's AllowedIPs lack the site prefix: {:?}",
        lap.allowed
    );
    reaches(&lap.ns, Some(lap.addr), "2001:db8:20::5", 8080, "lan-acme")
        .with_context(|| logs(&[&gw, &b]))?;
    reaches(
        &lap.ns,
        Some(lap.addr),
        &acme_via.to_string(),
        8080,
        "lan-acme",
    )
    .with_context(|| logs(&[&gw, &b]))?;
    ensure!(gw.metric("meshd_drops_total{reason=\"not_translated\"}")? == 0);
    // Three IPv6 sources went to 4via6 addresses through the gateway: acme's machine and
    // laptop, and beta's machine.
    ensure!(gw.metric("meshd_nat64_bindings")? == 3, "nat64 bindings");
    // `wg show` on the gateway lists the site's IPv4 route and its 4via6 /96.
    let shown = gw.ns.sh(&format!("wg show {} allowed-ips", gw.iface))?;
    let via96 = mesh.reg.snapshot()?.peers[&("acme".to_string(), "site-ams".to_string())]
        .via()
        .context("via")?;
    for want in [
        "10.20.0.0/24".to_string(),
        via96.to_string(),
        "2001:db8:20::/64".into(),
    ] {
        ensure!(shown.contains(&want), "wg show lacks {want}:\n{shown}");
    }
    // Nothing here sends from an address of no org; the hosts' kernels neither (no router
    // solicitations or MLD reports from `::` into the mesh).
    for h in [&gw, &b] {
        let n = h.metric("meshd_drops_total{reason=\"source_no_org\"}")?;
        ensure!(n == 0, "{}: {n} packets from no org\n{}", h.node, h.log());
    }
    Ok(())
}

#[test]
fn another_orgs_site_and_laptop_reach_nothing_of_ours_until_peered() -> Result<()> {
    let (mut mesh, gw, b) = acme_and_beta()?;
    let web = machine(&mesh, "acme", &b)?;
    // On another host than acme's: machines on one host share its kernel, which meshd
    // never sees between them.
    let beta_web = machine(&mesh, "beta", &gw)?;
    let (_site, lan_a) = acme_site(&mut mesh)?;
    // Beta's site router, set up by a hostile owner: everything into the tunnel.
    let evil = wg_peer(
        &mut mesh,
        "beta",
        "site-evil",
        &["10.30.0.0/24", "2001:db8:30::/64"],
    )?;
    let gw_key = sixpn_tests::meshd_harness::meshd_pubkey(&gw.key)?;
    evil.ns.sh(&format!(
        "wg set {i} peer {gw_key} allowed-ips fdaa::/16,::/0,0.0.0.0/0 && \
         ip -6 addr add 2001:db8:30::77/128 dev lo && ip addr add 10.30.0.77/32 dev lo && \
         ip -6 route replace default dev {i} && ip route add 192.0.2.0/24 dev {i}",
        i = evil.iface
    ))?;
    // The gateway host's own address, outside every org.
    gw.ns
        .sh("ip -6 addr add 2001:db8:ff::1/64 dev eth0 nodad")?;
    let lap = wg_peer(&mut mesh, "beta", "mallory", &[])?;
    lap.ns.sh(&format!(
        "wg set {i} peer {gw_key} allowed-ips ::/0 && ip -6 route replace default dev {i}",
        i = lap.iface
    ))?;
    wait_ping(&evil.ns, Some(evil.addr), beta_web.addr, SECS15)
        .with_context(|| logs(&[&gw, &b]))?;
    wait_ping(&lap.ns, Some(lap.addr), beta_web.addr, SECS15).with_context(|| logs(&[&gw, &b]))?;

    let dir = mesh.dir.path().to_path_buf();
    let at_web = listen(&b.ns, &dir, &web.addr.to_string())?;
    let at_lan = listen(&lan_a.ns, &dir, "2001:db8:20::5")?;
    let at_gw = listen(&gw.ns, &dir, "2001:db8:ff::1")?;
    let drops = |why: &str| gw.metric(&format!("meshd_drops_total{{reason=\"{why}\"}}"));
    let (mismatch, no_org, no_binding) = (
        drops("org_mismatch")?,
        drops("destination_no_org")?,
        drops("no_binding")?,
    );

    // From the site's own prefix (spoofed from the router), and from the laptop.
    for (ns, src) in [
        (&evil.ns, "2001:db8:30::77".to_string()),
        (&lap.ns, lap.addr.to_string()),
    ] {
        send_udp(ns, &src, &web.addr.to_string())?;
        send_udp(ns, &src, "2001:db8:20::5")?;
        send_udp(ns, &src, "2001:db8:ff::1")?;
    }
    // IPv4 from the site's LAN space to somewhere that is no pool address.
    send_udp(&evil.ns, "10.30.0.77", "192.0.2.1")?;
    std::thread::sleep(Duration::from_millis(500));
    for (what, l) in [
        ("acme machine", &at_web),
        ("acme LAN", &at_lan),
        ("gateway", &at_gw),
    ] {
        ensure!(
            l.received()? == 0,
            "beta's spoofed datagrams reached the {what} ({})",
            l.ns_name
        );
    }
    ensure!(drops("org_mismatch")? >= mismatch + 12, "org_mismatch");
    ensure!(
        drops("destination_no_org")? >= no_org + 6,
        "destination_no_org"
    );
    ensure!(drops("no_binding")? >= no_binding + 3, "no_binding");

    // A peering opens the two orgs to each other, live; unpeering closes them again.
    let _srv = serve(&b.ns, 8082, "web-acme")?;
    ensure!(request(&gw.ns, Some(beta_web.addr), &web.addr.to_string(), 8082).is_empty());
    wgtool(&mesh, "org peer acme beta")?;
    ensure!(
        wgtool(&mesh, "org list")?.contains("beta"),
        "org list does not show the peering"
    );
    reaches(
        &gw.ns,
        Some(beta_web.addr),
        &web.addr.to_string(),
        8082,
        "web-acme",
    )
    .with_context(|| logs(&[&gw, &b]))?;
    wgtool(&mesh, "org unpeer acme beta")?;
    let start = Instant::now();
    while !request(&gw.ns, Some(beta_web.addr), &web.addr.to_string(), 8082).is_empty() {
        ensure!(start.elapsed() < SECS15, "unpeer never closed the path");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
