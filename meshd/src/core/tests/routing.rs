//! Allowed IPs, the org boundary, forwarding at gateways and local routes.

use std::time::Instant;

use super::*;

#[test]
fn org_mismatch_is_dropped_on_both_paths() {
    let (mut a, mut b) = pair();
    // Org 1 to org 2 from A's TUN.
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:2:a7b:2:5:0:2", b"x");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert!(out.udp.is_empty());
    assert_eq!(a.core.counters.drops(Drop::OrgMismatch), 1);

    // A core without the filter sends it; B still refuses it.
    a.core.options.org_isolation = false;
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_b.is_empty());
    assert_eq!(b.core.counters.drops(Drop::OrgMismatch), 1);
}

#[test]
fn source_outside_allowed_ips_is_dropped() {
    let (mut a, mut b) = pair();
    // A claims a source in B's own /80.
    let p = ip6("fdaa:0:1:a7b:2:9:0:2", "fdaa:0:1:a7b:2:5:0:2", b"x");
    a.core
        .set_allowed_ips(&b.public, &[net("fdaa:0:1:a7b:2:5:0:0/112")]);
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert!(tun_b.is_empty());
    assert_eq!(b.core.counters.drops(Drop::SourceNotAllowed), 1);
}

#[test]
fn changing_allowed_ips_keeps_the_session() {
    let (mut a, mut b) = pair();
    let p = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:2:5:0:2", b"x");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    pump(&mut a, &mut b, out);
    let handshakes = a.core.counters.handshakes;

    // A machine moved to B: its /112 in another node's /80 now routes to B.
    a.core.set_allowed_ips(
        &b.public,
        &[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:1:a7b:9:7:0:0/112")],
    );
    b.core
        .set_local_routes(&[net("fdaa:0:1:a7b:2::/80"), net("fdaa:0:1:a7b:9:7:0:0/112")]);
    let moved = ip6("fdaa:0:1:a7b:1:1:0:2", "fdaa:0:1:a7b:9:7:0:2", b"y");
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &moved, &mut out);
    assert_eq!(out.udp.len(), 1, "sent on the existing session");
    let (_, tun_b) = pump(&mut a, &mut b, out);
    assert_eq!(tun_b, vec![moved]);
    assert_eq!(a.core.counters.handshakes, handshakes);

    // Another peer comes and goes; B's session is untouched.
    let other = [7u8; 32];
    a.core.ensure_peer(Instant::now(), other);
    a.core
        .set_allowed_ips(&other, &[net("fdaa:0:1:a7b:3::/80")]);
    a.core.remove_peer(&other);
    let mut out = Wire::default();
    a.core.handle_tun_packet(Instant::now(), &p, &mut out);
    assert_eq!(out.udp.len(), 1);
    assert_eq!(out.udp[0].1[0], 4, "a data message, not a new handshake");
}

#[test]
fn gateway_forwards_between_peers_and_plain_nodes_do_not() {
    // laptop -> gateway -> node
    let gw_opts = Options {
        forward: true,
        org_isolation: true,
        idle_evict: None,
    };
    let mut laptop = node(10, 1000, Options::default());
    let mut gw = node(11, 1100, gw_opts);
    let mut n = node(12, 1200, MESH);
    let link = |from: &mut Node, to: &Node, nets: &[&str]| {
        from.core.ensure_peer(Instant::now(), to.public);
        from.core.update_peer(
            &to.public,
            PeerUpdate {
                endpoint: Some(to.addr),
                ..Default::default()
            },
        );
        let nets: Vec<IpNet> = nets.iter().map(|s| net(s)).collect();
        from.core.set_allowed_ips(&to.public, &nets);
    };
    link(&mut laptop, &gw, &["fdaa:0:1::/48"]);
    link(&mut gw, &laptop, &["fdaa:0:1:a7b:11:1:0:2/128"]);
    link(&mut gw, &n, &["fdaa:0:1:a7b:12::/80"]);
    link(&mut n, &gw, &["fdaa:0:1:a7b:11::/80"]);
    n.core.set_local_routes(&[net("fdaa:0:1:a7b:12::/80")]);

    let p = ip6("fdaa:0:1:a7b:11:1:0:2", "fdaa:0:1:a7b:12:4:0:2", b"req");
    let mut out = Wire::default();
    laptop.core.handle_tun_packet(Instant::now(), &p, &mut out);
    // laptop <-> gw handshake and data; what gw sends to n goes on the second pump.
    let now = Instant::now();
    let mut to_gw = out.udp;
    let mut to_n = Vec::new();
    let mut reached_n = Vec::new();
    for _ in 0..10 {
        let mut back_to_laptop = Vec::new();
        for (_, d) in to_gw.drain(..) {
            let mut o = Wire::default();
            gw.core.handle_datagram(now, laptop.addr, &d, &mut o);
            for (to, d) in o.udp {
                if to == n.addr {
                    to_n.push(d)
                } else {
                    back_to_laptop.push(d)
                }
            }
        }
        for d in back_to_laptop {
            let mut o = Wire::default();
            laptop.core.handle_datagram(now, gw.addr, &d, &mut o);
            to_gw.extend(o.udp);
        }
        let mut from_n = Vec::new();
        for d in to_n.drain(..) {
            let mut o = Wire::default();
            n.core.handle_datagram(now, gw.addr, &d, &mut o);
            reached_n.extend(o.tun);
            from_n.extend(o.udp);
        }
        for (_, d) in from_n {
            let mut o = Wire::default();
            gw.core.handle_datagram(now, n.addr, &d, &mut o);
            for (to, d) in o.udp {
                if to == n.addr {
                    to_n.push(d)
                }
            }
        }
    }
    assert_eq!(reached_n, vec![p]);
    assert_eq!(gw.core.counters.forwarded, 1);
}

#[test]
fn local_routes_change_only_what_differs_and_win_back_their_prefix() {
    let mut core = Core::new(Some(StaticSecret::from([1u8; 32])), Options::default(), 1);
    let a: IpNet = "fdaa:0:1:a7b:1::/80".parse().unwrap();
    let b: IpNet = "fdaa:0:2:a7b:1::/80".parse().unwrap();
    let in_a: IpAddr = "fdaa:0:1:a7b:1::9".parse().unwrap();
    let in_b: IpAddr = "fdaa:0:2:a7b:1::9".parse().unwrap();
    core.set_local_routes(&[a, b]);
    assert_eq!(core.route(in_a), Some(Target::Local));
    assert_eq!(core.route(in_b), Some(Target::Local));
    core.set_local_routes(&[b]);
    assert_eq!(
        core.route(in_a),
        None,
        "a prefix no longer local is no longer routed"
    );
    assert_eq!(core.route(in_b), Some(Target::Local));
    // A peer that took exactly a local prefix loses it when the local set is given again.
    let key = [5u8; 32];
    core.ensure_peer(Instant::now(), key);
    core.add_allowed_ip(&key, b);
    assert!(matches!(core.route(in_b), Some(Target::Peer(_))));
    core.set_local_routes(&[b]);
    assert_eq!(core.route(in_b), Some(Target::Local));
    assert!(!core.peer(&key).unwrap().allowed_ips.contains(&b));
    core.set_local_routes(&[]);
    assert_eq!(core.route(in_b), None);
}
