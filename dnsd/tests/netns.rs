//! Real clients inside network namespaces whose source addresses are in an org network:
//! the system resolver (`getent`) through `/etc/netns/<ns>/resolv.conf`, and two orgs that
//! must not see each other's names.

mod common;

use std::net::SocketAddr;

use common::*;

#[test]
fn getent_in_a_namespace_resolves_web_internal() {
    let reg = TestRegistry::new();
    let acme = reg.org("acme");
    reg.node("host-iad", "iad", true);
    let web = reg.machine("acme", "web", "iad", "host-iad");
    let ns = Netns::new("getent");
    // The querier: an address on host-iad's /80 in acme's network, so dnsd scopes it to acme.
    let dns = acme.network.dns_addr();
    let client = acme.network.slot_addr(0x0a7b_0001, 0xfff0);
    ns.add_addr(&dns.to_string());
    ns.add_addr(&client.to_string());
    std::fs::create_dir_all(ns.etc_dir()).unwrap();
    std::fs::write(
        ns.etc_dir().join("resolv.conf"),
        format!("nameserver {dns}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let listen = SocketAddr::new(dns.into(), 53);
    let _d = Dnsd::start(
        Some(&ns.name),
        listen,
        &["--registry", &reg.url(), "--upstream", "127.0.0.1:9"],
    );
    let out = ns.exec(&["getent", "ahosts", "web.internal"]);
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
    let ns = Netns::new("orgs");
    let a_client = acme.network.slot_addr(0x0a7b_0001, 0xfff0);
    let g_client = globex.network.slot_addr(0x0a7b_0001, 0xfff0);
    ns.add_addr(&a_client.to_string());
    ns.add_addr(&g_client.to_string());
    let listen: SocketAddr = "[::1]:53".parse().unwrap();
    let d = Dnsd::start(
        Some(&ns.name),
        listen,
        &["--registry", &reg.url(), "--upstream", "127.0.0.1:9"],
    );
    let ask = |from: &str, name: &str, qtype: &str| {
        dig(Some(&ns.name), d.addr, &["-b", from, "+tcp", name, qtype])
    };
    let a = a_client.to_string();
    let g = g_client.to_string();
    let out = dig(
        Some(&ns.name),
        d.addr,
        &["-b", &a, "+short", "web.internal", "AAAA"],
    );
    assert_eq!(out.trim(), web.addr.to_string());
    let out = dig(
        Some(&ns.name),
        d.addr,
        &["-b", &g, "+short", "secret.internal", "AAAA"],
    );
    assert_eq!(out.trim(), secret.addr.to_string());
    assert!(ask(&a, "secret.internal", "AAAA").contains("status: NXDOMAIN"));
    assert!(ask(&g, "web.internal", "AAAA").contains("status: NXDOMAIN"));
    let out = dig(
        Some(&ns.name),
        d.addr,
        &["-b", &a, "+short", "_apps.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"web\"");
    let out = dig(
        Some(&ns.name),
        d.addr,
        &["-b", &g, "+short", "_apps.internal", "TXT"],
    );
    assert_eq!(out.trim(), "\"secret\"");
    let out = dig(
        Some(&ns.name),
        d.addr,
        &["-b", &g, "+short", "_instances.internal", "TXT"],
    );
    assert!(out.contains(&secret.id) && !out.contains(&web.id), "{out}");
    // Loopback (no org, no default org): refused.
    assert!(ask("::1", "web.internal", "AAAA").contains("status: REFUSED"));
}
