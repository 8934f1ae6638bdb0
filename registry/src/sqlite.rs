//! The embedded backend: one SQLite file in WAL mode, safe for several processes reading
//! while `wgtool` writes. Writes take the write lock (`BEGIN IMMEDIATE`), plan against the
//! state they read inside it, and commit, so concurrent writers serialise and never collide.
//!
//! A write reads only what its change needs (`partial`: the records it names through indexes,
//! counts by query, the lowest free slot of a /80 from `slots`), so its cost does not grow
//! with the registry; and it appends its [`Delta`] to the change log (`log`) in the same
//! transaction, from which readers follow revision by revision.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::change::{self, Change, SystemContext, Write};
use crate::delta::Delta;
use crate::error::{Error, Kind, Result};
use crate::model::{Peering, Record, RecordKey, Revision, Snapshot};
use crate::{Applied, RecordRef, Registry};

mod changes;
mod log;
mod partial;
mod read;
mod slots;

pub use log::KEEP as KEEP_CHANGES;
use read::Reader;

/// How often a waiting reader looks at the revision when inotify is unavailable.
const POLL: Duration = Duration::from_millis(10);
/// With inotify, a safety net: look anyway this often (e.g. a writer on another host of a
/// network filesystem, whose writes raise no local event).
const RECHECK: Duration = Duration::from_millis(250);

/// Schema versions, applied in order; `PRAGMA user_version` records how far a file got.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0), ('next_network', 1);
CREATE TABLE orgs (
    name TEXT PRIMARY KEY,
    network INTEGER NOT NULL UNIQUE
);
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    public_key TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    gateway INTEGER NOT NULL,
    host INTEGER NOT NULL UNIQUE
);
CREATE TABLE apps (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (org, name)
);
CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    app TEXT NOT NULL,
    region TEXT NOT NULL,
    node TEXT NOT NULL,
    process_group TEXT NOT NULL,
    state TEXT NOT NULL,
    addr TEXT NOT NULL UNIQUE
);
CREATE TABLE peers (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    gateway TEXT NOT NULL,
    region TEXT NOT NULL,
    public_key TEXT NOT NULL,
    addr TEXT NOT NULL UNIQUE,
    routes TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    PRIMARY KEY (org, name)
);
"#,
    // 2: org-to-org peerings. Files made before it open and gain the (empty) table.
    r#"
CREATE TABLE IF NOT EXISTS peerings (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
);
"#,
    // 3: enrollment tokens. Files made before it open and gain the (empty) table.
    r#"
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    max_uses INTEGER,
    uses INTEGER NOT NULL,
    region TEXT,
    name_prefix TEXT,
    revoked INTEGER
);
"#,
];

/// 4: the change log, and what lets a write read only the rows it needs: each machine's and
/// peer's address split into indexed (network, host, slot) columns, so that the lowest free
/// slot of a /80 is a walk of an index, and indexes for the counts and lookups a plan makes.
/// The columns are filled (by [`fill_space`]) before the indexes are made.
const MIGRATION_4: &str = r#"
CREATE TABLE changes (revision INTEGER PRIMARY KEY, delta TEXT NOT NULL);
INSERT OR REPLACE INTO meta (key, value) SELECT 'log_floor', value FROM meta WHERE key = 'revision';
ALTER TABLE machines ADD COLUMN network INTEGER NOT NULL DEFAULT -1;
ALTER TABLE machines ADD COLUMN host INTEGER NOT NULL DEFAULT -1;
ALTER TABLE machines ADD COLUMN slot INTEGER NOT NULL DEFAULT -1;
ALTER TABLE peers ADD COLUMN network INTEGER NOT NULL DEFAULT -1;
ALTER TABLE peers ADD COLUMN host INTEGER NOT NULL DEFAULT -1;
ALTER TABLE peers ADD COLUMN slot INTEGER NOT NULL DEFAULT -1;
"#;
const INDEXES_4: &str = r#"
CREATE INDEX machines_space ON machines (host, network, slot);
CREATE INDEX machines_org ON machines (org);
CREATE INDEX machines_node ON machines (node);
CREATE INDEX peers_space ON peers (host, network, slot);
CREATE INDEX peers_key ON peers (public_key);
CREATE INDEX peers_gateway ON peers (gateway);
CREATE INDEX peers_routed ON peers (org, name) WHERE routes <> '[]';
CREATE INDEX tokens_org ON tokens (org);
"#;
const DROP_INDEXES_4: &str = r#"
DROP INDEX machines_space;
DROP INDEX machines_org;
DROP INDEX machines_node;
DROP INDEX peers_space;
DROP INDEX peers_key;
DROP INDEX peers_gateway;
DROP INDEX peers_routed;
DROP INDEX tokens_org;
"#;
/// 5: the used runs of each /80 (see `slots`), made from the machines and peers there.
const MIGRATION_5: &str = r#"
CREATE TABLE slot_runs (
    host INTEGER NOT NULL,
    network INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    PRIMARY KEY (host, network, start)
) WITHOUT ROWID;
"#;
/// How far [`migrate`] takes a file.
const SCHEMA_VERSION: usize = MIGRATIONS.len() + 2;

