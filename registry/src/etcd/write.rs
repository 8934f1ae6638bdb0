//! One write on etcd, as a pure function of what it has read: the revision mark, every org,
//! node and peering (few), the records the change names, and the index keys its plan and its
//! index edits ask for (see `reads` for how the asking goes). The result is the operations of
//! one transaction, guarded by the mark's mod-revision: every write puts the mark, so a
//! transaction that finds it unchanged knows that nothing it read has changed either, and
//! two writers never both allocate from the same state.

use std::cell::Cell;

use ipnet::IpNet;

use crate::change::{self, Change, Context, Plan, Usage, Write};
use crate::delta::Delta;
use crate::error::{Error, Result};
use crate::machine_id::MachineId;
use crate::model::{Node, Record, RecordKey, Revision};
use crate::Applied;

use super::index::{self, Index, Stop};
use super::keys::{self, Keys, RevisionMark};
use super::reads::{Kv, Query, Reads};

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    /// Every key in [start, end).
    DeleteRange(String, String),
}

/// What to do next with a write.
#[derive(Debug)]
pub enum Step {
    /// Read these (at the write's etcd revision) and run it again.
    Read(Vec<Query>),
    /// The mark names no index the records agree with: build one, then write.
    NoIndex,
    /// The change changes nothing.
    Unchanged(Applied),
    /// Commit `ops` if the mark's mod-revision is still `mark_mod`.
    Commit {
        mark_mod: i64,
        ops: Vec<Op>,
        applied: Applied,
        /// Only the first part of the change (an org's removal with more tokens than one
        /// transaction holds): once committed, run the change again.
        partial: bool,
    },
}

/// Where a write goes and how long a log it keeps.
pub struct Writer<'a> {
    pub keys: &'a Keys,
    pub location: &'a str,
    pub keep_changes: u64,
}

/// Why a run of the write stopped short of a step.
enum Halt {
    Pending,
    Failed(Error),
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Halt {
        match s {
            Stop::Pending => Halt::Pending,
            Stop::Bad(m) => Halt::Failed(Error::Corrupt {
                location: String::new(),
                message: m,
            }),
        }
    }
}

impl From<super::reads::Pending> for Halt {
    fn from(_: super::reads::Pending) -> Halt {
        Halt::Pending
    }
}

impl From<Error> for Halt {
    fn from(e: Error) -> Halt {
        Halt::Failed(e)
    }
}

