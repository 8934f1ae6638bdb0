//! The wire format, checked by decoding what dnsd writes with hickory-proto.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::*;
use crate::answer::{TYPE_AAAA, TYPE_TXT};
use crate::index::txt_rdata;

/// A query packet: `name` as given (case kept), with an OPT record if `edns` is a size.
fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x0100u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        p.push(0);
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    p
}

fn addrs(n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[1] = 0xaa;
            a[14] = (i >> 8) as u8;
            a[15] = i as u8;
            a
        })
        .collect()
}

fn respond(packet: &[u8], answer: &Answer<'_>, limit: usize) -> (Written, Message) {
    let q = parse(packet).unwrap();
    let mut out = Vec::new();
    let w = write_answer(&q, answer, 42, limit, &mut out);
    assert!(out.len() <= limit);
    (w, Message::from_vec(&out).unwrap())
}

#[test]
fn parse_lowercases_the_name_and_keeps_the_question_as_sent() {
    let p = query(7, "WeB.InTeRnAl", TYPE_AAAA, Some(4096));
    let q = parse(&p).unwrap();
    assert_eq!(q.id, 7);
    assert!(q.rd);
    assert_eq!(q.name(), b"web.internal");
    assert_eq!(q.question, &p[12..12 + 14 + 4]);
    assert_eq!(q.qtype, TYPE_AAAA);
    assert_eq!(
        q.edns,
        Some(Edns {
            udp_size: 4096,
            dnssec_ok: false,
            version: 0
        })
    );
    assert_eq!(q.udp_limit(), usize::from(EDNS_MAX));
    assert_eq!(parse(&query(7, "a", 1, None)).unwrap().udp_limit(), 512);
    assert_eq!(
        parse(&query(7, "a", 1, Some(100))).unwrap().udp_limit(),
        512
    );
    assert_eq!(parse(&query(7, ".", 1, None)).unwrap().name(), b"");
}

#[test]
fn a_dot_inside_a_label_is_not_a_label_boundary() {
    let mut p = query(1, "xx.internal", TYPE_AAAA, None);
    p[14] = b'.'; // label "x.": must not read as "x" + ""
    let q = parse(&p).unwrap();
    assert_eq!(q.name(), b"x\0.internal");
}

#[test]
fn malformed_packets_are_dropped_or_get_formerr() {
    assert_eq!(
        parse(&[0; 5]).unwrap_err(),
        Reject::Drop("shorter than a header")
    );
    let mut resp = query(1, "a.internal", 1, None);
    resp[2] |= 0x80;
    assert!(matches!(parse(&resp), Err(Reject::Drop(_))));
    let rcode = |p: &[u8]| match parse(p) {
        Err(Reject::Error { rcode, .. }) => rcode,
        other => panic!("{other:?}"),
    };
    let mut no_question = query(1, "a.internal", 1, None);
    no_question[5] = 0;
    assert_eq!(rcode(&no_question), RCODE_FORMERR);
    let mut two = query(1, "a.internal", 1, None);
    two[5] = 2;
    assert_eq!(rcode(&two), RCODE_FORMERR);
    let cut = query(1, "web.internal", 1, None);
    assert_eq!(rcode(&cut[..cut.len() - 3]), RCODE_FORMERR);
    assert_eq!(rcode(&cut[..16]), RCODE_FORMERR);
    let mut pointer = query(1, "a.internal", 1, None);
    pointer[12] = 0xc0;
    assert_eq!(rcode(&pointer), RCODE_FORMERR);
    let mut notify = query(1, "a.internal", 1, None);
    notify[2] |= 4 << 3;
    assert_eq!(rcode(&notify), RCODE_NOTIMP);
    let mut two_opts = query(1, "a.internal", 1, Some(1232));
    two_opts[11] = 2;
    two_opts.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(rcode(&two_opts), RCODE_FORMERR);
    let mut v1 = query(1, "a.internal", 1, Some(1232));
    let at = v1.len() - 5;
    v1[at] = 1; // EDNS version 1
    assert_eq!(rcode(&v1), RCODE_BADVERS);
    let long = vec!["a".repeat(63); 5].join(".");
    assert_eq!(rcode(&query(1, &long, 1, None)), RCODE_FORMERR);
}

#[test]
fn error_responses_decode() {
    let mut no_question = query(9, "a.internal", 1, None);
    no_question[5] = 0;
    let reject = parse(&no_question).unwrap_err();
    let mut out = Vec::new();
    write_reject(&reject, &mut out).unwrap();
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.metadata.id, 9);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut v1 = query(9, "a.internal", 1, Some(1232));
    let at = v1.len() - 5;
    v1[at] = 1;
    write_reject(&parse(&v1).unwrap_err(), &mut out).unwrap();
    let m = Message::from_vec(&out).unwrap();
    // 16 is BADVERS in an OPT context (hickory names it BADSIG).
    assert_eq!(u16::from(m.metadata.response_code), RCODE_BADVERS);
}

