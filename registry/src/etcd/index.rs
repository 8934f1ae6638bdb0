//! What a write on etcd looks up instead of reading the whole registry: the answers
//! [`crate::change::Usage`] gives and the records found by something else than their key,
//! kept under `<prefix>/meta/index/<gen>/` in the same transaction as the records:
//!
//! ```text
//! runs/<host>/<network>/<!start>     <end>   a run of used slots of one /80 (8 hex digits each)
//! count/org-machines/<org>           N       count/org-peers/<org>          N
//! count/node-machines/<node>         N       count/host-machines/<host>     N
//! count/gateway-peers/<node>         N
//! peer-keys/<public key>/<org>/<name>        the peers holding a key ('/' as '_', '+' as '-')
//! routed/<org>/<name>                        the peers with site routes
//! org-tokens/<org>/<id>                      an org's tokens
//! ```
//!
//! The runs are SQLite's `slot_runs`: the lowest free slot of a /80 is the end of the run
//! holding slot 1, plus one. A run's key holds its start's complement (`!start`), so that the
//! run starting at or closest below a slot is the first key at or after that slot's, which
//! etcd finds with a range of limit one. A count of zero has no key. [`Index::build`] makes the whole
//! index from a snapshot (a registry written without one, an import); [`Index::edit`] works
//! out what one write changes in it from the records before and after.
//!
//! `<gen>` is `v1-` and the id of the write that built it: the revision mark names the
//! generation that agrees with the records, so a builder works in a folder of its own until
//! its mark points there, and a layout change is a new prefix.

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::{self, OrgNetwork, SLOT_RANGE};
use crate::delta::RecordChange;
use crate::key::PublicKey;
use crate::model::{Machine, Peer, Record, Snapshot, Token};

use super::reads::{Pending, Reads};

/// The layout this code reads and writes; a mark naming another is rebuilt.
pub const LAYOUT: &str = "v1";

/// Why an index lookup stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A key not read yet.
    Pending,
    /// A key that holds what no writer writes.
    Bad(String),
}

impl From<Pending> for Stop {
    fn from(_: Pending) -> Stop {
        Stop::Pending
    }
}

/// One /80's slot: (network, host, slot).
type Slot = (u32, u32, u32);

/// The keys of one index generation.
#[derive(Debug, Clone)]
pub struct Index {
    root: String,
}

/// What one record puts in the index.
#[derive(Default)]
struct Entries {
    counts: Vec<String>,
    slot: Option<Slot>,
    marks: Vec<String>,
}

/// Keys changed by a write: `Some` value to put, `None` to delete.
pub type Edits = BTreeMap<String, Option<Vec<u8>>>;

