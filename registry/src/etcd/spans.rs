//! How a read of a whole key range is cut into spans, so that it costs the size of the range
//! and not its square.
//!
//! etcd 3.4 answers a range request with a limit by first walking its in-memory index over the
//! *whole* range (to count it), and only then reading `limit` values. Paging through a range
//! of N keys as `[after the last key, end)` therefore walks N + (N − page) + … keys: at a
//! million keys in pages of 1,000 that was 500 million steps and 202 s. The walk is only as
//! long as the range asked for, so the fix is to ask for narrow ranges.
//!
//! The keys are not known in advance, but each page tells two things: how many keys are left
//! in the range (`count`), and where the keys it returned share a prefix. When many are left,
//! the rest of the range is cut along the last key's ancestry: its own child of that shared
//! prefix, then each further child of the shared prefix and of its parent, one span per
//! character our names and ids use (`-./0-9_a-z`, with the bytes between as spans of their
//! own so that nothing is skipped), then the parent's and grandparent's later siblings, each
//! as one span. A million random machine ids under `machines/` thus become 16 spans of 62k
//! keys, each of which becomes 16 spans of 4k, each read in a few pages: every key is walked
//! a handful of times instead of five hundred. A span still large after its first page is cut
//! the same way; a small one is paged as before.

/// The characters of names and ids, each of which gets a span of its own when a range is cut.
const CHARS: &[u8] = b"-./0123456789_abcdefghijklmnopqrstuvwxyz";

/// Where a range read stands after a page: the next ranges to read, in key order, which
/// together hold exactly the keys of `[last + "\0", end)`.
///
/// `first` and `last` are the first and last keys of the page, `left` how many keys of the
/// range came after it, `page` the page size. With at most `4 × page` left the rest is one
/// range, paged; with more it is cut as the module explains.
pub fn rest(
    first: &[u8],
    last: &[u8],
    end: &[u8],
    left: u64,
    page: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let from = after(last);
    if from.as_slice() >= end {
        return Vec::new();
    }
    if left <= 4 * page {
        return vec![(from, end.to_vec())];
    }
    let shared = common_prefix(first, last).min(last.len().saturating_sub(1));
    let mut cuts = Vec::new();
    // The end of the last key's child of each ancestor down to the shared prefix's child.
    for depth in 0..=shared {
        cuts.extend(successor(&last[..=depth]));
    }
    // A span per character for the later children of the shared prefix and of each of its
    // ancestors below the end's.
    for depth in common_prefix(last, end).min(shared)..=shared {
        let parent = &last[..depth];
        for &c in CHARS.iter().filter(|&&c| c > last[depth]) {
            cuts.push([parent, &[c]].concat());
            if c < u8::MAX {
                cuts.push([parent, &[c + 1]].concat());
            }
        }
    }
    cuts.retain(|cut| cut.as_slice() > from.as_slice() && cut.as_slice() < end);
    cuts.sort();
    cuts.dedup();
    let mut spans = Vec::with_capacity(cuts.len() + 1);
    let mut start = from;
    for cut in cuts {
        spans.push((std::mem::replace(&mut start, cut.clone()), cut));
    }
    spans.push((start, end.to_vec()));
    spans
}

/// The first key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    [key, &[0]].concat()
}

