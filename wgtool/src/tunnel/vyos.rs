//! VyOS configuration-mode commands (1.4): paste after `configure`, then `commit; save`.
//! VyOS adds no routes for `allowed-ips`, so each gets a static route.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::TunnelFile;

/// VyOS names WireGuard interfaces `wgN`.
const VYOS_INTERFACE: &str = "wg0";

pub fn render(t: &TunnelFile) -> String {
    let i = VYOS_INTERFACE;
    let peer = &t.gateway;
    let mut s = String::new();
    let _ = writeln!(s, "# sixpn peer {} of org {}.", t.name, t.org);
    for note in t.site_notes() {
        let _ = writeln!(s, "# {note}");
    }
    let _ = writeln!(
        s,
        "# DNS: {} answers the org's .internal names; VyOS sets resolvers system-wide, so\n\
         # these commands leave them alone. To forward only .internal there:\n\
         #   set service dns forwarding domain internal name-server {}",
        t.dns, t.dns
    );
    let _ = write!(
        s,
        "set interfaces wireguard {i} description 'sixpn {}/{}'\n\
         set interfaces wireguard {i} address '{}/128'\n\
         set interfaces wireguard {i} private-key '{}'\n\
         set interfaces wireguard {i} peer {peer} public-key '{}'\n\
         set interfaces wireguard {i} peer {peer} address '{}'\n\
         set interfaces wireguard {i} peer {peer} port '{}'\n\
         set interfaces wireguard {i} peer {peer} persistent-keepalive '{}'\n",
        t.org,
        t.name,
        t.address,
        t.private_key_text(),
        t.gateway_public_key,
        t.endpoint.ip(),
        t.endpoint.port(),
        t.keepalive
    );
    for net in &t.allowed_ips {
        let _ = writeln!(
            s,
            "set interfaces wireguard {i} peer {peer} allowed-ips '{net}'"
        );
    }
    for net in &t.allowed_ips {
        let kind = match net {
            IpNet::V6(_) => "route6",
            IpNet::V4(_) => "route",
        };
        let _ = writeln!(s, "set protocols static {kind} {net} interface {i}");
    }
    s
}
