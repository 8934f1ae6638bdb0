//! Forwarding names outside `.internal`: to the upstreams in turn (starting with the last
//! one that answered), each with its own timeout, through the cache, and from the cache's
//! stale answers when every upstream is down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::{Cache, Freshness};
use crate::metrics::Metrics;
use crate::shuffle;
use crate::wire::{self, Query};

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("upstream {0}: no answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0}: answer does not match the question")]
    Mismatch(SocketAddr),
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    preferred: AtomicUsize,
    pub cache: Cache,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        cache: Cache,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            preferred: AtomicUsize::new(0),
            cache,
            metrics,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The response to `q` (whose packet is `packet`) for a client that takes `limit` bytes,
    /// written to `out`; returns its rcode.
    pub async fn resolve(
        &self,
        q: &Query<'_>,
        packet: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> u16 {
        self.metrics.forwarded.fetch_add(1, Relaxed);
        let n = self.upstreams.len();
        let first = self.preferred.load(Relaxed);
        for i in 0..n {
            let k = (first + i) % n;
            let upstream = self.upstreams[k];
            match self.ask(upstream, q, packet).await {
                Ok(mut response) => {
                    self.preferred.store(k, Relaxed);
                    self.cache.put(q, &response, Instant::now());
                    response[0..2].copy_from_slice(&q.id.to_be_bytes());
                    if response.len() > limit {
                        // Too big for this client's UDP: tell it to come back over TCP.
                        wire::write_rcode(q, wire::RCODE_NOERROR, out);
                        out[2] |= 0x02;
                        return wire::RCODE_NOERROR;
                    }
                    *out = response;
                    return u16::from(out[3] & 0xf);
                }
                Err(e) => {
                    self.metrics.upstream_failures.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "upstream failed");
                }
            }
        }
        if self.cache.get(q, true, limit, Instant::now(), out) == Some(Freshness::Stale) {
            self.metrics.stale_answers.fetch_add(1, Relaxed);
            return u16::from(out[3] & 0xf);
        }
        wire::write_rcode(q, wire::RCODE_SERVFAIL, out).rcode
    }

    /// One attempt: UDP, then TCP if the UDP answer was truncated.
    async fn ask(
        &self,
        upstream: SocketAddr,
        q: &Query<'_>,
        packet: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        let id = shuffle::below(1 << 16) as u16;
        let mut query = packet.to_vec();
        query[0..2].copy_from_slice(&id.to_be_bytes());
        let deadline = self.timeout;
        let udp = tokio::time::timeout(deadline, udp_exchange(upstream, &query, id, q)).await;
        let response = match udp {
            Err(_) => return Err(UpstreamError::Timeout(upstream, deadline)),
            Ok(r) => r?,
        };
        if response[2] & 0x02 == 0 {
            return Ok(response);
        }
        match tokio::time::timeout(deadline, tcp_exchange(upstream, &query, id, q)).await {
            Err(_) => Err(UpstreamError::Timeout(upstream, deadline)),
            Ok(r) => r,
        }
    }
}

fn matches(response: &[u8], id: u16, q: &Query<'_>) -> bool {
    response.len() >= 12 + q.question.len()
        && response[0..2] == id.to_be_bytes()
        && response[2] & 0x80 != 0
        && response[12..12 + q.question.len()].eq_ignore_ascii_case(q.question)
}

async fn udp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    q: &Query<'_>,
) -> Result<Vec<u8>, UpstreamError> {
    let io = |e| UpstreamError::Io(upstream, e);
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(upstream).await.map_err(io)?;
    sock.send(query).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        // Ignore stray datagrams (wrong id or question); wait for ours until the timeout.
        if matches(&buf[..n], id, q) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    q: &Query<'_>,
) -> Result<Vec<u8>, UpstreamError> {
    let io = |e| UpstreamError::Io(upstream, e);
    let mut conn = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(query.len()).unwrap_or(u16::MAX);
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    conn.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut buf).await.map_err(io)?;
    if !matches(&buf, id, q) {
        return Err(UpstreamError::Mismatch(upstream));
    }
    Ok(buf)
}
