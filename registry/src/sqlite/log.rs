//! The change log: each revision's [`Delta`] as JSON, written in the transaction that makes
//! the revision, so that readers follow in the size of each change. It keeps the newest
//! revisions only; `log_floor` in `meta` is the oldest revision a reader may be at and still
//! be answered from the log (an import moves it to the imported revision, a trim forward).

use rusqlite::{params, Connection, OptionalExtension};

use crate::delta::Delta;
use crate::error::{Error, Result};
use crate::model::Revision;

/// How many revisions the log keeps by default.
pub const KEEP: u64 = crate::delta::KEEP;

/// Appends `delta` and trims the log to the newest `keep` revisions.
pub(super) fn append(conn: &Connection, delta: &Delta, keep: u64) -> rusqlite::Result<()> {
    let json = serde_json::to_string(delta)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let revision = delta.revision.0 as i64;
    conn.prepare_cached("INSERT OR REPLACE INTO changes (revision, delta) VALUES (?1, ?2)")?
        .execute(params![revision, json])?;
    let floor = revision - keep.min(i64::MAX as u64) as i64;
    if floor > super::meta(conn, "log_floor")? {
        conn.prepare_cached("DELETE FROM changes WHERE revision <= ?1")?
            .execute([floor])?;
        set_floor(conn, floor)?;
    }
    Ok(())
}

/// Empties the log: readers older than `revision` start again from a snapshot.
pub(super) fn restart(conn: &Connection, revision: Revision) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM changes", [])?;
    set_floor(conn, revision.0 as i64)
}

fn set_floor(conn: &Connection, floor: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('log_floor', ?1)")?
        .execute([floor])
        .map(drop)
}

/// The deltas after `after`, at most `limit`; `None` when the log cannot say (trimmed past
/// `after`, or `after` is newer than the registry, as after the file was replaced).
pub(super) fn since(
    conn: &Connection,
    location: &str,
    after: Revision,
    limit: usize,
) -> Result<Option<Vec<Delta>>> {
    let storage = |e: rusqlite::Error| Error::Storage {
        location: location.into(),
        message: e.to_string(),
    };
    let now = super::meta(conn, "revision").map_err(storage)? as u64;
    let floor = super::meta(conn, "log_floor")
        .optional()
        .map_err(storage)?
        .unwrap_or(i64::MAX);
    if after.0 > now || (after.0 as i64) < floor {
        return Ok(None);
    }
    let want = (now - after.0).min(limit as u64);
    let mut stmt = conn
        .prepare_cached(
            "SELECT revision, delta FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(params![after.0 as i64, want as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(storage)?;
    let mut deltas = Vec::with_capacity(want as usize);
    for row in rows {
        let (revision, json) = row.map_err(storage)?;
        let delta: Delta = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
            location: location.into(),
            message: format!("change log entry of revision {revision}: {e}"),
        })?;
        let expected = after.0 + 1 + deltas.len() as u64;
        if delta.revision.0 != expected || revision as u64 != expected {
            // A hole: the log cannot tell this reader what happened.
            return Ok(None);
        }
        deltas.push(delta);
    }
    if deltas.len() as u64 != want {
        return Ok(None);
    }
    Ok(Some(deltas))
}

#[cfg(test)]
mod tests;
