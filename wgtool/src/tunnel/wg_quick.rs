//! wg-quick's format (also what the WireGuard apps import). wg-quick adds a route for each
//! allowed IP itself, so routes need no lines of their own.

use std::fmt::Write as _;

use super::TunnelFile;

pub fn render(t: &TunnelFile) -> String {
    let mut s = String::new();
    for note in t.site_notes() {
        let _ = writeln!(s, "# {note}");
    }
    if t.is_site() {
        s.push('\n');
    }
    let allowed: Vec<String> = t.allowed_ips.iter().map(ToString::to_string).collect();
    let _ = write!(
        s,
        "[Interface]\nPrivateKey = {}\nAddress = {}/128\nDNS = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {}\nPersistentKeepalive = {}\n",
        t.private_key_text(),
        t.address,
        t.dns,
        t.gateway_public_key,
        allowed.join(", "),
        t.endpoint,
        t.keepalive
    );
    s
}

#[cfg(test)]
mod tests {
    use super::super::{sample_site, Format};

    fn laptop() -> super::TunnelFile {
        let mut t = sample_site();
        t.site_routes.clear();
        t.via = None;
        t.allowed_ips = vec![t.org_prefix.into()];
        t
    }

    #[test]
    fn a_laptop_gets_flys_layout_exactly() {
        assert_eq!(
            laptop().render(Format::WgQuick)[0].text,
            "[Interface]\n\
             PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
             Address = fdaa:0:18:a7b:1:0:1:2/128\n\
             DNS = fdaa:0:18::3\n\
             \n\
             [Peer]\n\
             PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
             AllowedIPs = fdaa:0:18::/48\n\
             Endpoint = 192.0.2.1:51820\n\
             PersistentKeepalive = 15\n"
        );
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let mut t = laptop();
        t.endpoint = "[2001:db8::1]:51820".parse().unwrap();
        assert!(t.render(Format::WgQuick)[0]
            .text
            .contains("Endpoint = [2001:db8::1]:51820\n"));
    }

    #[test]
    fn a_site_lists_every_allowed_ip_after_its_notes() {
        let text = &sample_site().render(Format::WgQuick)[0].text;
        assert!(text.starts_with("# Site router for org acme"), "{text}");
        assert!(
            text.contains("AllowedIPs = fdaa:0:18::/48, 2001:db8:7::/48, 100.127.0.0/16\n"),
            "{text}"
        );
    }
}
