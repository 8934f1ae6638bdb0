//! Forwarding names outside `.internal`: to the upstreams in turn (starting with the last
//! one that answered), each with its own timeout, through the cache, and from the cache's
//! stale answers when every upstream is down.
//!
//! Bounded: at most `max_inflight` questions are with upstreams at once (each holds one
//! socket), and at most `max_per_source` of them from one client (an IPv4 address, or an
//! IPv6 /112: one machine's block), so that one client with a slow upstream cannot take every
//! place from the rest; past either, a question gets SERVFAIL at once and is counted. Query
//! ids and source
//! ports come from the OS generator, not from the answer shuffler, whose outputs clients see.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{Cache, Freshness};
use crate::metrics::Metrics;
use crate::wire::{self, Query};

/// Default cap on questions waiting on upstreams at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Default share of one client: an eighth of the cap.
pub fn default_max_per_source(max_inflight: usize) -> usize {
    (max_inflight / 8).max(1)
}
/// The biggest UDP answer read from an upstream; a fuller datagram is asked again over TCP.
const UDP_BUFFER: usize = 4096;

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
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    sources: Arc<Sources>,
}

/// Questions at upstreams per client.
#[derive(Default)]
struct Sources {
    max: usize,
    held: Mutex<HashMap<SourceKey, usize>>,
}

/// A client as the per-source share counts it: an IPv4 address, or an IPv6 /112 (a machine
/// owns one, and may send from any address in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(u128);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(u128::from(u32::from(v4)) | (1 << 127)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::of(IpAddr::V4(v4)),
                None => SourceKey(u128::from(v6) & !0xffff),
            },
        }
    }
}

