//! Reading records out of the tables: the whole registry for a snapshot, or only the rows a
//! filter selects for a partial one. Every value read is checked; a bad one is a `Corrupt`
//! error naming the record and the value, never a panic.

use rusqlite::{Connection, Params};

use crate::error::{Error, Kind, Result};
use crate::machine_id::MachineId;
use crate::model::{
    App, MachineState, Node, Org, Peer, Peering, Record, RecordKey, Revision, Snapshot, Token,
};
use crate::view::{MachineView, RecordRef};
use crate::OrgNetwork;

/// Column `i` as text borrowed from the row, refused as `String`'s conversion refuses it.
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    use rusqlite::types::ValueRef;
    match r.get_ref(i)? {
        ValueRef::Text(t) => std::str::from_utf8(t).map_err(|why| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(why))
        }),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            r.as_ref().column_name(i)?.into(),
            other.data_type(),
        )),
    }
}

/// Where the records read go: a snapshot, or a reader's own function ([`Each`]).
pub(super) trait Sink {
    fn put(&mut self, record: Record);
}

impl Sink for Snapshot {
    fn put(&mut self, record: Record) {
        Snapshot::put(self, record);
    }
}

/// Hands each record read to a function.
pub(super) struct Each<F>(pub F);

impl<F: FnMut(Record)> Sink for Each<F> {
    fn put(&mut self, record: Record) {
        (self.0)(record);
    }
}

/// Reads rows of one registry file into snapshots.
pub(super) struct Reader<'a> {
    pub conn: &'a Connection,
    pub location: &'a str,
}

