//! The tunnel file: one value ([`TunnelFile`]) that says everything a laptop or a site's
//! router needs, rendered by one function per configuration format ([`Format`]).
//!
//! The private key is made on this machine and only ever written here, to files made new
//! with mode 0600; nothing is overwritten.

mod json;
mod networkd;
mod nmconnection;
mod routeros;
mod vyos;
mod wg_quick;

use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv6Net};
use registry::PublicKey;

/// The interface name the router formats give the tunnel (wg-quick takes it from the file
/// name, VyOS wants `wgN`).
pub const INTERFACE: &str = "wg-sixpn";

/// What stands in for the private key when a configuration is printed again: the key was
/// made on the device when the peer was created and the registry never had it.
pub const KEY_PLACEHOLDER: &str = "<the private key made when this peer was created>";

/// Everything a tunnel file says.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelFile {
    pub org: String,
    /// The peer's name (used for connection names and comments).
    pub name: String,
    /// `None` when printed again from the registry: [`KEY_PLACEHOLDER`] stands in.
    pub private_key: Option<String>,
    /// The peer's own public key, as registered.
    pub public_key: PublicKey,
    pub address: Ipv6Addr,
    pub dns: Ipv6Addr,
    /// The gateway node's name and key.
    pub gateway: String,
    pub gateway_public_key: PublicKey,
    /// What goes into the tunnel: the org's /48, other sites' IPv6 prefixes, and for a site
    /// with IPv4 routes the NAT64 pool its gateway sends from.
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: SocketAddr,
    pub keepalive: u16,
    /// The org's /48 (what the LAN behind a site must route to the router).
    pub org_prefix: Ipv6Net,
    /// The peer's own site routes (its LAN): the org reaches them through this tunnel.
    pub site_routes: Vec<IpNet>,
    /// The site's 4via6 /96, when it has IPv4 routes.
    pub via: Option<Ipv6Net>,
}

/// The configuration formats `wgtool create` and `wgtool config` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A wg-quick file (also what the WireGuard apps import).
    WgQuick,
    /// systemd-networkd: FILE.netdev and FILE.network.
    Networkd,
    /// A NetworkManager keyfile (for /etc/NetworkManager/system-connections/).
    Nmconnection,
    /// A RouterOS v7 script (`/import` it).
    Routeros,
    /// VyOS configuration-mode `set` commands.
    Vyos,
    /// Every field, machine-readable.
    Json,
}

/// One file of a rendered configuration: `suffix` is added to the path the user gave
/// (networkd needs two files), `text` is its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub suffix: &'static str,
    pub text: String,
}

impl TunnelFile {
    /// Renders the configuration in `format`.
    pub fn render(&self, format: Format) -> Vec<Part> {
        let one = |text| vec![Part { suffix: "", text }];
        match format {
            Format::WgQuick => one(wg_quick::render(self)),
            Format::Networkd => networkd::render(self),
            Format::Nmconnection => one(nmconnection::render(self)),
            Format::Routeros => one(routeros::render(self)),
            Format::Vyos => one(vyos::render(self)),
            Format::Json => one(json::render(self)),
        }
    }

    /// The private key, or the placeholder when printed again.
    pub fn private_key_text(&self) -> &str {
        self.private_key.as_deref().unwrap_or(KEY_PLACEHOLDER)
    }

    /// A site router: a peer with routes of its own.
    pub fn is_site(&self) -> bool {
        !self.site_routes.is_empty()
    }

    /// The lines every format puts in a comment for a site router: what must forward, what
    /// the LAN must route, and where the org reaches the site. Empty for a laptop.
    pub fn site_notes(&self) -> Vec<String> {
        if !self.is_site() {
            return Vec::new();
        }
        let mut lines = vec![format!(
            "Site router for org {} (peer {}): it must forward packets between its LAN and \
             this tunnel (e.g. sysctl net.ipv6.conf.all.forwarding=1{}).",
            self.org,
            self.name,
            if self.has_v4() {
                ", net.ipv4.ip_forward=1"
            } else {
                ""
            }
        )];
        let pool = self
            .allowed_ips
            .iter()
            .find(|n| matches!(n, IpNet::V4(_)))
            .map(|p| format!(" and {p} (the NAT64 pool the org's gateway sends from)"))
            .unwrap_or_default();
        lines.push(format!(
            "The LAN must route {}{pool} to this router.",
            self.org_prefix
        ));
        for route in &self.site_routes {
            match (route, self.via) {
                (IpNet::V4(v4), Some(via)) => lines.push(format!(
                    "The org reaches {route} at {} (4via6).",
                    registry::addr::via_route(via, *v4)
                )),
                (IpNet::V4(_), None) => lines.push(format!(
                    "{route}: this peer's address has no 4via6 prefix, so the org cannot reach it."
                )),
                (IpNet::V6(_), _) => {
                    lines.push(format!("The org reaches {route} directly (IPv6)."))
                }
            }
        }
        lines
    }

    fn has_v4(&self) -> bool {
        self.allowed_ips.iter().any(|n| matches!(n, IpNet::V4(_)))
    }
}

impl Format {
    /// What each file of this format adds to the path the user gave.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Format::Networkd => &networkd::SUFFIXES,
            _ => &[""],
        }
    }
}

