//! The per-query order of multi-address answers: clients that take the first address
//! spread their load. A per-thread xorshift generator seeded from the OS: no lock, no
//! allocation, no syscall per query. It is not secret enough for anything an attacker must
//! not guess (its outputs are visible in every shuffled answer): upstream query ids and
//! source ports come from the OS generator instead (`forward::query_id`).

use std::cell::Cell;

use rand_core::{OsRng, RngCore};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // Xorshift must not start at 0; the low bit set keeps it off it.
    OsRng.next_u64() | 1
}

/// Restarts this thread's generator at `seed` (tests: a known sequence).
pub fn reseed(seed: u64) {
    STATE.with(|s| s.set(seed | 1));
}

/// A random number in `0..n` (`n` > 0).
pub fn below(n: usize) -> usize {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (((x >> 32) * n as u64) >> 32) as usize
    })
}

/// The order to write `n` records in: a fresh permutation for up to 256 records, a random
/// rotation beyond that (the first address is still uniformly random).
pub fn order(n: usize, out: &mut [u8; 256]) -> Order<'_> {
    if n > out.len() {
        return Order::Rotated { start: below(n), n };
    }
    for (i, slot) in out.iter_mut().enumerate().take(n) {
        *slot = i as u8;
    }
    for i in (1..n).rev() {
        out.swap(i, below(i + 1));
    }
    Order::Permuted(&out[..n])
}

pub enum Order<'a> {
    Permuted(&'a [u8]),
    Rotated { start: usize, n: usize },
}

impl Order<'_> {
    pub fn get(&self, i: usize) -> usize {
        match self {
            Order::Permuted(p) => usize::from(p[i]),
            Order::Rotated { start, n } => (start + i) % n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_and_varies() {
        let mut buf = [0u8; 256];
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let o = order(5, &mut buf);
            let mut seen: Vec<usize> = (0..5).map(|i| o.get(i)).collect();
            firsts.insert(seen[0]);
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        }
        assert_eq!(firsts.len(), 5, "every address comes first sometimes");
        let o = order(1000, &mut buf);
        let mut seen: Vec<usize> = (0..1000).map(|i| o.get(i)).collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
