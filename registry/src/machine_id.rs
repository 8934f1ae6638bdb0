//! A machine's id: 14 lowercase hex characters, like Fly's (`4d89699c030518`). Parsed once
//! where it enters (a command line, a JSON body, a stored row, an etcd key, a DNS label), then
//! kept as the 56 bits it spells and shown as the same 14 characters again.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The rule every refusal names.
const RULE: &str = "must be 14 lowercase hex characters";
/// How many characters an id is.
const LEN: usize = 14;
/// The bits 14 hex characters spell.
const BITS: u64 = 0x00ff_ffff_ffff_ffff;

/// The 56 bits of a machine id. Its text form (`Display`, `FromStr`, serde, SQLite, etcd keys)
/// is the 14 lowercase hex characters ids were stored as when they were strings; and since
/// those are fixed-width, the numeric order is the text's, so maps keyed by id keep their
/// order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineId(u64);

impl MachineId {
    /// The id the low 56 bits of `bits` spell; the rest are dropped (what a generator draws
    /// from 64 random bits).
    pub const fn from_bits(bits: u64) -> Self {
        MachineId(bits & BITS)
    }

    /// The 56 bits, as a number below 2^56.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// Parses `text`, naming `field` (an argument, a JSON field, a stored row) in the refusal.
    pub fn parse(field: &'static str, text: &str) -> Result<Self> {
        MachineId::from_ascii(text.as_bytes()).ok_or_else(|| Error::invalid(field, text, RULE))
    }

    /// The id `text` spells, or `None`: for a reader that only asks whether some bytes (a DNS
    /// label) are an id, and makes no message when they are not.
    pub fn from_ascii(text: &[u8]) -> Option<Self> {
        if text.len() != LEN {
            return None;
        }
        let mut bits = 0u64;
        for &c in text {
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            bits = (bits << 4) | u64::from(digit);
        }
        Some(MachineId(bits))
    }

    /// The 14 characters as bytes, most significant first: the text form, for a writer that
    /// does not allocate.
    pub fn to_ascii(self) -> [u8; LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; LEN];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 4 * (LEN - 1 - i);
            *c = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl FromStr for MachineId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        MachineId::parse("machine id", text)
    }
}

impl TryFrom<&str> for MachineId {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self> {
        text.parse()
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.to_ascii();
        // `pad`, as a string does, so that `{:<16}` in a table lines up as before.
        f.pad(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineId({self})")
    }
}

impl Serialize for MachineId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MachineId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_str(IdVisitor)
    }
}

/// Reads the text without first copying it into a `String` (a snapshot holds a million).
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = MachineId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a machine id (14 lowercase hex characters)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<MachineId, E> {
        text.parse().map_err(E::custom)
    }
}

/// Stored as the same TEXT as when ids were strings: the schema and old files are unchanged.
impl ToSql for MachineId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

/// A stored id that does not parse is a conversion failure naming the field and the rule.
impl FromSql for MachineId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e: Error| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests;
