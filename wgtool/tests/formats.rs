//! One site peer in every configuration format: each file is read by the real tool where
//! Debian has one (wg-quick + wg on wireguard-go, systemd-networkd, nmcli), and parsed back
//! here, and must say the same keys, address, allowed IPs and routes as the wg-quick file.
//!
//! Needs root (network and mount namespaces), `wg`, `wg-quick`, `wireguard-go` and
//! systemd-networkd; nmcli (1.42 or later, for `--offline`) when network-manager is installed.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ipnet::IpNet;

const WGTOOL: &str = env!("CARGO_BIN_EXE_wgtool");
const PLACEHOLDER: &str = "<the private key made when this peer was created>";

struct Env {
    dir: tempfile::TempDir,
    db: String,
}

impl Env {
    /// An org with a gateway, another site (IPv6 2001:db8:7::/48), and the site under test,
    /// `site-ams` (10.20.0.0/24 and 2001:db8:5::/48), made as a wg-quick file.
    fn with_site() -> (Env, String) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db").to_string_lossy().into_owned();
        let env = Env { dir, db };
        let gw_key = sh("wg genkey | wg pubkey");
        env.ok(&["org", "create", "acme"]);
        env.ok(&[
            "node",
            "add",
            "gw1",
            "--region",
            "iad",
            "--endpoint",
            "192.0.2.1:51820",
            "--public-key",
            gw_key.trim(),
            "--gateway",
        ]);
        env.ok(&[
            "create",
            "acme",
            "iad",
            "site-other",
            "other.conf",
            "--route",
            "2001:db8:7::/48",
        ]);
        env.ok(&[
            "create",
            "acme",
            "iad",
            "site-ams",
            "wgsite.conf",
            "--route",
            "10.20.0.0/24",
            "--route",
            "2001:db8:5::/48",
        ]);
        let text = std::fs::read_to_string(env.dir.path().join("wgsite.conf")).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("PrivateKey = "))
            .unwrap()
            .to_string();
        (env, key)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(WGTOOL)
            .arg("--registry")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::null())
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wgtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `wgtool config` in `format` to `name` (suffixes added by the format), with the real
    /// key put where the placeholder is, as the router's admin would.
    fn config_with_key(&self, format: &str, name: &str, key: &str) {
        let out = self.path(name);
        self.ok(&[
            "config",
            "acme",
            "site-ams",
            "--format",
            format,
            "--output",
            out.to_str().unwrap(),
        ]);
        for suffix in ["", ".netdev", ".network"] {
            let p = self.path(&format!("{name}{suffix}"));
            if !p.exists() {
                continue;
            }
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, text.replace(PLACEHOLDER, key)).unwrap();
        }
    }
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a configuration says, in any format.
#[derive(Debug, Clone, PartialEq, Default)]
struct Seen {
    private_key: String,
    gateway_key: String,
    address: String,
    endpoint: String,
    keepalive: String,
    allowed_ips: BTreeSet<IpNet>,
    /// The routes the configuration puts into the tunnel.
    routes: BTreeSet<IpNet>,
}

fn nets<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<IpNet> {
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("`{s}`: {e}")))
        .collect()
}

