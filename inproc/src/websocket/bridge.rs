//! A local UDP socket on loopback whose datagrams travel to the gateway over a WebSocket,
//! and back: flyctl's "plugboard". It runs on a thread of its own (a small tokio runtime)
//! and reconnects, at most once per [`RECONNECT`], when the connection drops; WireGuard
//! above it retries its handshakes meanwhile.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::framing::{frame, FrameError, MAGIC, MAX_DATAGRAM};
use super::pins;
use crate::pin as tls;

/// Least time between two connection attempts (flyctl waits 5 s; the first retry here
/// comes sooner so that a gateway restart costs little).
const RECONNECT: Duration = Duration::from_secs(2);
/// How long the TLS and WebSocket handshakes may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of frames gathered from the local socket into one WebSocket message: what the
/// gateway puts in one too (meshd's `WEBSOCKET_MESSAGE_BYTES`), so that neither end holds
/// more than this per message.
const MESSAGE_BYTES: usize = 64 << 10;

/// Where the WebSocket goes and how its certificate is checked.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway's address (the tunnel file's Endpoint host) and WebSocket port.
    pub gateway: SocketAddr,
    /// `ws://` rather than `wss://` (a gateway run with --websocket-plain).
    pub plain: bool,
    /// The SHA-256 to require (`--websocket-fingerprint`); without it, the one kept for
    /// this gateway, or the first one seen (then kept).
    pub fingerprint: Option<String>,
}

impl Target {
    pub fn url(&self) -> String {
        let scheme = if self.plain { "ws" } else { "wss" };
        format!("{scheme}://{}/", self.gateway)
    }
}

/// A running bridge; the thread ends with the process.
pub struct Bridge {
    /// The loopback address WireGuard sends to.
    pub local: SocketAddr,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Bridge {
    /// Why the last connection attempt failed or the last connection ended, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Starts a bridge on `local` (bound on loopback). `peer`: the one address it takes
/// datagrams from and answers to (the in-process tunnel's socket); `None`: whoever sent
/// last (kernel WireGuard, whose port it learns).
pub fn start(local: UdpSocket, peer: Option<SocketAddr>, target: Target) -> Result<Bridge> {
    if let Some(p) = peer {
        local.connect(p)?;
    }
    local.set_nonblocking(true)?;
    set_receive_buffer(&local, 4 << 20);
    let addr = local.local_addr()?;
    let last_error = Arc::new(Mutex::new(None));
    let errors = last_error.clone();
    one_malloc_arena();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the WebSocket bridge's runtime")?;
    std::thread::Builder::new()
        .name("websocket-bridge".into())
        .spawn(move || {
            runtime.block_on(async move {
                let local = match tokio::net::UdpSocket::from_std(local) {
                    Ok(l) => l,
                    Err(e) => {
                        *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        return;
                    }
                };
                run(local, peer.is_some(), target, errors).await
            })
        })?;
    Ok(Bridge {
        local: addr,
        last_error,
    })
}

async fn run(
    local: tokio::net::UdpSocket,
    connected: bool,
    target: Target,
    errors: Arc<Mutex<Option<String>>>,
) {
    let mut peer: Option<SocketAddr> = None;
    let mut first = true;
    loop {
        let started = tokio::time::Instant::now();
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&target)).await {
            Err(_) => format!(
                "{}: no WebSocket within {} s",
                target.url(),
                CONNECT_TIMEOUT.as_secs()
            ),
            Ok(Err(e)) => format!("{}: {e:#}", target.url()),
            Ok(Ok(ws)) => {
                if !first {
                    eprintln!("wgtool: reconnected to {}", target.url());
                }
                first = false;
                *errors.lock().unwrap_or_else(|e| e.into_inner()) = None;
                match carry(ws, &local, connected, &mut peer).await {
                    Ok(()) => format!("{}: the gateway closed the connection", target.url()),
                    Err(e) => format!("{}: {e:#}", target.url()),
                }
            }
        };
        eprintln!("wgtool: {why}");
        *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        tokio::time::sleep_until(started + RECONNECT).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn AsyncStream>>;

trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncStream for T {}

/// TCP, TLS (checked against the pin, or learning it), the upgrade.
async fn connect(target: &Target) -> Result<Ws> {
    let tcp = tokio::net::TcpStream::connect(target.gateway)
        .await
        .with_context(|| format!("connecting to {}", target.gateway))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn AsyncStream> = if target.plain {
        Box::new(tcp)
    } else {
        Box::new(tls_connect(tcp, target).await?)
    };
    // Reads come out of rustls a TLS record (16 KiB) at a time; a message of the gateway's
    // is reserved whole as its header arrives. The size limit stays above the megabyte an
    // older gateway put in one message.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(target.url(), stream, Some(config))
        .await
        .context("WebSocket upgrade")?;
    Ok(ws)
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    target: &Target,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let key = target.gateway.to_string();
    let pin_file = pins::file();
    let kept = pin_file.as_deref().and_then(|f| pins::lookup(f, &key));
    let pin = target.fingerprint.clone().or(kept);
    let name = rustls::pki_types::ServerName::IpAddress(target.gateway.ip().into());
    if let Some(pin) = pin {
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(&pin));
        return connector
            .connect(name, tcp)
            .await
            .context("TLS with the pinned certificate (if the gateway's certificate changed, check it and give --websocket-fingerprint)");
    }
    // Trust on first use: take what the gateway shows, and keep it.
    let (config, seen) = tls::learning_config();
    let stream = tls_handshake(config, name, tcp).await?;
    let fp = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("the gateway showed no certificate"))?;
    match &pin_file {
        Some(f) => {
            pins::remember(f, &key, &fp)?;
            eprintln!(
                "wgtool: trusting gateway {key}'s certificate sha256:{fp} on first use (kept in {})",
                f.display()
            );
        }
        None => eprintln!(
            "wgtool: trusting gateway {key}'s certificate sha256:{fp} (no state directory to keep it in)"
        ),
    }
    Ok(stream)
}

