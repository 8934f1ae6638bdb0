//! The free space of each /80, kept as runs of used slots: a row (host, network, start, end)
//! for each maximal run of consecutive slots held by machines or peers. The lowest free slot
//! is then one lookup (the end of the run holding slot 1, plus one) instead of a walk over
//! every address in the /80, and each write that takes or frees a slot updates at most three
//! rows. Only mesh addresses count (a network of -1 holds none).

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::RecordKey;

/// (network, host, slot) as the machines and peers tables index them.
pub(super) type Space = (i64, i64, i64);

/// The slot `key` (a machine or a peer) holds now, if any.
pub(super) fn held(conn: &Connection, key: &RecordKey) -> rusqlite::Result<Option<Space>> {
    let row = |r: &rusqlite::Row| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
    match key {
        RecordKey::Machine { id } => conn
            .prepare_cached("SELECT network, host, slot FROM machines WHERE id = ?1")?
            .query_row([id], row)
            .optional(),
        RecordKey::Peer { org, name } => conn
            .prepare_cached("SELECT network, host, slot FROM peers WHERE org = ?1 AND name = ?2")?
            .query_row([org, name], row)
            .optional(),
        _ => Ok(None),
    }
}

/// How many machines and peers hold `space`.
fn holders(conn: &Connection, (network, host, slot): Space) -> rusqlite::Result<i64> {
    let mut n = 0;
    for sql in [
        "SELECT COUNT(*) FROM machines WHERE host = ?1 AND network = ?2 AND slot = ?3",
        "SELECT COUNT(*) FROM peers WHERE host = ?1 AND network = ?2 AND slot = ?3",
    ] {
        n += conn
            .prepare_cached(sql)?
            .query_row(params![host, network, slot], |r| r.get::<_, i64>(0))?;
    }
    Ok(n)
}

/// The run that holds `slot` or ends closest below it.
fn run_at_or_below(
    conn: &Connection,
    network: i64,
    host: i64,
    slot: i64,
) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.prepare_cached(
        "SELECT start, end FROM slot_runs WHERE host = ?1 AND network = ?2 AND start <= ?3 \
         ORDER BY start DESC LIMIT 1",
    )?
    .query_row(params![host, network, slot], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

fn put_run(
    conn: &Connection,
    network: i64,
    host: i64,
    start: i64,
    end: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO slot_runs (host, network, start, end) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![host, network, start, end])
    .map(drop)
}

fn delete_run(conn: &Connection, network: i64, host: i64, start: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM slot_runs WHERE host = ?1 AND network = ?2 AND start = ?3")?
        .execute(params![host, network, start])
        .map(drop)
}

/// Marks `space` used, after a machine or peer was written holding it.
pub(super) fn take(conn: &Connection, space: Space) -> rusqlite::Result<()> {
    let (network, host, slot) = space;
    if network < 0 || holders(conn, space)? > 1 {
        return Ok(());
    }
    let mut start = slot;
    if let Some((s, e)) = run_at_or_below(conn, network, host, slot)? {
        if e >= slot {
            return Ok(());
        }
        if e == slot - 1 {
            start = s;
        }
    }
    let mut end = slot;
    let above: Option<i64> = conn
        .prepare_cached(
            "SELECT end FROM slot_runs WHERE host = ?1 AND network = ?2 AND start = ?3",
        )?
        .query_row(params![host, network, slot + 1], |r| r.get(0))
        .optional()?;
    if let Some(e) = above {
        delete_run(conn, network, host, slot + 1)?;
        end = e;
    }
    put_run(conn, network, host, start, end)
}

/// Marks `space` free, after the machine or peer holding it was removed or moved off it,
/// unless another still holds it.
pub(super) fn release(conn: &Connection, space: Space) -> rusqlite::Result<()> {
    let (network, host, slot) = space;
    if network < 0 || holders(conn, space)? > 0 {
        return Ok(());
    }
    let Some((start, end)) = run_at_or_below(conn, network, host, slot)? else {
        return Ok(());
    };
    if end < slot {
        return Ok(());
    }
    delete_run(conn, network, host, start)?;
    if start < slot {
        put_run(conn, network, host, start, slot - 1)?;
    }
    if slot < end {
        put_run(conn, network, host, slot + 1, end)?;
    }
    Ok(())
}

/// The lowest slot of [`crate::addr::SLOT_RANGE`] nobody holds in (`network`, `host`).
pub(super) fn lowest_free(
    conn: &Connection,
    network: i64,
    host: i64,
) -> rusqlite::Result<Option<u32>> {
    let (first, last) = crate::addr::SLOT_RANGE;
    let first = i64::from(first);
    Ok(match run_at_or_below(conn, network, host, first)? {
        Some((_, end)) if end >= first => {
            (end < i64::from(last)).then(|| u32::try_from(end + 1).unwrap_or(last))
        }
        _ => Some(first as u32),
    })
}

/// Makes the runs again from the machines and peers tables (after a bulk load, or when the
/// table is new).
pub(super) fn rebuild(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM slot_runs", [])?;
    let mut stmt = conn.prepare(
        "SELECT host, network, slot FROM machines WHERE network >= 0 \
         UNION SELECT host, network, slot FROM peers WHERE network >= 0 \
         ORDER BY 1, 2, 3",
    )?;
    let mut rows = stmt.query([])?;
    let mut run: Option<(i64, i64, i64, i64)> = None;
    while let Some(r) = rows.next()? {
        let (host, network, slot): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        match &mut run {
            Some((h, n, _, end)) if *h == host && *n == network && *end + 1 == slot => *end = slot,
            _ => {
                if let Some((h, n, s, e)) = run.take() {
                    put_run(conn, n, h, s, e)?;
                }
                run = Some((host, network, slot, slot));
            }
        }
    }
    if let Some((h, n, s, e)) = run {
        put_run(conn, n, h, s, e)?;
    }
    Ok(())
}
