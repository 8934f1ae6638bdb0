//! The cache of forwarded answers: whole responses keyed by question, served with their TTLs
//! counted down, and served stale (with a short TTL) when every upstream is down.
//!
//! Bounded by bytes (each entry's response, key and TTL offsets plus a fixed overhead) and
//! by entries; the least recently used entry goes first. Eviction is O(1): a doubly linked
//! list through a slab, so a full cache never scans the map under the lock hits take.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{self, Query};

/// TTL given to a stale answer (RFC 8767 suggests 30 s).
pub const STALE_TTL: u32 = 30;
/// The longest a forwarded answer is kept fresh.
const MAX_TTL: u32 = 86_400;
const TYPE_OPT: u16 = 41;
/// Default byte budget of the cache.
pub const DEFAULT_BYTES: usize = 32 << 20;
/// What one entry costs besides its response, key and TTL offsets: the slab slot, the map's
/// bucket and the two boxes' headers, rounded up.
const ENTRY_OVERHEAD: usize = 128;
const NONE: usize = usize::MAX;

struct Stored {
    key: Box<[u8]>,
    /// The response as upstream sent it (its id is overwritten on the way out).
    response: Box<[u8]>,
    /// Offsets of the TTL fields to count down (OPT excluded).
    ttls: Box<[(usize, u32)]>,
    stored: Instant,
    ttl: u32,
    /// Neighbours in the recency list (slab indexes; `NONE` at the ends).
    newer: usize,
    older: usize,
}

impl Stored {
    fn cost(&self) -> usize {
        cost(self.key.len(), self.response.len(), self.ttls.len())
    }
}

fn cost(key: usize, response: usize, ttls: usize) -> usize {
    key + response + ttls * std::mem::size_of::<(usize, u32)>() + ENTRY_OVERHEAD
}

/// How fresh a cached answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
}

/// The entries and their recency list, behind the cache's one lock.
struct Lru {
    map: HashMap<Box<[u8]>, usize>,
    slab: Vec<Option<Stored>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    bytes: usize,
}

impl Lru {
    fn new() -> Lru {
        Lru {
            map: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            newest: NONE,
            oldest: NONE,
            bytes: 0,
        }
    }

    fn unlink(&mut self, i: usize) {
        let Some(s) = self.slab[i].as_ref() else {
            return;
        };
        let (newer, older) = (s.newer, s.older);
        match newer {
            NONE => self.newest = older,
            n => set(&mut self.slab[n], |s| s.older = older),
        }
        match older {
            NONE => self.oldest = newer,
            o => set(&mut self.slab[o], |s| s.newer = newer),
        }
    }

    fn push_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        set(&mut self.slab[i], |s| {
            s.newer = NONE;
            s.older = old_newest;
        });
        match old_newest {
            NONE => self.oldest = i,
            n => set(&mut self.slab[n], |s| s.newer = i),
        }
        self.newest = i;
    }

    fn touch(&mut self, i: usize) {
        if self.newest != i {
            self.unlink(i);
            self.push_newest(i);
        }
    }

    fn remove(&mut self, i: usize) -> Option<Stored> {
        self.unlink(i);
        let s = self.slab[i].take()?;
        self.map.remove(&s.key);
        self.bytes -= s.cost();
        self.free.push(i);
        Some(s)
    }

    fn insert(&mut self, s: Stored) {
        self.bytes += s.cost();
        let key = s.key.clone();
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(s);
                i
            }
            None => {
                self.slab.push(Some(s));
                self.slab.len() - 1
            }
        };
        self.map.insert(key, i);
        self.push_newest(i);
    }
}

fn set(slot: &mut Option<Stored>, f: impl FnOnce(&mut Stored)) {
    if let Some(s) = slot.as_mut() {
        f(s);
    }
}

pub struct Cache {
    entries: Mutex<Lru>,
    capacity: usize,
    max_bytes: usize,
    max_stale: Duration,
    evictions: AtomicU64,
}

/// The cache key: lowercase name, type, class and the header/EDNS bits that change an
/// answer (EDNS present, DO, CD: a CD query gets data a validating upstream would withhold).
fn key<'b>(q: &Query<'_>, buf: &'b mut [u8; 262]) -> &'b [u8] {
    let name = q.name();
    let n = name.len();
    buf[..n].copy_from_slice(name);
    buf[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&q.qclass.to_be_bytes());
    let edns = match q.edns {
        None => 0,
        Some(e) if e.dnssec_ok => 2,
        Some(_) => 1,
    };
    buf[n + 4] = edns | if q.cd { 4 } else { 0 };
    &buf[..n + 5]
}

impl Cache {
    /// A cache of at most `capacity` entries and [`DEFAULT_BYTES`].
    pub fn new(capacity: usize, max_stale: Duration) -> Cache {
        Cache::with_limits(capacity, DEFAULT_BYTES, max_stale)
    }

