//! What the answer is: a pure function of the index, the question and the querier's
//! address. How it travels (wire format, EDNS, truncation) is `wire`'s business.

use std::net::IpAddr;

use crate::index::{Entry, Index};
use crate::scope::{scope, Scope};

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// The most addresses a `top<N>` name may ask for.
const MAX_NEAREST: usize = 64;

/// A question, with its name lowercased and in dotted form without the final dot
/// (`web.internal`; the root is empty).
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
}

/// The answer to a question.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Not a `.internal` name: ask upstream.
    Forward,
    /// A `.internal` question from a querier outside every org, with no default org.
    Refused,
    /// The name does not exist (for this querier's org).
    NxDomain,
    /// The name exists but has no record of this type.
    NoData,
    /// AAAA records; `shuffle` when clients should see them in a fresh order each time.
    Aaaa {
        addrs: &'a [[u8; 16]],
        shuffle: bool,
    },
    /// One TXT record (its rdata).
    Txt(&'a [u8]),
    /// The zone's SOA (a question for `internal.` itself).
    Soa,
}

/// The zone every org's names live in.
pub const ZONE: &[u8] = b"internal";

/// The part of `name` under `internal.`, or `None` if the name is outside it.
pub fn under_zone(name: &[u8]) -> Option<&[u8]> {
    if name == ZONE {
        return Some(b"");
    }
    let cut = name.len().checked_sub(ZONE.len() + 1)?;
    (name[cut] == b'.' && &name[cut + 1..] == ZONE).then(|| &name[..cut])
}

/// Answers `q` for a querier at `src`; `now` is unix seconds (for peer expiry).
pub fn answer<'a>(index: &'a Index, q: &Question<'_>, src: IpAddr, now: i64) -> Answer<'a> {
    let Some(rel) = under_zone(q.name) else {
        return Answer::Forward;
    };
    let Scope::Org { zone, region } = scope(index, src) else {
        return Answer::Refused;
    };
    if q.qclass != CLASS_IN {
        return Answer::Refused;
    }
    if let Some((n, app)) = parse_nearest(rel) {
        let Some(by_region) = zone.nearest.get(app) else {
            return Answer::NxDomain;
        };
        if q.qtype != TYPE_AAAA {
            return Answer::NoData;
        }
        let list = region
            .and_then(|r| index.nearest_slot.get(usize::from(r)))
            .and_then(|&slot| by_region.get(usize::from(slot)))
            .or_else(|| by_region.first());
        let addrs = list.map_or(&[][..], |l| &l[..n.min(l.len())]);
        if addrs.is_empty() {
            return Answer::NoData;
        }
        return Answer::Aaaa {
            addrs,
            shuffle: false,
        };
    }
    let Some(entry) = zone.names.get(rel) else {
        return Answer::NxDomain;
    };
    if entry.expires.is_some_and(|e| e <= now) {
        return Answer::NxDomain;
    }
    records(entry, rel, q.qtype)
}

fn records<'a>(entry: &'a Entry, rel: &[u8], qtype: u16) -> Answer<'a> {
    match qtype {
        TYPE_AAAA if !entry.aaaa.is_empty() => Answer::Aaaa {
            addrs: &entry.aaaa,
            shuffle: entry.aaaa.len() > 1,
        },
        TYPE_TXT => entry.txt.as_deref().map_or(Answer::NoData, Answer::Txt),
        TYPE_SOA if rel.is_empty() => Answer::Soa,
        _ => Answer::NoData,
    }
}

/// `top<N>.nearest.of.<app>` → (N, app). N is 1 to 64.
fn parse_nearest(rel: &[u8]) -> Option<(usize, &[u8])> {
    let (first, rest) = split_label(rel)?;
    let digits = first.strip_prefix(b"top")?;
    let app = rest.strip_prefix(b"nearest.of.")?;
    if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if n == 0 || n > MAX_NEAREST || app.is_empty() || app.contains(&b'.') {
        return None;
    }
    Some((n, app))
}

fn split_label(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = name.iter().position(|&b| b == b'.')?;
    Some((&name[..dot], &name[dot + 1..]))
}

#[cfg(test)]
mod tests;
