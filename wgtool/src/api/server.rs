//! `wgtool serve`: HTTPS in front of the registry for holders of tokens.
//!
//! Every request names its token in `Authorization: Bearer <id>.<secret>`. Reads get the
//! token's org's part of the snapshot; writes are the registry's own `Change`s, applied as
//! `Change::WithToken` so that the registry checks the token and its scope in the same
//! transaction as the write. The server has no rules of its own.

// `Failure` is a few hundred bytes, made once per failed request.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use registry::{Change, Kind, Registry};
use tokio::sync::Semaphore;

use super::{
    parse_bearer, secret_hash, tls, AppliedBody, SnapshotBody, WhoAmI, WireError, APPLY_PATH,
    FRAME_PATH, SNAPSHOT_PATH, STATUS_PATH, WHOAMI_PATH,
};

/// `a=b&c=d`, percent-decoded; the last of a repeated key wins.
fn query(q: &str) -> std::collections::BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// The TLS handshake and the request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gateway's API server has to say what its meshd sees.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(3);
/// No request body is bigger (a change is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

pub struct ServeOptions {
    pub registry: String,
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Extra names for a self-signed certificate.
    pub names: Vec<String>,
}

struct State {
    reg: Arc<dyn Registry>,
    /// For asking the API servers on other gateways: they share this server's certificate.
    peers_tls: tokio_rustls::TlsConnector,
    port: u16,
}

pub fn serve(o: ServeOptions) -> Result<()> {
    let reg = crate::admin::open_registry(&o.registry)?;
    let (identity, made) = tls::server_identity(
        o.tls_cert.as_deref(),
        o.tls_key.as_deref(),
        &o.state_dir,
        &o.names,
    )?;
    let fp = identity.fingerprint();
    let peers_tls = tokio_rustls::TlsConnector::from(tls::client_config(&fp));
    if let Some(path) = made {
        eprintln!("made a self-signed certificate: {}", path.display());
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(identity)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .with_context(|| format!("listen `{}`: cannot bind", o.listen))?;
        let local = listener.local_addr()?;
        // One line a script can read: where, and what to pin.
        println!("serving the sixpn API on https://{local} with certificate sha256:{fp}");
        eprintln!(
            "registry {}; clients pin the fingerprint above (tokens from `wgtool token create --server https://HOST:{}` carry it)",
            registry::shown(&o.registry),
            local.port()
        );
        let state = Arc::new(State {
            reg,
            peers_tls,
            port: local.port(),
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: wait instead of spinning.
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let acceptor = acceptor.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(stream)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
        eprintln!("wgtool serve: stopping");
        Ok(())
    })
}

async fn handle(
    state: &Arc<State>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Full<Bytes>> {
    match route(state, req).await {
        Ok(r) => r,
        Err((status, e)) => json(status, &e),
    }
}

/// A request's failure: built at most once per request, so its size does not matter.
type Failure = (StatusCode, WireError);

async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => Ok(json(StatusCode::OK, &serde_json::json!({"ok": true}))),
        (Method::GET, path @ (SNAPSHOT_PATH | FRAME_PATH)) => {
            let (id, hash) = credentials(&req)?;
            let whole = path == SNAPSHOT_PATH;
            let snap = blocking(state, move |reg| {
                // The token is checked against the frame, which holds every token; the whole
                // snapshot is the token's org's part (not every org's machines), and the
                // token is checked again at the part's revision.
                let frame = reg.frame()?;
                let org = registry::check_token(&frame, &id, &hash, now_unix())?
                    .org
                    .clone();
                let snap = if whole { reg.org_part(&org)? } else { frame };
                let token = registry::check_token(&snap, &id, &hash, now_unix())?;
                let mut scoped = snap.scoped(&token.org);
                // Tokens are the admin's business: a peer token reads peers, not them.
                if token.scope == registry::TokenScope::Peer {
                    scoped.tokens.clear();
                }
                Ok(scoped)
            })
            .await?;
            Ok(json(StatusCode::OK, &SnapshotBody::new(&snap)))
        }
        (Method::GET, STATUS_PATH) => {
            let (id, hash) = credentials(&req)?;
            let bearer = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let query = query(req.uri().query().unwrap_or(""));
            let local_only = query.contains_key("local");
            let (mut peers, elsewhere) = blocking(state, move |reg| {
                let snap = reg.snapshot_of(&[Kind::Org, Kind::Node, Kind::Peer, Kind::Token])?;
                let org = registry::check_token(&snap, &id, &hash, now_unix())?
                    .org
                    .clone();
                if let Some(asked) = query.get("org").filter(|o| **o != org) {
                    return Err(registry::Error::Forbidden(format!(
                        "token {id} is for org `{org}`, not `{asked}`"
                    )));
                }
                let peers = crate::status::of(
                    &snap,
                    Some(&org),
                    query.get("name").map(String::as_str),
                    std::path::Path::new(crate::status::SOCKET_DIR),
                );
                // Gateways whose meshd is not on this host: their own API server knows.
                let mut elsewhere: Vec<(String, std::net::IpAddr)> = peers
                    .iter()
                    .filter(|p| !p.gateway_seen)
                    .filter_map(|p| {
                        Some((p.gateway.clone(), snap.nodes.get(&p.gateway)?.endpoint.ip()))
                    })
                    .collect();
                elsewhere.sort();
                elsewhere.dedup();
                Ok((peers, elsewhere))
            })
            .await?;
            if !local_only {
                let asks = elsewhere.into_iter().map(|(gw, ip)| {
                    let (tls, bearer, port) = (state.peers_tls.clone(), bearer.clone(), state.port);
                    async move {
                        let path = format!("{STATUS_PATH}?local=1");
                        let host = ip.to_string();
                        let fut = super::client::request(
                            &tls,
                            &host,
                            port,
                            Method::GET,
                            &path,
                            Some(bearer),
                            None,
                        );
                        let got = tokio::time::timeout(GATEWAY_TIMEOUT, fut).await;
                        let theirs: Option<Vec<crate::status::PeerStatus>> = match got {
                            Ok(Ok((200, body))) => serde_json::from_slice(&body).ok(),
                            _ => None,
                        };
                        (gw, theirs)
                    }
                });
                for (gw, theirs) in futures_join(asks).await {
                    let Some(theirs) = theirs else { continue };
                    for p in peers.iter_mut().filter(|p| p.gateway == gw) {
                        if let Some(t) = theirs.iter().find(|t| t.name == p.name && t.gateway_seen)
                        {
                            *p = t.clone();
                        }
                    }
                }
            }
            Ok(json(StatusCode::OK, &peers))
        }
        (Method::GET, WHOAMI_PATH) => {
            let (id, hash) = credentials(&req)?;
            let who = blocking(state, move |reg| {
                let snap = reg.frame()?;
                let t = registry::check_token(&snap, &id, &hash, now_unix())?;
                Ok(WhoAmI {
                    id: t.id.clone(),
                    org: t.org.clone(),
                    scope: t.scope.as_str().to_string(),
                })
            })
            .await?;
            Ok(json(StatusCode::OK, &who))
        }
        (Method::POST, APPLY_PATH) => {
            let (id, hash) = credentials(&req)?;
            let body = Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        WireError::bad_request("body", format!("must be at most {MAX_BODY} bytes")),
                    )
                })?
                .to_bytes();
            let change = change_of(&body)?;
            let applied = blocking(state, move |reg| {
                reg.apply(&Change::WithToken {
                    id,
                    secret_hash: hash,
                    change: Box::new(change),
                })
            })
            .await?;
            Ok(json(
                StatusCode::OK,
                &AppliedBody {
                    revision: applied.revision.0,
                    record: applied.record,
                },
            ))
        }
        (_, SNAPSHOT_PATH | FRAME_PATH | WHOAMI_PATH | APPLY_PATH | STATUS_PATH | "/healthz") => {
            Err((
                StatusCode::METHOD_NOT_ALLOWED,
                WireError::bad_request("method", "not allowed on this path"),
            ))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            WireError::bad_request("path", format!("`{path}` is not an API path")),
        )),
    }
}

