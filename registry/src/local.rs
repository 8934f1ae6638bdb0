//! A reader's local copy of the registry, as a DNS secondary keeps its zone file: a base (every
//! record at one revision) and a journal of the deltas after it. A reader restarts from its
//! copy in the time it takes to read a local file instead of reading a big registry whole
//! (half a minute at a million machines on etcd), then follows the registry from the copy's
//! revision; and it can answer while the registry is down.
//!
//! Files, for a copy at `P`:
//! - `P`: the base. A first line (JSON) naming the format and the registry it copies, then one
//!   frame per record (a 32-bit length, a kind byte and the record's fields in binary, see
//!   `codec`), and a last frame `E` with the revision, the next network id, the record count
//!   and the delta that made the revision, when known (JSON). Written to a temporary file,
//!   synced and renamed, so it is whole or absent.
//! - `P.journal`: one delta per line, appended as the reader applies them: the [`digest`] of
//!   the registry's delta (tokens included) in hex, a space, and the delta without tokens (JSON).
//! - `P.journal.old`: a journal being folded into a new base ([`LocalCopy::compact`]).
//!
//! Tokens are never copied (a reader has no use for them, and their hashes should stay in the
//! registry): records and deltas are stored without them. A torn last journal line (a crash
//! mid-append) ends the load there; a base that does not parse is refused whole.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Delta, Error, Record, RecordKey, RecordRef, Result, Revision};

/// The first line's format name and version: a copy of another version is not read.
const FORMAT: &str = "sixpn-local-copy";
const VERSION: u32 = 3;
/// The end frame's kind byte.
const END: u8 = b'E';
/// Most bytes one frame may claim: a record is a few hundred.
const MAX_FRAME: usize = 16 << 20;

mod codec;
mod history;
mod keeper;

pub use history::{continues, is_copy_of, same_change, verdict, CopyAt, Verdict};
pub use keeper::Keeper;

#[derive(Serialize, Deserialize)]
struct Head {
    format: String,
    version: u32,
    location: String,
}

#[derive(Serialize, Deserialize)]
struct Tail {
    revision: Revision,
    next_network: u32,
    records: u64,
    /// The [`digest`] of the delta that made `revision`, when the writer knew it.
    last: Option<u64>,
}

/// What a load found.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The registry the copy is of (as [`crate::shown`] writes it: no password).
    pub location: String,
    /// The revision the records and deltas handed out make, together.
    pub revision: Revision,
    pub next_network: u32,
    /// The [`digest`] of the registry's delta that made `revision`, when known: a reader
    /// compares it with the registry's to know the copy is of the registry's own history.
    pub last: Option<u64>,
    /// Deltas read from the journals.
    pub deltas: usize,
}

/// Whether `path` can hold a copy: not a directory, in a directory that exists. The rule it
/// breaks, if not, for a setting's message.
pub fn check_path(path: &Path) -> std::result::Result<(), String> {
    if path.is_dir() {
        return Err("is a directory; name a file in one".into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!("its directory {} does not exist", parent.display()));
    }
    Ok(())
}

/// A record's place in a base: orgs, nodes, apps, machines, peers, peerings, tokens, the
/// order of [`crate::Registry::visit`] and [`crate::Snapshot::records`].
fn kind_rank(r: &Record) -> u8 {
    match r {
        Record::Org(_) => 0,
        Record::Node(_) => 1,
        Record::App(_) => 2,
        Record::Machine(_) => 3,
        Record::Peer(_) => 4,
        Record::Peering(_) => 5,
        Record::Token(_) => 6,
    }
}

/// A local copy at one path.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    base: PathBuf,
    journal: PathBuf,
    old: PathBuf,
}