impl Index {
    /// The index under `root` (`Keys::index(gen)`, ending in `/`).
    pub fn new(root: String) -> Index {
        Index { root }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Whether `gen` (from a revision mark) is a generation of this layout.
    pub fn readable(gen: &str) -> bool {
        gen.strip_prefix(LAYOUT)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }

    pub fn runs(&self, network: u32, host: u32) -> String {
        format!("{}runs/{host:08x}/{network:08x}/", self.root)
    }

    fn run(&self, network: u32, host: u32, start: u32) -> String {
        format!("{}{:08x}", self.runs(network, host), !start)
    }

    fn count(&self, what: &str, name: &str) -> String {
        format!("{}count/{what}/{name}", self.root)
    }

    pub fn org_machines(&self, org: &str) -> String {
        self.count("org-machines", org)
    }

    pub fn org_peers(&self, org: &str) -> String {
        self.count("org-peers", org)
    }

    pub fn node_machines(&self, node: &str) -> String {
        self.count("node-machines", node)
    }

    pub fn host_machines(&self, host: u32) -> String {
        self.count("host-machines", &format!("{host:08x}"))
    }

    pub fn gateway_peers(&self, node: &str) -> String {
        self.count("gateway-peers", node)
    }

    /// The folder of the peers holding `public_key`.
    pub fn peer_keys(&self, public_key: &PublicKey) -> String {
        // Standard base64 holds neither `_` nor `-`, so this stays one folder per key.
        let name = public_key.to_string().replace('/', "_").replace('+', "-");
        format!("{}peer-keys/{name}/", self.root)
    }

    /// The folder of the peers with site routes.
    pub fn routed(&self) -> String {
        format!("{}routed/", self.root)
    }

    pub fn org_tokens(&self, org: &str) -> String {
        format!("{}org-tokens/{org}/", self.root)
    }

    fn machine(&self, m: &Machine) -> Entries {
        Entries {
            counts: vec![
                self.org_machines(&m.org),
                self.node_machines(&m.node),
                self.host_machines(addr::host_of(m.addr)),
            ],
            slot: slot_of(m.addr),
            marks: vec![],
        }
    }

    fn peer(&self, p: &Peer) -> Entries {
        let mut marks = vec![format!(
            "{}{}/{}",
            self.peer_keys(&p.public_key),
            p.org,
            p.name
        )];
        if !p.routes.is_empty() {
            marks.push(format!("{}{}/{}", self.routed(), p.org, p.name));
        }
        Entries {
            counts: vec![self.org_peers(&p.org), self.gateway_peers(&p.gateway)],
            slot: slot_of(p.addr),
            marks,
        }
    }

    fn token(&self, t: &Token) -> Entries {
        Entries {
            marks: vec![format!("{}{}", self.org_tokens(&t.org), t.id)],
            ..Entries::default()
        }
    }

    fn entries(&self, record: &Record) -> Entries {
        match record {
            Record::Machine(m) => self.machine(m),
            Record::Peer(p) => self.peer(p),
            Record::Token(t) => self.token(t),
            Record::Org(_) | Record::Node(_) | Record::App(_) | Record::Peering(_) => {
                Entries::default()
            }
        }
    }

    /// The whole index of `snap`, key by key.
    pub fn build(&self, snap: &Snapshot) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut used: BTreeSet<(u32, u32, u32)> = BTreeSet::new();
        let entries = snap
            .machines
            .values()
            .map(|m| self.machine(m))
            .chain(snap.peers.values().map(|p| self.peer(p)))
            .chain(snap.tokens.values().map(|t| self.token(t)));
        for e in entries {
            for c in e.counts {
                *counts.entry(c).or_default() += 1;
            }
            for m in e.marks {
                out.insert(m, Vec::new());
            }
            if let Some((network, host, slot)) = e.slot {
                used.insert((host, network, slot));
            }
        }
        for (key, n) in counts {
            out.insert(key, n.to_string().into_bytes());
        }
        let mut run: Option<(u32, u32, u32, u32)> = None;
        for (host, network, slot) in used {
            match &mut run {
                Some((h, n, _, end)) if *h == host && *n == network && *end + 1 == slot => {
                    *end = slot
                }
                _ => {
                    if let Some((h, n, s, e)) = run.take() {
                        out.insert(self.run(n, h, s), e.to_string().into_bytes());
                    }
                    run = Some((host, network, slot, slot));
                }
            }
        }
        if let Some((h, n, s, e)) = run {
            out.insert(self.run(n, h, s), e.to_string().into_bytes());
        }
        out
    }

    /// What `changes` (one write's records before and after) change in the index, reading
    /// the counts and runs they touch from `reads`.
    pub fn edit(&self, reads: &Reads, changes: &[RecordChange]) -> Result<Edits, Stop> {
        let mut edit = Editing {
            index: self,
            reads,
            edits: Edits::new(),
        };
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        let mut moves = Vec::new();
        for c in changes {
            let before = c
                .before
                .as_ref()
                .map(|r| self.entries(r))
                .unwrap_or_default();
            let after = c
                .after
                .as_ref()
                .map(|r| self.entries(r))
                .unwrap_or_default();
            for k in before.counts {
                *counts.entry(k).or_default() -= 1;
            }
            for k in after.counts {
                *counts.entry(k).or_default() += 1;
            }
            for m in before.marks.iter().filter(|m| !after.marks.contains(m)) {
                edit.edits.insert(m.clone(), None);
            }
            for m in after.marks.iter().filter(|m| !before.marks.contains(m)) {
                edit.edits.insert(m.clone(), Some(Vec::new()));
            }
            if before.slot != after.slot {
                moves.push((before.slot, after.slot));
            }
        }
        // Every count is asked for before anything is judged, so that one round reads them all.
        let now: Vec<_> = counts
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|(k, d)| (k, *d, count_at(reads, k)))
            .collect();
        for (freed, taken) in moves {
            if let Some(s) = freed {
                edit.release(s)?;
            }
            if let Some(s) = taken {
                edit.take(s)?;
            }
        }
        for (key, delta, n) in now {
            let n = i128::from(n?) + i128::from(delta);
            let value = (n > 0).then(|| n.to_string().into_bytes());
            edit.edits.insert(key.clone(), value);
        }
        Ok(edit.edits)
    }

    /// The lowest slot of `network`'s /80 at `host` that no machine or peer holds.
    pub fn lowest_free(&self, reads: &Reads, network: u32, host: u32) -> Result<Option<u32>, Stop> {
        let (first, last) = SLOT_RANGE;
        let found = reads.first(&self.runs(network, host), &self.run(network, host, first))?;
        Ok(
            match found.map(|kv| run_of(&kv.key, &kv.value)).transpose()? {
                Some((_, end)) if end >= first => (end < last).then_some(end + 1),
                _ => Some(first),
            },
        )
    }
}