/// The paths a rendered configuration goes to, when written under `base`.
pub fn paths(base: &Path, format: Format) -> Vec<PathBuf> {
    format
        .suffixes()
        .iter()
        .map(|suffix| {
            let mut s = base.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        })
        .collect()
}

/// Prints a rendered configuration; several files each get a header line.
pub fn print(parts: &[Part]) {
    if let [only] = parts {
        print!("{}", only.text);
        return;
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("# ---- save as <name>{} ----", p.suffix);
        print!("{}", p.text);
    }
}

/// Writes every part under `base`, each new and 0600; on a failure the files this call made
/// are removed again.
pub fn write_parts(base: &Path, parts: &[Part]) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for p in parts {
        let mut s = base.as_os_str().to_owned();
        s.push(p.suffix);
        let path = PathBuf::from(s);
        if let Err(e) = write_new(&path, &p.text) {
            for m in &made {
                let _ = std::fs::remove_file(m);
            }
            return Err(e);
        }
        made.push(path);
    }
    Ok(made)
}

/// Fails unless `path` can be created new: it must not exist and its folder must.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.exists() {
        anyhow::bail!(
            "file `{}`: already exists; refusing to overwrite it",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        anyhow::bail!(
            "file `{}`: folder `{}` does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes `text` to a new file readable by its owner only (0600); never overwrites.
pub fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("file `{}`: cannot create", path.display()))?;
    let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("file `{}`: cannot write", path.display()));
    }
    Ok(())
}

/// The sample values the format tests share: a site with an IPv4 and an IPv6 route.
#[cfg(test)]
pub(crate) fn sample_site() -> TunnelFile {
    let org_prefix: Ipv6Net = "fdaa:0:18::/48".parse().unwrap();
    TunnelFile {
        org: "acme".into(),
        name: "site-ams".into(),
        private_key: Some("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into()),
        public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
            .parse()
            .unwrap(),
        address: "fdaa:0:18:a7b:1:0:1:2".parse().unwrap(),
        dns: "fdaa:0:18::3".parse().unwrap(),
        gateway: "gw1".into(),
        gateway_public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
            .parse()
            .unwrap(),
        allowed_ips: vec![
            IpNet::V6(org_prefix),
            "2001:db8:7::/48".parse().unwrap(),
            IpNet::V4(registry::addr::NAT64_POOL),
        ],
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        keepalive: 15,
        org_prefix,
        site_routes: vec![
            "10.20.0.0/24".parse().unwrap(),
            "2001:db8:5::/48".parse().unwrap(),
        ],
        via: registry::addr::via_prefix("fdaa:0:18:a7b:1:0:1:2".parse().unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.conf");
        check_writable(&path).unwrap();
        write_new(&path, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(check_writable(&path)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(write_new(&path, "y").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
        let missing = dir.path().join("nope/alice.conf");
        assert!(check_writable(&missing)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn networkd_writes_two_files_and_undoes_the_first_when_the_second_fails() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("50-sixpn");
        assert_eq!(
            paths(&base, Format::Networkd),
            vec![
                dir.path().join("50-sixpn.netdev"),
                dir.path().join("50-sixpn.network")
            ]
        );
        assert_eq!(paths(&base, Format::WgQuick), vec![base.clone()]);
        for f in [
            Format::WgQuick,
            Format::Networkd,
            Format::Nmconnection,
            Format::Routeros,
            Format::Vyos,
            Format::Json,
        ] {
            let rendered: Vec<&str> = sample_site().render(f).iter().map(|p| p.suffix).collect();
            assert_eq!(rendered, f.suffixes(), "{f:?}");
        }
        std::fs::write(dir.path().join("50-sixpn.network"), "theirs").unwrap();
        let parts = sample_site().render(Format::Networkd);
        assert!(write_parts(&base, &parts).is_err());
        assert!(!dir.path().join("50-sixpn.netdev").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("50-sixpn.network")).unwrap(),
            "theirs"
        );
    }

    #[test]
    fn every_format_says_the_placeholder_instead_of_a_key_when_printed_again() {
        let mut t = sample_site();
        let key = t.private_key.take().unwrap();
        for f in [
            Format::WgQuick,
            Format::Networkd,
            Format::Nmconnection,
            Format::Routeros,
            Format::Vyos,
        ] {
            let text: String = t.render(f).into_iter().map(|p| p.text).collect();
            assert!(text.contains(KEY_PLACEHOLDER), "{f:?}: {text}");
            assert!(!text.contains(&key), "{f:?}");
        }
        let json = &t.render(Format::Json)[0].text;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["private_key"], serde_json::Value::Null);
    }

    #[test]
    fn site_notes_say_forwarding_lan_routes_and_4via6() {
        let notes = sample_site().site_notes().join("\n");
        assert!(notes.contains("must forward"), "{notes}");
        assert!(notes.contains("net.ipv4.ip_forward=1"), "{notes}");
        assert!(
            notes.contains("The LAN must route fdaa:0:18::/48 and 100.127.0.0/16"),
            "{notes}"
        );
        assert!(
            notes.contains("10.20.0.0/24 at fdaa:0:18:b1a:1:1:a14:0/120"),
            "{notes}"
        );
        let mut laptop = sample_site();
        laptop.site_routes.clear();
        assert!(laptop.site_notes().is_empty());
    }
}
