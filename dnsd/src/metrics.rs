//! Prometheus metrics: counters bumped with relaxed atomics on the query path, rendered as
//! text on `--metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::scope::Refusal;

const TYPES: [(&str, u16); 6] = [
    ("A", 1),
    ("AAAA", 28),
    ("TXT", 16),
    ("SOA", 6),
    ("ANY", 255),
    ("OTHER", 0),
];
const RCODES: [(&str, u16); 7] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("BADVERS", 16),
];
/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.1, 0.5, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    queries: [[AtomicU64; RCODES.len()]; TYPES.len()],
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    pub forwarded: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub cache_hits: AtomicU64,
    pub stale_answers: AtomicU64,
    pub truncated: AtomicU64,
    pub malformed_dropped: AtomicU64,
    pub forward_overload: AtomicU64,
    pub forward_source_limited: AtomicU64,
    pub tcp_overload: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub forwards_in_flight: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub revision: AtomicU64,
    pub index_names: AtomicU64,
    pub registry_reachable: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl Metrics {
    pub fn query(&self, qtype: u16, rcode: u16, took: Duration) {
        let t = TYPES
            .iter()
            .position(|t| t.1 == qtype)
            .unwrap_or(TYPES.len() - 1);
        if let Some(r) = RCODES.iter().position(|r| r.1 == rcode) {
            self.queries[t][r].fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.latency[b].fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Counts a REFUSED answer by its reason.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("# HELP dnsd_queries_total Queries answered, by type and rcode.\n");
        s.push_str("# TYPE dnsd_queries_total counter\n");
        for (t, (tname, _)) in TYPES.iter().enumerate() {
            for (r, (rname, _)) in RCODES.iter().enumerate() {
                let v = self.queries[t][r].load(Relaxed);
                let _ = writeln!(
                    s,
                    "dnsd_queries_total{{type=\"{tname}\",rcode=\"{rname}\"}} {v}"
                );
            }
        }
        s.push_str("# HELP dnsd_refused_total Queries REFUSED, by reason (outsider: the source is in no org, not loopback and not allowed).\n");
        s.push_str("# TYPE dnsd_refused_total counter\n");
        for (i, why) in Refusal::ALL.iter().enumerate() {
            let v = self.refused[i].load(Relaxed);
            let _ = writeln!(s, "dnsd_refused_total{{reason=\"{}\"}} {v}", why.label());
        }
        s.push_str("# HELP dnsd_query_duration_seconds Time from packet in to answer out.\n");
        s.push_str("# TYPE dnsd_query_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(
                s,
                "dnsd_query_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            s,
            "dnsd_query_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(s, "dnsd_query_duration_seconds_sum {sum}");
        let _ = writeln!(s, "dnsd_query_duration_seconds_count {cumulative}");
        let counters = [
            (
                "dnsd_forwarded_total",
                "Queries forwarded upstream.",
                &self.forwarded,
            ),
            (
                "dnsd_upstream_failures_total",
                "Upstream attempts that failed or timed out.",
                &self.upstream_failures,
            ),
            (
                "dnsd_cache_hits_total",
                "Forwarded names answered from the cache.",
                &self.cache_hits,
            ),
            (
                "dnsd_stale_answers_total",
                "Stale cached answers served because every upstream was down.",
                &self.stale_answers,
            ),
            (
                "dnsd_truncated_total",
                "UDP answers truncated (TC).",
                &self.truncated,
            ),
            (
                "dnsd_malformed_dropped_total",
                "Packets dropped without an answer.",
                &self.malformed_dropped,
            ),
            (
                "dnsd_forward_overload_total",
                "Forwarded names answered SERVFAIL because max_forwards questions were already at upstreams.",
                &self.forward_overload,
            ),
            (
                "dnsd_forward_source_limited_total",
                "Forwarded names answered SERVFAIL because their client already had max_forwards_per_source questions at upstreams.",
                &self.forward_source_limited,
            ),
            (
                "dnsd_tcp_overload_total",
                "TCP connections closed at once because max_tcp_connections were open.",
                &self.tcp_overload,
            ),
            (
                "dnsd_cache_evictions_total",
                "Cached answers evicted (least recently used) to stay within cache_bytes/cache_size.",
                &self.cache_evictions,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let gauges = [
            (
                "dnsd_index_revision",
                "Registry revision the index was built from.",
                &self.revision,
            ),
            (
                "dnsd_index_names",
                "Names in the index, over all orgs.",
                &self.index_names,
            ),
            (
                "dnsd_registry_reachable",
                "1 if the registry can be read.",
                &self.registry_reachable,
            ),
            (
                "dnsd_tcp_connections",
                "TCP client connections open.",
                &self.tcp_connections,
            ),
            (
                "dnsd_forwards_in_flight",
                "Questions waiting on upstreams.",
                &self.forwards_in_flight,
            ),
            (
                "dnsd_cache_bytes",
                "Bytes the forwarding cache holds (counted as its budget is).",
                &self.cache_bytes,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        }
        s
    }
}

/// Serves `GET /metrics` (any path, really) on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut req)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let body = metrics.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