pub struct SqliteRegistry {
    location: String,
    conn: Mutex<Connection>,
    changes: Option<changes::FileChanges>,
    /// How many revisions the change log keeps.
    keep_changes: u64,
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file at `path`. Its folder must exist, except
    /// for the default location, whose folder is made.
    pub fn open(path: &str) -> Result<Self> {
        let location = path.to_string();
        let storage = |message: String| Error::Storage {
            location: location.clone(),
            message,
        };
        if path.is_empty() {
            return Err(Error::invalid("registry", path, "needs a file path"));
        }
        let p = Path::new(path);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() && path == crate::DEFAULT_LOCATION {
                std::fs::create_dir_all(dir).map_err(|e| {
                    storage(format!("cannot create folder `{}`: {e}", dir.display()))
                })?;
            }
            if !dir.is_dir() {
                return Err(storage(format!(
                    "folder `{}` does not exist",
                    dir.display()
                )));
            }
        }
        if p.is_dir() {
            return Err(storage("is a folder, not a registry file".into()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(p, flags)
            .map_err(|e| storage(format!("cannot open: {e}")))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| storage(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| storage(format!("cannot use as a registry: {e}")))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| storage(e.to_string()))?;
        migrate(&mut conn).map_err(|e| storage(format!("cannot prepare the schema: {e}")))?;
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(SqliteRegistry {
            location,
            conn: Mutex::new(conn),
            changes: changes::FileChanges::watch(dir),
            keep_changes: log::KEEP,
        })
    }

    /// Keeps the newest `revisions` in the change log instead of [`KEEP_CHANGES`] (at least
    /// one); a reader further behind reads a whole snapshot.
    pub fn keeping_changes(mut self, revisions: u64) -> Self {
        self.keep_changes = revisions.max(1);
        self
    }

    fn reader<'a>(&'a self, conn: &'a Connection) -> Reader<'a> {
        Reader {
            conn,
            location: &self.location,
        }
    }

    /// Runs `f` in one read transaction: everything it reads is of one revision.
    fn read<T>(&self, f: impl FnOnce(&Reader) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.storage(e))?;
        let out = f(&self.reader(&tx))?;
        tx.commit().map_err(|e| self.storage(e))?;
        Ok(out)
    }

    fn storage(&self, e: rusqlite::Error) -> Error {
        Error::Storage {
            location: self.location.clone(),
            message: e.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for sql in MIGRATIONS.iter().skip(version) {
        tx.execute_batch(sql)?;
    }
    if version < MIGRATIONS.len() + 1 {
        tx.execute_batch(MIGRATION_4)?;
        fill_space(&tx)?;
        tx.execute_batch(INDEXES_4)?;
    }
    if version < MIGRATIONS.len() + 2 {
        tx.execute_batch(MIGRATION_5)?;
        slots::rebuild(&tx)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION as i64)?;
    }
    tx.commit()
}

/// Fills the address columns of the machines and peers of a file made before migration 4.
/// An address that does not parse keeps -1s; reading it back reports it.
fn fill_space(tx: &Transaction) -> rusqlite::Result<()> {
    for (table, key) in [("machines", "id"), ("peers", "org || '/' || name")] {
        let rows: Vec<(String, String)> = tx
            .prepare(&format!("SELECT {key}, addr FROM {table}"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut update = tx.prepare(&format!(
            "UPDATE {table} SET network = ?2, host = ?3, slot = ?4 WHERE {key} = ?1"
        ))?;
        for (k, addr) in rows {
            if let Ok(addr) = addr.parse() {
                let (network, host, slot) = partial::space_of(addr);
                update.execute(params![k, network, host, slot])?;
            }
        }
    }
    Ok(())
}

fn put(tx: &Connection, record: &Record) -> rusqlite::Result<()> {
    match record {
        Record::Org(o) => tx
            .prepare_cached("INSERT OR REPLACE INTO orgs (name, network) VALUES (?1, ?2)")?
            .execute(params![o.name, o.network.0]),
        Record::Node(n) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO nodes (name, region, public_key, endpoint, gateway, host)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                n.name,
                n.region,
                n.public_key.to_string(),
                n.endpoint.to_string(),
                n.gateway,
                n.host
            ]),
        Record::App(a) => tx
            .prepare_cached("INSERT OR REPLACE INTO apps (org, name) VALUES (?1, ?2)")?
            .execute(params![a.org, a.name]),
        Record::Machine(m) => {
            let (network, host, slot) = partial::space_of(m.addr);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO machines
                 (id, org, app, region, node, process_group, state, addr, network, host, slot)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                m.id,
                m.org,
                m.app,
                m.region,
                m.node,
                m.process_group,
                m.state.as_str(),
                m.addr.to_string(),
                network,
                host,
                slot
            ])
        }
        Record::Peer(p) => {
            let (network, host, slot) = partial::space_of(p.addr);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO peers (org, name, gateway, region, public_key, addr, \
                 routes, created, expires, network, host, slot)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                p.org,
                p.name,
                p.gateway,
                p.region,
                p.public_key.to_string(),
                p.addr.to_string(),
                serde_json::to_string(&p.routes).unwrap_or_else(|_| "[]".into()),
                p.created,
                p.expires,
                network,
                host,
                slot
            ])
        }
        Record::Peering(p) => {
            let Peering { a, b } = p.clone().normalised();
            tx.prepare_cached("INSERT OR REPLACE INTO peerings (a, b) VALUES (?1, ?2)")?
                .execute(params![a, b])
        }
        Record::Token(t) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO tokens (id, org, scope, secret_hash, created, expires, \
                 max_uses, uses, region, name_prefix, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                t.id,
                t.org,
                t.scope.as_str(),
                t.secret_hash,
                t.created,
                t.expires,
                t.max_uses,
                t.uses,
                t.region,
                t.name_prefix,
                t.revoked
            ]),
    }
    .map(drop)
}

