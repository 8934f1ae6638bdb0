//! What a write has read from etcd so far, all at one etcd revision, and what it asked for
//! and has not got yet.
//!
//! A write is worked out by pure code (`write`) that asks this cache for keys; a key not read
//! yet is noted and the code carries on with a default, or stops with [`Pending`]. The
//! caller then reads everything noted, in one request, and runs the write again, until a run
//! asks for nothing new: that run saw only what etcd held, so what it planned stands. Tests
//! answer from a map instead of etcd.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The etcd revision of the key's last write.
    pub mod_revision: i64,
}

/// A question to etcd.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Query {
    /// One key.
    Get(String),
    /// Every key that starts with this, in key order.
    Prefix(String),
    /// The first key at or after `from` that starts with `prefix`, if any.
    First { prefix: String, from: String },
}

/// The answer was not read yet; the write is run again once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending;

#[derive(Debug, Default)]
pub struct Reads {
    answers: BTreeMap<Query, Vec<Kv>>,
    missing: RefCell<BTreeSet<Query>>,
}

impl Reads {
    /// Records the answer to `query`: the keys it found (at most one for `Get` and `First`).
    pub fn answer(&mut self, query: Query, found: Vec<Kv>) {
        self.missing.borrow_mut().remove(&query);
        self.answers.insert(query, found);
    }

    /// What was asked and not answered since the last [`Reads::take_missing`].
    pub fn take_missing(&self) -> Vec<Query> {
        std::mem::take(&mut *self.missing.borrow_mut())
            .into_iter()
            .collect()
    }

    fn ask(&self, query: Query) -> Result<&[Kv], Pending> {
        match self.answers.get(&query) {
            Some(found) => Ok(found),
            None => {
                self.missing.borrow_mut().insert(query);
                Err(Pending)
            }
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<&Kv>, Pending> {
        self.ask(Query::Get(key.to_string())).map(|f| f.first())
    }

    pub fn prefix(&self, prefix: &str) -> Result<&[Kv], Pending> {
        self.ask(Query::Prefix(prefix.to_string()))
    }

    pub fn first(&self, prefix: &str, from: &str) -> Result<Option<&Kv>, Pending> {
        self.ask(Query::First {
            prefix: prefix.to_string(),
            from: from.to_string(),
        })
        .map(|f| f.first())
    }
}

/// Answers `query` from `kv`, a whole store in a map (tests, and the index check).
#[cfg(test)]
pub fn answer_from(kv: &BTreeMap<String, Kv>, query: &Query) -> Vec<Kv> {
    match query {
        Query::Get(key) => kv.get(key).cloned().into_iter().collect(),
        Query::Prefix(p) => kv
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(p.as_str()))
            .map(|(_, v)| v.clone())
            .collect(),
        Query::First { prefix, from } => kv
            .range(from.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(prefix.as_str()))
            .map(|(_, v)| v.clone())
            .into_iter()
            .collect(),
    }
}