/// `[section]` and `key = value` lines, in order; `#` and `;` lines are comments.
fn ini(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: `{line}`"));
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn get<'a>(kv: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    kv.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn one<'a>(kv: &'a [(String, String, String)], section: &str, key: &str) -> &'a str {
    let v = get(kv, section, key);
    assert_eq!(v.len(), 1, "[{section}] {key}: {v:?}");
    v[0]
}

fn parse_wg_quick(text: &str) -> Seen {
    let kv = ini(text);
    let allowed = nets(one(&kv, "Peer", "AllowedIPs").split(','));
    Seen {
        private_key: one(&kv, "Interface", "PrivateKey").into(),
        gateway_key: one(&kv, "Peer", "PublicKey").into(),
        address: one(&kv, "Interface", "Address").into(),
        endpoint: one(&kv, "Peer", "Endpoint").into(),
        keepalive: one(&kv, "Peer", "PersistentKeepalive").into(),
        // wg-quick routes every allowed IP into the tunnel.
        routes: allowed.clone(),
        allowed_ips: allowed,
    }
}

fn parse_networkd(netdev: &str, network: &str) -> Seen {
    let d = ini(netdev);
    let n = ini(network);
    assert_eq!(one(&d, "NetDev", "Kind"), "wireguard");
    assert_eq!(one(&d, "NetDev", "Name"), one(&n, "Match", "Name"));
    Seen {
        private_key: one(&d, "WireGuard", "PrivateKey").into(),
        gateway_key: one(&d, "WireGuardPeer", "PublicKey").into(),
        address: one(&n, "Network", "Address").into(),
        endpoint: one(&d, "WireGuardPeer", "Endpoint").into(),
        keepalive: one(&d, "WireGuardPeer", "PersistentKeepalive").into(),
        allowed_ips: nets(get(&d, "WireGuardPeer", "AllowedIPs")),
        routes: nets(get(&n, "Route", "Destination")),
    }
}

fn parse_nmconnection(text: &str) -> Seen {
    let kv = ini(text);
    assert_eq!(one(&kv, "connection", "type"), "wireguard");
    let peer = kv
        .iter()
        .find_map(|(s, _, _)| s.strip_prefix("wireguard-peer."))
        .expect("a [wireguard-peer.<key>] section")
        .to_string();
    let section = format!("wireguard-peer.{peer}");
    let allowed = nets(one(&kv, &section, "allowed-ips").split(';'));
    assert_eq!(one(&kv, "ipv6", "method"), "manual");
    Seen {
        private_key: one(&kv, "wireguard", "private-key").into(),
        gateway_key: peer,
        address: one(&kv, "ipv6", "address1").into(),
        endpoint: one(&kv, &section, "endpoint").into(),
        keepalive: one(&kv, &section, "persistent-keepalive").into(),
        // NetworkManager routes the allowed IPs itself (wireguard.peer-routes, on by default).
        routes: allowed.clone(),
        allowed_ips: allowed,
    }
}

/// `key=value` words of a RouterOS command, quotes removed.
fn routeros_words(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next;
    }
    out
}

fn parse_routeros(text: &str) -> Seen {
    let mut seen = Seen::default();
    let mut ip = String::new();
    let mut port = String::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let words = routeros_words(line);
        let w = |k: &str| {
            words
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{k} in `{line}`"))
        };
        if line.starts_with("/interface wireguard add ") {
            seen.private_key = w("private-key");
        } else if line.starts_with("/interface wireguard peers add ") {
            seen.gateway_key = w("public-key");
            ip = w("endpoint-address");
            port = w("endpoint-port");
            seen.keepalive = w("persistent-keepalive").trim_end_matches('s').into();
            let allowed = w("allowed-address");
            seen.allowed_ips = nets(allowed.split(','));
        } else if line.starts_with("/ipv6 address add ") {
            seen.address = w("address");
        } else if line.starts_with("/ipv6 route add ") || line.starts_with("/ip route add ") {
            assert_eq!(w("gateway"), "wg-sixpn", "{line}");
            seen.routes.insert(w("dst-address").parse().unwrap());
        } else {
            panic!("unexpected RouterOS line `{line}`");
        }
    }
    seen.endpoint = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    seen
}

/// Words of a VyOS command: split at spaces, except inside single quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => words.push(String::new()),
            _ => words.last_mut().unwrap().push(c),
        }
    }
    assert!(!quoted, "unclosed quote in `{line}`");
    words.retain(|w| !w.is_empty());
    words
}

fn parse_vyos(text: &str) -> Seen {
    let mut seen = Seen::default();
    let (mut ip, mut port) = (String::new(), String::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let words = shell_words(line);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["set", "interfaces", "wireguard", "wg0", "description", ..] => {}
            ["set", "interfaces", "wireguard", "wg0", "address", a] => seen.address = a.to_string(),
            ["set", "interfaces", "wireguard", "wg0", "private-key", k] => {
                seen.private_key = k.to_string()
            }
            ["set", "interfaces", "wireguard", "wg0", "peer", _, key, value] => match *key {
                "public-key" => seen.gateway_key = value.to_string(),
                "address" => ip = value.to_string(),
                "port" => port = value.to_string(),
                "persistent-keepalive" => seen.keepalive = value.to_string(),
                "allowed-ips" => {
                    seen.allowed_ips.insert(value.parse().unwrap());
                }
                _ => panic!("unexpected VyOS peer setting `{line}`"),
            },
            ["set", "protocols", "static", "route" | "route6", net, "interface", "wg0"] => {
                seen.routes.insert(net.parse().unwrap());
            }
            _ => panic!("unexpected VyOS line `{line}`"),
        }
    }
    seen.endpoint = format!("{ip}:{port}");
    seen
}

