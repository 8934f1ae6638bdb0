//! Real clients inside network namespaces whose source addresses are in an org network:
//! the system resolver (`getent`) through `/etc/netns/<ns>/resolv.conf`, two orgs that
//! must not see each other's names, and sources outside every org that get nothing.

mod common;

use std::net::SocketAddr;

use common::*;
use sixpn_testkit::{in_netns, Netns};

#[test]
fn getent_in_a_namespace_resolves_web_internal() {
    let reg = TestRegistry::new();
    let acme = reg.org("acme");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    let ns = Netns::new("getent").unwrap();
    // The querier: an address on host-iad's /80 in acme's network, so dnsd scopes it to acme.
    let dns = acme.network.dns_addr();
    let client = acme.network.slot_addr(0x0a7b_0001, 0xfff0);
    ns.add_loopback(&dns.to_string()).unwrap();
    ns.add_loopback(&client.to_string()).unwrap();
    std::fs::create_dir_all(ns.etc_dir()).unwrap();
    std::fs::write(
        ns.etc_dir().join("resolv.conf"),
        format!("nameserver {dns}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let listen = SocketAddr::new(dns.into(), 53);
    let _d = Dnsd::start(
        Some(ns.name()),
        listen,
        &["--registry", &reg.url(), "--upstream", "127.0.0.1:9"],
    );
    let out = ns.exec(&["getent", "ahosts", "web.internal"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{}", web.addr)) && first.contains("web.internal"),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.starts_with(&web.addr.to_string()), "{text}");
    }
}

#[test]
fn two_orgs_cannot_see_each_others_names() {
    let reg = TestRegistry::new();
    let acme = reg.org("acme");
    let globex = reg.org("globex");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    let secret = reg.machine("globex", "secret", "iad", "host-iad");
    let ns = Netns::new("orgs").unwrap();
    let a_client = acme.network.slot_addr(0x0a7b_0001, 0xfff0);
    let g_client = globex.network.slot_addr(0x0a7b_0001, 0xfff0);
    ns.add_loopback(&a_client.to_string()).unwrap();
    ns.add_loopback(&g_client.to_string()).unwrap();
    let listen: SocketAddr = "[::1]:53".parse().unwrap();
    let d = Dnsd::start(
        Some(ns.name()),
        listen,
        &["--registry", &reg.url(), "--upstream", "127.0.0.1:9"],
    );
    let ask = |from: &str, name: &str, qtype: &str| {
        dig(Some(ns.name()), d.addr, &["-b", from, "+tcp", name, qtype])
    };
    let a = a_client.to_string();
    let g = g_client.to_string();
    let out = dig(
        Some(ns.name()),
        d.addr,
        &["-b", &a, "+short", "web.internal", "AAAA"],
    );
    assert_eq!(out.trim(), web.addr.to_string());
    let out = dig(
        Some(ns.name()),
        d.addr,
        &["-b", &g, "+short", "secret.internal", "AAAA"],
    );
    assert_eq!(out.trim(), secret.addr.to_string());
    assert!(ask(&a, "secret.internal", "AAAA").contains("status: NXDOMAIN"));
    assert!(ask(&g, "web.internal", "AAAA").contains("status: NXDOMAIN"));
    let out = dig(
        Some(ns.name()),
        d.addr,
        &["-b", &a, "+short", "_apps.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"web\"");
    let out = dig(
        Some(ns.name()),
        d.addr,
        &["-b", &g, "+short", "_apps.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"secret\"");
    let out = dig(
        Some(ns.name()),
        d.addr,
        &["-b", &g, "+short", "_instances.internal", "TXT"],
    );
    assert!(
        out.contains(&secret.id.to_string()) && !out.contains(&web.id.to_string()),
        "{out}"
    );
    // Loopback (no org, no default org): refused.
    assert!(ask("::1", "web.internal", "AAAA").contains("status: REFUSED"));
}

#[test]
fn sources_outside_every_org_are_refused_internal_names_and_forwarding() {
    let reg = TestRegistry::new();
    let acme = reg.org("acme");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    reg.apply(registry::Change::AddPeer {
        org: "acme".into(),
        name: "site-ams".into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: [7u8; 32].into(),
        routes: vec![
            "10.1.0.0/16".parse().unwrap(),
            "2001:db8:a::/48".parse().unwrap(),
        ],
        expires: None,
    });
    let site =
        reg.reg.snapshot().unwrap().peers[&("acme".to_string(), "site-ams".to_string())].clone();
    let ns = Netns::new("refuse").unwrap();
    // `[::]:53` takes IPv4 as well, whatever the host's default.
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.bindv6only=0"])
        .unwrap();
    let dns = acme.network.dns_addr().to_string();
    let member = acme.network.slot_addr(0x0a7b_0001, 0xfff0).to_string();
    let site_host = "2001:db8:a::10";
    let (outsider6, outsider4, allowed4) = ("2001:db8::5", "192.0.2.5", "198.51.100.7");
    for a in [dns.as_str(), &member, site_host, outsider6] {
        ns.add_loopback(a).unwrap();
    }
    ns.add_loopback(outsider4).unwrap();
    ns.add_loopback(allowed4).unwrap();
    let stub = StubUpstream::start_in(ns.name(), 60);
    let metrics: SocketAddr = "127.0.0.1:9153".parse().unwrap();
    let d = Dnsd::start(
        Some(ns.name()),
        "[::]:53".parse().unwrap(),
        &[
            "--registry",
            &reg.url(),
            "--default-org",
            "acme",
            "--upstream",
            &stub.addr.to_string(),
            "--allow",
            "198.51.100.0/24",
            "--metrics",
            &metrics.to_string(),
        ],
    );
    // IPv6 queriers ask the org's DNS address, IPv4 ones 127.0.0.1, all through the one
    // wildcard socket. Every querier's own address is local too, so an answer that left from
    // the address the kernel picks for the way back (that address itself) would not be
    // taken by dig: this also proves answers leave from the address asked.
    let ask = |from: &str, extra: &str, name: &str, qtype: &str| {
        let server = if from.contains(':') {
            dns.as_str()
        } else {
            "127.0.0.1"
        };
        let server = SocketAddr::new(server.parse().unwrap(), 53);
        let args = ["+time=2", "+tries=1", "-b", from, extra, name, qtype];
        dig(Some(ns.name()), server, &args)
    };
    let web_addr = web.addr.to_string();

    // An org member, a host in the org's site prefix, loopback over IPv6 and IPv4 (the latter
    // as ::ffff:127.0.0.1) and an allowed IPv4 network get answers, forwarded ones too.
    for from in [member.as_str(), site_host, "::1", "127.0.0.1", allowed4] {
        for transport in ["+notcp", "+tcp"] {
            let out = ask(from, transport, "web.internal", "AAAA");
            assert!(
                out.contains(&format!("IN\tAAAA\t{web_addr}")),
                "from {from} {transport}: {out}"
            );
            let out = ask(from, transport, "example.com", "A");
            assert!(
                out.contains("IN\tA\t192.0.2.1"),
                "from {from} {transport}: {out}"
            );
        }
    }
    assert_eq!(
        stub.count(),
        1,
        "example.com was not cached after the first ask"
    );
    let via = registry::addr::via_addr(
        registry::addr::via_prefix(site.addr).unwrap(),
        "10.1.2.3".parse().unwrap(),
    );
    let out = ask(
        site_host,
        "+short",
        "10-1-2-3.site-ams._site.internal",
        "AAAA",
    );
    assert_eq!(out.trim(), via.to_string());

    // Outsiders, over UDP and TCP, IPv6 and IPv4 (through the dual-stack socket): REFUSED,
    // for .internal, for a cached name and for a new one, which never reaches the upstream.
    let mut refused = 0;
    for from in [outsider6, outsider4] {
        for transport in ["+notcp", "+tcp"] {
            for (name, qtype) in [
                ("web.internal", "AAAA"),
                ("example.com", "A"),
                ("fresh.example", "A"),
            ] {
                let out = ask(from, transport, name, qtype);
                assert!(
                    out.contains("status: REFUSED") && out.contains("ANSWER: 0"),
                    "{name} from {from} {transport}: {out}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(stub.count(), 1, "an outsider's query was forwarded");
    let m = in_netns(ns.name(), move || Dnsd::metrics(metrics));
    assert!(
        m.contains(&format!(
            "dnsd_refused_total{{reason=\"outsider\"}} {refused}\n"
        )),
        "{m}"
    );
    drop(d);
}