impl LocalCopy {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let base: PathBuf = path.into();
        let with = |ext: &str| {
            let mut s = base.clone().into_os_string();
            s.push(ext);
            PathBuf::from(s)
        };
        LocalCopy {
            journal: with(".journal"),
            old: with(".journal.old"),
            base,
        }
    }

    pub fn path(&self) -> &Path {
        &self.base
    }

    fn storage(&self, what: impl std::fmt::Display) -> Error {
        Error::Storage {
            location: self.base.display().to_string(),
            message: what.to_string(),
        }
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            location: self.base.display().to_string(),
            message: what.to_string(),
        }
    }

    /// The registry a copy is of, from the base's first line: `Ok(None)` when there is no
    /// copy. Lets a reader skip a copy of another registry before reading it.
    pub fn location(&self) -> Result<Option<String>> {
        Ok(self.open_base()?.map(|b| b.head.location))
    }

    fn open_base(&self) -> Result<Option<BaseReader>> {
        let file = match File::open(&self.base) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.storage(format_args!("opening: {e}"))),
        };
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        // A header is a short line: a file without one is not read whole looking for it.
        (&mut input)
            .take(64 << 10)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.storage(format_args!("reading: {e}")))?;
        if line.is_empty() {
            return Err(self.corrupt("empty file"));
        }
        let head: Head = serde_json::from_slice(&line)
            .map_err(|e| self.corrupt(format_args!("line 1 is not a copy's header: {e}")))?;
        if head.format != FORMAT || head.version != VERSION {
            return Err(self.corrupt(format_args!(
                "a `{}` version {} file, not {FORMAT} version {VERSION}",
                head.format, head.version
            )));
        }
        Ok(Some(BaseReader {
            copy: self.clone(),
            head,
            input,
            frame: Vec::new(),
            records: 0,
        }))
    }

    /// Reads the copy: every base record to `record`, then the journals' deltas in revision
    /// order to `delta` (those the base already holds are skipped; a gap or a torn line ends
    /// the journal there). `Ok(None)` when there is no copy. An error means the base is not a
    /// whole copy: what was handed out must be thrown away.
    pub fn load(
        &self,
        record: &mut dyn FnMut(Record),
        delta: &mut dyn FnMut(&Delta),
    ) -> Result<Option<Loaded>> {
        self.load_refs(&mut |r| record(r.into_record()), delta)
    }

    /// [`LocalCopy::load`], machines borrowed ([`RecordRef`]).
    pub fn load_refs(
        &self,
        record: &mut dyn FnMut(RecordRef<'_>),
        delta: &mut dyn FnMut(&Delta),
    ) -> Result<Option<Loaded>> {
        let Some(mut base) = self.open_base()? else {
            return Ok(None);
        };
        let tail = base.each(record)?;
        let mut loaded = Loaded {
            location: base.head.location,
            revision: tail.revision,
            next_network: tail.next_network,
            last: tail.last,
            deltas: 0,
        };
        for journal in [&self.old, &self.journal] {
            self.read_journal(journal, &mut loaded, delta)?;
        }
        Ok(Some(loaded))
    }

    fn read_journal(
        &self,
        path: &Path,
        loaded: &mut Loaded,
        delta: &mut dyn FnMut(&Delta),
    ) -> Result<()> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.storage(format_args!("opening {}: {e}", path.display()))),
        };
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let Some((digest, d)) = parse_journal_line(&line) else {
                tracing::warn!(journal = %path.display(), "a torn journal line; the copy ends before it");
                break;
            };
            if d.revision.0 <= loaded.revision.0 {
                continue;
            }
            if d.revision.0 != loaded.revision.0 + 1 {
                break;
            }
            delta(&d);
            loaded.revision = d.revision;
            loaded.next_network = d.next_network;
            loaded.deltas += 1;
            loaded.last = Some(digest);
        }
        Ok(())
    }

    /// Starts a new base for the registry at `location`; [`BaseWriter::finish`] puts it in
    /// place of the old one and empties the journals.
    pub fn write_base(&self, location: &str) -> Result<BaseWriter> {
        let tmp = {
            let mut s = self.base.clone().into_os_string();
            s.push(format!(".tmp{}", std::process::id()));
            PathBuf::from(s)
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.storage(format_args!("creating {}: {e}", tmp.display())))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let head = Head {
            format: FORMAT.into(),
            version: VERSION,
            location: location.into(),
        };
        let first = serde_json::to_string(&head).map_err(|e| self.storage(e))?;
        writeln!(out, "{first}").map_err(|e| self.storage(format_args!("writing: {e}")))?;
        Ok(BaseWriter {
            copy: self.clone(),
            tmp,
            out: Some(out),
            frame: Vec::with_capacity(256),
            records: 0,
        })
    }

    /// Opens the journal for appending after a fresh base (which emptied it).
    pub fn journal(&self) -> Result<Journal> {
        let file = self.open_journal()?;
        Ok(Journal {
            copy: self.clone(),
            out: BufWriter::new(file),
            lines: 0,
        })
    }

    /// Opens the journal of a copy a reader loaded up to `revision`, to append what follows:
    /// a journal rotated but not folded (a crash or an error during [`LocalCopy::compact`])
    /// is folded first, and lines past `revision` (a torn last line, or deltas after a gap,
    /// which a load stops before) are cut off, so that what is appended is read back.
    pub fn resume_journal(&self, revision: Revision) -> Result<Journal> {
        if self.old.exists() {
            self.compact()?;
        }
        let text = match fs::read(&self.journal) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(self.storage(format_args!("reading {}: {e}", self.journal.display())))
            }
        };
        // Keep every line up to the one that made `revision`; none if no line did (the
        // base is at `revision`, and older lines are of no use).
        let (mut keep, mut lines, mut at) = (0usize, 0u64, 0usize);
        for line in text.split_inclusive(|&b| b == b'\n') {
            at += line.len();
            let Some((_, d)) = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.strip_suffix('\n'))
                .and_then(parse_journal_line)
            else {
                break;
            };
            if d.revision.0 <= revision.0 {
                lines += 1;
            }
            if d.revision == revision {
                keep = at;
                break;
            }
        }
        if keep == 0 {
            lines = 0;
        }
        if keep != text.len() {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.journal)
                .and_then(|f| f.set_len(keep as u64).map(|()| f))
                .map_err(|e| {
                    self.storage(format_args!("cutting {}: {e}", self.journal.display()))
                })?;
            drop(file);
        }
        let file = self.open_journal()?;
        Ok(Journal {
            copy: self.clone(),
            out: BufWriter::new(file),
            lines,
        })
    }

    /// Removes base files a crash left half-written (`P.tmp<pid>`).
    pub fn remove_stale_temps(&self) {
        let (Some(dir), Some(name)) = (self.base.parent(), self.base.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut prefix = name.to_os_string();
        prefix.push(".tmp");
        let prefix = prefix.to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn open_journal(&self) -> Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.journal)
            .map_err(|e| self.storage(format_args!("opening {}: {e}", self.journal.display())))
    }

    /// Folds the rotated journal (`P.journal.old`, see [`Journal::rotate`]) into a new base,
    /// record by record, holding only what the journal changed; then removes it. Nothing to
    /// do when there is no rotated journal.
    pub fn compact(&self) -> Result<()> {
        if !self.old.exists() {
            return Ok(());
        }
        let Some(mut base) = self.open_base()? else {
            return Err(self.storage("no base to fold the journal into"));
        };
        // The base's revision first (its end frame), so the journal's older lines are skipped.
        let tail = self
            .open_base()?
            .ok_or_else(|| self.storage("the base went away during compaction"))?
            .tail()?;
        let mut loaded = Loaded {
            location: base.head.location.clone(),
            revision: tail.revision,
            next_network: tail.next_network,
            last: tail.last,
            deltas: 0,
        };
        // The journal's net effect, each key's last state: all that is held in memory.
        let mut changes: HashMap<RecordKey, Option<Record>> = HashMap::new();
        self.read_journal(&self.old, &mut loaded, &mut |d| {
            for c in &d.changes {
                changes.insert(c.key.clone(), c.after.clone());
            }
        })?;
        // Records the base does not hold yet go in among those of their kind: readers build
        // in the base's order, orgs and nodes before what names them (one more pass over the
        // base finds which are new).
        let mut held = std::collections::HashSet::new();
        self.open_base()?
            .ok_or_else(|| self.storage("the base went away during compaction"))?
            .each(&mut |r| {
                let key = r.into_record().key();
                if changes.contains_key(&key) {
                    held.insert(key);
                }
            })?;
        let mut fresh: Vec<Record> = changes
            .iter()
            .filter(|(k, _)| !held.contains(*k))
            .filter_map(|(_, r)| r.clone())
            .collect();
        fresh.sort_by_key(|r| std::cmp::Reverse(kind_rank(r)));
        let mut out = self.write_base(&base.head.location)?;
        let mut failed = Ok(());
        base.each(&mut |r| {
            if failed.is_err() {
                return;
            }
            let r = r.into_record();
            failed = (|| {
                while let Some(f) = fresh.pop_if(|f| kind_rank(f) < kind_rank(&r)) {
                    out.put(&f)?;
                }
                match changes.get(&r.key()) {
                    None => out.put(&r),
                    Some(Some(now)) => out.put(now),
                    Some(None) => Ok(()),
                }
            })();
        })?;
        failed?;
        while let Some(r) = fresh.pop() {
            out.put(&r)?;
        }
        out.finish_keeping_journal(loaded.revision, loaded.next_network, loaded.last)?;
        fs::remove_file(&self.old)
            .map_err(|e| self.storage(format_args!("removing {}: {e}", self.old.display())))
    }

    /// Removes the copy and its journals.
    pub fn remove(&self) -> Result<()> {
        for p in [&self.base, &self.journal, &self.old] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.storage(format_args!("removing {}: {e}", p.display()))),
            }
        }
        Ok(())
    }
}

