//! The tunnel file: a wg-quick configuration a laptop or a site's router loads unchanged.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use ipnet::Ipv6Net;

/// Everything a tunnel file says.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelFile {
    pub private_key: String,
    pub address: Ipv6Addr,
    pub dns: Ipv6Addr,
    pub gateway_public_key: String,
    pub allowed_ips: Ipv6Net,
    pub endpoint: SocketAddr,
    pub keepalive: u16,
}

impl TunnelFile {
    /// Renders the file in Fly's layout, with the peer's own /128 as its address.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "[Interface]\nPrivateKey = {}\nAddress = {}/128\nDNS = {}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {}\nPersistentKeepalive = {}\n",
            self.private_key,
            self.address,
            self.dns,
            self.gateway_public_key,
            self.allowed_ips,
            self.endpoint,
            self.keepalive
        );
        s
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TunnelFile {
        TunnelFile {
            private_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into(),
            address: "fdaa:0:18:a7b:1:0:1:2".parse().unwrap(),
            dns: "fdaa:0:18::3".parse().unwrap(),
            gateway_public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
            allowed_ips: "fdaa:0:18::/48".parse().unwrap(),
            endpoint: "192.0.2.1:51820".parse().unwrap(),
            keepalive: 15,
        }
    }

    #[test]
    fn renders_flys_layout_exactly() {
        assert_eq!(
            sample().render(),
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
        let mut t = sample();
        t.endpoint = "[2001:db8::1]:51820".parse().unwrap();
        assert!(t.render().contains("Endpoint = [2001:db8::1]:51820\n"));
    }

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
}
