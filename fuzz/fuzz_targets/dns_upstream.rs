//! Raw bytes as an upstream's answer to a fixed forwarded query: the checks `forward.rs`
//! makes before it keeps an answer (id, QR, same question), then `Cache::put` (which walks
//! every record for its TTL) and `Cache::get`, fresh and stale, into a client's buffer.
#![no_main]

use std::time::{Duration, Instant};

use dnsd::cache::{Cache, Freshness};
use libfuzzer_sys::fuzz_target;

const ID: u16 = 0x2a2a;

fuzz_target!(|data: &[u8]| {
    let Some((&how, response)) = data.split_first() else {
        return;
    };
    let names = ["example.com", "EXAMPLE.org", "a.b.c.d.example.net", "."];
    let name = names[usize::from(how & 3)];
    let qtype = [28, 1, 16, 255][usize::from((how >> 2) & 3)];
    let edns = (how & 0x10 != 0).then_some(1232);
    let query = sixpn_fuzz::dns::query(ID, name, qtype, edns);
    let q = dnsd::wire::parse(&query).expect("the fixed query parses");
    // forward.rs `matches`: what an upstream datagram must be to be taken as the answer.
    let matches = response.len() >= 12 + q.question.len()
        && response[0..2] == ID.to_be_bytes()
        && response[2] & 0x80 != 0
        && response[12..12 + q.question.len()].eq_ignore_ascii_case(q.question);
    let cache = Cache::new(4, Duration::from_secs(30));
    let t0 = Instant::now();
    if matches || how & 0x20 != 0 {
        // Also the bytes that would not match: `put` must hold its own line.
        cache.put(&q, response, t0);
    }
    // A client asking the same question with another id and case.
    let client = sixpn_fuzz::dns::query(7, &name.to_uppercase(), qtype, edns);
    let cq = dnsd::wire::parse(&client).expect("the client query parses");
    for (later, stale_ok) in [(0, false), (100, false), (100, true), (100_000, true)] {
        let mut out = vec![0xee; 3];
        let limit = if how & 0x40 != 0 { 512 } else { 65_535 };
        let got = cache.get(&cq, stale_ok, limit, t0 + Duration::from_secs(later), &mut out);
        let Some(freshness) = got else {
            continue;
        };
        assert!(stale_ok || freshness == Freshness::Fresh);
        assert_eq!(out.len(), response.len(), "a cached answer keeps its length");
        assert!(out.len() <= limit);
        assert_eq!(out[0..2], 7u16.to_be_bytes(), "the client's id");
        assert_eq!(&out[12..12 + cq.question.len()], cq.question, "the client's question");
    }
});