/// The token's id and the hash of its secret, from the request.
/// The change a body holds. Every value in it is checked as it is read (a machine id, a
/// public key), so a bad one is refused here, naming its field and rule.
fn change_of(body: &[u8]) -> Result<Change, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            WireError::bad_request("body", format!("is not a registry change: {e}")),
        )
    })
}

fn credentials(req: &Request<Incoming>) -> Result<(String, String), Failure> {
    let unauthorized = |rule: &str| {
        let mut e = WireError::bad_request("authorization", rule);
        e.code = "unauthorized".into();
        e.error = rule.to_string();
        (StatusCode::UNAUTHORIZED, e)
    };
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Err(unauthorized(
            "a token is needed: send `Authorization: Bearer <token>` (wgtool --token)",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let (id, secret) = parse_bearer(value)
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <id>.<secret>`"))?;
    Ok((id.to_string(), secret_hash(secret)))
}

/// Runs a registry call off the runtime's threads; its error becomes the API's.
async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&dyn Registry) -> registry::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let reg = state.reg.clone();
    match tokio::task::spawn_blocking(move || f(reg.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                // The operator sees what the client is not told.
                eprintln!("registry: {e}");
            }
            Err((status, WireError::from_registry(&e)))
        }
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            WireError::from_registry(&registry::Error::Storage {
                location: String::new(),
                message: "the request failed".into(),
            }),
        )),
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("a response from fixed parts")
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the futures at once on this task and returns their results in order.
async fn futures_join<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_with_a_bad_machine_id_is_a_bad_request_naming_the_field_and_rule() {
        let (status, e) = change_of(br#"{"RemoveMachine":{"id":"web-1"}}"#).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            e.error.starts_with(
                "body: is not a registry change: machine id `web-1`: \
                 must be 14 lowercase hex characters"
            ),
            "{}",
            e.error
        );
        let ok = change_of(br#"{"RemoveMachine":{"id":"4d89699c030518"}}"#).unwrap();
        assert!(matches!(ok, Change::RemoveMachine { .. }), "{ok:?}");
    }
}