async fn tls_handshake(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("TLS")
}

/// Carries datagrams both ways until the connection ends.
async fn carry(
    ws: Ws,
    local: &tokio::net::UdpSocket,
    connected: bool,
    peer: &mut Option<SocketAddr>,
) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::binary(MAGIC.to_be_bytes().to_vec()))
        .await
        .context("writing the magic")?;
    let mut buf = vec![0u8; 65_536];
    let mut frames = Frames::default();
    loop {
        tokio::select! {
            got = local.recv_from(&mut buf) => {
                let (n, from) = got.context("local socket")?;
                if !connected {
                    *peer = Some(from);
                }
                let mut out = Vec::with_capacity(MESSAGE_BYTES.min(n + 4));
                frame(&mut out, &buf[..n]);
                // Whatever else is waiting goes in the same message.
                while out.len() < MESSAGE_BYTES {
                    match local.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if !connected {
                                *peer = Some(from);
                            }
                            frame(&mut out, &buf[..n]);
                        }
                        Err(_) => break,
                    }
                }
                sink.send(Message::binary(out)).await.context("writing to the gateway")?;
            }
            message = stream.next() => {
                let bytes = match message {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(e)) => return Err(e).context("reading from the gateway"),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(_)) => continue,
                };
                let (split, mut rest) = frames.complete(&bytes)?;
                if let Some(d) = split {
                    deliver(local, connected, *peer, &d).await?;
                }
                while let Some((d, after)) = next_frame(rest)? {
                    deliver(local, connected, *peer, d).await?;
                    rest = after;
                }
                frames.keep(rest);
            }
        }
    }
}

/// Hands one datagram from the gateway to the local socket.
async fn deliver(
    local: &tokio::net::UdpSocket,
    connected: bool,
    peer: Option<SocketAddr>,
    d: &[u8],
) -> Result<()> {
    let sent = if connected {
        local.send(d).await
    } else if let Some(p) = peer {
        local.send_to(d, p).await
    } else {
        return Ok(());
    };
    match sent {
        // A full local buffer loses this datagram only; WireGuard copes.
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => bail!("local socket: {e}"),
        _ => Ok(()),
    }
}