/// The first key after every key that starts with `prefix`; `None` when there is none.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Reads `keys` (sorted) in `[start, end)` the way the backend does, against a model of
    /// etcd 3.4 that counts how many index entries each request walks; returns what it read
    /// and the total walk.
    fn read_all(
        keys: &BTreeSet<Vec<u8>>,
        start: &[u8],
        end: &[u8],
        page: usize,
    ) -> (Vec<Vec<u8>>, usize, usize) {
        let (mut got, mut walked, mut requests) = (Vec::new(), 0, 0);
        let mut todo = vec![(start.to_vec(), end.to_vec())];
        while let Some((lo, hi)) = todo.pop() {
            if lo >= hi {
                continue;
            }
            requests += 1;
            let range: Vec<_> = keys.range(lo.clone()..hi.clone()).collect();
            walked += range.len();
            let page_keys: Vec<_> = range.iter().take(page).map(|k| k.to_vec()).collect();
            got.extend(page_keys.iter().cloned());
            if range.len() <= page {
                continue;
            }
            let left = (range.len() - page) as u64;
            let next = rest(
                &page_keys[0],
                page_keys.last().unwrap(),
                &hi,
                left,
                page as u64,
            );
            todo.extend(next.into_iter().rev());
        }
        (got, walked, requests)
    }

    fn random_hex(seed: &mut u64, len: usize) -> String {
        (0..len)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"0123456789abcdef"[(*seed >> 60) as usize] as char
            })
            .collect()
    }

    fn registry_like(machines: usize, orgs: usize, apps: usize, seed: u64) -> BTreeSet<Vec<u8>> {
        let mut seed = seed;
        let mut keys = BTreeSet::new();
        for i in 0..machines {
            keys.insert(format!("p/machines/{}", random_hex(&mut seed, 14)).into_bytes());
            keys.insert(format!("p/apps/org{}/app{}", i % orgs, i % apps).into_bytes());
        }
        for i in 0..machines / 10 {
            keys.insert(format!("p/peers/org0/laptop-{i}").into_bytes());
        }
        keys.insert(b"p/meta/revision".to_vec());
        keys.insert("p/nodes/Ünïcode\u{7f}\u{0}".as_bytes().to_vec());
        keys.insert(vec![b'p', b'/', 0xff, 0xff]);
        keys
    }

    #[test]
    fn every_key_is_read_once_and_in_order() {
        for (seed, page) in [(1, 3), (2, 10), (3, 50), (4, 7)] {
            let keys = registry_like(3_000, 7, 500, seed);
            let (got, _, _) = read_all(&keys, b"p/", b"p0", page);
            let want: Vec<_> = keys.iter().cloned().collect();
            assert_eq!(got.len(), want.len(), "seed {seed}, page {page}");
            assert_eq!(got, want, "seed {seed}, page {page}");
        }
    }

    #[test]
    fn a_range_that_ends_inside_the_keys_stops_there() {
        let keys = registry_like(2_000, 3, 100, 9);
        let end = b"p/machines/8".to_vec();
        let (got, _, _) = read_all(&keys, b"p/", &end, 10);
        let want: Vec<_> = keys.range(b"p/".to_vec()..end).cloned().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_walk_grows_with_the_keys_not_their_square() {
        let page = 100;
        let (small, large) = (
            registry_like(20_000, 10, 3_000, 5),
            registry_like(80_000, 40, 12_000, 5),
        );
        let (_, walked_small, _) = read_all(&small, b"p/", b"p0", page);
        let (_, walked_large, requests) = read_all(&large, b"p/", b"p0", page);
        let per_key = walked_large as f64 / large.len() as f64;
        // Paging plainly walks about N / (2 × page) keys per key: 500 here; cut, 4.7.
        assert!(per_key < 12.0, "{per_key:.1} keys walked per key read");
        assert!(
            (walked_large as f64 / walked_small as f64) < 4.0 * 1.5,
            "4× the keys cost {walked_small} → {walked_large} steps"
        );
        // At least N / page requests; cut into spans, 3.5 times that (many spans are empty).
        assert!(requests < large.len() / page * 5, "{requests} requests");
    }

    #[test]
    fn plain_paging_when_little_is_left() {
        let spans = rest(b"a/1", b"a/5", b"b", 40, 10);
        assert_eq!(spans, vec![(b"a/5\0".to_vec(), b"b".to_vec())]);
        assert!(rest(b"a", b"b", b"b\0", 100, 1).is_empty());
    }

    #[test]
    fn spans_cover_the_rest_exactly() {
        let spans = rest(b"p/m/0a", b"p/m/0f3", b"p0", 1_000_000, 1);
        assert_eq!(spans.first().unwrap().0, b"p/m/0f3\0".to_vec());
        assert_eq!(spans.last().unwrap().1, b"p0".to_vec());
        for pair in spans.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
            assert!(pair[0].0 < pair[0].1);
        }
        assert!(spans.contains(&(b"p/m/0g".to_vec(), b"p/m/0h".to_vec())));
        assert!(spans.contains(&(b"p/m/1".to_vec(), b"p/m/2".to_vec())));
    }
}
