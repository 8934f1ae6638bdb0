//! What the in-process tunnel needs from a wg-quick tunnel file (as `wgtool create` writes
//! it), read once and checked: each missing or bad field is named.

use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use base64::Engine as _;

/// The peer's side of the tunnel, from its file.
pub struct TunnelConfig {
    pub private_key: [u8; 32],
    pub address: Ipv6Addr,
    pub dns: Ipv6Addr,
    pub gateway_public_key: registry::PublicKey,
    pub endpoint: SocketAddr,
    pub keepalive: u16,
}

/// A tunnel file that cannot be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("tunnel file `{file}`: {what}")]
pub struct ConfigError {
    file: String,
    what: String,
}

impl TunnelConfig {
    pub fn load(path: &Path) -> Result<TunnelConfig, ConfigError> {
        let err = |what: String| ConfigError {
            file: path.display().to_string(),
            what,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    /// The fields from a wg-quick file's text; the error names the field and the rule.
    pub fn parse(text: &str) -> Result<TunnelConfig, String> {
        let field = |key: &str| field(text, key);
        let need = |key: &str| field(key).ok_or_else(|| format!("no {key} line"));
        let private_key = key(need("PrivateKey")?).map_err(|e| format!("PrivateKey: {e}"))?;
        let address = need("Address")?
            .split(',')
            .find_map(|a| a.trim().split('/').next()?.parse::<Ipv6Addr>().ok())
            .ok_or("Address: no IPv6 address")?;
        let dns = need("DNS")?
            .split(',')
            .find_map(|a| a.trim().parse::<Ipv6Addr>().ok())
            .ok_or("DNS: no IPv6 address")?;
        let gateway_public_key = registry::PublicKey::parse("PublicKey", need("PublicKey")?)
            .map_err(|e| e.to_string())?;
        let endpoint = endpoint(text)?;
        let keepalive = match field("PersistentKeepalive") {
            None | Some("off") => 0,
            Some(k) => k
                .parse()
                .map_err(|_| format!("PersistentKeepalive `{k}`: not a number of seconds"))?,
        };
        Ok(TunnelConfig {
            private_key,
            address,
            dns,
            gateway_public_key,
            endpoint,
            keepalive,
        })
    }
}

/// The `Endpoint` line's address (looked up if it is a name).
pub fn endpoint(text: &str) -> Result<SocketAddr, String> {
    let endpoint_text = field(text, "Endpoint").ok_or("no Endpoint line")?;
    endpoint_text
        .to_socket_addrs()
        .map_err(|e| format!("Endpoint `{endpoint_text}`: {e}"))?
        .next()
        .ok_or_else(|| format!("Endpoint `{endpoint_text}`: no address"))
}

/// A `key = value` line's value (comments cut).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The private key (public keys are [`registry::PublicKey`]s); no message repeats it.
fn key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "not base64".to_string())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, a key has 32", b.len()))
}

#[cfg(test)]
mod tests {
    use super::TunnelConfig;

    const FILE: &str = "[Interface]\n\
        PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
        Address = fdaa:0:18:a7b:1:0:1:2/128\n\
        DNS = fdaa:0:18::3\n\n\
        [Peer]\n\
        PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
        AllowedIPs = fdaa:0:18::/48\n\
        Endpoint = 192.0.2.1:51820\n\
        PersistentKeepalive = 15\n";

    #[test]
    fn a_file_from_wgtool_create_is_read() {
        let c = TunnelConfig::parse(FILE).unwrap();
        assert_eq!(
            c.address,
            "fdaa:0:18:a7b:1:0:1:2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(c.dns, "fdaa:0:18::3".parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(c.endpoint, "192.0.2.1:51820".parse().unwrap());
        assert_eq!(c.keepalive, 15);
    }

    #[test]
    fn each_missing_or_bad_field_is_named() {
        let without = |key: &str| {
            FILE.lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            TunnelConfig::parse(&without("DNS")).err().unwrap(),
            "no DNS line"
        );
        assert_eq!(
            TunnelConfig::parse(&without("Endpoint")).err().unwrap(),
            "no Endpoint line"
        );
        let bad = FILE.replace("DNS = fdaa:0:18::3", "DNS = 10.0.0.1");
        assert_eq!(
            TunnelConfig::parse(&bad).err().unwrap(),
            "DNS: no IPv6 address"
        );
        let bad = FILE.replace("PrivateKey = yAnz", "PrivateKey = !!");
        assert_eq!(
            TunnelConfig::parse(&bad).err().unwrap(),
            "PrivateKey: not base64"
        );
        let bad = FILE.replace("PublicKey = xTIB", "PublicKey = xTI");
        assert_eq!(
            TunnelConfig::parse(&bad).err().unwrap(),
            "PublicKey `xTIA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=`: must be 44 characters \
             of base64 for 32 bytes, as `wg pubkey` prints (this is not base64)"
        );
        let bad = FILE.replace(
            "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            "PrivateKey = <the private key made when this peer was created>",
        );
        assert!(TunnelConfig::parse(&bad)
            .err()
            .unwrap()
            .starts_with("PrivateKey"));
    }
}
