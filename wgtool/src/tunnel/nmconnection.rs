//! A NetworkManager keyfile. NetworkManager adds a route for each allowed IP itself
//! (`wireguard.peer-routes`, on by default), so the routes are the `allowed-ips`.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::{TunnelFile, INTERFACE};

pub fn render(t: &TunnelFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# sixpn peer {} of org {}. For /etc/NetworkManager/system-connections/ (mode 0600,\n\
         # owned by root), then `nmcli connection reload`.",
        t.name, t.org
    );
    for note in t.site_notes() {
        let _ = writeln!(s, "# {note}");
    }
    let has_v4 = t.allowed_ips.iter().any(|n| matches!(n, IpNet::V4(_)));
    if has_v4 {
        s.push_str(
            "# The tunnel has no IPv4 address, so [ipv4] is disabled and NetworkManager adds no\n\
             # IPv4 routes: route the NAT64 pool yourself once it is up, e.g. from a dispatcher\n\
             # script:\n",
        );
        for net in t.allowed_ips.iter().filter(|n| matches!(n, IpNet::V4(_))) {
            let _ = writeln!(s, "#   ip route add {net} dev {INTERFACE}");
        }
    }
    let allowed: String = t.allowed_ips.iter().map(|n| format!("{n};")).collect();
    let _ = write!(
        s,
        "\n[connection]\nid=sixpn-{}-{}\ntype=wireguard\ninterface-name={INTERFACE}\n\n\
         [wireguard]\nprivate-key={}\n\n\
         [wireguard-peer.{}]\nendpoint={}\npersistent-keepalive={}\nallowed-ips={allowed}\n\n\
         [ipv4]\nmethod=disabled\n\n\
         [ipv6]\nmethod=manual\naddress1={}/128\ndns={};\n",
        t.org,
        t.name,
        t.private_key_text(),
        t.gateway_public_key,
        t.endpoint,
        t.keepalive,
        t.address,
        t.dns
    );
    s
}
