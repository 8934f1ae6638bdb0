//! Accepting WebSocket connections and carrying their frames into the core: one thread
//! with a small tokio runtime, a task per connection. A connection gets the handshake
//! timeout for TLS, the upgrade and the magic, then lives while messages come (idle
//! timeout); anything that is not flyctl framing closes it, counted by reason. Datagrams
//! take the same path into the core as UDP ones (`Shell::handle_websocket`: one lock per
//! message's worth of frames); the core's answers come back through the connection's queue.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::connections::{Close, Connections, Inbox};
use super::framing::Deframer;
use super::PeerPath;
use crate::config::WebSocketConfig as ListenConfig;
use crate::core::Endpoint;
use crate::udp;

/// A connection that has carried no message this long is closed. Longer than WireGuard's
/// keepalives and rekeying, so only a peer that is gone loses its connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest WebSocket message taken: a few frames of the largest datagram. Bounds what
/// one connection's reader holds.
const MAX_MESSAGE: usize = 256 << 10;

/// Binds now (so a taken port fails meshd's start), then serves on a thread of its own.
pub fn serve<P: PeerPath>(cfg: &ListenConfig, key_dir: &Path, path: Arc<P>) -> Result<()> {
    let (tls, fingerprint) = if cfg.plain {
        (None, None)
    } else {
        let (config, fingerprint) = super::tls::server_config(cfg.tls.as_ref(), key_dir)?;
        tracing::info!(%fingerprint, "WebSocket certificate (laptops pin this SHA-256)");
        (
            Some(tokio_rustls::TlsAcceptor::from(config)),
            Some(fingerprint),
        )
    };
    raise_file_limit(cfg.max_connections);
    let listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("binding websocket_listen {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("websocket")
        .enable_all()
        .build()
        .context("starting the WebSocket runtime")?;
    tracing::info!(listen = %cfg.listen, tls = tls.is_some(), max_connections = cfg.max_connections, "accepting WireGuard over WebSockets");
    path.listening(fingerprint);
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("websocket-accept".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, cfg, tls, path).await,
                    Err(e) => tracing::error!(error = %e, "WebSocket listener"),
                }
            })
        })?;
    Ok(())
}

/// Each connection is a file descriptor: the usual soft limit (1024) is below the default
/// connection limit, so raise it to the hard limit as servers do.
fn raise_file_limit(connections: usize) {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        let want = (connections as libc::rlim_t + 256).min(r.rlim_max);
        if r.rlim_cur < want {
            r.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                tracing::warn!(
                    want,
                    "cannot raise the open-files limit for WebSocket connections"
                );
            }
        }
    }
}

async fn accept_loop<P: PeerPath>(
    listener: tokio::net::TcpListener,
    cfg: ListenConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    path: Arc<P>,
) {
    let conns = path.connections().clone();
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accepting a WebSocket connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if conns.open.load(Ordering::Relaxed) >= cfg.max_connections {
            conns.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "WebSocket connection refused: at the limit");
            continue;
        }
        conns.open.fetch_add(1, Ordering::Relaxed);
        conns.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let remote = udp::from_wire(remote);
        let deadline = Instant::now() + cfg.handshake_timeout;
        let tls = tls.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let conns = path.connections().clone();
            let why = match tls {
                Some(tls) => match timeout_at(deadline, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => connection(stream, remote, deadline, &*path).await,
                    Ok(Err(_)) => Close::Tls,
                    Err(_) => Close::HandshakeTimeout,
                },
                None => connection(tcp, remote, deadline, &*path).await,
            };
            tracing::debug!(%remote, reason = why.as_str(), "WebSocket connection closed");
            conns.count_close(why);
            conns.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Many connections, each carrying one laptop: small buffers.
        .read_buffer_size(16 << 10)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE * 4)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// One connection after TLS: the upgrade, then frames until it ends; why it ended.
async fn connection<S, P>(stream: S, remote: SocketAddr, deadline: Instant, path: &P) -> Close
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: PeerPath,
{
    let ws = match timeout_at(
        deadline,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(_)) => return Close::Upgrade,
        Err(_) => return Close::HandshakeTimeout,
    };
    let conns: &Connections = path.connections();
    let (id, inbox) = conns.register();
    let from = Endpoint::WebSocket { conn: id, remote };
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, inbox));
    let mut frames = Deframer::new();
    let mut scratch = P::Scratch::default();
    let why = loop {
        let until = if frames.started() {
            Instant::now() + IDLE_TIMEOUT
        } else {
            deadline
        };
        let message = match timeout_at(until, stream.next()).await {
            Err(_) if frames.started() => break Close::IdleTimeout,
            Err(_) => break Close::HandshakeTimeout,
            Ok(None) => break frames.finish().map_or_else(Close::of, |_| Close::Normal),
            Ok(Some(Err(e))) => break read_error(&e, &frames),
            Ok(Some(Ok(m))) => m,
        };
        match message {
            Message::Binary(bytes) => {
                frames.push(&bytes);
                // The core's lock and the UDP/TUN writes block briefly: off the runtime's
                // own threads' async work, as the UDP thread does it.
                let r =
                    tokio::task::block_in_place(|| path.datagrams(from, &mut frames, &mut scratch));
                if let Err(e) = r {
                    break Close::of(e);
                }
            }
            Message::Close(_) => {
                break frames.finish().map_or_else(Close::of, |_| Close::Normal);
            }
            Message::Text(_) => break Close::BadMessage,
            // Pings are answered by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    };
    conns.unregister(id);
    writer.abort();
    why
}

fn read_error(e: &tokio_tungstenite::tungstenite::Error, frames: &Deframer) -> Close {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Capacity(_) => Close::BadMessage,
        // A reset or an end without a close frame: inside a frame it is a truncation.
        E::ConnectionClosed | E::AlreadyClosed | E::Io(_) | E::Protocol(_) => {
            match frames.finish() {
                Err(f) => Close::of(f),
                Ok(()) if matches!(e, E::Protocol(_)) => Close::BadMessage,
                Ok(()) => Close::Error,
            }
        }
        _ => Close::Error,
    }
}

/// Takes the core's answers off the connection's queue, one WebSocket message per batch.
async fn write_loop<K>(mut sink: K, mut inbox: Inbox)
where
    K: futures_util::Sink<Message> + Unpin,
{
    while let Some(frames) = inbox.rx.recv().await {
        let len = frames.len();
        let sent = sink.send(Message::binary(frames)).await;
        inbox.sent(len);
        if sent.is_err() {
            return;
        }
    }
}
