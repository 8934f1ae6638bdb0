//! Datagrams and TUN packets against three meshd cores with sessions up: org 1's gateway,
//! a site router behind it (4via6, NAT64) and a mesh node. The input is a list of records
//! (`sixpn_fuzz::records`): a selector byte, a length, the bytes. Raw datagrams reach the
//! cores' handshake and session checks; TUN packets on the site and the node arrive at the
//! gateway encrypted, so arbitrary inner packets reach its source checks, org filter,
//! forwarding and NAT64 translation in both directions.
//!
//! Building the three cores and their handshakes costs far more than a step, so one world
//! serves 256 inputs before it is built again: a crash may need the inputs before it (run
//! the artifact with its neighbours, or alone first; most reproduce alone).
//!
//! Beyond not panicking: the gateway (mesh mode) writes to its kernel only IPv6 packets for
//! prefixes routed to itself.
#![no_main]

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meshd::core::{packet, Target};
use sixpn_fuzz::mesh::{Who, World};

static WORLD: Mutex<Option<(World, u32)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|(_, uses)| *uses >= 256) {
        *guard = Some((World::new(), 0));
    }
    let (w, uses) = guard.as_mut().expect("built above");
    *uses += 1;
    w.gw.tun.clear();
    let (gw, site, node) = (w.gw.addr, w.site.addr, w.node.addr);
    for (selector, bytes) in sixpn_fuzz::records(data).take(16) {
        match selector % 8 {
            0 => w.datagram(Who::Gateway, site, bytes),
            1 => w.datagram(Who::Gateway, node, bytes),
            2 => w.tun(Who::Gateway, bytes),
            3 => w.tun(Who::Site, bytes),
            4 => w.tun(Who::Node, bytes),
            5 => w.datagram(Who::Site, gw, bytes),
            6 => w.datagram(Who::Node, gw, bytes),
            _ => {
                let secs = bytes.first().copied().unwrap_or(1);
                let now = w.now + Duration::from_millis(u64::from(secs) * 250);
                w.tick(now);
            }
        }
    }
    for p in &w.gw.tun {
        let Some((_, dst)) = packet::addrs(p) else {
            panic!("gateway wrote a packet without addresses to its TUN: {p:02x?}");
        };
        assert!(matches!(dst, IpAddr::V6(_)), "IPv4 to the gateway's kernel: {p:02x?}");
        assert_eq!(w.gw.core.route(dst), Some(Target::Local), "not ours: {p:02x?}");
    }
});
