//! An etcd registry's URL: `etcd://[user[:password]@]host[:port][,host[:port]...][/prefix]
//! [?cacert=PATH&cert=PATH&key=PATH]`.
//!
//! TLS is on when the URL starts with `etcds://` or names any of the files. Without
//! `cacert`, the members' certificates are checked against the system's trusted CAs, as
//! etcdctl does: the file `SSL_CERT_FILE` names, else the distribution's bundle.
//!
//! Credentials and TLS files may also come from etcdctl's own environment variables
//! (`ETCDCTL_USER` as `name` or `name:password`, `ETCDCTL_PASSWORD`, `ETCDCTL_CACERT`,
//! `ETCDCTL_CERT`, `ETCDCTL_KEY`), so a host already set up for etcdctl needs nothing more;
//! the URL wins where both say something. A URL may name the user alone
//! (`etcd://sixpn@host:port`) and leave the password to `ETCDCTL_PASSWORD`, so it need not
//! sit in a command line or a unit file. The password never appears in [`Location::shown`].

use crate::error::{Error, Result};

/// etcd's client port, when an endpoint names none.
pub const DEFAULT_PORT: u16 = 2379;
/// Where the records live when the URL names no prefix.
pub const DEFAULT_PREFIX: &str = "/sixpn";

/// Where distributions keep the bundle of trusted CAs: Debian and Ubuntu, Fedora and
/// RHEL, Alpine and the BSDs.
pub const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Files for TLS to etcd, as etcdctl's `--cacert`, `--cert` and `--key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The system's CA bundle, found when `cacert` is not given.
    pub system_ca: Option<String>,
}

/// A parsed etcd registry URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    /// `host:port`, in the URL's order.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing `/`, e.g. `/sixpn`.
    pub prefix: String,
    pub user: Option<(String, String)>,
    pub tls: Option<TlsFiles>,
    /// The URL as messages show it: no password.
    pub shown: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand, so a password never reaches a log through `{:?}`.
        f.debug_struct("Location")
            .field("shown", &self.shown)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Location {
    /// Parses `url`, taking what it leaves out from etcdctl's environment variables.
    pub fn parse(url: &str) -> Result<Location> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    /// As [`Location::parse`], with the environment given (tests).
    pub fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Location> {
        let bad = |rule: &str| Error::invalid("etcd registry URL", redact(url), rule);
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            ("etcd://", rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            ("etcds://", rest)
        } else {
            return Err(bad(
                "must start with etcd:// (or etcds:// for TLS checked against the system's CAs)",
            ));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hosts.is_empty() {
            return Err(bad(
                "needs at least one endpoint, as etcd://host:port[,host:port...][/prefix]",
            ));
        }
        let mut endpoints = Vec::new();
        for ep in hosts.split(',') {
            endpoints.push(endpoint(ep).map_err(|rule| bad(&rule))?);
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            check_prefix(prefix).map_err(|rule| bad(&rule))?;
            prefix.to_string()
        };

        let mut user = match userinfo {
            Some(u) => Some(credentials(u, true).map_err(|rule| bad(&rule))?),
            None => None,
        };
        let mut tls = TlsFiles::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).map_err(|rule| bad(&rule))?;
            if v.is_empty() {
                return Err(bad(&format!("option `{k}` needs a value")));
            }
            match k {
                "cacert" => tls.cacert = Some(v),
                "cert" => tls.cert = Some(v),
                "key" => tls.key = Some(v),
                other => {
                    return Err(bad(&format!(
                        "unknown option `{other}` (known: cacert, cert, key)"
                    )))
                }
            }
        }
        if let Some((_, password)) = &mut user {
            if password.is_empty() {
                *password = env("ETCDCTL_PASSWORD").unwrap_or_default();
            }
        }
        if user.is_none() {
            if let Some(u) = env("ETCDCTL_USER").filter(|u| !u.is_empty()) {
                let (name, mut password) = credentials(&u, false).map_err(|rule| {
                    Error::invalid("ETCDCTL_USER", "(hidden)", rule.replace("user", "value"))
                })?;
                if password.is_empty() {
                    password = env("ETCDCTL_PASSWORD").unwrap_or_default();
                }
                user = Some((name, password));
            }
        }
        tls.cacert = tls.cacert.or_else(|| env("ETCDCTL_CACERT"));
        tls.cert = tls.cert.or_else(|| env("ETCDCTL_CERT"));
        tls.key = tls.key.or_else(|| env("ETCDCTL_KEY"));
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(bad("cert and key go together: give both or neither"));
        }
        let mut tls = (tls != TlsFiles::default() || scheme == "etcds://").then_some(tls);
        if let Some(tls) = tls.as_mut().filter(|t| t.cacert.is_none()) {
            tls.system_ca = Some(system_ca_bundle(&env).ok_or_else(|| {
                Error::invalid(
                    "cacert",
                    "(not given)",
                    format!(
                        "TLS to etcd needs the CA that signed the members' certificates: \
                         give ?cacert=PATH (there is no system CA bundle: SSL_CERT_FILE is \
                         unset and none of {} exists)",
                        SYSTEM_CA_BUNDLES.join(", ")
                    ),
                )
            })?);
        }

        let mut shown = String::from(scheme);
        if let Some((name, _)) = &user {
            shown.push_str(name);
            shown.push('@');
        }
        shown.push_str(&endpoints.join(","));
        shown.push_str(&prefix);
        Ok(Location {
            endpoints,
            prefix,
            user,
            tls,
            shown,
        })
    }
}