impl Reader<'_> {
    fn storage(&self, e: rusqlite::Error) -> Error {
        Error::Storage {
            location: self.location.into(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            location: self.location.into(),
            message,
        }
    }

    /// A `meta` value.
    pub fn meta(&self, key: &str) -> Result<i64> {
        super::meta(self.conn, key).map_err(|e| self.storage(e))
    }

    /// An empty snapshot at the file's revision and next network id.
    pub fn head(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            revision: Revision(self.meta("revision")? as u64),
            next_network: self.meta("next_network")? as u32,
            ..Snapshot::default()
        })
    }

    /// The frame ([`Snapshot::framed`]); the site-routing peers through the partial index
    /// `peers_routed`.
    pub fn frame(&self) -> Result<Snapshot> {
        let mut snap = self.head()?;
        self.orgs(&mut snap)?;
        self.nodes(&mut snap)?;
        self.peers("WHERE routes <> '[]'", [], &mut snap)?;
        self.peerings(&mut snap)?;
        self.tokens("", [], &mut snap)?;
        Ok(snap)
    }

    /// The frame and the records `also` names ([`crate::Registry::frame_with`]), each by its
    /// primary key; orgs, nodes, peerings and tokens are whole in the frame already.
    pub fn frame_with(&self, also: &[RecordKey]) -> Result<Snapshot> {
        let mut snap = self.frame()?;
        for key in also {
            match key {
                RecordKey::App { org, name } => {
                    self.apps("WHERE org = ?1 AND name = ?2", [org, name], &mut snap)?
                }
                RecordKey::Machine { id } => self.machines("WHERE id = ?1", [id], &mut snap)?,
                RecordKey::Peer { org, name } => {
                    self.peers("WHERE org = ?1 AND name = ?2", [org, name], &mut snap)?
                }
                RecordKey::Org { .. }
                | RecordKey::Node { .. }
                | RecordKey::Peering { .. }
                | RecordKey::Token { .. } => {}
            }
        }
        Ok(snap)
    }

    /// Everything.
    pub fn all(&self) -> Result<Snapshot> {
        let mut snap = self.head()?;
        self.each(&mut snap)?;
        Ok(snap)
    }

    /// Every record into `out`: orgs, nodes, apps, machines, peers, peerings, tokens.
    pub fn each(&self, out: &mut impl Sink) -> Result<()> {
        self.each_of(&Kind::RECORDS, out)
    }

    /// The records of `kinds` into `out`, in [`Reader::each`]'s order.
    pub fn each_of(&self, kinds: &[Kind], out: &mut impl Sink) -> Result<()> {
        for kind in Kind::RECORDS.iter().filter(|k| kinds.contains(k)) {
            match kind {
                Kind::Org => self.orgs(out)?,
                Kind::Node => self.nodes(out)?,
                Kind::App => self.apps("", [], out)?,
                Kind::Machine => self.machines("", [], out)?,
                Kind::Peer => self.peers("", [], out)?,
                Kind::Peering => self.peerings(out)?,
                Kind::Token => self.tokens("", [], out)?,
                Kind::Region => {}
            }
        }
        Ok(())
    }

    /// [`Reader::each_of`], machines borrowed.
    pub fn each_ref(&self, kinds: &[Kind], each: &mut dyn FnMut(RecordRef<'_>)) -> Result<()> {
        for kind in Kind::RECORDS.iter().filter(|k| kinds.contains(k)) {
            if *kind == Kind::Machine {
                self.machine_views("", [], &mut |m| each(RecordRef::Machine(m)))?;
            } else {
                self.each_of(&[*kind], &mut Each(|r| each(RecordRef::Record(r))))?;
            }
        }
        Ok(())
    }

    pub fn orgs(&self, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, network FROM orgs")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(e)?;
        for row in rows {
            let (name, network) = row.map_err(e)?;
            let network = u32::try_from(network)
                .map_err(|_| self.corrupt(format!("org `{name}` has network id {network}")))?;
            snap.put(Record::Org(Org {
                name,
                network: OrgNetwork(network),
            }));
        }
        Ok(())
    }

    pub fn nodes(&self, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, region, public_key, endpoint, gateway, host FROM nodes")
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
            let host = u32::try_from(host)
                .map_err(|_| self.corrupt(format!("node `{name}` has host part {host}")))?;
            let public_key = public_key
                .parse()
                .map_err(|e| self.corrupt(format!("node `{name}` has {e}")))?;
            snap.put(Record::Node(Node {
                name,
                region,
                public_key,
                endpoint,
                gateway,
                host,
            }));
        }
        Ok(())
    }

    /// The apps `filter` (an SQL `WHERE` clause over `apps`, or nothing) selects.
    pub fn apps(&self, filter: &str, params: impl Params, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT org, name FROM apps {filter}"))
            .map_err(e)?;
        let rows = stmt
            .query_map(params, |r| {
                Ok(App {
                    org: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .map_err(e)?;
        for row in rows {
            snap.put(Record::App(row.map_err(e)?));
        }
        Ok(())
    }

    /// The machines `filter` selects.
    pub fn machines(&self, filter: &str, params: impl Params, snap: &mut impl Sink) -> Result<()> {
        self.machine_views(filter, params, &mut |m| {
            snap.put(Record::Machine(m.to_machine()))
        })
    }

    /// The machines `filter` selects, each borrowed from its row.
    pub fn machine_views(
        &self,
        filter: &str,
        params: impl Params,
        each: &mut dyn FnMut(MachineView<'_>),
    ) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, org, app, region, node, process_group, state, addr FROM machines {filter}"
            ))
            .map_err(e)?;
        let mut rows = stmt.query(params).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            // Kept as it came, so that a bad id is a bad record, not a failed read.
            let id = r.get::<_, MachineId>(0).map_err(|err| match err {
                rusqlite::Error::FromSqlConversionFailure(_, _, why) => {
                    self.corrupt(format!("a machine has {why}"))
                }
                other => self.storage(other),
            });
            let text = |i| text(r, i).map_err(e);
            let (org, app, region, node, process_group) =
                (text(1)?, text(2)?, text(3)?, text(4)?, text(5)?);
            let (state, addr) = (text(6)?, text(7)?);
            let id = id?;
            let state = match state {
                "started" => MachineState::Started,
                "stopped" => MachineState::Stopped,
                other => return Err(self.corrupt(format!("machine `{id}` has state `{other}`"))),
            };
            let addr = addr
                .parse()
                .map_err(|_| self.corrupt(format!("machine `{id}` has address `{addr}`")))?;
            each(MachineView {
                id,
                org,
                app,
                region,
                node,
                process_group,
                state,
                addr,
            });
        }
        Ok(())
    }

    /// The peers `filter` selects.
    pub fn peers(&self, filter: &str, params: impl Params, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT org, name, gateway, region, public_key, addr, routes, created, expires \
                 FROM peers {filter}"
            ))
            .map_err(e)?;
        let rows = stmt
            .query_map(params, |r| {
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
            let public_key = public_key
                .parse()
                .map_err(|e| self.corrupt(format!("peer `{name}` has {e}")))?;
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
        Ok(())
    }

    pub fn peerings(&self, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT a, b FROM peerings")
            .map_err(e)?;
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
        Ok(())
    }

    /// The tokens `filter` selects.
    pub fn tokens(&self, filter: &str, params: impl Params, snap: &mut impl Sink) -> Result<()> {
        let e = |err| self.storage(err);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, org, scope, secret_hash, created, expires, max_uses, uses, region, \
                 name_prefix, revoked FROM tokens {filter}"
            ))
            .map_err(e)?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((
                    r.get::<_, String>(2)?,
                    Token {
                        id: r.get(0)?,
                        org: r.get(1)?,
                        scope: crate::model::TokenScope::Peer,
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
        Ok(())
    }
}
