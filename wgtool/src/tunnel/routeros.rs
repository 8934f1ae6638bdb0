//! A RouterOS v7 script, for `/import file-name=...` or pasting into a terminal. RouterOS
//! adds no routes for `allowed-address`, so each gets an `/ipv6 route` or `/ip route`.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::{TunnelFile, INTERFACE};

pub fn render(t: &TunnelFile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# sixpn peer {} of org {}.", t.name, t.org);
    for note in t.site_notes() {
        let _ = writeln!(s, "# {note}");
    }
    let _ = writeln!(
        s,
        "# DNS: {} answers the org's .internal names. RouterOS has no per-interface resolver,\n\
         # so this script leaves /ip dns alone; to send only .internal there:\n\
         #   /ip dns static add regexp=\"\\\\.internal\\$\" type=FWD forward-to={}",
        t.dns, t.dns
    );
    let allowed: Vec<String> = t.allowed_ips.iter().map(ToString::to_string).collect();
    let comment = format!("sixpn {}/{}", t.org, t.name);
    let _ = write!(
        s,
        "/interface wireguard add name={INTERFACE} private-key=\"{}\" comment=\"{comment}\"\n\
         /interface wireguard peers add interface={INTERFACE} public-key=\"{}\" \
         endpoint-address={} endpoint-port={} allowed-address={} persistent-keepalive={}s \
         comment=\"{comment} via {}\"\n\
         /ipv6 address add address={}/128 interface={INTERFACE} advertise=no\n",
        t.private_key_text(),
        t.gateway_public_key,
        t.endpoint.ip(),
        t.endpoint.port(),
        allowed.join(","),
        t.keepalive,
        t.gateway,
        t.address
    );
    for net in &t.allowed_ips {
        let menu = match net {
            IpNet::V6(_) => "/ipv6 route",
            IpNet::V4(_) => "/ip route",
        };
        let _ = writeln!(
            s,
            "{menu} add dst-address={net} gateway={INTERFACE} comment=\"{comment}\""
        );
    }
    s
}
