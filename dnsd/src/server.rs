//! How queries travel: UDP workers (blocking sockets, one thread each, answering `.internal`
//! names and cache hits inline), TCP connections on tokio, and forwarded names on tokio.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

use crate::answer::{answer, Answer};
use crate::forward::Forwarder;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::scope::Refusal;
use crate::udp_batch::Batch;
use crate::wire::{self, Query, Reject};

/// How long a TCP client may sit idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every worker shares.
pub struct Shared {
    pub index: ArcSwap<Index>,
    pub forwarder: Option<Forwarder>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a packet after [`handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `out` holds the response.
    Reply,
    /// Ask upstream (the query parsed, and is outside `.internal`).
    Forward,
    /// Send nothing.
    Drop,
}

/// When a packet (or a batch of them) arrived: read once per batch, not per query.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub received: Instant,
    /// Unix seconds, for peer expiry.
    pub unix: i64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            received: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }
}

/// Answers `packet` from `src` into `out`, without waiting on anything.
pub fn handle(
    shared: &Shared,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    clock: Clock,
    out: &mut Vec<u8>,
) -> Step {
    let start = clock.received;
    let q = match wire::parse(packet) {
        Ok(q) => q,
        Err(reject) => {
            let Some(w) = wire::write_reject(&reject, out) else {
                shared.metrics.malformed_dropped.fetch_add(1, Relaxed);
                if let Reject::Drop(reason) = reject {
                    tracing::debug!(%src, reason, "dropped packet");
                }
                return Step::Drop;
            };
            shared.metrics.query(0, w.rcode, start.elapsed());
            return Step::Reply;
        }
    };
    let limit = limit(&q, transport);
    let index = shared.index.load();
    let ans = answer(&index, &q.as_question(), src.ip(), clock.unix);
    if let Answer::Refused(why) = ans {
        shared.metrics.refused(why);
    }
    if ans == Answer::Forward {
        let Some(fwd) = &shared.forwarder else {
            shared.metrics.refused(Refusal::NoUpstream);
            let w = wire::write_rcode(&q, wire::RCODE_REFUSED, out);
            shared.metrics.query(q.qtype, w.rcode, start.elapsed());
            return Step::Reply;
        };
        if fwd.cache.get(&q, false, limit, start, out).is_some() {
            shared.metrics.cache_hits.fetch_add(1, Relaxed);
            shared
                .metrics
                .query(q.qtype, u16::from(out[3] & 0xf), start.elapsed());
            return Step::Reply;
        }
        return Step::Forward;
    }
    let w = wire::write_answer(&q, &ans, index.revision as u32, limit, out);
    if w.truncated {
        shared.metrics.truncated.fetch_add(1, Relaxed);
    }
    shared.metrics.query(q.qtype, w.rcode, start.elapsed());
    Step::Reply
}

fn limit(q: &Query<'_>, transport: Transport) -> usize {
    match transport {
        Transport::Udp => q.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    }
}

/// Forwards a query that [`handle`] passed on; writes the response into `out`.
pub async fn forward(shared: &Shared, packet: &[u8], transport: Transport, out: &mut Vec<u8>) {
    let start = Instant::now();
    let Ok(q) = wire::parse(packet) else {
        return;
    };
    let Some(fwd) = &shared.forwarder else {
        return;
    };
    let rcode = fwd.resolve(&q, packet, limit(&q, transport), out).await;
    shared.metrics.query(q.qtype, rcode, start.elapsed());
}

/// Runs one UDP worker on `sock`: batches in, `.internal` answers and cache hits inline,
/// forwarded names handed to the runtime.
pub fn udp_worker(shared: Arc<Shared>, sock: Arc<UdpSocket>, runtime: Handle) {
    let mut batch = Batch::new();
    loop {
        let n = match batch.recv(&sock) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // ICMP errors from earlier sends can surface here; keep serving.
                    tracing::debug!(error = %e, "udp receive failed");
                }
                continue;
            }
        };
        let clock = Clock::now();
        for i in 0..n {
            let (packet, src, out) = batch.slot(i);
            let (Some(packet), Some(src)) = (packet, src) else {
                shared.metrics.malformed_dropped.fetch_add(1, Relaxed);
                continue;
            };
            match handle(&shared, packet, src, Transport::Udp, clock, out) {
                Step::Reply => batch.reply(i),
                Step::Drop => {}
                Step::Forward => {
                    let packet = packet.to_vec();
                    let (shared, sock) = (shared.clone(), sock.clone());
                    runtime.spawn(async move {
                        let mut out = Vec::new();
                        forward(&shared, &packet, Transport::Udp, &mut out).await;
                        if !out.is_empty() {
                            let _ = sock.send_to(&out, src);
                        }
                    });
                }
            }
        }
        if let Err(e) = batch.send(&sock) {
            tracing::debug!(error = %e, "udp send failed");
        }
    }
}

/// Accepts TCP clients on `listener` until the process ends.
pub async fn tcp_listener(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((conn, src)) => {
                let shared = shared.clone();
                tokio::spawn(async move { tcp_conn(shared, conn, src).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_conn(shared: Arc<Shared>, mut conn: TcpStream, src: SocketAddr) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let packet = &buf[..n];
        match handle(&shared, packet, src, Transport::Tcp, Clock::now(), &mut out) {
            Step::Reply => {}
            Step::Drop => return,
            Step::Forward => forward(&shared, packet, Transport::Tcp, &mut out).await,
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        if conn.write_all(&framed).await.is_err() {
            return;
        }
    }
}