/// A base being written.
pub struct BaseWriter {
    copy: LocalCopy,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    frame: Vec<u8>,
    records: u64,
}

impl BaseWriter {
    fn frame(&mut self) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .expect("a base writer is used until finished");
        let len = (self.frame.len() as u32).to_le_bytes();
        out.write_all(&len)
            .and_then(|()| out.write_all(&self.frame))
            .map_err(|e| self.copy.storage(format_args!("writing: {e}")))
    }

    /// [`BaseWriter::put`] for a machine borrowed from a read.
    pub fn put_machine(&mut self, m: &crate::MachineView<'_>) -> Result<()> {
        self.frame.clear();
        codec::encode_machine(m, &mut self.frame);
        self.frame()?;
        self.records += 1;
        Ok(())
    }

    /// Adds one record (tokens are left out).
    pub fn put(&mut self, r: &Record) -> Result<()> {
        self.frame.clear();
        if !codec::encode(r, &mut self.frame) {
            return Ok(());
        }
        self.frame()?;
        self.records += 1;
        Ok(())
    }

    /// Ends the base at `revision` and puts it in place; the journals are emptied (they
    /// followed the old base).
    pub fn finish(self, revision: Revision, next_network: u32, last: Option<&Delta>) -> Result<()> {
        // The journals go first: a crash before the rename then leaves the old base alone
        // (an older whole state), never the new base beside the old base's journals.
        for p in [&self.copy.old, &self.copy.journal] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(self
                        .copy
                        .storage(format_args!("removing {}: {e}", p.display())))
                }
            }
        }
        self.finish_keeping_journal(revision, next_network, last.map(digest))
    }

    fn finish_keeping_journal(
        mut self,
        revision: Revision,
        next_network: u32,
        last: Option<u64>,
    ) -> Result<()> {
        let tail = Tail {
            revision,
            next_network,
            records: self.records,
            last,
        };
        self.frame.clear();
        self.frame.push(END);
        serde_json::to_writer(&mut self.frame, &tail).map_err(|e| self.copy.storage(e))?;
        self.frame()?;
        let out = self.out.take().expect("finished once");
        let file = out
            .into_inner()
            .map_err(|e| self.copy.storage(format_args!("writing: {e}")))?;
        file.sync_all()
            .map_err(|e| self.copy.storage(format_args!("syncing: {e}")))?;
        fs::rename(&self.tmp, &self.copy.base)
            .map_err(|e| self.copy.storage(format_args!("renaming into place: {e}")))?;
        Ok(())
    }
}

