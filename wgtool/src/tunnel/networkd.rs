//! systemd-networkd: a `.netdev` (the WireGuard device and its peer) and a `.network` (the
//! address, DNS, and one `[Route]` per allowed IP, since networkd adds none by itself).

use std::fmt::Write as _;

use super::{Part, TunnelFile, INTERFACE};

/// The device file, then the network file.
pub const SUFFIXES: [&str; 2] = [".netdev", ".network"];

pub fn render(t: &TunnelFile) -> Vec<Part> {
    vec![
        Part {
            suffix: SUFFIXES[0],
            text: netdev(t),
        },
        Part {
            suffix: SUFFIXES[1],
            text: network(t),
        },
    ]
}

fn netdev(t: &TunnelFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# sixpn peer {} of org {}. systemd-networkd reads this file as the user\n\
         # systemd-network: `chown root:systemd-network` it and keep it mode 0640 or tighter.",
        t.name, t.org
    );
    for note in t.site_notes() {
        let _ = writeln!(s, "# {note}");
    }
    let _ = write!(
        s,
        "\n[NetDev]\nName={INTERFACE}\nKind=wireguard\n\n\
         [WireGuard]\nPrivateKey={}\n\n\
         [WireGuardPeer]\nPublicKey={}\n",
        t.private_key_text(),
        t.gateway_public_key
    );
    for net in &t.allowed_ips {
        let _ = writeln!(s, "AllowedIPs={net}");
    }
    let _ = writeln!(
        s,
        "Endpoint={}\nPersistentKeepalive={}",
        t.endpoint, t.keepalive
    );
    s
}

fn network(t: &TunnelFile) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# sixpn peer {} of org {}: the address, DNS and routes of {INTERFACE}.\n\n\
         [Match]\nName={INTERFACE}\n\n\
         [Network]\nAddress={}/128\nDNS={}\n",
        t.name, t.org, t.address, t.dns
    );
    if t.is_site() {
        s.push_str("IPForward=yes\n");
    }
    for net in &t.allowed_ips {
        let _ = write!(s, "\n[Route]\nDestination={net}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::{sample_site, Format};

    #[test]
    fn one_route_section_per_allowed_ip_and_forwarding_on_a_site() {
        let parts = sample_site().render(Format::Networkd);
        assert_eq!(parts.len(), 2);
        let network = &parts[1].text;
        assert_eq!(
            network.matches("[Route]\nDestination=").count(),
            3,
            "{network}"
        );
        assert!(network.contains("IPForward=yes"), "{network}");
        assert_eq!(parts[0].text.matches("\nAllowedIPs=").count(), 3);
    }
}
