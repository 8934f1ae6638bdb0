//! A multiset kept by the model: how many records contribute each item, so that taking one
//! record's contribution back removes an item only when no other record gives it.

use std::collections::BTreeMap;

/// A multiset: how many records contribute each item.
#[derive(Debug, Clone)]
pub(super) struct Counted<T: Ord>(BTreeMap<T, u32>);

impl<T: Ord> Default for Counted<T> {
    fn default() -> Self {
        Counted(BTreeMap::new())
    }
}

impl<T: Ord + Clone> Counted<T> {
    /// Counts one more; true if the item is new.
    pub(super) fn add(&mut self, item: T) -> bool {
        let n = self.0.entry(item).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one fewer; true if the item is gone.
    pub(super) fn remove(&mut self, item: &T) -> bool {
        match self.0.get_mut(item) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.0.remove(item);
                true
            }
            None => false,
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &T> {
        self.0.keys()
    }

    pub(super) fn first(&self) -> Option<&T> {
        self.0.keys().next()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
