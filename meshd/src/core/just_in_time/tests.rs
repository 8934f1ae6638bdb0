//! A gateway core and laptop cores talking through memory: tunnels made from the first
//! initiation, refused keys, eviction, the return of an evicted peer, removal.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::super::{Core, Drop, Options, PeerUpdate, PublicKey, Registration};
use super::UNCONFIRMED_EVICT;

use super::super::tests::{ip6_packet as ip6, Wire};

const IDLE: Duration = Duration::from_secs(30);
const MACHINE: &str = "fdaa:0:1:a7b:1:0:1:2";

struct Side {
    core: Core,
    addr: SocketAddr,
    public: PublicKey,
}

fn side(n: u8, first_index: u32, options: Options) -> Side {
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    Side {
        public: X25519Public::from(&secret).to_bytes(),
        core: Core::new(Some(secret), options, first_index),
        addr: format!("10.0.0.{n}:51820").parse().unwrap(),
    }
}

fn gateway() -> Side {
    let mut gw = side(
        1,
        100,
        Options {
            forward: true,
            org_isolation: true,
            idle_evict: Some(IDLE),
        },
    );
    gw.core
        .set_local_routes(&["fdaa:0:1:a7b:1::/80".parse().unwrap()]);
    gw
}

fn laptop_addr(n: u8) -> Ipv6Addr {
    format!("fdaa:0:1:a7b:1:0:9:{n}").parse().unwrap()
}

/// A laptop (plain WireGuard peer) with the gateway as its peer for the org's /48.
fn laptop(n: u8, gw: &Side) -> Side {
    let mut l = side(10 + n, 1000 * u32::from(n), Options::default());
    l.core.ensure_peer(Instant::now(), gw.public);
    l.core.update_peer(
        &gw.public,
        PeerUpdate {
            endpoint: Some(gw.addr),
            ..Default::default()
        },
    );
    l.core
        .set_allowed_ips(&gw.public, &["fdaa:0:1::/48".parse().unwrap()]);
    l
}

fn register(gw: &mut Side, l: &Side, n: u8) {
    let net = IpNet::V6(ipnet::Ipv6Net::new(laptop_addr(n), 128).unwrap());
    gw.core.register_peer(
        l.public,
        Registration::new(&format!("peer/acme/l{n}"), &[net], None, &[]),
    );
}

/// Carries datagrams both ways until quiet; returns what reached the gateway's TUN.
fn pump(
    gw: &mut Side,
    l: &mut Side,
    now: Instant,
    to_gw: Vec<(SocketAddr, Vec<u8>)>,
) -> Vec<Vec<u8>> {
    let mut tun = Vec::new();
    let mut to_gw = to_gw;
    for _ in 0..10 {
        if to_gw.is_empty() {
            break;
        }
        let mut to_l = Vec::new();
        for (_, d) in to_gw.drain(..) {
            let mut o = Wire::default();
            gw.core.handle_datagram(now, l.addr, &d, &mut o);
            tun.extend(o.tun);
            to_l.extend(o.udp.into_iter().map(|(_, d)| d));
        }
        for d in to_l {
            let mut o = Wire::default();
            l.core.handle_datagram(now, gw.addr, &d, &mut o);
            to_gw.extend(o.udp);
        }
    }
    tun
}

/// The laptop sends one packet to the machine behind the gateway.
fn send(gw: &mut Side, l: &mut Side, n: u8, now: Instant, payload: &[u8]) -> Vec<Vec<u8>> {
    let p = ip6(laptop_addr(n), MACHINE.parse().unwrap(), payload);
    let mut out = Wire::default();
    l.core.handle_tun_packet(now, &p, &mut out);
    pump(gw, l, now, out.udp)
}

#[test]
fn a_registered_key_gets_a_tunnel_from_its_first_initiation_and_others_get_nothing() {
    let mut gw = gateway();
    let mut l1 = laptop(1, &gw);
    let mut stranger = laptop(2, &gw);
    register(&mut gw, &l1, 1);
    assert_eq!((gw.core.registered_count(), gw.core.peers().len()), (1, 0));

    let now = Instant::now();
    let got = send(&mut gw, &mut l1, 1, now, b"hello");
    assert_eq!(
        got.len(),
        1,
        "the first packet arrives once the tunnel is made"
    );
    assert_eq!(gw.core.active_count(), 1);
    assert_eq!(gw.core.counters.tunnels_made, 1);
    let peer = gw
        .core
        .peer(&l1.public)
        .expect("listed as a peer (wg show)");
    assert_eq!(peer.name, "peer/acme/l1");
    assert!(peer.just_in_time.is_some_and(|j| j.confirmed));

    // A key nobody registered: no tunnel, no reply, a counted drop.
    let got = send(&mut gw, &mut stranger, 2, now, b"let me in");
    assert!(got.is_empty());
    assert_eq!(gw.core.peers().len(), 1);
    assert!(gw.core.counters.drops(Drop::UnknownPeer) >= 1);
}

