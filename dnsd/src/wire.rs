//! How answers travel: a checked view of a query packet and a writer of response packets
//! (question echo, compression pointers, EDNS, truncation). Once the length checks pass,
//! nothing here panics; nothing allocates beyond the output buffer.

use crate::answer::{Answer, Question};
use crate::index::TTL;
use crate::shuffle;

/// The UDP payload size dnsd advertises and caps EDNS clients at (DNS flag day 2020).
pub const EDNS_MAX: u16 = 1232;
const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;

pub const RCODE_NOERROR: u16 = 0;
pub const RCODE_FORMERR: u16 = 1;
pub const RCODE_SERVFAIL: u16 = 2;
pub const RCODE_NXDOMAIN: u16 = 3;
pub const RCODE_NOTIMP: u16 = 4;
pub const RCODE_REFUSED: u16 = 5;
/// Extended (EDNS) rcode: unsupported EDNS version.
pub const RCODE_BADVERS: u16 = 16;

/// The EDNS options of a query that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    pub version: u8,
}

/// A parsed query. `question` is the question section as received (original case), to echo.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub question: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    name: [u8; 255],
    name_len: usize,
}

impl Query<'_> {
    /// The question name, lowercase, dotted, without the final dot.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    pub fn as_question(&self) -> Question<'_> {
        Question {
            name: self.name(),
            qtype: self.qtype,
            qclass: self.qclass,
        }
    }

    /// The largest response this query may get over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.udp_size.clamp(512, EDNS_MAX)),
            None => 512,
        }
    }
}

/// Why a packet is not a query dnsd answers normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Too short to hold a header, or a response: no reply at all.
    Drop(&'static str),
    /// Reply with just a header (and the question when it parsed) and this rcode.
    Error {
        id: u16,
        opcode: u8,
        rd: bool,
        rcode: u16,
        edns: bool,
        reason: &'static str,
    },
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(buf: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *buf.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2).filter(|&e| e <= buf.len()),
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// Parses a query packet.
pub fn parse(buf: &[u8]) -> Result<Query<'_>, Reject> {
    if buf.len() < HEADER {
        return Err(Reject::Drop("shorter than a header"));
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop("a response, not a query"));
    }
    let opcode = ((flags >> 11) & 0xf) as u8;
    let rd = flags & 0x0100 != 0;
    let cd = flags & 0x0010 != 0;
    let err = |rcode, reason| Reject::Error {
        id,
        opcode,
        rd,
        rcode,
        edns: false,
        reason,
    };
    if opcode != 0 {
        return Err(err(RCODE_NOTIMP, "opcode is not QUERY"));
    }
    let count = |i: usize| u16::from_be_bytes([buf[4 + 2 * i], buf[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    if qd != 1 {
        return Err(err(RCODE_FORMERR, "QDCOUNT is not 1"));
    }
    let mut name = [0u8; 255];
    let mut name_len = 0usize;
    let mut at = HEADER;
    loop {
        let Some(&len) = buf.get(at) else {
            return Err(err(RCODE_FORMERR, "question name runs past the packet"));
        };
        let len = usize::from(len);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err(err(RCODE_FORMERR, "bad label in question name"));
        }
        let Some(label) = buf.get(at..at + len) else {
            return Err(err(RCODE_FORMERR, "question name runs past the packet"));
        };
        let dot = usize::from(name_len > 0);
        if name_len + dot + len > 253 {
            return Err(err(RCODE_FORMERR, "question name longer than 255 bytes"));
        }
        if dot == 1 {
            name[name_len] = b'.';
        }
        for (i, &b) in label.iter().enumerate() {
            // A '.' inside a label must not read as a label boundary.
            name[name_len + dot + i] = if b == b'.' { 0 } else { b.to_ascii_lowercase() };
        }
        name_len += dot + len;
        at += len;
    }
    let (Some(qtype), Some(qclass)) = (u16_at(buf, at), u16_at(buf, at + 2)) else {
        return Err(err(RCODE_FORMERR, "question type/class missing"));
    };
    let question = &buf[HEADER..at + 4];
    at += 4;
    // Skip answer and authority records; look for OPT among the additional ones.
    for _ in 0..(u32::from(an) + u32::from(ns)) {
        at = skip_record(buf, at).ok_or(err(RCODE_FORMERR, "record runs past the packet"))?;
    }
    let mut edns = None;
    for _ in 0..ar {
        let rtype = skip_name(buf, at).and_then(|n| u16_at(buf, n).map(|t| (n, t)));
        let Some((after_name, rtype)) = rtype else {
            return Err(err(RCODE_FORMERR, "record runs past the packet"));
        };
        if rtype == TYPE_OPT {
            if edns.is_some() {
                return Err(err(RCODE_FORMERR, "more than one OPT record"));
            }
            if after_name != at + 1 {
                return Err(err(RCODE_FORMERR, "OPT owner is not the root"));
            }
            let (Some(size), Some(ttl_hi), Some(ttl_lo)) = (
                u16_at(buf, after_name + 2),
                u16_at(buf, after_name + 4),
                u16_at(buf, after_name + 6),
            ) else {
                return Err(err(RCODE_FORMERR, "OPT record runs past the packet"));
            };
            edns = Some(Edns {
                udp_size: size,
                version: (ttl_hi & 0xff) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
            });
        }
        at = skip_record(buf, at).ok_or(err(RCODE_FORMERR, "record runs past the packet"))?;
    }
    if let Some(e) = edns {
        if e.version != 0 {
            return Err(Reject::Error {
                id,
                opcode,
                rd,
                rcode: RCODE_BADVERS,
                edns: true,
                reason: "EDNS version is not 0",
            });
        }
    }
    Ok(Query {
        id,
        opcode,
        rd,
        cd,
        question,
        qtype,
        qclass,
        edns,
        name,
        name_len,
    })
}

/// Skips one resource record; returns the offset after it.
fn skip_record(buf: &[u8], at: usize) -> Option<usize> {
    let n = skip_name(buf, at)?;
    let rdlen = usize::from(u16_at(buf, n + 8)?);
    let end = n + 10 + rdlen;
    (end <= buf.len()).then_some(end)
}

/// Every record's TTL field offset, with its type, in a response (for the cache).
pub fn ttl_offsets(buf: &[u8], mut visit: impl FnMut(usize, u16)) -> Option<()> {
    if buf.len() < HEADER {
        return None;
    }
    let qd = u16_at(buf, 4)?;
    let rr = u32::from(u16_at(buf, 6)?) + u32::from(u16_at(buf, 8)?) + u32::from(u16_at(buf, 10)?);
    let mut at = HEADER;
    for _ in 0..qd {
        at = skip_name(buf, at)? + 4;
    }
    for _ in 0..rr {
        let n = skip_name(buf, at)?;
        let rtype = u16_at(buf, n)?;
        visit(n + 4, rtype);
        at = skip_record(buf, at)?;
    }
    Some(())
}

/// Response flags beyond the rcode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub authoritative: bool,
    pub truncated: bool,
}

