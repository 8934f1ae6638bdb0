//! Raw bytes as a query to dnsd's answer path (`server::handle`), from one of several source
//! addresses, over UDP or TCP, against a fixed snapshot. Every response dnsd writes must
//! decode with hickory-proto, echo the query's id, and (over UDP) fit the client's limit.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use dnsd::server::{handle, Shared, Step, Transport};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    shared: Shared,
    sources: Vec<SocketAddr>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        shared: sixpn_fuzz::dns::shared(),
        sources: sixpn_fuzz::dns::sources(&sixpn_fuzz::dns::snapshot()),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, packet)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let src = f.sources[usize::from(how & 0x7f) % f.sources.len()];
    let transport = if how & 0x80 == 0 { Transport::Udp } else { Transport::Tcp };
    let mut out = Vec::new();
    let step = handle(&f.shared, packet, src, transport, sixpn_fuzz::dns::clock(), &mut out);
    if step != Step::Reply {
        assert!(out.is_empty(), "{step:?} but wrote {out:02x?}");
        return;
    }
    let msg = match Message::from_vec(&out) {
        Ok(m) => m,
        Err(e) => panic!("response does not decode: {e}\nquery {packet:02x?}\nresponse {out:02x?}"),
    };
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(out[0..2], packet[0..2], "the response echoes the id");
    if let Ok(q) = dnsd::wire::parse(packet) {
        if transport == Transport::Udp {
            assert!(out.len() <= q.udp_limit(), "{} bytes for a {}-byte client", out.len(), q.udp_limit());
        }
        assert_eq!(&out[12..12 + q.question.len()], q.question, "the question is echoed");
    }
});
