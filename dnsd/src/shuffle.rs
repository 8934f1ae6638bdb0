//! The per-query order of multi-address answers: clients that take the first address
//! spread their load. A per-thread xorshift generator: no lock, no allocation, no syscall.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as u64;
    (nanos ^ addr.rotate_left(32)) | 1
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