fn header(out: &mut Vec<u8>, id: u16, opcode: u8, rd: bool, cd: bool, flags: Flags, rcode: u16) {
    let mut f: u16 = 0x8000 | (u16::from(opcode & 0xf) << 11) | 0x0080 | (rcode & 0xf);
    if flags.authoritative {
        f |= 0x0400;
    }
    if flags.truncated {
        f |= 0x0200;
    }
    if rd {
        f |= 0x0100;
    }
    if cd {
        f |= 0x0010;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

fn set_count(out: &mut [u8], section: usize, n: u16) {
    out[4 + 2 * section..6 + 2 * section].copy_from_slice(&n.to_be_bytes());
}

fn opt(out: &mut Vec<u8>, rcode: u16) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_MAX.to_be_bytes());
    out.push((rcode >> 4) as u8);
    out.extend_from_slice(&[0, 0, 0, 0, 0]);
}

/// The zone's SOA as a record owned by `internal.` (written in full: 58 bytes).
fn soa(out: &mut Vec<u8>, serial: u32, owner_is_question: bool) {
    let owner = out.len();
    if owner_is_question {
        out.extend_from_slice(&[0xc0, 0x0c]);
    } else {
        out.extend_from_slice(b"\x08internal\x00");
    }
    let ptr = if owner_is_question { HEADER } else { owner } as u16 | 0xc000;
    out.extend_from_slice(&crate::answer::TYPE_SOA.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&TTL.to_be_bytes());
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(b"\x02ns");
    out.extend_from_slice(&ptr.to_be_bytes());
    out.extend_from_slice(b"\x0ahostmaster");
    out.extend_from_slice(&ptr.to_be_bytes());
    for v in [serial, 3600, 600, 86400, TTL] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let rdlen = (out.len() - rdlen_at - 2) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

fn record_head(out: &mut Vec<u8>, rtype: u16, rdlen: usize) {
    out.extend_from_slice(&[0xc0, 0x0c]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&TTL.to_be_bytes());
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
}

/// What a written response says, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub rcode: u16,
    pub truncated: bool,
}

