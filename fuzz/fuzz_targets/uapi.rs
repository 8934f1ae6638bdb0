//! meshd's UAPI handler (`uapi::handle_request`) on a core with a key and a peer: a request
//! as text (any request, though the seeds are `set=1`). Afterwards `get=1` must still answer
//! errno=0 with keys in hex and allowed IPs that parse.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use meshd::core::{Core, Options, PeerUpdate};
use meshd::uapi::{handle_request, Resolved};
use x25519_dalek::{PublicKey, StaticSecret};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = std::str::from_utf8(data) else {
        return;
    };
    let options = Options {
        forward: data.len() % 2 == 0,
        org_isolation: false,
        // A third of the inputs meet a gateway holding tunnels just in time (`get=evicted`).
        idle_evict: (data.len() % 3 == 0).then(|| std::time::Duration::from_secs(180)),
    };
    let mut core = Core::new(Some(StaticSecret::from([1; 32])), options, 1);
    let peer = PublicKey::from(&StaticSecret::from([2; 32])).to_bytes();
    let now = Instant::now();
    core.ensure_peer(now, peer);
    core.update_peer(
        &peer,
        PeerUpdate {
            endpoint: Some("192.0.2.2:51820".parse().unwrap()),
            ..Default::default()
        },
    );
    core.set_allowed_ips(&peer, &["fdaa:0:1::/48".parse().unwrap()]);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (response, _effects) = handle_request(&mut core, request, &Resolved::default(), now, wall);
    assert!(response.contains("errno=") && response.ends_with("\n\n"), "{response:?}");
    let (got, _) = handle_request(&mut core, "get=1\n", &Resolved::default(), now, wall);
    assert!(got.ends_with("errno=0\n\n"), "{got:?}");
    for line in got.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        match key {
            "private_key" | "public_key" | "preshared_key" => {
                assert!(value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()), "{line:?}")
            }
            "allowed_ip" => {
                value.parse::<ipnet::IpNet>().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            }
            "endpoint" => {
                value.parse::<std::net::SocketAddr>().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            }
            _ => {}
        }
    }
});