fn parse_json(text: &str) -> Seen {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let list = |v: &serde_json::Value| -> BTreeSet<IpNet> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().parse().unwrap())
            .collect()
    };
    Seen {
        private_key: v["private_key"].as_str().unwrap_or(PLACEHOLDER).into(),
        gateway_key: v["peer"]["public_key"].as_str().unwrap().into(),
        address: format!("{}/128", v["address"].as_str().unwrap()),
        endpoint: v["peer"]["endpoint"].as_str().unwrap().into(),
        keepalive: v["peer"]["persistent_keepalive"].to_string(),
        allowed_ips: list(&v["peer"]["allowed_ips"]),
        routes: list(&v["routes"]),
    }
}

/// wg-quick's own parser strips the file, and `wg setconf` loads it into a wireguard-go
/// interface in fresh network and mount namespaces; `wg showconf` says what it took.
fn wg_reads(conf: &Path) -> Seen {
    let stripped = sh(&format!("wg-quick strip {}", conf.display()));
    let stripped_path = conf.with_extension("stripped");
    std::fs::write(&stripped_path, stripped).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs none /run; mkdir -p /run/wireguard
         wireguard-go -f wgt0 >/dev/null 2>&1 & pid=$!
         for i in $(seq 200); do [ -S /run/wireguard/wgt0.sock ] && break; sleep 0.05; done
         wg setconf wgt0 {}; wg showconf wgt0; kill $pid",
        stripped_path.display()
    );
    let shown = sh(&format!("unshare -m -n sh -c '{script}'"));
    let kv = ini(&shown);
    let allowed = nets(one(&kv, "Peer", "AllowedIPs").split(','));
    Seen {
        private_key: one(&kv, "Interface", "PrivateKey").into(),
        gateway_key: one(&kv, "Peer", "PublicKey").into(),
        address: String::new(),
        endpoint: one(&kv, "Peer", "Endpoint").into(),
        keepalive: one(&kv, "Peer", "PersistentKeepalive").into(),
        routes: allowed.clone(),
        allowed_ips: allowed,
    }
}