impl Sources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SourceKey, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A place among the questions at upstreams, given back when dropped.
pub struct Place {
    _global: OwnedSemaphorePermit,
    key: SourceKey,
    sources: Arc<Sources>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.sources.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
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
            inflight: Arc::new(Semaphore::new(DEFAULT_MAX_INFLIGHT)),
            max_inflight: DEFAULT_MAX_INFLIGHT,
            sources: Arc::new(Sources {
                max: default_max_per_source(DEFAULT_MAX_INFLIGHT),
                ..Sources::default()
            }),
        }
    }

    /// The same, with at most `n` (≥ 1) questions at upstreams at once, and the default share
    /// of one client (an eighth of `n`).
    pub fn with_max_inflight(mut self, n: usize) -> Forwarder {
        let n = n.max(1);
        self.inflight = Arc::new(Semaphore::new(n));
        self.max_inflight = n;
        self.with_max_per_source(default_max_per_source(n))
    }

    /// The same, with at most `n` (≥ 1) questions of one client at upstreams at once.
    pub fn with_max_per_source(mut self, n: usize) -> Forwarder {
        self.sources = Arc::new(Sources {
            max: n.max(1),
            ..Sources::default()
        });
        self
    }

    /// A place among the questions at upstreams for a question from `src`, held until
    /// dropped; `None` when all `max_inflight` places are taken (counted in
    /// `dnsd_forward_overload_total`) or else `src` already has its share at upstreams
    /// (counted in `dnsd_forward_source_limited_total`).
    pub fn admit(&self, src: IpAddr) -> Option<Place> {
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            self.metrics.forward_overload.fetch_add(1, Relaxed);
            return None;
        };
        let key = SourceKey::of(src);
        let mut held = self.sources.lock();
        let mine = held.get(&key).copied().unwrap_or(0);
        if mine >= self.sources.max {
            self.metrics.forward_source_limited.fetch_add(1, Relaxed);
            return None;
        }
        held.insert(key, mine + 1);
        drop(held);
        Some(Place {
            _global: permit,
            key,
            sources: self.sources.clone(),
        })
    }

    /// Questions at upstreams right now.
    pub fn in_flight(&self) -> usize {
        self.max_inflight - self.inflight.available_permits()
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
        self.metrics
            .forwards_in_flight
            .store(self.in_flight() as u64, Relaxed);
        let n = self.upstreams.len();
        let first = self.preferred.load(Relaxed);
        for i in 0..n {
            let k = (first + i) % n;
            let upstream = self.upstreams[k];
            match self.ask(upstream, q, packet).await {
                Ok(mut response) => {
                    self.preferred.store(k, Relaxed);
                    self.cache.put(q, &response, Instant::now());
                    self.metrics
                        .cache_bytes
                        .store(self.cache.bytes() as u64, Relaxed);
                    self.metrics
                        .cache_evictions
                        .store(self.cache.evictions(), Relaxed);
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
        let id = query_id();
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

/// An upstream query id: from the OS generator, so an off-path attacker cannot predict it.
pub fn query_id() -> u16 {
    OsRng.next_u32() as u16
}

/// A UDP socket for one upstream exchange, on a source port from the OS generator (Linux
/// picks ephemeral ports well too; this does not depend on it), else on one the kernel picks.
async fn upstream_socket(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let ip: std::net::IpAddr = if upstream.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    for _ in 0..8 {
        let port = 1024 + (OsRng.next_u32() % (65536 - 1024)) as u16;
        if let Ok(sock) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
            return Ok(sock);
        }
    }
    UdpSocket::bind(SocketAddr::new(ip, 0)).await
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
    let sock = upstream_socket(upstream).await.map_err(io)?;
    sock.connect(upstream).await.map_err(io)?;
    sock.send(query).await.map_err(io)?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        // Ignore stray datagrams (wrong id or question); wait for ours until the timeout.
        if matches(&buf[..n], id, q) {
            if n == buf.len() {
                // Maybe cut short by the buffer: treat as truncated, so TCP is asked.
                buf[2] |= 0x02;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle;

    #[test]
    fn query_ids_do_not_come_from_the_answer_shuffler() {
        // The shuffler's next outputs, from a known state.
        shuffle::reseed(0x1234_5678_9abc_def1);
        let predicted: Vec<u16> = (0..64).map(|_| shuffle::below(1 << 16) as u16).collect();
        // Query ids drawn in between must neither advance that state nor follow it.
        shuffle::reseed(0x1234_5678_9abc_def1);
        let ids: Vec<u16> = (0..64).map(|_| query_id()).collect();
        let after: Vec<u16> = (0..64).map(|_| shuffle::below(1 << 16) as u16).collect();
        assert_eq!(after, predicted, "drawing query ids moved the shuffler");
        assert_ne!(ids, predicted, "query ids are the shuffler's sequence");
        let same = ids.iter().zip(&predicted).filter(|(a, b)| a == b).count();
        assert!(same < 4, "{same} of 64 ids equal the shuffler's outputs");
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert!(distinct.len() > 56, "ids repeat: {ids:?}");
    }

    #[tokio::test]
    async fn the_inflight_cap_admits_up_to_its_size_and_counts_the_rest() {
        let metrics = Arc::new(Metrics::default());
        let cache = Cache::new(10, Duration::from_secs(1));
        let f = Forwarder::new(vec![], Duration::from_secs(1), cache, metrics.clone())
            .with_max_inflight(3)
            .with_max_per_source(3);
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| f.admit(src).expect("within the cap"))
            .collect();
        assert_eq!(f.in_flight(), 3);
        assert!(f.admit(src).is_none());
        assert!(f.admit("10.0.0.9".parse().unwrap()).is_none());
        assert_eq!(metrics.forward_overload.load(Relaxed), 2);
        assert_eq!(metrics.forward_source_limited.load(Relaxed), 0);
        drop(held);
        assert!(f.admit(src).is_some());
    }

    #[tokio::test]
    async fn one_client_gets_its_share_and_the_others_theirs() {
        let metrics = Arc::new(Metrics::default());
        let cache = Cache::new(10, Duration::from_secs(1));
        let f = Forwarder::new(vec![], Duration::from_secs(1), cache, metrics.clone())
            .with_max_inflight(8)
            .with_max_per_source(2);
        let greedy: IpAddr = "fdaa:0:1:a7b:aa::2".parse().unwrap();
        // Another address in the same /112 is the same machine; the next /112 is not.
        let same_machine: IpAddr = "fdaa:0:1:a7b:aa::ffff".parse().unwrap();
        let other: IpAddr = "fdaa:0:1:a7b:aa::1:2".parse().unwrap();
        let a = f.admit(greedy).expect("first place");
        let b = f.admit(same_machine).expect("second place");
        assert!(f.admit(greedy).is_none());
        assert!(f.admit(same_machine).is_none());
        assert_eq!(metrics.forward_source_limited.load(Relaxed), 2);
        assert_eq!(metrics.forward_overload.load(Relaxed), 0);
        let c = f.admit(other).expect("another client still has its share");
        // An IPv4 client and the same address mapped into IPv6 are one client.
        let v4 = f.admit("192.0.2.7".parse().unwrap()).expect("v4");
        let _v4b = f
            .admit("::ffff:192.0.2.7".parse().unwrap())
            .expect("mapped v4");
        assert!(f.admit("192.0.2.7".parse().unwrap()).is_none());
        assert_eq!(f.in_flight(), 5);
        drop((a, b, c, v4));
        assert_eq!(f.in_flight(), 1);
        assert!(f.admit(greedy).is_some(), "places come back when dropped");
        assert_eq!(
            f.sources.lock().len(),
            1,
            "sources with nothing in flight are forgotten"
        );
    }
}
