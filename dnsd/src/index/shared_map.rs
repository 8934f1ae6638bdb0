//! A hash map that is cheap to copy and to change a copy of: its entries live in shards behind
//! `Arc`s, so the next index revision shares every shard a delta did not touch with the one
//! queries may still be reading. Changing one entry copies the shard table (about √n `Arc`s)
//! and one shard (about √n entries), not the map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Arc;

use super::NameHasher;

type Hasher = BuildHasherDefault<NameHasher>;
type Shard<K, V> = HashMap<K, V, Hasher>;

pub struct SharedMap<K, V> {
    /// A power-of-two number of shards (or none, when the map was never written).
    shards: Arc<Vec<Arc<Shard<K, V>>>>,
    len: usize,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            shards: Arc::new(Vec::new()),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The shard of a hash: bits the shard's own table does not use for its buckets (low bits)
/// nor for its tags (the top seven).
fn shard_of(hash: u64, shards: usize) -> usize {
    ((hash >> 32) as usize) & (shards - 1)
}

/// How many shards suit `len` entries: about √len, a power of two.
fn shards_for(len: usize) -> usize {
    let mut n = 1usize;
    while n.saturating_mul(n) < len {
        n *= 2;
    }
    n
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    /// A map of `entries` (a later entry with the same key wins).
    pub fn from_entries(entries: Vec<(K, V)>) -> Self {
        let n = shards_for(entries.len());
        let mut shards: Vec<Shard<K, V>> = (0..n).map(|_| Shard::default()).collect();
        let hasher = Hasher::default();
        for (k, v) in entries {
            let i = shard_of(hasher.hash_one(&k), n);
            shards[i].insert(k, v);
        }
        let len = shards.iter().map(HashMap::len).sum();
        SharedMap {
            shards: Arc::new(shards.into_iter().map(Arc::new).collect()),
            len,
        }
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.shards.is_empty() || self.len + 1 > 2 * self.shards.len() * self.shards.len() {
            self.reshard(shards_for(self.len + 1).max(2 * self.shards.len()));
        }
        let n = self.shards.len();
        let i = shard_of(Hasher::default().hash_one(&key), n);
        let table = Arc::make_mut(&mut self.shards);
        let old = Arc::make_mut(&mut table[i]).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        let i = shard_of(Hasher::default().hash_one(key), n);
        // Copy nothing for a key that is not there.
        if !self.shards[i].contains_key(key) {
            return None;
        }
        let table = Arc::make_mut(&mut self.shards);
        let old = Arc::make_mut(&mut table[i]).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    fn reshard(&mut self, n: usize) {
        let entries: Vec<(K, V)> = self.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut shards: Vec<Shard<K, V>> = (0..n).map(|_| Shard::default()).collect();
        let hasher = Hasher::default();
        for (k, v) in entries {
            let i = shard_of(hasher.hash_one(&k), n);
            shards[i].insert(k, v);
        }
        self.shards = Arc::new(shards.into_iter().map(Arc::new).collect());
    }
}

impl<K: Hash + Eq, V> SharedMap<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        self.shards[shard_of(Hasher::default().hash_one(key), n)].get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }
}

impl<K, V> SharedMap<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_copy_leaves_the_original_and_shares_untouched_shards() {
        let mut a: SharedMap<u32, u32> = SharedMap::default();
        for i in 0..10_000 {
            a.insert(i, i);
        }
        assert_eq!(a.len(), 10_000);
        let before = a.clone();
        a.insert(5, 50);
        a.remove(&7);
        a.remove(&1_000_000);
        assert_eq!((a.get(&5), a.get(&7), a.len()), (Some(&50), None, 9_999));
        assert_eq!((before.get(&5), before.get(&7)), (Some(&5), Some(&7)));
        let shared = a
            .shards
            .iter()
            .zip(before.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(
            shared + 2 >= a.shards.len(),
            "{shared} of {}",
            a.shards.len()
        );
        for i in 0..10_000u32 {
            let want = match i {
                5 => Some(50),
                7 => None,
                _ => Some(i),
            };
            assert_eq!(a.get(&i).copied(), want, "{i}");
        }
        assert_eq!(a.iter().count(), 9_999);
    }
}