#[test]
fn aaaa_answers_are_authoritative_with_ttl_5_and_the_question_echoed() {
    let list = addrs(3);
    let p = query(77, "WEB.internal", TYPE_AAAA, None);
    let ans = Answer::Aaaa {
        addrs: &list,
        shuffle: true,
    };
    let (w, m) = respond(&p, &ans, 512);
    assert_eq!(w.rcode, RCODE_NOERROR);
    assert_eq!(m.metadata.id, 77);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_desired);
    assert!(!m.metadata.truncation);
    assert_eq!(m.queries[0].name().to_string(), "WEB.internal.");
    assert_eq!(m.answers.len(), 3);
    let mut got: Vec<[u8; 16]> = m
        .answers
        .iter()
        .map(|r| {
            assert_eq!(r.ttl, 5);
            assert_eq!(r.name.to_string(), "WEB.internal.");
            match &r.data {
                RData::AAAA(a) => a.0.octets(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    got.sort();
    assert_eq!(got, list);
    assert!(m.edns.is_none());
}

#[test]
fn a_computed_address_is_one_aaaa_record_also_for_any() {
    let addr: std::net::Ipv6Addr = "fdaa:0:18:b1a:1:5:a00:10".parse().unwrap();
    for qtype in [TYPE_AAAA, crate::answer::TYPE_ANY] {
        let p = query(9, "10-0-0-16.site-ams._site.internal", qtype, Some(1232));
        let (w, m) = respond(&p, &Answer::Address(addr.octets()), 1232);
        assert_eq!(w.rcode, RCODE_NOERROR);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 5);
        assert_eq!(
            m.answers[0].name.to_string(),
            "10-0-0-16.site-ams._site.internal."
        );
        let RData::AAAA(a) = &m.answers[0].data else {
            panic!("{:?}", m.answers[0]);
        };
        assert_eq!(a.0, addr);
    }
}

#[test]
fn shuffled_answers_change_order_between_queries() {
    let list = addrs(8);
    let p = query(1, "web.internal", TYPE_AAAA, None);
    let ans = Answer::Aaaa {
        addrs: &list,
        shuffle: true,
    };
    let firsts: std::collections::HashSet<String> = (0..100)
        .map(|_| respond(&p, &ans, 512).1.answers[0].data.to_string())
        .collect();
    assert!(firsts.len() > 3, "first address barely varies: {firsts:?}");
    let fixed = Answer::Aaaa {
        addrs: &list,
        shuffle: false,
    };
    for _ in 0..10 {
        let m = respond(&p, &fixed, 512).1;
        assert_eq!(m.answers[0].data.to_string(), "fdaa::");
        assert_eq!(m.answers[7].data.to_string(), "fdaa::7");
    }
}

#[test]
fn negative_answers_carry_the_soa() {
    let p = query(1, "nope.internal", TYPE_AAAA, Some(1232));
    let (w, m) = respond(&p, &Answer::NxDomain, 1232);
    assert_eq!(w.rcode, RCODE_NXDOMAIN);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    let soa = &m.authorities[0];
    assert_eq!(soa.name.to_string(), "internal.");
    assert_eq!(soa.ttl, 5);
    let RData::SOA(s) = &soa.data else {
        panic!("{soa:?}")
    };
    assert_eq!(s.mname.to_string(), "ns.internal.");
    assert_eq!(s.rname.to_string(), "hostmaster.internal.");
    assert_eq!((s.serial, s.minimum), (42, 5));
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_MAX));

    let (w, m) = respond(&p, &Answer::NoData, 1232);
    assert_eq!(w.rcode, RCODE_NOERROR);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    let apex = query(1, "internal", crate::answer::TYPE_SOA, None);
    let (_, m) = respond(&apex, &Answer::Soa, 512);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    assert_eq!(m.answers[0].name.to_string(), "internal.");
    assert!(m.authorities.is_empty());

    let (w, m) = respond(&p, &Answer::Refused(crate::scope::Refusal::Outsider), 1232);
    assert_eq!(w.rcode, RCODE_REFUSED);
    assert!(!m.metadata.authoritative);
}

#[test]
fn long_txt_is_several_strings_of_one_record() {
    let text = "x".repeat(600);
    let rdata = txt_rdata(&text);
    let p = query(1, "vms.web.internal", TYPE_TXT, None);
    let (_, m) = respond(&p, &Answer::Txt(&rdata), 65535);
    assert_eq!(m.answers.len(), 1);
    let RData::TXT(t) = &m.answers[0].data else {
        panic!()
    };
    let lens: Vec<usize> = t.txt_data.iter().map(|s| s.len()).collect();
    assert_eq!(lens, vec![255, 255, 90]);
}