/// The system's bundle of trusted CAs: `SSL_CERT_FILE` (as OpenSSL and rustls-native-certs
/// take it) or the first of [`SYSTEM_CA_BUNDLES`] that exists.
fn system_ca_bundle(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    env("SSL_CERT_FILE").filter(|f| !f.is_empty()).or_else(|| {
        SYSTEM_CA_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
            .map(|p| p.to_string())
    })
}

/// The URL with any password masked, for error messages about the URL itself.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = ["etcd://", "etcds://"]
        .into_iter()
        .find_map(|s| Some((s, url.strip_prefix(s)?)))
    else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) => {
            let name = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}{name}:***@{}", &rest[userinfo.len() + 1..])
        }
        None => url.to_string(),
    }
}

fn endpoint(ep: &str) -> std::result::Result<String, String> {
    if ep.is_empty() {
        return Err("has an empty endpoint (two commas, or a trailing one)".into());
    }
    let (host, port) = if let Some(v6) = ep.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("endpoint `{ep}`: an IPv6 address needs its closing `]`"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("endpoint `{ep}`: `{addr}` is not an IPv6 address"));
        }
        match after {
            "" => (format!("[{addr}]"), None),
            p if p.starts_with(':') => (format!("[{addr}]"), Some(&p[1..])),
            _ => return Err(format!("endpoint `{ep}`: expected `:port` after `]`")),
        }
    } else {
        match ep.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (ep.to_string(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !host_ok {
        return Err(format!(
            "endpoint `{ep}`: host must be a name or an address (letters, digits, '-', '.')"
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("endpoint `{ep}`: port must be a number 1-65535")),
        },
    };
    Ok(format!("{host}:{port}"))
}

fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.contains("//") {
        return Err(format!("prefix `{prefix}`: must not have empty segments"));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')))
    {
        return Err(format!(
            "prefix `{prefix}`: `{c}` is not allowed (use letters, digits, '-', '_', '.', '/')"
        ));
    }
    Ok(())
}

/// `name[:password]`, percent-decoded when it came from a URL.
fn credentials(s: &str, from_url: bool) -> std::result::Result<(String, String), String> {
    let (name, password) = s.split_once(':').unwrap_or((s, ""));
    let (name, password) = if from_url {
        (decode(name)?, decode(password)?)
    } else {
        (name.to_string(), password.to_string())
    };
    if name.is_empty() {
        return Err("user name must not be empty (etcd://user:password@host:port)".into());
    }
    Ok((name, password))
}

/// Percent-decoding, so passwords may hold `@`, `:` or `/`.
fn decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` must be followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-escapes must decode to UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Location> {
        Location::parse_with_env(url, |_| None)
    }

    #[test]
    fn endpoints_prefix_and_defaults() {
        let l = parse("etcd://10.0.0.1:2379,etcd-b,[::1]:23790/org/acme/").unwrap();
        assert_eq!(l.endpoints, ["10.0.0.1:2379", "etcd-b:2379", "[::1]:23790"]);
        assert_eq!(l.prefix, "/org/acme");
        assert_eq!(l.user, None);
        assert_eq!(l.tls, None);
        let l = parse("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(l.prefix, DEFAULT_PREFIX);
        assert_eq!(l.shown, "etcd://127.0.0.1:2379/sixpn");
    }

    #[test]
    fn password_is_never_shown() {
        let l = parse("etcd://alice:s%40cret@127.0.0.1:2379/p").unwrap();
        assert_eq!(l.user, Some(("alice".to_string(), "s@cret".to_string())));
        assert_eq!(l.shown, "etcd://alice@127.0.0.1:2379/p");
        assert!(!format!("{l:?}").contains("cret"));
        let err = parse("etcd://alice:hunter2@127.0.0.1:0/p").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn etcdctl_environment_fills_in() {
        let env = |k: &str| match k {
            "ETCDCTL_USER" => Some("root".to_string()),
            "ETCDCTL_PASSWORD" => Some("pw".to_string()),
            "ETCDCTL_CACERT" => Some("/etc/etcd/ca.pem".to_string()),
            _ => None,
        };
        let l = Location::parse_with_env("etcd://h:1", env).unwrap();
        assert_eq!(l.user, Some(("root".into(), "pw".into())));
        assert_eq!(l.tls.unwrap().cacert.as_deref(), Some("/etc/etcd/ca.pem"));
        // A user named in the URL without a password takes ETCDCTL_PASSWORD; one with a
        // password keeps it.
        let l = Location::parse_with_env("etcd://sixpn@h:1", env).unwrap();
        assert_eq!(l.user, Some(("sixpn".into(), "pw".into())));
        assert_eq!(l.shown, "etcd://sixpn@h:1/sixpn");
        let l = Location::parse_with_env("etcd://sixpn:own@h:1", env).unwrap();
        assert_eq!(l.user, Some(("sixpn".into(), "own".into())));
    }

    #[test]
    fn without_cacert_tls_trusts_the_system_bundle() {
        let env = |k: &str| (k == "SSL_CERT_FILE").then(|| "/srv/ca-bundle.pem".to_string());
        // etcds:// alone is TLS.
        let l = Location::parse_with_env("etcds://h:1/p", env).unwrap();
        let tls = l.tls.unwrap();
        assert_eq!(tls.system_ca.as_deref(), Some("/srv/ca-bundle.pem"));
        assert_eq!(tls.cacert, None);
        assert_eq!(l.shown, "etcds://h:1/p");
        // A client certificate without cacert, as etcdctl takes it.
        let l = Location::parse_with_env("etcd://h:1?cert=/c&key=/k", env).unwrap();
        assert_eq!(
            l.tls.unwrap().system_ca.as_deref(),
            Some("/srv/ca-bundle.pem")
        );
        // cacert wins; plain etcd:// with no files is not TLS.
        let l = Location::parse_with_env("etcds://h:1?cacert=/ca", env).unwrap();
        assert_eq!(l.tls.unwrap().system_ca, None);
        assert_eq!(
            Location::parse_with_env("etcd://h:1", env).unwrap().tls,
            None
        );
        // The password stays hidden under either scheme.
        let err = Location::parse_with_env("etcds://u:hunter2@h:0", env).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("etcds://u:***@h:0"), "{err}");
    }

    #[test]
    fn bad_urls_name_the_rule() {
        let cases = [
            ("etcd://", "needs at least one endpoint"),
            ("etcd:///sixpn", "needs at least one endpoint"),
            ("etcd://h:1,,h:2", "empty endpoint"),
            ("etcd://h:99999", "port must be a number 1-65535"),
            ("etcd://h:x", "port must be a number"),
            ("etcd://h_1:2379", "host must be a name or an address"),
            ("etcd://[::1:2379", "closing `]`"),
            ("etcd://h:1/a b", "is not allowed"),
            ("etcd://h:1/a//b", "empty segments"),
            ("etcd://h:1?cacert", "needs a value"),
            ("etcd://h:1?tls=yes", "unknown option `tls`"),
            ("etcd://h:1?cert=/c", "cert and key go together"),
            ("etcd://:pw@h:1", "user name must not be empty"),
            ("https://h:1", "must start with etcd:// (or etcds://"),
        ];
        for (url, rule) in cases {
            let err = parse(url).unwrap_err();
            assert!(matches!(
                err,
                Error::Invalid {
                    field: "etcd registry URL",
                    ..
                }
            ));
            assert!(err.to_string().contains(rule), "{url}: {err}");
        }
    }
}
