//! DNS messages for `wgtool dig` and name resolution: one query written by hand, answers
//! read through one checked parser that returns an error instead of panicking on anything
//! short or malformed.

use std::fmt;
use std::net::Ipv6Addr;

/// The record types `wgtool dig` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    Aaaa,
    Txt,
}

impl QType {
    pub fn code(self) -> u16 {
        match self {
            QType::Aaaa => 28,
            QType::Txt => 16,
        }
    }

    pub fn parse(s: &str) -> Option<QType> {
        match s.to_ascii_uppercase().as_str() {
            "AAAA" => Some(QType::Aaaa),
            "TXT" => Some(QType::Txt),
            _ => None,
        }
    }
}

/// A DNS name `wgtool` can put in a question; the error names the rule.
pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("name `{name}`: 1 to 253 characters"));
    }
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("name `{name}`: each label is 1 to 63 characters"));
    }
    Ok(())
}

/// A query for `name` (checked with [`check_name`]), recursion desired, with `id`.
pub fn query(id: u16, name: &str, qtype: QType) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// One answer record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RData {
    Aaaa(Ipv6Addr),
    Txt(Vec<Vec<u8>>),
    Other { rtype: u16, bytes: Vec<u8> },
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    pub truncated: bool,
    pub answers: Vec<Record>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("DNS message ends early (at byte {0})")]
    Short(usize),
    #[error("DNS name compression loops")]
    Loop,
    #[error("not a response")]
    NotResponse,
}

pub fn parse(msg: &[u8]) -> Result<Response, ParseError> {
    let h = msg.get(..12).ok_or(ParseError::Short(msg.len()))?;
    if h[2] & 0x80 == 0 {
        return Err(ParseError::NotResponse);
    }
    let qd = u16::from_be_bytes([h[4], h[5]]);
    let an = u16::from_be_bytes([h[6], h[7]]);
    let mut at = 12;
    for _ in 0..qd {
        let (_, next) = name(msg, at)?;
        at = next + 4;
    }
    let mut answers = Vec::with_capacity(an.min(64) as usize);
    for _ in 0..an {
        let (owner, next) = name(msg, at)?;
        let f = msg
            .get(next..next + 10)
            .ok_or(ParseError::Short(msg.len()))?;
        let rtype = u16::from_be_bytes([f[0], f[1]]);
        let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
        let len = u16::from_be_bytes([f[8], f[9]]) as usize;
        let start = next + 10;
        let rdata = msg
            .get(start..start + len)
            .ok_or(ParseError::Short(msg.len()))?;
        let data = match (rtype, rdata.len()) {
            (28, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                RData::Aaaa(Ipv6Addr::from(b))
            }
            (16, _) => RData::Txt(character_strings(rdata)?),
            _ => RData::Other {
                rtype,
                bytes: rdata.to_vec(),
            },
        };
        answers.push(Record {
            name: owner,
            ttl,
            data,
        });
        at = start + len;
    }
    Ok(Response {
        id: u16::from_be_bytes([h[0], h[1]]),
        rcode: h[3] & 0x0f,
        truncated: h[2] & 0x02 != 0,
        answers,
    })
}

/// The name at `at` (following compression pointers) and where the record goes on.
fn name(msg: &[u8], mut at: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut end = None;
    // A name has at most 127 labels; more jumps than that is a loop.
    for _ in 0..256 {
        let len = *msg.get(at).ok_or(ParseError::Short(msg.len()))? as usize;
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(at + 1).ok_or(ParseError::Short(msg.len()))? as usize;
            end.get_or_insert(at + 2);
            at = (len & 0x3f) << 8 | lo;
            continue;
        }
        if len == 0 {
            if out.is_empty() {
                out.push('.');
            }
            return Ok((out, end.unwrap_or(at + 1)));
        }
        let label = msg
            .get(at + 1..at + 1 + len)
            .ok_or(ParseError::Short(msg.len()))?;
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + len;
    }
    Err(ParseError::Loop)
}

fn character_strings(mut rdata: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = rdata.split_first() {
        let s = rest
            .get(..len as usize)
            .ok_or(ParseError::Short(len as usize))?;
        out.push(s.to_vec());
        rdata = &rest[len as usize..];
    }
    Ok(out)
}

/// The rcode's name, as dig prints it.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

impl RData {
    fn type_name(&self) -> String {
        match self {
            RData::Aaaa(_) => "AAAA".into(),
            RData::Txt(_) => "TXT".into(),
            RData::Other { rtype, .. } => format!("TYPE{rtype}"),
        }
    }
}

/// The record data as `dig +short` prints it.
impl fmt::Display for RData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::Aaaa(a) => write!(f, "{a}"),
            RData::Txt(strings) => {
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    f.write_str("\"")?;
                    for &b in s {
                        match b {
                            b'"' | b'\\' => write!(f, "\\{}", b as char)?,
                            0x20..=0x7e => write!(f, "{}", b as char)?,
                            _ => write!(f, "\\{b:03}")?,
                        }
                    }
                    f.write_str("\"")?;
                }
                Ok(())
            }
            RData::Other { bytes, .. } => {
                write!(f, "\\# {}", bytes.len())?;
                if !bytes.is_empty() {
                    f.write_str(" ")?;
                }
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// The record as a line of dig's answer section.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\tIN\t{}\t{}",
            self.name,
            self.ttl,
            self.data.type_name(),
            self.data
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query(7, "web.internal", Aaaa)` with one compressed answer.
    fn aaaa_response() -> Vec<u8> {
        let mut m = query(7, "web.internal", QType::Aaaa);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 16]);
        m.extend_from_slice(&"fdaa:0:18:a7b::2".parse::<Ipv6Addr>().unwrap().octets());
        m
    }

    #[test]
    fn a_query_is_laid_out_as_rfc1035_says() {
        assert_eq!(
            query(0x1234, "web.internal.", QType::Txt),
            b"\x12\x34\x01\x00\0\x01\0\0\0\0\0\0\x03web\x08internal\0\0\x10\0\x01"
        );
    }

    #[test]
    fn an_aaaa_answer_is_read_through_compression() {
        let r = parse(&aaaa_response()).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.rcode, 0);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            r.answers[0].to_string(),
            "web.internal.\t5\tIN\tAAAA\tfdaa:0:18:a7b::2"
        );
        assert_eq!(r.answers[0].data.to_string(), "fdaa:0:18:a7b::2");
    }

    #[test]
    fn txt_strings_print_quoted_as_dig_does() {
        let d = RData::Txt(vec![b"web,db".to_vec(), b"a\"b".to_vec()]);
        assert_eq!(d.to_string(), "\"web,db\" \"a\\\"b\"");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = aaaa_response();
        for n in 0..full.len() {
            assert!(parse(&full[..n]).is_err(), "{n} bytes parsed");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed xorshift stream: the same 20k messages each run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = aaaa_response();
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % m.len();
                m[at] = (x >> 32) as u8;
            }
            m.truncate(12 + (x >> 40) as usize % (m.len() - 11));
            if let Ok(r) = parse(&m) {
                for a in &r.answers {
                    let _ = a.to_string();
                }
            }
        }
    }

    #[test]
    fn a_pointer_loop_is_refused() {
        let mut m = aaaa_response();
        let at = m.len() - 28;
        m[at] = 0xc0;
        m[at + 1] = at as u8;
        assert_eq!(parse(&m), Err(ParseError::Loop));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("web.internal").is_ok());
        assert!(check_name("web..internal").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_name("").is_err());
    }
}