#[test]
fn too_big_for_udp_is_truncated_with_tc() {
    let list = addrs(50);
    let ans = Answer::Aaaa {
        addrs: &list,
        shuffle: true,
    };
    let plain = query(1, "web.internal", TYPE_AAAA, None);
    let q = parse(&plain).unwrap();
    let (w, m) = respond(&plain, &ans, q.udp_limit());
    assert!(w.truncated);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    let edns = query(1, "web.internal", TYPE_AAAA, Some(4096));
    let q = parse(&edns).unwrap();
    let (w, m) = respond(&edns, &ans, q.udp_limit());
    assert!(w.truncated && m.metadata.truncation && m.edns.is_some());
    // 40 addresses fit in the EDNS limit.
    let forty = &list[..40];
    let (w, m) = respond(
        &edns,
        &Answer::Aaaa {
            addrs: forty,
            shuffle: false,
        },
        q.udp_limit(),
    );
    assert!(!w.truncated);
    assert_eq!(m.answers.len(), 40);
    // Over TCP, all of them.
    let (w, m) = respond(&plain, &ans, 65535);
    assert!(!w.truncated);
    assert_eq!(m.answers.len(), 50);
}

#[test]
fn an_address_set_bigger_than_64k_gets_what_fits_over_tcp() {
    let list = addrs(3000);
    let ans = Answer::Aaaa {
        addrs: &list,
        shuffle: true,
    };
    for edns in [None, Some(4096)] {
        let p = query(1, "web.internal", TYPE_AAAA, edns);
        let (w, m) = respond(&p, &ans, 65535);
        assert!(!w.truncated && !m.metadata.truncation);
        let n = m.answers.len();
        assert!(n > 2300 && n < 2342, "{n} records");
        let distinct: std::collections::HashSet<_> =
            m.answers.iter().map(|r| format!("{:?}", r.data)).collect();
        assert_eq!(distinct.len(), n);
        // Over UDP: TC, so the client comes back over TCP.
        let q = parse(&p).unwrap();
        let (w, _) = respond(&p, &ans, q.udp_limit());
        assert!(w.truncated);
    }
}

#[test]
fn a_txt_too_big_for_any_message_is_truncated_not_mangled() {
    let rdata = txt_rdata(&"y".repeat(70_000));
    let p = query(1, "_instances.internal", TYPE_TXT, None);
    let (w, m) = respond(&p, &Answer::Txt(&rdata), 65535);
    assert!(w.truncated && m.metadata.truncation && m.answers.is_empty());
}

#[test]
fn random_garbage_never_panics() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let list = addrs(3);
    let mut out = Vec::new();
    let base = query(1, "web.internal", TYPE_AAAA, Some(1232));
    for i in 0..50_000 {
        let mut p = if i % 2 == 0 {
            base.clone()
        } else {
            vec![0u8; (next() % 80) as usize]
        };
        let flips = next() % 6;
        for _ in 0..flips {
            if p.is_empty() {
                break;
            }
            let at = (next() as usize) % p.len();
            p[at] = next() as u8;
        }
        if next() % 4 == 0 {
            let n = (next() as usize) % (p.len() + 1);
            p.truncate(n);
        }
        match parse(&p) {
            Ok(q) => {
                let ans = Answer::Aaaa {
                    addrs: &list,
                    shuffle: true,
                };
                write_answer(&q, &ans, 1, q.udp_limit(), &mut out);
                assert!(Message::from_vec(&out).is_ok());
                let _ = ttl_offsets(&p, |_, _| {});
            }
            Err(r) => {
                write_reject(&r, &mut out);
            }
        }
    }
}

#[test]
fn ttl_offsets_find_every_record() {
    let list = addrs(2);
    let p = query(1, "web.internal", TYPE_AAAA, Some(1232));
    let q = parse(&p).unwrap();
    let mut out = Vec::new();
    write_answer(
        &q,
        &Answer::Aaaa {
            addrs: &list,
            shuffle: false,
        },
        1,
        1232,
        &mut out,
    );
    let mut seen = Vec::new();
    ttl_offsets(&out, |at, t| seen.push((t, out[at + 3]))).unwrap();
    assert_eq!(seen, vec![(28, 5), (28, 5), (41, 0)]);
}

/// Found by fuzz/fuzz_targets/dns_query: a 254-character name is 256 bytes on the wire
/// (a length byte per label and the root), over RFC 1035's 255. dnsd took it and echoed it
/// in its response, which no resolver can decode.
#[test]
fn a_question_name_over_255_wire_bytes_is_formerr() {
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let p = query(1, &longest, TYPE_AAAA, None);
    assert_eq!(p.len() - 12 - 4, 255);
    let q = parse(&p).unwrap();
    assert_eq!(q.name().len(), 253);
    let mut out = Vec::new();
    write_answer(&q, &Answer::NxDomain, 1, 512, &mut out);
    Message::from_vec(&out).unwrap();

    let over = format!("{longest}d");
    let p = query(1, &over, TYPE_AAAA, None);
    assert_eq!(p.len() - 12 - 4, 256);
    assert!(matches!(
        parse(&p),
        Err(Reject::Error {
            rcode: RCODE_FORMERR,
            ..
        })
    ));
}