impl Drop for BaseWriter {
    fn drop(&mut self) {
        // Unfinished: nothing half-written stays behind.
        if self.out.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The journal, appended to as deltas are applied.
pub struct Journal {
    copy: LocalCopy,
    out: BufWriter<File>,
    lines: u64,
}

impl Journal {
    /// Appends one delta (without tokens). Buffered: [`Journal::flush`] after a batch.
    pub fn append(&mut self, delta: &Delta) -> Result<()> {
        let json =
            serde_json::to_string(&without_tokens(delta)).map_err(|e| self.copy.storage(e))?;
        // One write for the line: a crash leaves it whole or torn, never without its end.
        let line = format!("{:016x} {json}\n", digest(delta));
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| self.copy.storage(format_args!("writing the journal: {e}")))?;
        self.lines += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| self.copy.storage(format_args!("writing the journal: {e}")))
    }

    /// Lines in the journal since it was started or rotated.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Moves the journal aside for [`LocalCopy::compact`] and starts an empty one. Refused
    /// (`Ok(false)`) while an earlier rotated journal is still there.
    pub fn rotate(&mut self) -> Result<bool> {
        if self.copy.old.exists() {
            return Ok(false);
        }
        self.flush()?;
        fs::rename(&self.copy.journal, &self.copy.old)
            .map_err(|e| self.copy.storage(format_args!("rotating the journal: {e}")))?;
        self.out = BufWriter::new(self.copy.open_journal()?);
        self.lines = 0;
        Ok(true)
    }
}