/// Runs systemd-networkd on the two files in fresh network and mount namespaces and returns
/// every complaint it logs about them (unknown keys, values it cannot parse); empty when it
/// took both whole. Without kernel WireGuard it cannot make the device, which is after the
/// files are read.
fn networkd_complaints(netdev: &Path, network: &Path) -> Vec<String> {
    let script = format!(
        "set -e; mount -t tmpfs none /run/systemd; mount -t tmpfs none /etc/systemd/network
         mkdir -p /run/systemd/network
         cp {} /run/systemd/network/50-sixpn.netdev; cp {} /run/systemd/network/50-sixpn.network
         chgrp systemd-network /run/systemd/network/*; chmod 0640 /run/systemd/network/*
         SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console timeout 3 \
           /usr/lib/systemd/systemd-networkd 2>&1 || true",
        netdev.display(),
        network.display()
    );
    let log = sh(&format!("unshare -m -n sh -c '{script}'"));
    assert!(
        log.contains("wg-sixpn: loaded \"wireguard\""),
        "networkd did not load the netdev:\n{log}"
    );
    log.lines()
        .filter(|l| l.contains("/run/systemd/network/"))
        .map(String::from)
        .collect()
}

/// Whether nmcli is here. scripts/deps leaves network-manager out on purpose (its postinst
/// starts NetworkManager, which takes over a host's interfaces), so without it the keyfile is
/// only parsed here, and the test says so.
fn have_nmcli() -> bool {
    let here = Command::new("nmcli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        eprintln!("nmcli is not installed (network-manager): the keyfile is parsed here only");
    }
    here
}

/// nmcli reads the keyfile without a daemon and prints it back as NetworkManager would
/// store it: values it cannot read are dropped, so the parse of its output must still match.
fn nmcli_reads(conf: &Path) -> String {
    let out = Command::new("nmcli")
        .args([
            "--offline",
            "connection",
            "modify",
            "connection.autoconnect",
            "yes",
        ])
        .stdin(std::fs::File::open(conf).unwrap())
        .output()
        .expect("nmcli (network-manager 1.42+) is needed");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "nmcli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn one_site_peer_says_the_same_in_every_format_and_the_real_tools_read_it() {
    let (env, key) = Env::with_site();
    let wgq_text = std::fs::read_to_string(env.path("wgsite.conf")).unwrap();
    let want = parse_wg_quick(&wgq_text);

    // The allowed IPs are the org's /48, the other site, and the NAT64 pool; not its own LAN.
    assert_eq!(
        want.allowed_ips,
        nets(["fdaa:0:1::/48", "2001:db8:7::/48", "100.127.0.0/16"])
    );
    assert!(wgq_text.contains("# The LAN must route fdaa:0:1::/48 and 100.127.0.0/16"));

    // wg-quick: wg-quick strip + wg setconf take it, and say back the same.
    let mut by_wg = wg_reads(&env.path("wgsite.conf"));
    by_wg.address = want.address.clone();
    assert_eq!(by_wg, want, "what wg took from the wg-quick file");

    // networkd
    env.config_with_key("networkd", "50-sixpn", &key);
    let (netdev, network) = (env.path("50-sixpn.netdev"), env.path("50-sixpn.network"));
    assert_eq!(networkd_complaints(&netdev, &network), Vec::<String>::new());
    let nd = parse_networkd(
        &std::fs::read_to_string(&netdev).unwrap(),
        &std::fs::read_to_string(&network).unwrap(),
    );
    assert_eq!(nd, want, "networkd");

    // NetworkManager
    env.config_with_key("nmconnection", "site.nmconnection", &key);
    let nm_text = std::fs::read_to_string(env.path("site.nmconnection")).unwrap();
    assert_eq!(parse_nmconnection(&nm_text), want, "nmconnection");
    let nmcli = have_nmcli();
    if nmcli {
        let read_back = nmcli_reads(&env.path("site.nmconnection"));
        assert_eq!(
            parse_nmconnection(&read_back),
            want,
            "nmconnection as nmcli read it"
        );
    }

    // RouterOS and VyOS: no reader on Debian; parsed here.
    env.config_with_key("routeros", "site.rsc", &key);
    let ros = parse_routeros(&std::fs::read_to_string(env.path("site.rsc")).unwrap());
    assert_eq!(ros, want, "routeros");
    env.config_with_key("vyos", "site.vyos", &key);
    let vyos = parse_vyos(&std::fs::read_to_string(env.path("site.vyos")).unwrap());
    assert_eq!(vyos, want, "vyos");

    // JSON, printed again: the key is null, everything else the same.
    let json = parse_json(&env.ok(&["config", "acme", "site-ams", "--format", "json"]));
    assert_eq!(
        json,
        Seen {
            private_key: PLACEHOLDER.into(),
            ..want.clone()
        },
        "json"
    );

    // The checks can fail: a key networkd does not know, and a value nmcli cannot read.
    let bad = env.path("bad.network");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&network)
            .unwrap()
            .replace("IPForward=", "IPForwardx="),
    )
    .unwrap();
    let complaints = networkd_complaints(&netdev, &bad);
    assert!(
        complaints
            .iter()
            .any(|l| l.contains("Unknown key 'IPForwardx'")),
        "{complaints:?}"
    );
    if nmcli {
        let bad = env.path("bad.nmconnection");
        let text = nm_text.replace("persistent-keepalive=15", "persistent-keepalive=15s");
        std::fs::write(&bad, text).unwrap();
        let read_back = nmcli_reads(&bad);
        assert!(!read_back.contains("persistent-keepalive"), "{read_back}");
    }
}

#[test]
fn create_writes_every_format_with_a_key_that_matches_the_registry() {
    let (env, _) = Env::with_site();
    let formats = [
        ("wg-quick", "f1.conf"),
        ("networkd", "f2"),
        ("nmconnection", "f3.nmconnection"),
        ("routeros", "f4.rsc"),
        ("vyos", "f5.vyos"),
        ("json", "f6.json"),
    ];
    for (i, (format, file)) in formats.iter().enumerate() {
        let name = format!("laptop{i}");
        env.ok(&["create", "acme", "iad", &name, file, "--format", format]);
        let text = if *format == "networkd" {
            assert!(env.path("f2.network").exists());
            std::fs::read_to_string(env.path("f2.netdev")).unwrap()
        } else {
            std::fs::read_to_string(env.path(file)).unwrap()
        };
        let seen = match *format {
            "wg-quick" => parse_wg_quick(&text),
            "networkd" => parse_networkd(
                &text,
                &std::fs::read_to_string(env.path("f2.network")).unwrap(),
            ),
            "nmconnection" => parse_nmconnection(&text),
            "routeros" => parse_routeros(&text),
            "vyos" => parse_vyos(&text),
            _ => parse_json(&text),
        };
        let derived = sh(&format!("echo '{}' | wg pubkey", seen.private_key));
        let snap = registry::open(&env.db).unwrap().snapshot().unwrap();
        let peer = &snap.peers[&("acme".to_string(), name.clone())];
        assert_eq!(
            derived.trim(),
            peer.public_key.to_string(),
            "{format}: only the public key is registered"
        );
        // A laptop: the org's /48 and every site's IPv6 prefix, no NAT64 pool.
        assert_eq!(
            seen.allowed_ips,
            nets(["fdaa:0:1::/48", "2001:db8:5::/48", "2001:db8:7::/48"]),
            "{format}"
        );
    }
    // Nothing is overwritten: a networkd base whose .network exists is refused before the
    // registry is touched.
    std::fs::write(env.path("f7.network"), "theirs").unwrap();
    let out = env.run(&[
        "create", "acme", "iad", "late", "f7", "--format", "networkd",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("f7.network`: already exists"));
    assert!(!env.path("f7.netdev").exists());
    let snap = registry::open(&env.db).unwrap().snapshot().unwrap();
    assert!(!snap
        .peers
        .contains_key(&("acme".to_string(), "late".to_string())));
}

#[test]
fn config_prints_again_without_the_key_and_names_bad_input() {
    let (env, key) = Env::with_site();
    let text = env.ok(&["config", "acme", "site-ams"]);
    assert!(
        text.contains(&format!("PrivateKey = {PLACEHOLDER}\n")),
        "{text}"
    );
    assert!(!text.contains(&key));
    let mut again = parse_wg_quick(&text);
    again.private_key = key.clone();
    assert_eq!(
        again,
        parse_wg_quick(&std::fs::read_to_string(env.path("wgsite.conf")).unwrap())
    );
    // A new site shows up in the other site's configuration printed again.
    env.ok(&[
        "create",
        "acme",
        "iad",
        "site-new",
        "-",
        "--route",
        "2001:db8:9::/48",
    ]);
    let text = env.ok(&["config", "acme", "site-ams", "--format", "vyos"]);
    assert!(
        parse_vyos(&text)
            .allowed_ips
            .contains(&"2001:db8:9::/48".parse().unwrap()),
        "{text}"
    );
    // --output makes a new 0600 file and refuses an existing one.
    env.ok(&["config", "acme", "site-ams", "--output", "again.conf"]);
    assert_eq!(
        std::fs::metadata(env.path("again.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    for (args, want) in [
        (
            &["config", "acme", "site-ams", "--output", "again.conf"][..],
            "file `again.conf`: already exists",
        ),
        (
            &["config", "acme", "nobody"][..],
            "peer `nobody` does not exist",
        ),
        (
            &["config", "nope", "site-ams"][..],
            "org `nope` does not exist",
        ),
    ] {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let out = env.run(&["config", "acme", "site-ams", "--format", "ini"]);
    assert_eq!(out.status.code(), Some(2));
}