/// A count as stored (absent: 0).
pub fn count_at(reads: &Reads, key: &str) -> Result<u64, Stop> {
    match reads.get(key)? {
        None => Ok(0),
        Some(kv) => std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Stop::Bad(format!("index key `{key}` does not hold a count"))),
    }
}

fn slot_of(a: std::net::Ipv6Addr) -> Option<Slot> {
    let network = OrgNetwork::of(a)?;
    Some((network.0, addr::host_of(a), addr::slot_of(a)))
}

/// A run's (start, end) from its key and value.
fn run_of(key: &str, value: &[u8]) -> Result<(u32, u32), Stop> {
    let bad = || Stop::Bad(format!("index key `{key}` does not hold a run of slots"));
    let start = key
        .rsplit('/')
        .next()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .map(|complement| !complement)
        .ok_or_else(bad)?;
    let end = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|end| *end >= start)
        .ok_or_else(bad)?;
    Ok((start, end))
}

/// One write's edits of the runs, over what etcd holds.
struct Editing<'a> {
    index: &'a Index,
    reads: &'a Reads,
    edits: Edits,
}

impl Editing<'_> {
    /// A key as the write leaves it so far.
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, Stop> {
        if let Some(v) = self.edits.get(key) {
            return Ok(v.clone());
        }
        Ok(self.reads.get(key)?.map(|kv| kv.value.clone()))
    }

    /// The run of (`network`, `host`) that starts at `slot` or closest below it.
    fn run_at_or_below(&self, (network, host, slot): Slot) -> Result<Option<(u32, u32)>, Stop> {
        let prefix = self.index.runs(network, host);
        let key = self.index.run(network, host, slot);
        // The greatest stored run not deleted by this write...
        let mut below = key.clone();
        let stored = loop {
            let Some(kv) = self.reads.first(&prefix, &below)? else {
                break None;
            };
            match self.edits.get(&kv.key) {
                Some(None) => {
                    let (start, _) = run_of(&kv.key, &kv.value)?;
                    let Some(next) = start.checked_sub(1) else {
                        break None;
                    };
                    below = self.index.run(network, host, next);
                }
                Some(Some(v)) => break Some(run_of(&kv.key, v)?),
                None => break Some(run_of(&kv.key, &kv.value)?),
            }
        };
        // ...or one this write made, if it starts higher.
        let made = self
            .edits
            .range(key..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .find_map(|(k, v)| v.as_ref().map(|v| (k, v)));
        let made = made.map(|(k, v)| run_of(k, v)).transpose()?;
        Ok(match (stored, made) {
            (Some(s), Some(m)) => Some(if m.0 >= s.0 { m } else { s }),
            (s, m) => s.or(m),
        })
    }

    fn put_run(&mut self, (network, host, _): Slot, start: u32, end: u32) {
        let key = self.index.run(network, host, start);
        self.edits.insert(key, Some(end.to_string().into_bytes()));
    }

    fn delete_run(&mut self, (network, host, _): Slot, start: u32) {
        self.edits
            .insert(self.index.run(network, host, start), None);
    }

    /// Marks `slot` used.
    fn take(&mut self, s: Slot) -> Result<(), Stop> {
        let (network, host, slot) = s;
        let next = slot
            .checked_add(1)
            .map(|n| self.index.run(network, host, n));
        // Both asked before either is judged: one round reads both.
        let below = self.run_at_or_below(s);
        let above = next.as_deref().map(|k| self.value(k)).transpose();
        let (below, above) = (below?, above?.flatten());
        let mut start = slot;
        if let Some((first, end)) = below {
            if end >= slot {
                return Ok(());
            }
            if end + 1 == slot {
                start = first;
            }
        }
        let mut end = slot;
        if let (Some(key), Some(v)) = (next, above) {
            let (next_start, next_end) = run_of(&key, &v)?;
            end = next_end;
            self.delete_run(s, next_start);
        }
        self.put_run(s, start, end);
        Ok(())
    }

    /// Marks `slot` free.
    fn release(&mut self, s: Slot) -> Result<(), Stop> {
        let slot = s.2;
        let Some((start, end)) = self.run_at_or_below(s)? else {
            return Ok(());
        };
        if end < slot {
            return Ok(());
        }
        self.delete_run(s, start);
        if start < slot {
            self.put_run(s, start, slot - 1);
        }
        if slot < end {
            self.put_run(s, slot + 1, end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