/// A fingerprint of the registry's `delta`, tokens included (64-bit FNV-1a of its JSON): two
/// histories that differ at a revision differ here, even where only a token changed.
pub fn digest(delta: &Delta) -> u64 {
    let json = serde_json::to_vec(delta).unwrap_or_default();
    json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A journal line's digest and delta; `None` for a torn or foreign line.
fn parse_journal_line(line: &str) -> Option<(u64, Delta)> {
    let (digest, json) = line.split_once(' ')?;
    if digest.len() != 16 {
        return None;
    }
    let digest = u64::from_str_radix(digest, 16).ok()?;
    Some((digest, serde_json::from_str(json).ok()?))
}

/// `delta` without the tokens' changes, as a copy stores deltas.
pub fn without_tokens(delta: &Delta) -> Delta {
    Delta {
        revision: delta.revision,
        next_network: delta.next_network,
        changes: delta
            .changes
            .iter()
            .filter(|c| !matches!(c.key, RecordKey::Token { .. }))
            .cloned()
            .collect(),
    }
}

/// A base being read: its header, then frames.
struct BaseReader {
    copy: LocalCopy,
    head: Head,
    input: BufReader<File>,
    frame: Vec<u8>,
    records: u64,
}

impl BaseReader {
    /// The end frame, skipping over the records without decoding them; refuses what
    /// [`BaseReader::each`] refuses about the frames and their count.
    fn tail(&mut self) -> Result<Tail> {
        let copy = &self.copy;
        let mut records = 0u64;
        loop {
            let mut head = [0u8; 5];
            self.input
                .read_exact(&mut head)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        copy.corrupt("no end frame: the file was cut short")
                    }
                    _ => copy.storage(format_args!("reading: {e}")),
                })?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len == 0 || len > MAX_FRAME {
                return Err(copy.corrupt(format_args!("frame {} claims {len} bytes", records + 1)));
            }
            if head[4] == END {
                self.frame.resize(len - 1, 0);
                self.input
                    .read_exact(&mut self.frame)
                    .map_err(|e| copy.corrupt(format_args!("the end frame: {e}")))?;
                let tail: Tail = serde_json::from_slice(&self.frame)
                    .map_err(|e| copy.corrupt(format_args!("the end frame: {e}")))?;
                if tail.records != records {
                    return Err(copy.corrupt(format_args!(
                        "the end frame counts {} records, the file holds {records}",
                        tail.records
                    )));
                }
                return Ok(tail);
            }
            self.input
                .seek_relative(len as i64 - 1)
                .map_err(|e| copy.storage(format_args!("reading: {e}")))?;
            records += 1;
        }
    }

    /// Hands out every record and returns the end frame; refuses a base that is cut short,
    /// holds anything after its end or counts other than it holds.
    fn each(&mut self, record: &mut dyn FnMut(RecordRef<'_>)) -> Result<Tail> {
        let copy = &self.copy;
        loop {
            let at = self.records + 1;
            let mut len = [0u8; 4];
            self.input
                .read_exact(&mut len)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        copy.corrupt("no end frame: the file was cut short")
                    }
                    _ => copy.storage(format_args!("reading: {e}")),
                })?;
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 || len > MAX_FRAME {
                return Err(copy.corrupt(format_args!("frame {at} claims {len} bytes")));
            }
            self.frame.resize(len, 0);
            self.input
                .read_exact(&mut self.frame)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        copy.corrupt(format_args!("frame {at} is cut short"))
                    }
                    _ => copy.storage(format_args!("reading: {e}")),
                })?;
            if self.frame[0] == END {
                let tail: Tail = serde_json::from_slice(&self.frame[1..])
                    .map_err(|e| copy.corrupt(format_args!("the end frame: {e}")))?;
                if tail.records != self.records {
                    return Err(copy.corrupt(format_args!(
                        "the end frame counts {} records, the file holds {}",
                        tail.records, self.records
                    )));
                }
                let mut more = [0u8; 1];
                if self
                    .input
                    .read(&mut more)
                    .map_err(|e| copy.storage(format_args!("reading: {e}")))?
                    != 0
                {
                    return Err(copy.corrupt("bytes follow the end frame"));
                }
                return Ok(tail);
            }
            codec::decode_ref(&self.frame, record)
                .map_err(|e| copy.corrupt(format_args!("record {at}: {e}")))?;
            self.records += 1;
        }
    }
}

#[cfg(test)]
mod tests;
