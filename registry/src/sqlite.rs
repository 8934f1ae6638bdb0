//! The embedded backend: one SQLite file in WAL mode, safe for several processes reading
//! while `wgtool` writes. Writes take the write lock (`BEGIN IMMEDIATE`), plan against the
//! state they read inside it, and commit, so concurrent writers serialise and never collide.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::change::{self, Change, SystemContext, Write};
use crate::error::{Error, Result};
use crate::model::{
    App, Machine, MachineState, Node, Org, Peer, Peering, Record, RecordKey, Revision, Snapshot,
    Token, TokenScope,
};
use crate::{Applied, OrgNetwork, Registry};

mod changes;

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

pub struct SqliteRegistry {
    location: String,
    conn: Mutex<Connection>,
    changes: Option<changes::FileChanges>,
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
        })
    }

    fn storage(&self, e: rusqlite::Error) -> Error {
        Error::Storage {
            location: self.location.clone(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            location: self.location.clone(),
            message,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn load(&self, tx: &Transaction) -> Result<Snapshot> {
        let e = |err| self.storage(err);
        let mut snap = Snapshot {
            revision: Revision(meta(tx, "revision").map_err(e)? as u64),
            next_network: meta(tx, "next_network").map_err(e)? as u32,
            ..Snapshot::default()
        };
        let mut stmt = tx.prepare("SELECT name, network FROM orgs").map_err(e)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(e)?;
        for row in rows {
            let (name, network) = row.map_err(e)?;
            snap.put(Record::Org(Org {
                name,
                network: OrgNetwork(network as u32),
            }));
        }
        let mut stmt = tx
            .prepare("SELECT name, region, public_key, endpoint, gateway, host FROM nodes")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (name, region, public_key, endpoint, gateway, host) = row.map_err(e)?;
            let endpoint = endpoint
                .parse()
                .map_err(|_| self.corrupt(format!("node `{name}` has endpoint `{endpoint}`")))?;
            snap.put(Record::Node(Node {
                name,
                region,
                public_key,
                endpoint,
                gateway,
                host: host as u32,
            }));
        }
        let mut stmt = tx.prepare("SELECT org, name FROM apps").map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(App {
                    org: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .map_err(e)?;
        for row in rows {
            snap.put(Record::App(row.map_err(e)?));
        }
        let mut stmt = tx
            .prepare("SELECT id, org, app, region, node, process_group, state, addr FROM machines")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Machine {
                        id: r.get(0)?,
                        org: r.get(1)?,
                        app: r.get(2)?,
                        region: r.get(3)?,
                        node: r.get(4)?,
                        process_group: r.get(5)?,
                        state: MachineState::Started,
                        addr: std::net::Ipv6Addr::UNSPECIFIED,
                    },
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (mut m, state, addr) = row.map_err(e)?;
            m.state = match state.as_str() {
                "started" => MachineState::Started,
                "stopped" => MachineState::Stopped,
                other => {
                    return Err(self.corrupt(format!("machine `{}` has state `{other}`", m.id)))
                }
            };
            m.addr = addr
                .parse()
                .map_err(|_| self.corrupt(format!("machine `{}` has address `{addr}`", m.id)))?;
            snap.put(Record::Machine(m));
        }
        let mut stmt = tx
            .prepare("SELECT org, name, gateway, region, public_key, addr, routes, created, expires FROM peers")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (org, name, gateway, region, public_key, addr, routes, created, expires) =
                row.map_err(e)?;
            let addr = addr
                .parse()
                .map_err(|_| self.corrupt(format!("peer `{name}` has address `{addr}`")))?;
            let routes = serde_json::from_str(&routes)
                .map_err(|_| self.corrupt(format!("peer `{name}` has routes `{routes}`")))?;
            snap.put(Record::Peer(Peer {
                org,
                name,
                gateway,
                region,
                public_key,
                addr,
                routes,
                created,
                expires,
            }));
        }
        let mut stmt = tx.prepare("SELECT a, b FROM peerings").map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Peering {
                    a: r.get(0)?,
                    b: r.get(1)?,
                })
            })
            .map_err(e)?;
        for row in rows {
            snap.put(Record::Peering(row.map_err(e)?));
        }
        let mut stmt = tx
            .prepare(
                "SELECT id, org, scope, secret_hash, created, expires, max_uses, uses, region, \
                 name_prefix, revoked FROM tokens",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(2)?,
                    Token {
                        id: r.get(0)?,
                        org: r.get(1)?,
                        scope: TokenScope::Peer,
                        secret_hash: r.get(3)?,
                        created: r.get(4)?,
                        expires: r.get(5)?,
                        max_uses: r.get(6)?,
                        uses: r.get(7)?,
                        region: r.get(8)?,
                        name_prefix: r.get(9)?,
                        revoked: r.get(10)?,
                    },
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (scope, mut t) = row.map_err(e)?;
            t.scope = scope
                .parse()
                .map_err(|_| self.corrupt(format!("token `{}` has scope `{scope}`", t.id)))?;
            snap.put(Record::Token(t));
        }
        Ok(snap)
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
    if version < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    }
    tx.commit()
}

