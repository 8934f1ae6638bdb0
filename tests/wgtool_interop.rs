//! A tunnel file from `wgtool create` is accepted by the real WireGuard tools:
//! `wg-quick strip`, then `wg setconf` on a `wireguard-go` interface in a namespace.

use std::process::Command;
use std::time::Duration;

use sixpn_tests::{bin, sh, temp_registry, unique, Netns};

fn wgtool(db: &str, args: &[&str]) -> String {
    let out = Command::new(bin("wgtool"))
        .arg("--registry")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wgtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tunnel_file_loads_into_wireguard_go_via_wg_quick_strip_and_wg_setconf() {
    let (dir, db) = temp_registry().unwrap();
    let gw_key = sh("wg genkey | wg pubkey").unwrap();
    wgtool(&db, &["org", "create", "acme"]);
    wgtool(
        &db,
        &[
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
        ],
    );
    // wg-quick derives the interface name from the file name.
    let ifname = unique("wgl");
    let conf = dir.path().join(format!("{ifname}.conf"));
    wgtool(
        &db,
        &["create", "acme", "iad", "alice", conf.to_str().unwrap()],
    );

    let stripped = sh(&format!("wg-quick strip {}", conf.display())).unwrap();
    assert!(
        stripped.contains("PrivateKey = ") && !stripped.contains("Address"),
        "{stripped}"
    );
    let stripped_path = dir.path().join("stripped.conf");
    std::fs::write(&stripped_path, &stripped).unwrap();

    let ns = Netns::new("wi").unwrap();
    let _wg = ns.spawn("wireguard-go", &["-f", &ifname]).unwrap();
    ns.wait_for(&format!("ip link show {ifname}"), Duration::from_secs(10))
        .unwrap();
    ns.sh(&format!("wg setconf {ifname} {}", stripped_path.display()))
        .unwrap();

    let shown = ns.sh(&format!("wg showconf {ifname}")).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .to_string()
    };
    for (name, value) in [
        ("PrivateKey", field("PrivateKey")),
        ("PublicKey", gw_key.trim().to_string()),
        ("AllowedIPs", "fdaa:0:1::/48".to_string()),
        ("Endpoint", "192.0.2.1:51820".to_string()),
        ("PersistentKeepalive", "15".to_string()),
    ] {
        assert!(
            shown.contains(&format!("{name} = {value}")),
            "wg showconf lacks {name} = {value}:\n{shown}"
        );
    }
    // The address line is what wg-quick itself would assign.
    ns.sh(&format!(
        "ip -6 addr add {} dev {ifname} && ip link set {ifname} up",
        field("Address")
    ))
    .unwrap();
    let addrs = ns.sh(&format!("ip -6 addr show dev {ifname}")).unwrap();
    assert!(addrs.contains(&field("Address")), "{addrs}");
}