fn delete(tx: &Connection, key: &RecordKey) -> rusqlite::Result<()> {
    match key {
        RecordKey::Org { name } => tx.execute("DELETE FROM orgs WHERE name = ?1", [name]),
        RecordKey::Node { name } => tx.execute("DELETE FROM nodes WHERE name = ?1", [name]),
        RecordKey::App { org, name } => {
            tx.execute("DELETE FROM apps WHERE org = ?1 AND name = ?2", [org, name])
        }
        RecordKey::Machine { id } => tx.execute("DELETE FROM machines WHERE id = ?1", [id]),
        RecordKey::Peer { org, name } => tx.execute(
            "DELETE FROM peers WHERE org = ?1 AND name = ?2",
            [org, name],
        ),
        RecordKey::Peering { a, b } => {
            let Peering { a, b } = Peering::new(a.clone(), b.clone());
            tx.execute("DELETE FROM peerings WHERE a = ?1 AND b = ?2", [a, b])
        }
        RecordKey::Token { id } => tx.execute("DELETE FROM tokens WHERE id = ?1", [id]),
    }
    .map(drop)
}

impl Registry for SqliteRegistry {
    fn location(&self) -> &str {
        &self.location
    }

    fn snapshot(&self) -> Result<Snapshot> {
        self.read(|r| r.all())
    }

    fn frame(&self) -> Result<Snapshot> {
        self.read(|r| r.frame())
    }

    fn frame_with(&self, also: &[RecordKey]) -> Result<Snapshot> {
        self.read(|r| r.frame_with(also))
    }

    fn visit(&self, each: &mut dyn FnMut(Record)) -> Result<Revision> {
        self.read(|r| {
            let revision = r.head()?.revision;
            r.each(&mut read::Each(each))?;
            Ok(revision)
        })
    }

    fn visit_kinds(&self, kinds: &[Kind], each: &mut dyn FnMut(Record)) -> Result<Revision> {
        self.read(|r| {
            let revision = r.head()?.revision;
            r.each_of(kinds, &mut read::Each(each))?;
            Ok(revision)
        })
    }

