//! The cache of forwarded answers: whole responses keyed by question, served with their TTLs
//! counted down, and served stale (with a short TTL) when every upstream is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{self, Query};

/// TTL given to a stale answer (RFC 8767 suggests 30 s).
pub const STALE_TTL: u32 = 30;
/// The longest a forwarded answer is kept fresh.
const MAX_TTL: u32 = 86_400;
const TYPE_OPT: u16 = 41;

struct Stored {
    /// The response as upstream sent it (its id is overwritten on the way out).
    response: Box<[u8]>,
    /// Offsets of the TTL fields to count down (OPT excluded).
    ttls: Vec<(usize, u32)>,
    stored: Instant,
    ttl: u32,
}

/// How fresh a cached answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
}

pub struct Cache {
    entries: Mutex<HashMap<Box<[u8]>, Stored>>,
    capacity: usize,
    max_stale: Duration,
}

/// The cache key: lowercase name, type, class and the EDNS bits that change an answer.
fn key<'b>(q: &Query<'_>, buf: &'b mut [u8; 262]) -> &'b [u8] {
    let name = q.name();
    let n = name.len();
    buf[..n].copy_from_slice(name);
    buf[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&q.qclass.to_be_bytes());
    buf[n + 4] = match q.edns {
        None => 0,
        Some(e) if e.dnssec_ok => 2,
        Some(_) => 1,
    };
    &buf[..n + 5]
}

impl Cache {
    pub fn new(capacity: usize, max_stale: Duration) -> Cache {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity,
            max_stale,
        }
    }

    /// Writes the cached answer to `q` into `out` if there is one that fits in `limit`:
    /// only fresh ones unless `stale_ok`.
    pub fn get(
        &self,
        q: &Query<'_>,
        stale_ok: bool,
        limit: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Option<Freshness> {
        let mut kb = [0u8; 262];
        let k = key(q, &mut kb);
        let entries = self.entries.lock().ok()?;
        let s = entries.get(k)?;
        let age = now.saturating_duration_since(s.stored);
        let age_s = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        let freshness = if age < Duration::from_secs(u64::from(s.ttl)) {
            Freshness::Fresh
        } else if stale_ok && age <= self.max_stale + Duration::from_secs(u64::from(s.ttl)) {
            Freshness::Stale
        } else {
            return None;
        };
        if s.response.len() > limit {
            return None;
        }
        out.clear();
        out.extend_from_slice(&s.response);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        // Echo the client's question (same name, maybe other case): same length.
        if let Some(dst) = out.get_mut(12..12 + q.question.len()) {
            dst.copy_from_slice(q.question);
        }
        for &(at, orig) in &s.ttls {
            let ttl = match freshness {
                Freshness::Fresh => orig.saturating_sub(age_s),
                Freshness::Stale => STALE_TTL,
            };
            if let Some(field) = out.get_mut(at..at + 4) {
                field.copy_from_slice(&ttl.to_be_bytes());
            }
        }
        Some(freshness)
    }

    /// Keeps a response from upstream (NOERROR or NXDOMAIN, not truncated).
    pub fn put(&self, q: &Query<'_>, response: &[u8], now: Instant) {
        if response.len() < 12 || response[2] & 0x02 != 0 {
            return;
        }
        let same_question = response
            .get(12..12 + q.question.len())
            .is_some_and(|r| r.eq_ignore_ascii_case(q.question));
        if !same_question {
            return;
        }
        let rcode = u16::from(response[3] & 0xf);
        if rcode != wire::RCODE_NOERROR && rcode != wire::RCODE_NXDOMAIN {
            return;
        }
        let mut ttls = Vec::new();
        let walked = wire::ttl_offsets(response, |at, rtype| {
            if rtype != TYPE_OPT {
                if let Some(f) = response.get(at..at + 4) {
                    ttls.push((at, u32::from_be_bytes([f[0], f[1], f[2], f[3]])));
                }
            }
        });
        if walked.is_none() {
            return;
        }
        let ttl = ttls.iter().map(|t| t.1).min().unwrap_or(0).min(MAX_TTL);
        let mut kb = [0u8; 262];
        let k: Box<[u8]> = key(q, &mut kb).into();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&k) {
            let max_stale = self.max_stale;
            entries.retain(|_, s| {
                now.saturating_duration_since(s.stored)
                    <= max_stale + Duration::from_secs(u64::from(s.ttl))
            });
            if entries.len() >= self.capacity {
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            k,
            Stored {
                response: response.into(),
                ttls,
                stored: now,
                ttl,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
