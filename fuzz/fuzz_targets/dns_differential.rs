//! dnsd's query parser (`wire::parse`) against hickory-proto's. Every packet hickory decodes
//! as a plain single-question query (QR=0, opcode QUERY, EDNS version 0 or none) must parse in
//! dnsd too, to the same question: name (lowercased, dotted), type and class. And every
//! question dnsd accepts must be one hickory can decode on its own.
//!
//! One difference is dnsd's choice: a compression pointer in the question name (there is
//! nothing before the question to point to but the header) gets FORMERR; hickory follows it.
#![no_main]

use hickory_proto::op::{Message, MessageType, OpCode};
use libfuzzer_sys::fuzz_target;

/// A hickory name as dnsd spells it: lowercase ASCII, labels joined by '.', a '.' inside a
/// label as 0, no final dot.
fn dnsd_spelling(name: &hickory_proto::rr::Name) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            s.push(b'.');
        }
        s.extend(label.iter().map(|&b| if b == b'.' { 0 } else { b.to_ascii_lowercase() }));
    }
    s
}

/// Whether the question name (from byte 12) uses a compression pointer.
fn question_is_compressed(data: &[u8]) -> bool {
    let mut at = 12;
    while let Some(&len) = data.get(at) {
        match len {
            0 => return false,
            l if l & 0xc0 == 0xc0 => return true,
            l => at += 1 + usize::from(l),
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let ours = dnsd::wire::parse(data);
    if let Ok(q) = &ours {
        // A header with QDCOUNT 1 and just the question: hickory must take it.
        let mut alone = data[..12].to_vec();
        alone[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        alone.extend_from_slice(q.question);
        if let Err(e) = Message::from_vec(&alone) {
            panic!("dnsd accepted a question hickory refuses ({e}): {:02x?}", q.question);
        }
    }
    let Ok(msg) = Message::from_vec(data) else {
        return;
    };
    let plain = msg.metadata.message_type == MessageType::Query
        && msg.metadata.op_code == OpCode::Query
        && msg.queries.len() == 1
        && msg.edns.as_ref().is_none_or(|e| e.version() == 0);
    if !plain {
        return;
    }
    let q = match ours {
        Ok(q) => q,
        Err(_) if question_is_compressed(data) => return,
        Err(reject) => panic!("hickory decodes a plain query dnsd rejects ({reject:?}): {data:02x?}"),
    };
    let theirs = &msg.queries[0];
    assert_eq!(q.name(), dnsd_spelling(theirs.name()).as_slice(), "name of {data:02x?}");
    assert_eq!(q.qtype, u16::from(theirs.query_type()), "type of {data:02x?}");
    assert_eq!(q.qclass, u16::from(theirs.query_class()), "class of {data:02x?}");
});