impl Writer<'_> {
    /// The next step of `change`, given what `reads` holds. `write` names the write in the
    /// mark (and a new index generation); `ctx` must give the same values on every run.
    pub fn step(
        &self,
        change: &Change,
        reads: &Reads,
        ctx: &mut dyn Context,
        write: &str,
    ) -> Result<Step> {
        let step = self.run(change, reads, ctx, write);
        let missing = reads.take_missing();
        match step {
            _ if !missing.is_empty() => Ok(Step::Read(missing)),
            Ok(step) => Ok(step),
            Err(Halt::Failed(Error::Corrupt { location, message })) if location.is_empty() => {
                Err(self.corrupt(message))
            }
            Err(Halt::Failed(e)) => Err(e),
            Err(Halt::Pending) => Err(self.corrupt(
                "a write stopped for a key it did not ask for (a bug in the etcd backend)".into(),
            )),
        }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            location: self.location.to_string(),
            message,
        }
    }

    fn run(
        &self,
        change: &Change,
        reads: &Reads,
        ctx: &mut dyn Context,
        write: &str,
    ) -> std::result::Result<Step, Halt> {
        let k = self.keys;
        // All asked before any is judged: the first round reads them together.
        let head = [
            reads
                .get(&k.revision())
                .map(|kv| kv.into_iter().collect::<Vec<_>>()),
            reads
                .get(&k.next_network())
                .map(|kv| kv.into_iter().collect()),
            reads
                .prefix(&k.kind("orgs"))
                .map(|kvs| kvs.iter().collect()),
            reads
                .prefix(&k.kind("nodes"))
                .map(|kvs| kvs.iter().collect()),
            reads
                .prefix(&k.kind("peerings"))
                .map(|kvs| kvs.iter().collect()),
        ];
        let mut kvs: Vec<&Kv> = Vec::new();
        for part in head {
            kvs.extend(part?);
        }
        let mark = match kvs.first().filter(|kv| kv.key == k.revision()) {
            Some(kv) => Some(
                serde_json::from_slice::<RevisionMark>(&kv.value)
                    .map_err(|e| self.corrupt(format!("bad revision mark: {e}")))?,
            ),
            None => None,
        };
        // A registry never written has nothing to index: its first write starts a generation.
        let (gen, fresh) = match mark.as_ref().map(|m| m.index.as_deref()) {
            None => (format!("{}-{write}", index::LAYOUT), true),
            Some(Some(gen)) if Index::readable(gen) => (gen.to_string(), false),
            Some(_) => return Ok(Step::NoIndex),
        };
        let index = Index::new(k.index(&gen));
        kvs.extend(named(k, &index, reads, change)?);
        let owned: Vec<(String, Vec<u8>, i64)> = kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision))
            .collect();
        let (snap, mark_mod) = keys::decode(k, &owned).map_err(|m| self.corrupt(m))?;
        let usage = IndexUsage {
            index: &index,
            reads,
            keys: k,
            bad: Cell::new(None),
        };
        let planned = change::plan_with(&snap, &usage, change, ctx);
        if let Some(message) = usage.bad.take() {
            return Err(Halt::Failed(self.corrupt(message)));
        }
        let mut plan = planned?;
        if plan.writes.is_empty() && plan.next_network.is_none() {
            return Ok(Step::Unchanged(Applied {
                revision: snap.revision,
                record: plan.result,
            }));
        }
        let revision = Revision(snap.revision.0 + 1);
        let removed_org = removed_org(change);
        let mut partial = false;
        loop {
            let delta = Delta {
                revision,
                next_network: plan.next_network.unwrap_or(snap.next_network),
                changes: crate::delta::record_changes(&snap, &plan.writes),
            };
            let edits = index.edit(reads, &delta.changes)?;
            let mut ops = record_ops(k, &plan);
            ops.extend(edits.into_iter().map(|(key, value)| match value {
                Some(v) => Op::Put(key, v),
                None => Op::Delete(key),
            }));
            if let (Some(org), false) = (removed_org, partial) {
                // Every app of the org and every mark of its tokens goes: one range each.
                ranged(&mut ops, &k.apps_of(org));
                ranged(&mut ops, &index.org_tokens(org));
            }
            if fresh {
                ops.extend(other_generations(k, &gen));
            }
            ops.push(Op::Put(
                k.log(revision.0),
                serde_json::to_vec(&delta).unwrap_or_default(),
            ));
            if revision.0 > self.keep_changes {
                ops.push(Op::DeleteRange(
                    k.log_start(),
                    k.log(revision.0 - self.keep_changes + 1),
                ));
            }
            ops.push(mark_op(k, revision, write, Some(gen.clone())));
            if ops.len() <= MAX_TXN_OPS {
                return Ok(Step::Commit {
                    mark_mod,
                    ops,
                    applied: Applied {
                        revision,
                        record: plan.result,
                    },
                    partial,
                });
            }
            // Only an org's tokens are too many for one transaction and cannot be one range
            // (their records lie by id): a first write takes some of them out, as a revision
            // of its own, and the removal is planned again after it.
            let tokens = |w: &Write| matches!(w, Write::Delete(RecordKey::Token { .. }));
            if removed_org.is_none() || partial || !plan.writes.iter().any(tokens) {
                return Err(Halt::Failed(Error::Storage {
                    location: self.location.to_string(),
                    message: format!(
                        "the write takes {} operations, more than the {MAX_TXN_OPS} etcd \
                         allows in one transaction (a bug in the etcd backend)",
                        ops.len()
                    ),
                }));
            }
            plan.writes.retain(tokens);
            plan.writes.truncate(TOKEN_BATCH);
            plan.next_network = None;
            plan.result = None;
            partial = true;
        }
    }
}

/// etcd's default `--max-txn-ops`: the most operations one transaction may hold.
pub const MAX_TXN_OPS: usize = 128;
/// Tokens per write that takes some of a removed org's tokens out first: two operations each
/// (the record and its index mark) and room for the log, the mark and the log's trim.
const TOKEN_BATCH: usize = 60;

/// The org a change removes, through a token too.
fn removed_org(change: &Change) -> Option<&str> {
    match change {
        Change::RemoveOrg { name } => Some(name),
        Change::WithToken { change, .. } => removed_org(change),
        _ => None,
    }
}

