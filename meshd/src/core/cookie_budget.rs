//! How many cookie replies a source address gets while we are under load.
//!
//! Under load every handshake message without a valid MAC2 earns a cookie reply (an
//! XChaCha20-Poly1305 seal and a send). A legitimate initiator needs one per two minutes (a
//! cookie lives that long) and retries every five seconds; a flood from one address would
//! take thousands a second, on the same thread that carries the data. So each source address
//! gets at most `RATE` replies a second (bursts of `BURST`); past that its handshakes are
//! dropped as `cookie_limited` without the reply, until it slows down. The kernel's
//! WireGuard limits each source address's handshakes the same way once they carry a MAC2.
//! A flood from many addresses still gets its replies, each address within its budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Cookie replies a second per source address.
const RATE: f32 = 10.0;
/// What a source may get at once.
const BURST: f32 = 20.0;
/// Sources remembered at once; past this, the idle ones are forgotten (a source idle for a
/// second has its whole burst back anyway).
const MAX_SOURCES: usize = 16_384;

#[derive(Debug, Default)]
pub struct CookieBudget {
    sources: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    at: Instant,
}

impl CookieBudget {
    /// True if `ip` may get a cookie reply now (without spending it).
    pub fn has(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.sources.get_mut(&ip) {
            None => true,
            Some(b) => {
                refill(b, now);
                b.tokens >= 1.0
            }
        }
    }

    /// Spends one reply of `ip`'s budget.
    pub fn spend(&mut self, ip: IpAddr, now: Instant) {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources
                .retain(|_, b| now.saturating_duration_since(b.at).as_secs_f32() < BURST / RATE);
            if self.sources.len() >= MAX_SOURCES {
                self.sources.clear();
            }
        }
        let b = self.sources.entry(ip).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

fn refill(b: &mut Bucket, now: Instant) {
    let secs = now.saturating_duration_since(b.at).as_secs_f32();
    b.tokens = (b.tokens + secs * RATE).min(BURST);
    b.at = now;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Replies `ip` gets if it asks `n` times at `now`.
    fn granted(b: &mut CookieBudget, ip: IpAddr, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| {
                let ok = b.has(ip, now);
                if ok {
                    b.spend(ip, now);
                }
                ok
            })
            .count()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut b = CookieBudget::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(granted(&mut b, a, 1000, t0), 20);
        assert_eq!(granted(&mut b, a, 1000, t0 + Duration::from_millis(500)), 5);
        // Another source is not held back by the first.
        assert_eq!(granted(&mut b, ip("2001:db8::1"), 3, t0), 3);
        // A quiet source gets its whole burst back, and no more.
        assert_eq!(granted(&mut b, a, 1000, t0 + Duration::from_secs(60)), 20);
    }

    #[test]
    fn memory_stays_bounded_under_many_sources() {
        let mut b = CookieBudget::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 * 3) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            b.spend(a, t0);
        }
        assert!(b.sources.len() <= MAX_SOURCES);
    }
}