/// The gateway's frames, read in place from each message rather than copied into a
/// [`super::framing::Deframer`], which would hold a second buffer of a message's size (64
/// KiB from a gateway of this version, up to a megabyte from older ones). Only a frame
/// split across messages (which meshd does not do, but the framing allows) is copied, into
/// `partial`, which never holds more than one frame.
#[derive(Default)]
struct Frames {
    partial: Vec<u8>,
}

impl Frames {
    /// Completes the frame left over from earlier messages with the head of `message`:
    /// the datagram if it is now whole, and the rest of `message`.
    fn complete<'m>(
        &mut self,
        message: &'m [u8],
    ) -> Result<(Option<Vec<u8>>, &'m [u8]), FrameError> {
        if self.partial.is_empty() {
            return Ok((None, message));
        }
        let mut rest = message;
        if self.partial.len() < 4 {
            let n = (4 - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.partial.len() < 4 {
                return Ok((None, rest));
            }
        }
        let len = frame_length(&self.partial)?;
        let n = (4 + len - self.partial.len()).min(rest.len());
        self.partial.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if self.partial.len() < 4 + len {
            return Ok((None, rest));
        }
        let mut whole = std::mem::take(&mut self.partial);
        whole.drain(..4);
        Ok((Some(whole), rest))
    }

    /// Keeps the start of a frame that the message ended inside.
    fn keep(&mut self, rest: &[u8]) {
        self.partial.extend_from_slice(rest);
    }
}

/// The length in a frame's head (at least 4 bytes).
fn frame_length(head: &[u8]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_DATAGRAM {
        return Err(FrameError::TooLong);
    }
    Ok(len)
}

/// A frame's datagram and the bytes after it.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The first whole frame of `bytes`: its datagram and what follows; `None` if `bytes` ends
/// inside it.
fn next_frame(bytes: &[u8]) -> Result<Option<Split<'_>>, FrameError> {
    if bytes.len() < 4 {
        return Ok(None);
    }
    let len = frame_length(bytes)?;
    if bytes.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((&bytes[4..4 + len], &bytes[4 + len..])))
}

/// glibc gives a second thread that allocates (the bridge's, beside the tunnel's) a malloc
/// arena of its own, which keeps pages it once used; the tunnel's thread allocates next to
/// nothing per packet, so one arena for both costs no contention and less memory. Set
/// before the bridge's thread first allocates.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of glibc malloc's parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Room for a burst from WireGuard while the WebSocket is busy (the kernel caps it at
/// net.core.rmem_max).
fn set_receive_buffer(udp: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every datagram of the messages, as the bridge hands them on.
    fn read(messages: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for m in messages {
            let (split, mut rest) = frames.complete(m)?;
            got.extend(split);
            while let Some((d, after)) = next_frame(rest)? {
                got.push(d.to_vec());
                rest = after;
            }
            frames.keep(rest);
        }
        assert!(frames.partial.len() <= 4 + MAX_DATAGRAM);
        Ok(got)
    }

    #[test]
    fn frames_split_anywhere_across_messages_come_out_whole() {
        let datagrams: Vec<Vec<u8>> = vec![
            b"one".to_vec(),
            vec![2; 148],
            vec![7; MAX_DATAGRAM],
            b"x".to_vec(),
        ];
        let mut stream = Vec::new();
        for d in &datagrams {
            frame(&mut stream, d);
        }
        for first in 0..12 {
            for size in [1, 3, 5, 1000, 70_000, 1 << 20] {
                let mut messages = vec![&stream[..first]];
                messages.extend(stream[first..].chunks(size));
                assert_eq!(
                    read(&messages).unwrap(),
                    datagrams,
                    "first {first} size {size}"
                );
            }
        }
        // Split inside the second frame's head and its body.
        for cut in 7..20 {
            let (a, b) = stream.split_at(cut);
            assert_eq!(read(&[a, b]).unwrap(), datagrams, "cut {cut}");
        }
    }

    #[test]
    fn bad_lengths_end_the_connection() {
        assert_eq!(read(&[&[0, 0, 0, 0, 1]]), Err(FrameError::Empty));
        assert_eq!(read(&[&[0, 1, 0], &[0]]), Err(FrameError::TooLong));
        assert_eq!(
            read(&[&[0, 0, 0, 1, 9, 0, 0], &[0, 0]]),
            Err(FrameError::Empty)
        );
    }
}
