//! A WireGuard public key: parsed once from base64 where it enters (a flag, a JSON body, a
//! stored row, a tunnel file), then kept as its 32 bytes and shown as base64 again.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The rule every refusal names.
const RULE: &str = "must be 44 characters of base64 for 32 bytes, as `wg pubkey` prints";

/// 32 bytes of a Curve25519 public key. Its text form (`Display`, `FromStr`, serde) is
/// standard base64 with padding, the form `wg` and every tunnel file use, so stored rows,
/// JSON and files read the same as when keys were kept as strings.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Parses `text`, naming `field` (a flag, a JSON field, a file's line) in the refusal.
    pub fn parse(field: &'static str, text: &str) -> Result<Self> {
        let refuse = |detail: String| Error::invalid(field, shown(text), format!("{RULE}{detail}"));
        // The engine accepts only canonical padded base64: no spaces, no missing `=`.
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| refuse(" (this is not base64)".into()))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| refuse(format!(" (this is {} bytes)", bytes.len())))?;
        Ok(PublicKey(bytes))
    }
}

/// A refused value as a message shows it: a key is not secret, but whatever was pasted in
/// its place may be long, so only its start is repeated.
fn shown(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

impl From<[u8; 32]> for PublicKey {
    fn from(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
}

impl From<PublicKey> for [u8; 32] {
    fn from(key: PublicKey) -> Self {
        key.0
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        PublicKey::parse("public key", text)
    }
}

impl TryFrom<&str> for PublicKey {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self> {
        text.parse()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 44];
        // 32 bytes are always 44 characters of padded base64.
        match STANDARD.encode_slice(self.0, &mut buf) {
            Ok(n) => f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::parse("public_key", &text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
