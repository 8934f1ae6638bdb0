//! The registry as seen through the API: the same `Registry` the CLI uses with
//! `--registry`, so every command reads and writes the same way either way.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use registry::{Applied, Change, Error, Registry, Result, Revision, Snapshot};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;

use super::{
    tls, AppliedBody, SnapshotBody, Token, WireError, APPLY_PATH, FRAME_PATH, SNAPSHOT_PATH,
    STATUS_PATH,
};
use crate::status::PeerStatus;

/// Names are DNS labels; anything else is percent-encoded.
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Connecting, the TLS handshake and the whole answer must each take less than this.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The biggest answer read (a snapshot of a large org).
const MAX_ANSWER: usize = 64 << 20;

pub struct ApiRegistry {
    /// `https://host:port`, for messages.
    url: String,
    host: String,
    port: u16,
    token: Token,
    tls: tokio_rustls::TlsConnector,
    rt: tokio::runtime::Runtime,
}

impl ApiRegistry {
    /// `api` overrides the token's URL and `fingerprint` its pin.
    pub fn new(
        api: Option<&str>,
        token: &str,
        fingerprint: Option<&str>,
    ) -> anyhow::Result<ApiRegistry> {
        let token = Token::decode(token).map_err(crate::usage)?;
        let url = api
            .map(str::to_string)
            .or_else(|| token.api.clone())
            .ok_or_else(|| {
                crate::usage("api: the token names no API; give --api https://HOST:PORT")
            })?;
        let (host, port) = split_url(&url).map_err(crate::usage)?;
        let pin = match fingerprint.map(str::to_string).or_else(|| token.fingerprint.clone()) {
            Some(f) => tls::parse_fingerprint(&f).map_err(crate::usage)?,
            None => {
                return Err(crate::usage(
                    "api-fingerprint: the token carries none; give --api-fingerprint (printed by `wgtool serve`)",
                ))
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(ApiRegistry {
            url,
            host,
            port,
            token,
            tls: tokio_rustls::TlsConnector::from(tls::client_config(&pin)),
            rt,
        })
    }

    /// The token's org's peers with their gateways' live state, as the server's host sees
    /// them.
    pub fn status(&self, org: Option<&str>, name: Option<&str>) -> Result<Vec<PeerStatus>> {
        let mut query = Vec::new();
        for (k, v) in [("org", org), ("name", name)] {
            if let Some(v) = v {
                query.push(format!("{k}={}", encode_query(v)));
            }
        }
        let path = if query.is_empty() {
            STATUS_PATH.to_string()
        } else {
            format!("{STATUS_PATH}?{}", query.join("&"))
        };
        self.call(Method::GET, &path, None)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let fut = request(
            &self.tls,
            &self.host,
            self.port,
            method,
            path,
            Some(self.token.bearer()),
            body,
        );
        let (status, bytes) = self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, fut).await })
            .map_err(|_| self.unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| self.unreachable(e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| self.unreachable(format!("an answer that is not the API's: {e}")));
        }
        match serde_json::from_slice::<WireError>(&bytes) {
            Ok(w) => Err(w.into_registry(&self.url)),
            Err(_) => Err(self.unreachable(format!("HTTP {status} without an API error"))),
        }
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> Error {
        Error::Storage {
            location: self.url.clone(),
            message: format!("API: {why}"),
        }
    }
}

impl Registry for ApiRegistry {
    fn location(&self) -> &str {
        &self.url
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let body: SnapshotBody = self.call(Method::GET, SNAPSHOT_PATH, None)?;
        Ok(body.into_snapshot())
    }

    fn frame(&self) -> Result<Snapshot> {
        match self.call::<SnapshotBody>(Method::GET, FRAME_PATH, None) {
            Ok(body) => Ok(body.into_snapshot()),
            // A server from before the frame: the same records, framed here.
            Err(Error::Invalid { field: "path", .. }) => Ok(self.snapshot()?.framed()),
            Err(e) => Err(e),
        }
    }

    fn wait_newer(&self, than: Revision, timeout: Duration) -> Result<Option<Revision>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = self.frame()?.revision;
            if now > than {
                return Ok(Some(now));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn apply(&self, change: &Change) -> Result<Applied> {
        let body = serde_json::to_vec(change).map_err(|e| self.unreachable(e))?;
        let a: AppliedBody = self.call(Method::POST, APPLY_PATH, Some(body))?;
        Ok(Applied {
            revision: Revision(a.revision),
            record: a.record,
        })
    }

    fn import(&self, _snapshot: &Snapshot) -> Result<Revision> {
        Err(Error::Forbidden(
            "copying a registry needs the registry itself, not the API".into(),
        ))
    }
}

/// The fingerprint of the certificate the server at `url` shows, trusting it (for the
/// operator who makes a token next to the server).
pub fn learn_fingerprint(url: &str) -> anyhow::Result<String> {
    let (host, port) = split_url(url).map_err(crate::usage)?;
    let (config, seen) = tls::learning_config();
    let connector = tokio_rustls::TlsConnector::from(config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fut = request(&connector, &host, port, Method::GET, "/healthz", None, None);
    rt.block_on(async { tokio::time::timeout(TIMEOUT, fut).await })
        .map_err(|_| anyhow::anyhow!("server `{url}`: no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| anyhow::anyhow!("server `{url}`: {e}"))?;
    let fp = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    fp.ok_or_else(|| anyhow::anyhow!("server `{url}`: showed no certificate"))
}

/// `https://host:port[/]` → (host, port). IPv6 hosts in brackets.
fn split_url(url: &str) -> std::result::Result<(String, u16), String> {
    let bad = |rule: &str| format!("api `{url}`: {rule}");
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("must be https://HOST:PORT with no path"));
    }
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// One request on a new connection; the status and the body.
pub(crate) async fn request(
    tls: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
    method: Method,
    path: &str,
    bearer: Option<String>,
    body: Option<Vec<u8>>,
) -> std::result::Result<(u16, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| format!("host: {e}"))?,
    };
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority);
    if let Some(b) = bearer {
        req = req.header(AUTHORIZATION, b);
    }
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_https_host_port() {
        assert_eq!(
            split_url("https://gw.example:8443").unwrap(),
            ("gw.example".into(), 8443)
        );
        assert_eq!(
            split_url("https://[fdaa::1]:8443/").unwrap(),
            ("fdaa::1".into(), 8443)
        );
        assert_eq!(
            split_url("https://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 443)
        );
        assert!(split_url("http://gw:8443")
            .unwrap_err()
            .contains("https://"));
        assert!(split_url("https://gw:8443/v1")
            .unwrap_err()
            .contains("no path"));
    }
}