    fn visit_refs(&self, kinds: &[Kind], each: &mut dyn FnMut(RecordRef<'_>)) -> Result<Revision> {
        self.read(|r| {
            let revision = r.head()?.revision;
            r.each_ref(kinds, each)?;
            Ok(revision)
        })
    }

    fn wait_newer(&self, than: Revision, timeout: Duration) -> Result<Option<Revision>> {
        let deadline = Instant::now() + timeout;
        // An inotify event can arrive (and be drained) before the commit that caused it is
        // visible (the WAL index is updated through shared memory, which raises no event);
        // so after a wake that found nothing new, re-check at the poll interval.
        let mut woken = false;
        loop {
            let now = {
                let conn = self.lock();
                meta(&conn, "revision").map_err(|e| self.storage(e))?
            };
            if now as u64 > than.0 {
                return Ok(Some(Revision(now as u64)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.changes {
                Some(changes) => {
                    let wait = if woken { POLL } else { RECHECK };
                    woken = changes.wait(left.min(wait));
                }
                None => std::thread::sleep(left.min(POLL)),
            }
        }
    }

    fn apply(&self, change: &Change) -> Result<Applied> {
        self.apply_with(change, &mut SystemContext)
    }

    fn import(&self, snapshot: &Snapshot) -> Result<Revision> {
        self.import_all(snapshot)
    }

    fn changes_since(&self, after: Revision, limit: usize) -> Result<Option<Vec<Delta>>> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.storage(e))?;
        let deltas = log::since(&tx, &self.location, after, limit)?;
        tx.commit().map_err(|e| self.storage(e))?;
        Ok(deltas)
    }
}

impl SqliteRegistry {
    /// [`Registry::apply`] with the randomness and clock of `ctx`: reads what the change
    /// needs, plans, writes the plan and its delta, in one transaction.
    pub(crate) fn apply_with(
        &self,
        change: &Change,
        ctx: &mut dyn change::Context,
    ) -> Result<Applied> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.storage(e))?;
        let read = self.reader(&tx);
        let snap = partial::snapshot_for(&read, change)?;
        let plan = change::plan_with(&snap, &read, change, ctx)?;
        if plan.writes.is_empty() && plan.next_network.is_none() {
            return Ok(Applied {
                revision: snap.revision,
                record: plan.result,
            });
        }
        let e = |err| self.storage(err);
        for w in &plan.writes {
            let key = match w {
                Write::Put(r) => r.key(),
                Write::Delete(k) => k.clone(),
            };
            let was = slots::held(&tx, &key).map_err(e)?;
            match w {
                Write::Put(r) => put(&tx, r).map_err(e)?,
                Write::Delete(k) => delete(&tx, k).map_err(e)?,
            }
            let is = slots::held(&tx, &key).map_err(e)?;
            if was != is {
                was.map(|s| slots::release(&tx, s)).transpose().map_err(e)?;
                is.map(|s| slots::take(&tx, s)).transpose().map_err(e)?;
            }
        }
        let next_network = plan.next_network.unwrap_or(snap.next_network);
        if let Some(n) = plan.next_network {
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'next_network'", [n])
                .map_err(e)?;
        }
        let revision = Revision(snap.revision.0 + 1);
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            [revision.0 as i64],
        )
        .map_err(e)?;
        let delta = Delta {
            revision,
            next_network,
            changes: crate::delta::record_changes(&snap, &plan.writes),
        };
        log::append(&tx, &delta, self.keep_changes).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(Applied {
            revision,
            record: plan.result,
        })
    }

    fn import_all(&self, snapshot: &Snapshot) -> Result<Revision> {
        let mut conn = self.lock();
        // A bulk load touches the unique address index at random: a page cache that holds it
        // (up to 256 MiB, for this load only) keeps that from reading pages back over and over.
        let cache: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .map_err(|e| self.storage(e))?;
        conn.pragma_update(None, "cache_size", -262_144)
            .map_err(|e| self.storage(e))?;
        let imported = self.import_into(&mut conn, snapshot);
        conn.pragma_update(None, "cache_size", cache)
            .map_err(|e| self.storage(e))?;
        let revision = imported?;
        // Copy the load from the WAL into the file now, so that the first write after it does
        // not pay for that; a reader holding the WAL only makes it wait for a later write.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "no checkpoint after the import");
        }
        Ok(revision)
    }

    fn import_into(&self, conn: &mut Connection, snapshot: &Snapshot) -> Result<Revision> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.storage(e))?;
        let have = self.reader(&tx).all()?;
        crate::refuse_unless_empty(&have, &self.location)?;
        if snapshot.revision.0 == 0 && snapshot.records().next().is_none() {
            return Ok(have.revision);
        }
        let e = |err| self.storage(err);
        // The secondary indexes are made once at the end (a sort) instead of row by row.
        tx.execute_batch(DROP_INDEXES_4).map_err(e)?;
        for record in snapshot.records() {
            put(&tx, &record).map_err(e)?;
        }
        tx.execute_batch(INDEXES_4).map_err(e)?;
        slots::rebuild(&tx).map_err(e)?;
        let revision = Revision(snapshot.revision.0.max(1));
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_network'",
            [snapshot.next_network],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            [revision.0 as i64],
        )
        .map_err(e)?;
        // Readers of whatever was here before start again from a snapshot.
        log::restart(&tx, revision).map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(revision)
    }
}

impl SqliteRegistry {
    /// The revision alone, without loading the records.
    pub fn revision(&self) -> Result<Revision> {
        let conn = self.lock();
        meta(&conn, "revision")
            .optional()
            .map_err(|e| self.storage(e))
            .map(|v| Revision(v.unwrap_or(0) as u64))
    }
}

#[cfg(test)]
mod tests;