/// Writes the response to `q` carrying `answer` (anything but `Forward`) into `out`,
/// truncating (TC, no records) if it would exceed `limit` bytes. `serial` is the SOA serial.
pub fn write_answer(
    q: &Query<'_>,
    answer: &Answer<'_>,
    serial: u32,
    limit: usize,
    out: &mut Vec<u8>,
) -> Written {
    out.clear();
    let (rcode, authoritative) = match answer {
        Answer::Refused(_) | Answer::Forward => (RCODE_REFUSED, false),
        Answer::NxDomain => (RCODE_NXDOMAIN, true),
        _ => (RCODE_NOERROR, true),
    };
    let flags = Flags {
        authoritative,
        truncated: false,
    };
    header(out, q.id, q.opcode, q.rd, q.cd, flags, rcode);
    out.extend_from_slice(q.question);
    set_count(out, 0, 1);
    let question_end = out.len();
    let (mut an, mut ns) = (0u16, 0u16);
    match answer {
        Answer::Aaaa { addrs, shuffle } => {
            let mut n = addrs.len().min(usize::from(u16::MAX));
            if limit >= usize::from(u16::MAX) {
                // TCP, the largest message there is: a set bigger than it (some 2,300
                // addresses) gets as many (shuffled) records as fit rather than none.
                let opt_len = if q.edns.is_some() { 11 } else { 0 };
                let room = usize::from(u16::MAX).saturating_sub(out.len() + opt_len);
                n = n.min(room / 28);
            }
            let mut buf = [0u8; 256];
            let order = if *shuffle {
                Some(shuffle::order(n, &mut buf))
            } else {
                None
            };
            for i in 0..n {
                let k = order.as_ref().map_or(i, |o| o.get(i));
                record_head(out, crate::answer::TYPE_AAAA, 16);
                out.extend_from_slice(&addrs[k]);
            }
            an = n as u16;
        }
        Answer::Address(addr) => {
            record_head(out, crate::answer::TYPE_AAAA, 16);
            out.extend_from_slice(addr);
            an = 1;
        }
        Answer::Txt(rdata) => {
            record_head(out, crate::answer::TYPE_TXT, rdata.len());
            out.extend_from_slice(rdata);
            an = 1;
        }
        Answer::Soa => {
            soa(out, serial, true);
            an = 1;
        }
        Answer::NxDomain | Answer::NoData => {
            soa(out, serial, false);
            ns = 1;
        }
        Answer::Refused(_) | Answer::Forward => {}
    }
    let opt_len = if q.edns.is_some() { 11 } else { 0 };
    let truncated = out.len() + opt_len > limit;
    if truncated {
        out.truncate(question_end);
        out[2] |= 0x02;
        (an, ns) = (0, 0);
    }
    set_count(out, 1, an);
    set_count(out, 2, ns);
    if q.edns.is_some() {
        opt(out, 0);
        set_count(out, 3, 1);
    }
    Written { rcode, truncated }
}

/// Writes an error response for a rejected packet (no question: it may not have parsed).
pub fn write_reject(reject: &Reject, out: &mut Vec<u8>) -> Option<Written> {
    let Reject::Error {
        id,
        opcode,
        rd,
        rcode,
        edns,
        ..
    } = *reject
    else {
        return None;
    };
    out.clear();
    header(out, id, opcode, rd, false, Flags::default(), rcode);
    if edns {
        opt(out, rcode);
        set_count(out, 3, 1);
    }
    Some(Written {
        rcode,
        truncated: false,
    })
}

/// Writes a response with just the question and `rcode` (SERVFAIL when forwarding fails,
/// REFUSED when there is nowhere to forward to).
pub fn write_rcode(q: &Query<'_>, rcode: u16, out: &mut Vec<u8>) -> Written {
    out.clear();
    header(out, q.id, q.opcode, q.rd, q.cd, Flags::default(), rcode);
    out.extend_from_slice(q.question);
    set_count(out, 0, 1);
    if q.edns.is_some() {
        opt(out, rcode);
        set_count(out, 3, 1);
    }
    Written {
        rcode,
        truncated: false,
    }
}

#[cfg(test)]
mod tests;