/// Replaces the deletes of keys under `folder` with one delete of the whole folder. Only for
/// a folder whose every key the write deletes, which it has read at the revision it commits
/// on (the mark's guard makes sure of that).
fn ranged(ops: &mut Vec<Op>, folder: &str) {
    let before = ops.len();
    ops.retain(|op| !matches!(op, Op::Delete(key) if key.starts_with(folder)));
    if ops.len() < before {
        let end = format!("{}0", folder.trim_end_matches('/'));
        ops.push(Op::DeleteRange(folder.to_string(), end));
    }
}

/// The records `change` names, as partial.rs reads them on SQLite (see
/// [`change::plan_with`] for what a plan needs).
fn named<'r>(
    k: &Keys,
    index: &Index,
    reads: &'r Reads,
    change: &Change,
) -> std::result::Result<Vec<&'r Kv>, Halt> {
    let record = |key: RecordKey| reads.get(&k.record(&key));
    // The records found through an index folder whose keys end in `<org>/<name>`.
    let peers_in = |folder: &str| -> std::result::Result<Vec<&'r Kv>, Halt> {
        let mut found = Vec::new();
        let mut pending = false;
        for kv in reads.prefix(folder)? {
            let Some((org, name)) = kv.key[folder.len()..].rsplit_once('/') else {
                continue;
            };
            match record(RecordKey::Peer {
                org: org.to_string(),
                name: name.to_string(),
            }) {
                Ok(kv) => found.extend(kv),
                Err(_) => pending = true,
            }
        }
        if pending {
            return Err(Halt::Pending);
        }
        Ok(found)
    };
    let mut found: Vec<&Kv> = Vec::new();
    match change {
        Change::CreateOrg { .. }
        | Change::RemoveNode { .. }
        | Change::PeerOrgs { .. }
        | Change::UnpeerOrgs { .. } => {}
        Change::RemoveOrg { name } => {
            let apps = reads.prefix(&k.apps_of(name));
            let folder = index.org_tokens(name);
            let mut tokens = Vec::new();
            let mut pending = false;
            for kv in reads.prefix(&folder)? {
                let id = kv.key[folder.len()..].to_string();
                match record(RecordKey::Token { id }) {
                    Ok(kv) => tokens.extend(kv),
                    Err(_) => pending = true,
                }
            }
            found.extend(apps?);
            if pending {
                return Err(Halt::Pending);
            }
            found.extend(tokens);
        }
        Change::AddNode(spec) | Change::RegisterNode(spec) => {
            found.extend(peers_in(&index.peer_keys(&spec.public_key))?);
        }
        Change::AddMachine { org, app, .. } => found.extend(record(RecordKey::App {
            org: org.clone(),
            name: app.clone(),
        })?),
        Change::SetMachineState { id, .. }
        | Change::MoveMachine { id, .. }
        | Change::RemoveMachine { id } => found.extend(record(RecordKey::Machine { id: *id })?),
        Change::AddPeer {
            org,
            name,
            public_key,
            routes,
            ..
        } => {
            let this = record(RecordKey::Peer {
                org: org.clone(),
                name: name.clone(),
            });
            let same_key = peers_in(&index.peer_keys(public_key));
            let routed = if routes.iter().any(|r| matches!(r, IpNet::V6(_))) {
                peers_in(&index.routed())
            } else {
                Ok(Vec::new())
            };
            found.extend(this?);
            found.extend(same_key?);
            found.extend(routed?);
        }
        Change::RemovePeer { org, name } => found.extend(record(RecordKey::Peer {
            org: org.clone(),
            name: name.clone(),
        })?),
        Change::CreateToken { id, .. } | Change::RevokeToken { id } => {
            found.extend(record(RecordKey::Token { id: id.clone() })?)
        }
        Change::WithToken { id, change, .. } => {
            let token = record(RecordKey::Token { id: id.clone() });
            let inner = named(k, index, reads, change);
            found.extend(token?);
            found.extend(inner?);
        }
    }
    Ok(found)
}

/// [`Usage`] from the index. A key not read yet gets a harmless answer and is asked for;
/// the plan is run again once it is read.
struct IndexUsage<'a> {
    index: &'a Index,
    reads: &'a Reads,
    keys: &'a Keys,
    /// The first bad index key met, reported once the plan returns.
    bad: Cell<Option<String>>,
}