#[test]
fn packets_to_a_registered_peer_without_a_tunnel_are_dropped_as_peer_inactive() {
    let mut gw = gateway();
    let l1 = laptop(1, &gw);
    register(&mut gw, &l1, 1);
    let p = ip6(MACHINE.parse().unwrap(), laptop_addr(1), b"to the laptop");
    let mut out = Wire::default();
    gw.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert!(out.udp.is_empty(), "the gateway does not initiate");
    assert_eq!(gw.core.counters.drops(Drop::PeerInactive), 1);
    assert_eq!(gw.core.peers().len(), 0);
    // An address nobody registered is still no_route.
    let p = ip6(MACHINE.parse().unwrap(), laptop_addr(9), b"?");
    gw.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert_eq!(gw.core.counters.drops(Drop::NoRoute), 1);
}

#[test]
fn an_idle_tunnel_is_evicted_and_its_peer_comes_back_without_losing_more_than_one_packet() {
    let mut gw = gateway();
    let mut l1 = laptop(1, &gw);
    register(&mut gw, &l1, 1);
    let t0 = Instant::now();
    // The gateway's wall clock, chosen: t0 is this Unix second.
    const T0_UNIX: u64 = 1_800_000_000;
    gw.core
        .set_wall_clock(t0, std::time::UNIX_EPOCH + Duration::from_secs(T0_UNIX));
    assert_eq!(send(&mut gw, &mut l1, 1, t0, b"one").len(), 1);

    // Quiet for less than IDLE: kept; for IDLE: evicted, routes kept.
    let mut out = Wire::default();
    gw.core.handle_timeout(t0 + IDLE / 2, &mut out);
    assert_eq!(gw.core.active_count(), 1);
    gw.core
        .handle_timeout(t0 + IDLE + Duration::from_secs(1), &mut out);
    assert_eq!(gw.core.active_count(), 0);
    assert!(
        gw.core.peer(&l1.public).is_none(),
        "wg show no longer lists it"
    );
    assert_eq!(gw.core.counters.tunnels_evicted, 1);
    assert_eq!(gw.core.registered_count(), 1);
    // `wg show` (get=1) no longer lists it; get=evicted says when it was last seen.
    let ask = |core: &mut Core, req: &str| {
        crate::uapi::handle_request(
            core,
            req,
            &Default::default(),
            Instant::now(),
            std::time::SystemTime::now(),
        )
        .0
    };
    let key_hex = crate::uapi::hex(&l1.public);
    assert!(!ask(&mut gw.core, "get=1\n").contains(&key_hex));
    let evicted = ask(&mut gw.core, "get=evicted\n");
    let secs: u64 = evicted
        .strip_prefix(&format!("public_key={key_hex}\nlast_handshake_time_sec="))
        .and_then(|r| r.split('\n').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{evicted}"));
    // Evicted at t0 + IDLE + 1 s on the chosen clock; boringtun measures the handshake's
    // age on its own (real) clock, a few milliseconds here.
    let evicted_at = T0_UNIX + IDLE.as_secs() + 1;
    assert!(
        (evicted_at - 1..=evicted_at).contains(&secs),
        "{secs} vs {evicted_at}"
    );
    assert!(evicted.ends_with("errno=0\n\n"));

    // The laptop still holds its session and sends on it: that packet is lost, but the
    // gateway answers with a handshake, and the next packet arrives.
    let t1 = t0 + IDLE + Duration::from_secs(2);
    let got = send(&mut gw, &mut l1, 1, t1, b"two");
    assert!(got.is_empty());
    assert_eq!(gw.core.counters.wakes, 1);
    assert_eq!(gw.core.active_count(), 1);
    let got = send(&mut gw, &mut l1, 1, t1, b"three");
    assert_eq!(got.len(), 1, "the session the gateway started carries data");
    assert!(got[0].ends_with(b"three"));
    assert!(
        !ask(&mut gw.core, "get=evicted\n").contains(&key_hex),
        "active again"
    );
}

#[test]
fn a_keepalive_on_an_evicted_session_does_not_wake_the_peer() {
    let mut gw = gateway();
    let mut l1 = laptop(1, &gw);
    register(&mut gw, &l1, 1);
    let t0 = Instant::now();
    send(&mut gw, &mut l1, 1, t0, b"one");
    let mut out = Wire::default();
    gw.core.handle_timeout(t0 + IDLE * 2, &mut out);
    assert_eq!(gw.core.active_count(), 0);
    let mut out = Wire::default();
    l1.core.handle_tun_packet(t0, &[], &mut out);
    // An empty packet is not IP: the core drops it; make the keepalive with Tunn directly.
    let peer_index = l1.core.peers().index_of(&gw.public).unwrap();
    let mut buf = vec![0u8; 256];
    let tunn = &mut l1.core.peers.get_mut(peer_index).unwrap().tunn;
    let boringtun::noise::TunnResult::WriteToNetwork(k) = tunn.encapsulate(&[], &mut buf) else {
        panic!("no keepalive");
    };
    assert_eq!(k.len(), 32);
    let k = k.to_vec();
    let mut out = Wire::default();
    gw.core.handle_datagram(t0, l1.addr, &k, &mut out);
    assert!(out.udp.is_empty());
    assert_eq!(gw.core.active_count(), 0);
    assert_eq!(gw.core.counters.drops(Drop::PeerInactive), 1);
}

#[test]
fn a_replayed_initiation_makes_a_tunnel_that_goes_when_nothing_confirms_it() {
    let mut gw = gateway();
    let mut l1 = laptop(1, &gw);
    register(&mut gw, &l1, 1);
    let t0 = Instant::now();
    let p = ip6(laptop_addr(1), MACHINE.parse().unwrap(), b"x");
    let mut out = Wire::default();
    l1.core.handle_tun_packet(t0, &p, &mut out);
    let init = out.udp[0].1.clone();
    assert_eq!(init[0], 1);
    pump(&mut gw, &mut l1, t0, out.udp);
    let mut w = Wire::default();
    gw.core.handle_timeout(t0 + IDLE * 2, &mut w);
    assert_eq!(gw.core.active_count(), 0);

    // Someone replays the captured initiation: a tunnel, but never confirmed.
    let t1 = t0 + IDLE * 2;
    let mut w = Wire::default();
    gw.core.handle_datagram(
        t1,
        "192.0.2.9:4444".parse::<std::net::SocketAddr>().unwrap(),
        &init,
        &mut w,
    );
    assert_eq!(gw.core.active_count(), 1);
    gw.core
        .handle_timeout(t1 + UNCONFIRMED_EVICT - Duration::from_secs(1), &mut w);
    assert_eq!(gw.core.active_count(), 1);
    gw.core
        .handle_timeout(t1 + UNCONFIRMED_EVICT + Duration::from_secs(1), &mut w);
    assert_eq!(
        gw.core.active_count(),
        0,
        "an unconfirmed tunnel does not stay"
    );
}

#[test]
fn removing_a_registered_peer_cuts_its_active_tunnel_and_routes() {
    let mut gw = gateway();
    let mut l1 = laptop(1, &gw);
    let l2 = laptop(2, &gw);
    register(&mut gw, &l1, 1);
    register(&mut gw, &l2, 2);
    let t0 = Instant::now();
    assert_eq!(send(&mut gw, &mut l1, 1, t0, b"one").len(), 1);

    // An update (new route) keeps the session.
    let routes: Vec<IpNet> = vec![
        IpNet::V6(ipnet::Ipv6Net::new(laptop_addr(1), 128).unwrap()),
        "2001:db8:7::/48".parse().unwrap(),
    ];
    let r = gw.core.register_peer(
        l1.public,
        Registration::new("peer/acme/l1", &routes, None, &[]),
    );
    assert_eq!(r, super::Registering::Updated);
    assert_eq!(gw.core.peer(&l1.public).unwrap().allowed_ips.len(), 2);
    let handshakes = gw.core.counters.handshakes;
    assert_eq!(send(&mut gw, &mut l1, 1, t0, b"two").len(), 1);
    assert_eq!(gw.core.counters.handshakes, handshakes, "same session");

    assert!(gw.core.remove_peer(&l1.public));
    assert_eq!(gw.core.registered_count(), 1);
    assert!(gw.core.peer(&l1.public).is_none());
    assert!(
        send(&mut gw, &mut l1, 1, t0, b"three").is_empty(),
        "cut off"
    );
    // Its routes went with it; the other peer's stay.
    assert_eq!(
        gw.core.route(laptop_addr(1).into()),
        Some(super::super::Target::Local)
    );
    assert!(gw.core.route("2001:db8:7::1".parse().unwrap()).is_none());
    assert!(matches!(
        gw.core.route(laptop_addr(2).into()),
        Some(super::super::Target::Peer(_))
    ));
}

#[test]
fn many_registered_peers_cost_no_tunnels_and_keep_their_own_indexes() {
    let mut gw = gateway();
    for i in 0..1000u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let addr = Ipv6Addr::from(u128::from(laptop_addr(0)) + u128::from(i) + 0x1000);
        let net = IpNet::V6(ipnet::Ipv6Net::new(addr, 128).unwrap());
        gw.core
            .register_peer(key, Registration::new("peer/acme/x", &[net], None, &[]));
    }
    assert_eq!(gw.core.registered_count(), 1000);
    assert_eq!(gw.core.peers().len(), 0);
    // A UAPI-made peer gets an index no registration holds.
    gw.core.ensure_peer(Instant::now(), [0xee; 32]);
    let i = gw.core.peer(&[0xee; 32]).unwrap().index;
    assert!(!gw.core.registered.holds_index(i));
}