fn put(tx: &Transaction, record: &Record) -> rusqlite::Result<()> {
    match record {
        Record::Org(o) => tx.execute(
            "INSERT OR REPLACE INTO orgs (name, network) VALUES (?1, ?2)",
            params![o.name, o.network.0],
        ),
        Record::Node(n) => tx.execute(
            "INSERT OR REPLACE INTO nodes (name, region, public_key, endpoint, gateway, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![n.name, n.region, n.public_key, n.endpoint.to_string(), n.gateway, n.host],
        ),
        Record::App(a) => tx.execute(
            "INSERT OR REPLACE INTO apps (org, name) VALUES (?1, ?2)",
            params![a.org, a.name],
        ),
        Record::Machine(m) => tx.execute(
            "INSERT OR REPLACE INTO machines (id, org, app, region, node, process_group, state, addr)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![m.id, m.org, m.app, m.region, m.node, m.process_group, m.state.as_str(), m.addr.to_string()],
        ),
        Record::Peer(p) => tx.execute(
            "INSERT OR REPLACE INTO peers (org, name, gateway, region, public_key, addr, routes, created, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                p.org,
                p.name,
                p.gateway,
                p.region,
                p.public_key,
                p.addr.to_string(),
                serde_json::to_string(&p.routes).unwrap_or_else(|_| "[]".into()),
                p.created,
                p.expires
            ],
        ),
        Record::Peering(p) => {
            let Peering { a, b } = p.clone().normalised();
            tx.execute(
                "INSERT OR REPLACE INTO peerings (a, b) VALUES (?1, ?2)",
                params![a, b],
            )
        }
        Record::Token(t) => tx.execute(
            "INSERT OR REPLACE INTO tokens (id, org, scope, secret_hash, created, expires, max_uses, uses, region, name_prefix, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
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
            ],
        ),
    }
    .map(drop)
}

fn delete(tx: &Transaction, key: &RecordKey) -> rusqlite::Result<()> {
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
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.storage(e))?;
        let snap = self.load(&tx)?;
        tx.commit().map_err(|e| self.storage(e))?;
        Ok(snap)
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
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.storage(e))?;
        let snap = self.load(&tx)?;
        let plan = change::plan(&snap, change, &mut SystemContext)?;
        if plan.writes.is_empty() && plan.next_network.is_none() {
            return Ok(Applied {
                revision: snap.revision,
                record: plan.result,
            });
        }
        let e = |err| self.storage(err);
        for w in &plan.writes {
            match w {
                Write::Put(r) => put(&tx, r).map_err(e)?,
                Write::Delete(k) => delete(&tx, k).map_err(e)?,
            }
        }
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
        tx.commit().map_err(e)?;
        Ok(Applied {
            revision,
            record: plan.result,
        })
    }

    fn import(&self, snapshot: &Snapshot) -> Result<Revision> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.storage(e))?;
        let have = self.load(&tx)?;
        crate::refuse_unless_empty(&have, &self.location)?;
        if snapshot.revision.0 == 0 && snapshot.records().next().is_none() {
            return Ok(have.revision);
        }
        let e = |err| self.storage(err);
        for record in snapshot.records() {
            put(&tx, &record).map_err(e)?;
        }
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