impl IndexUsage<'_> {
    fn answer<T>(&self, got: std::result::Result<T, Stop>, meanwhile: T) -> T {
        match got {
            Ok(v) => v,
            Err(Stop::Pending) => meanwhile,
            Err(Stop::Bad(m)) => {
                let first = self.bad.take().unwrap_or(m);
                self.bad.set(Some(first));
                meanwhile
            }
        }
    }

    fn count(&self, key: &str) -> usize {
        let n = self.answer(index::count_at(self.reads, key), 0);
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

impl Usage for IndexUsage<'_> {
    fn lowest_free_slot(&self, network: crate::OrgNetwork, host: u32) -> Result<Option<u32>> {
        let got = self.index.lowest_free(self.reads, network.0, host);
        Ok(self.answer(got, Some(crate::addr::SLOT_RANGE.0)))
    }

    fn machine_exists(&self, id: MachineId) -> Result<bool> {
        let key = self.keys.record(&RecordKey::Machine { id });
        let got = self.reads.get(&key).map(|kv| kv.is_some());
        Ok(self.answer(got.map_err(Stop::from), false))
    }

    fn gateway_peers(&self, gateway: &str) -> Result<usize> {
        Ok(self.count(&self.index.gateway_peers(gateway)))
    }

    fn org_members(&self, org: &str) -> Result<(usize, usize)> {
        let machines = self.count(&self.index.org_machines(org));
        let peers = self.count(&self.index.org_peers(org));
        Ok((machines, peers))
    }

    fn node_machines(&self, node: &Node) -> Result<(usize, usize)> {
        let running = self.count(&self.index.node_machines(&node.name));
        let addressed = self.count(&self.index.host_machines(node.host));
        Ok((running, addressed))
    }
}

/// The puts and deletes of `plan`'s records, and its next network id.
pub fn record_ops(k: &Keys, plan: &Plan) -> Vec<Op> {
    let mut ops: Vec<Op> = plan
        .writes
        .iter()
        .map(|w| match w {
            Write::Put(r) => Op::Put(
                k.record(&r.key()),
                serde_json::to_vec(r).unwrap_or_default(),
            ),
            Write::Delete(key) => Op::Delete(k.record(key)),
        })
        .collect();
    if let Some(n) = plan.next_network {
        ops.push(Op::Put(k.next_network(), n.to_string().into_bytes()));
    }
    ops
}

/// A record's put.
pub fn record_op(k: &Keys, r: &Record) -> Op {
    Op::Put(
        k.record(&r.key()),
        serde_json::to_vec(r).unwrap_or_default(),
    )
}

/// The revision mark of `revision`, made by `write`, naming index generation `gen`.
pub fn mark_op(k: &Keys, revision: Revision, write: &str, gen: Option<String>) -> Op {
    let mark = RevisionMark {
        revision: revision.0,
        write: write.to_string(),
        index: gen,
    };
    Op::Put(k.revision(), serde_json::to_vec(&mark).unwrap_or_default())
}

/// Deletes every index generation but `gen`: ones a writer without an index left behind,
/// and ones a builder that lost a race left half made.
pub fn other_generations(k: &Keys, gen: &str) -> [Op; 2] {
    let own = k.index(gen);
    let after = format!("{}0", own.trim_end_matches('/'));
    [
        Op::DeleteRange(k.index_start(), own),
        Op::DeleteRange(after, k.index_end()),
    ]
}

/// A [`Context`] that gives every run of a write the same random values and time, so that
/// a run after more reads plans what the run before it would have, had it known.
pub struct Replay<C> {
    inner: C,
    drawn: Vec<u64>,
    next: usize,
    now: Cell<Option<i64>>,
}

impl<C: Context> Replay<C> {
    pub fn new(inner: C) -> Self {
        Replay {
            inner,
            drawn: Vec::new(),
            next: 0,
            now: Cell::new(None),
        }
    }

    /// Starts the values over for the next run.
    pub fn rewind(&mut self) {
        self.next = 0;
    }
}

impl<C: Context> Context for Replay<C> {
    fn random_u64(&mut self) -> u64 {
        if self.next == self.drawn.len() {
            self.drawn.push(self.inner.random_u64());
        }
        self.next += 1;
        self.drawn[self.next - 1]
    }

    fn now_unix(&self) -> i64 {
        match self.now.get() {
            Some(t) => t,
            None => {
                let t = self.inner.now_unix();
                self.now.set(Some(t));
                t
            }
        }
    }
}

#[cfg(test)]
mod tests;
