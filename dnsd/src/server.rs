//! How queries travel: UDP workers (blocking sockets, one thread each, answering `.internal`
//! names and cache hits inline), TCP connections on tokio, and forwarded names on tokio.
//!
//! Everything a client can make dnsd hold is capped: questions at upstreams
//! ([`Forwarder::admit`]: SERVFAIL past the cap), TCP connections ([`TcpLimits`]: closed at
//! once past the cap, idle and write timeouts), and a TCP connection's buffer grows only to
//! the biggest query it actually sent.

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
use crate::udp_batch::{self, Batch};
use crate::wire::{self, Query, Reject};

/// The TCP caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once; more are accepted and closed at once (counted).
    pub max_connections: usize,
    /// How long a client may sit idle between queries (or take to send one).
    pub idle: Duration,
    /// How long writing one answer may take before the connection is dropped.
    pub write: Duration,
}

impl Default for TcpLimits {
    fn default() -> TcpLimits {
        TcpLimits {
            max_connections: 1024,
            idle: Duration::from_secs(10),
            write: Duration::from_secs(5),
        }
    }
}

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

/// Answers a question that [`handle`] passed on with SERVFAIL, because too many are at
/// upstreams already (the caller counted it).
pub fn overload(shared: &Shared, packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(q) = wire::parse(packet) else {
        return false;
    };
    let w = wire::write_rcode(&q, wire::RCODE_SERVFAIL, out);
    shared.metrics.query(q.qtype, w.rcode, Duration::ZERO);
    true
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
                    let Some(permit) = shared.forwarder.as_ref().and_then(|f| f.admit(src.ip()))
                    else {
                        if overload(&shared, packet, out) {
                            batch.reply(i);
                        }
                        continue;
                    };
                    let packet = packet.to_vec();
                    let dst = batch.dst(i);
                    let (shared, sock) = (shared.clone(), sock.clone());
                    runtime.spawn(async move {
                        let _permit = permit;
                        let mut out = Vec::new();
                        forward(&shared, &packet, Transport::Udp, &mut out).await;
                        if !out.is_empty() {
                            let _ = udp_batch::send_one(&sock, &out, src, dst);
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

/// The TCP listen backlog: a burst of connections (a flood, or many clients after a restart)
/// waits in the kernel's queue instead of overflowing it, which would leave each dropped
/// handshake to the client's SYN retransmit a second or more later. The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4). std and tokio use 128.
pub const TCP_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`TCP_BACKLOG`]; call inside the runtime.
pub fn tcp_listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(TCP_BACKLOG)
}

/// Accepts TCP clients on `listener` until the process ends, with the default limits.
pub async fn tcp_listener(shared: Arc<Shared>, listener: TcpListener) {
    tcp_listener_with(shared, listener, TcpLimits::default()).await
}

/// Accepts TCP clients on `listener` until the process ends, within `limits`.
pub async fn tcp_listener_with(shared: Arc<Shared>, listener: TcpListener, limits: TcpLimits) {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        match listener.accept().await {
            Ok((conn, src)) => {
                // Past the cap: close at once rather than queue, so the descriptor comes
                // back and the client learns now (it may retry, or over UDP).
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    shared.metrics.tcp_overload.fetch_add(1, Relaxed);
                    drop(conn);
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    shared.metrics.tcp_connections.fetch_add(1, Relaxed);
                    tcp_conn(&shared, conn, src, limits).await;
                    shared.metrics.tcp_connections.fetch_sub(1, Relaxed);
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_conn(shared: &Shared, mut conn: TcpStream, src: SocketAddr, limits: TcpLimits) {
    let _ = conn.set_nodelay(true);
    // Grown to the biggest query this client sends (at most 64 KiB), not allocated up front:
    // an idle connection costs a few hundred bytes.
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(limits.idle, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        if buf.len() < n {
            buf.resize(n, 0);
        }
        match tokio::time::timeout(limits.idle, conn.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let packet = &buf[..n];
        match handle(shared, packet, src, Transport::Tcp, Clock::now(), &mut out) {
            Step::Reply => {}
            Step::Drop => return,
            Step::Forward => match shared.forwarder.as_ref().and_then(|f| f.admit(src.ip())) {
                Some(_permit) => forward(shared, packet, Transport::Tcp, &mut out).await,
                None => {
                    if !overload(shared, packet, &mut out) {
                        return;
                    }
                }
            },
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        match tokio::time::timeout(limits.write, conn.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use registry::{Change, Snapshot};

    use super::*;
    use crate::cache::Cache;
    use crate::index::Options;

    #[tokio::test]
    async fn the_tcp_listener_queues_a_burst_of_connections() {
        // 300 connections at once, none accepted yet: with std's backlog of 128 the kernel
        // drops the handshakes past it, and those connects hang on SYN retransmits.
        let listener = tcp_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connect_all = async {
            let mut conns = Vec::new();
            for _ in 0..300 {
                conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
            conns
        };
        let conns = tokio::time::timeout(Duration::from_millis(900), connect_all)
            .await
            .expect("300 connects completed within 0.9 s without an accept");
        assert_eq!(conns.len(), 300);
        drop(listener);
    }

    fn query(name: &str) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 28, 0, 1]);
        p
    }

    fn shared(default_org: Option<&str>, upstream: bool) -> Shared {
        let mut snap = Snapshot::default();
        let mut ctx = Fixed;
        let change = Change::CreateOrg {
            name: "acme".into(),
        };
        registry::change::plan(&snap, &change, &mut ctx)
            .unwrap()
            .apply_to(&mut snap);
        let opts = Options {
            default_org: default_org.map(Into::into),
            ..Options::default()
        };
        let metrics = Arc::new(Metrics::default());
        let forwarder = upstream.then(|| {
            let cache = Cache::new(10, Duration::from_secs(1));
            let upstreams = vec!["127.0.0.1:9".parse().unwrap()];
            Forwarder::new(upstreams, Duration::from_secs(1), cache, metrics.clone())
        });
        Shared {
            index: ArcSwap::from_pointee(Index::build(&snap, &opts, 0)),
            forwarder,
            metrics,
        }
    }

    struct Fixed;

    impl registry::change::Context for Fixed {
        fn random_u64(&mut self) -> u64 {
            7
        }
        fn now_unix(&self) -> i64 {
            1_700_000_000
        }
    }

    fn ask(shared: &Shared, name: &str, from: &str) -> (Step, u8) {
        let src = SocketAddr::new(from.parse().unwrap(), 5353);
        let mut out = Vec::new();
        let step = handle(
            shared,
            &query(name),
            src,
            Transport::Udp,
            Clock::now(),
            &mut out,
        );
        (step, out.get(3).map_or(0xff, |b| b & 0xf))
    }

    fn refused(shared: &Shared, reason: &str) -> String {
        let m = shared.metrics.render();
        let prefix = format!("dnsd_refused_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in\n{m}"))
            .to_string()
    }

    #[test]
    fn outsiders_are_refused_before_forwarding_and_counted() {
        let s = shared(Some("acme"), true);
        for name in ["example.com", "web.internal"] {
            let (step, rcode) = ask(&s, name, "192.0.2.7");
            assert_eq!((step, rcode), (Step::Reply, 5), "{name}");
        }
        assert_eq!(refused(&s, "outsider"), "2");
        // Loopback is forwarded (nothing answered inline, the upstream is asked).
        assert_eq!(ask(&s, "example.com", "::1").0, Step::Forward);
        assert_eq!(ask(&s, "example.com", "::ffff:127.0.0.1").0, Step::Forward);
        assert_eq!(refused(&s, "outsider"), "2");
        assert!(s
            .metrics
            .render()
            .contains("dnsd_queries_total{type=\"AAAA\",rcode=\"REFUSED\"} 2\n"));
    }

    #[test]
    fn other_refusals_are_counted_by_reason() {
        let s = shared(None, false);
        assert_eq!(ask(&s, "web.internal", "127.0.0.1"), (Step::Reply, 5));
        assert_eq!(refused(&s, "no_default_org"), "1");
        assert_eq!(ask(&s, "example.com", "127.0.0.1"), (Step::Reply, 5));
        assert_eq!(refused(&s, "no_upstream"), "1");
        assert_eq!(ask(&s, "web.internal", "fdaa:0:ffff::2"), (Step::Reply, 5));
        assert_eq!(refused(&s, "unknown_org"), "1");
        assert_eq!(refused(&s, "outsider"), "0");
    }
}
