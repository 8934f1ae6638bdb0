//! What the answer is: a pure function of the index, the question and the querier's
//! address. How it travels (wire format, EDNS, truncation) is `wire`'s business.

use std::net::{IpAddr, Ipv4Addr};

use crate::index::{Entry, Index, OrgZone};
use crate::scope::{scope, Refusal, Scope};

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
    /// Not a `.internal` name, from a querier that may have it forwarded: ask upstream.
    Forward,
    /// REFUSED, and why.
    Refused(Refusal),
    /// The name does not exist (for this querier's org).
    NxDomain,
    /// The name exists but has no record of this type.
    NoData,
    /// AAAA records; `shuffle` when clients should see them in a fresh order each time.
    Aaaa {
        addrs: &'a [[u8; 16]],
        shuffle: bool,
    },
    /// One computed AAAA record (a 4via6 address behind a site).
    Address([u8; 16]),
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

/// Answers `q` for a querier at `src`; `now` is unix seconds (for peer expiry). Who may
/// ask is decided first: a source [`scope`] refuses gets nothing, forwarding included.
pub fn answer<'a>(index: &'a Index, q: &Question<'_>, src: IpAddr, now: i64) -> Answer<'a> {
    let scope = scope(index, src);
    let Some(rel) = under_zone(q.name) else {
        return match scope {
            Scope::Refused(why) => Answer::Refused(why),
            Scope::Org { .. } | Scope::Trusted => Answer::Forward,
        };
    };
    let (zone, region) = match scope {
        Scope::Org { zone, region } => (zone, region),
        Scope::Trusted => return Answer::Refused(Refusal::NoDefaultOrg),
        Scope::Refused(why) => return Answer::Refused(why),
    };
    if q.qclass != CLASS_IN {
        return Answer::Refused(Refusal::Class);
    }
    if let Some((n, app)) = parse_nearest(rel) {
        let Some(by_region) = zone.nearest.get(app) else {
            return Answer::NxDomain;
        };
        if q.qtype != TYPE_AAAA && q.qtype != TYPE_ANY {
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
    if let Some((v4, site)) = parse_via(rel) {
        return via(zone, v4, site, q.qtype, now);
    }
    let Some(entry) = zone.names.get(rel) else {
        return Answer::NxDomain;
    };
    if entry.expires.is_some_and(|e| e <= now) {
        return Answer::NxDomain;
    }
    records(entry, rel, q.qtype)
}

/// `<a-b-c-d>.<site>._site`: the 4via6 address of `a.b.c.d` behind that site of the
/// querier's org, if the address is inside one of the site's IPv4 routes.
fn via<'a>(zone: &OrgZone, v4: Ipv4Addr, site: &[u8], qtype: u16, now: i64) -> Answer<'a> {
    let Some(s) = zone.sites.get(site) else {
        return Answer::NxDomain;
    };
    if s.expires.is_some_and(|e| e <= now) || !s.routes.iter().any(|r| r.contains(&v4)) {
        return Answer::NxDomain;
    }
    match qtype {
        TYPE_AAAA | TYPE_ANY => Answer::Address(registry::addr::via_addr(s.via, v4).octets()),
        _ => Answer::NoData,
    }
}

/// The records of `entry` for `qtype`. ANY gets one RRset, not all of them (RFC 8482
/// section 4.1): the addresses if the name has some, else its text, else the apex's SOA.
fn records<'a>(entry: &'a Entry, rel: &[u8], qtype: u16) -> Answer<'a> {
    let txt = entry.txt.as_deref();
    match qtype {
        TYPE_AAAA | TYPE_ANY if !entry.aaaa.is_empty() => Answer::Aaaa {
            addrs: &entry.aaaa,
            shuffle: entry.aaaa.len() > 1,
        },
        TYPE_TXT | TYPE_ANY if txt.is_some() => txt.map_or(Answer::NoData, Answer::Txt),
        TYPE_SOA | TYPE_ANY if rel.is_empty() => Answer::Soa,
        _ => Answer::NoData,
    }
}

/// `<a-b-c-d>.<site>._site` → (a.b.c.d, site). The address is in dotted-quad order with
/// dashes, each part decimal 0-255 without leading zeros (one name per address).
fn parse_via(rel: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let rest = rel.strip_suffix(b"._site")?;
    let (first, site) = split_label(rest)?;
    if site.is_empty() || site.contains(&b'.') {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = first.split(|&b| b == b'-');
    for o in &mut octets {
        *o = parse_octet(parts.next()?)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((Ipv4Addr::from(octets), site))
}

fn parse_octet(digits: &[u8]) -> Option<u8> {
    let leading_zero = digits.len() > 1 && digits[0] == b'0';
    if digits.is_empty() || digits.len() > 3 || leading_zero {
        return None;
    }
    digits.iter().try_fold(0u8, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(d)
    })
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