    /// A cache of at most `capacity` entries and `max_bytes` bytes.
    pub fn with_limits(capacity: usize, max_bytes: usize, max_stale: Duration) -> Cache {
        Cache {
            entries: Mutex::new(Lru::new()),
            capacity,
            max_bytes,
            max_stale,
            evictions: AtomicU64::new(0),
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
        let mut lru = self.entries.lock().ok()?;
        let i = *lru.map.get(k)?;
        let s = lru.slab[i].as_ref()?;
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
        for &(at, orig) in s.ttls.iter() {
            let ttl = match freshness {
                Freshness::Fresh => orig.saturating_sub(age_s),
                Freshness::Stale => STALE_TTL,
            };
            if let Some(field) = out.get_mut(at..at + 4) {
                field.copy_from_slice(&ttl.to_be_bytes());
            }
        }
        lru.touch(i);
        Some(freshness)
    }

    /// Keeps a response from upstream (NOERROR or NXDOMAIN, not truncated), evicting the
    /// least recently used entries until it fits. One bigger than the whole budget is not kept.
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
        let k = key(q, &mut kb);
        let need = cost(k.len(), response.len(), ttls.len());
        if need > self.max_bytes {
            return;
        }
        let stored = Stored {
            key: k.into(),
            response: response.into(),
            ttls: ttls.into_boxed_slice(),
            stored: now,
            ttl,
            newer: NONE,
            older: NONE,
        };
        let Ok(mut lru) = self.entries.lock() else {
            return;
        };
        if let Some(i) = lru.map.get(k).copied() {
            lru.remove(i);
        }
        while lru.oldest != NONE
            && (lru.bytes + need > self.max_bytes || lru.map.len() >= self.capacity)
        {
            let oldest = lru.oldest;
            lru.remove(oldest);
            self.evictions.fetch_add(1, Relaxed);
        }
        lru.insert(stored);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries take, by the count the budget is kept in.
    pub fn bytes(&self) -> usize {
        self.entries.lock().map(|e| e.bytes).unwrap_or(0)
    }

    /// Entries evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (A, IN), with EDNS and the CD bit as asked.
    fn query(name: &str, cd: bool, edns: bool) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            if cd { 0x10 } else { 0 },
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        if edns {
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        p
    }

    /// An upstream answer to `packet` with `n` A records (TTL 300).
    fn response(packet: &[u8], n: usize) -> Vec<u8> {
        let q = wire::parse(packet).unwrap();
        let mut r = packet[..12 + q.question.len()].to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | (r[3] & 0x10);
        r[6..8].copy_from_slice(&(n as u16).to_be_bytes());
        r[8..12].copy_from_slice(&[0, 0, 0, 0]);
        for i in 0..n {
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2]);
            r.push(i as u8);
        }
        r
    }

    fn put(c: &Cache, name: &str, records: usize, now: Instant) {
        let p = query(name, false, false);
        c.put(&wire::parse(&p).unwrap(), &response(&p, records), now);
    }

    fn has(c: &Cache, name: &str, now: Instant) -> bool {
        let p = query(name, false, false);
        let mut out = Vec::new();
        c.get(&wire::parse(&p).unwrap(), false, 65535, now, &mut out) == Some(Freshness::Fresh)
    }

    #[test]
    fn eviction_keeps_the_cache_within_its_bytes_least_recently_used_first() {
        let now = Instant::now();
        // Each entry: a 29-byte question response + 16 bytes per record + overhead.
        let c = Cache::with_limits(1_000_000, 10_000, Duration::from_secs(60));
        for i in 0..200 {
            put(&c, &format!("n{i:03}.example"), 10, now);
            assert!(c.bytes() <= 10_000, "{} bytes after {i}", c.bytes());
        }
        let kept = c.len();
        assert!(kept > 10 && kept < 200, "{kept} entries");
        assert!(c.evictions() >= 200 - kept as u64);
        // The newest are kept, the oldest went.
        assert!(has(&c, "n199.example", now));
        assert!(!has(&c, "n000.example", now));
        // A hit makes an entry the most recently used: it outlives newer ones.
        let oldest_kept = format!("n{:03}.example", 200 - kept);
        assert!(has(&c, &oldest_kept, now));
        put(&c, "fresh1.example", 10, now);
        put(&c, "fresh2.example", 10, now);
        assert!(has(&c, &oldest_kept, now), "a recent hit was evicted");
        assert!(!has(&c, &format!("n{:03}.example", 201 - kept), now));
        // One response bigger than the whole budget is not kept (and evicts nothing).
        let before = c.len();
        put(&c, "huge.example", 700, now);
        assert!(!has(&c, "huge.example", now));
        assert_eq!(c.len(), before);
        // Replacing an entry does not count it twice.
        let bytes = c.bytes();
        put(&c, "fresh2.example", 10, now);
        assert_eq!(c.bytes(), bytes);
    }

    #[test]
    fn eviction_by_entries_is_least_recently_used_too() {
        let now = Instant::now();
        let c = Cache::with_limits(3, DEFAULT_BYTES, Duration::from_secs(60));
        for name in ["a.example", "b.example", "c.example"] {
            put(&c, name, 1, now);
        }
        assert!(has(&c, "a.example", now));
        put(&c, "d.example", 1, now);
        assert_eq!(c.len(), 3);
        assert!(!has(&c, "b.example", now));
        assert!(has(&c, "a.example", now) && has(&c, "d.example", now));
    }

    #[test]
    fn the_cd_bit_is_part_of_the_key() {
        let now = Instant::now();
        let c = Cache::new(100, Duration::from_secs(60));
        let mut out = Vec::new();
        for edns in [false, true] {
            let plain = query("signed.example", false, edns);
            let cd = query("signed.example", true, edns);
            // A validating upstream answers the CD query (checking disabled) with data it
            // would SERVFAIL without CD: that answer must not reach a client that did not set CD.
            c.put(&wire::parse(&cd).unwrap(), &response(&cd, 1), now);
            let got = c.get(&wire::parse(&plain).unwrap(), true, 65535, now, &mut out);
            assert_eq!(
                got, None,
                "edns {edns}: a CD answer served to a non-CD query"
            );
            let got = c.get(&wire::parse(&cd).unwrap(), false, 65535, now, &mut out);
            assert_eq!(got, Some(Freshness::Fresh), "edns {edns}");
        }
    }
}
