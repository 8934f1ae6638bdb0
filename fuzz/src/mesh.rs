//! Three meshd cores talking through memory, as in meshd/src/core/tests.rs: `gw`, org 1's
//! gateway hosting a machine; `site`, a site router (a plain WireGuard core) with
//! 2001:db8:5::/48 and 10.20.0.0/24 behind it, reached from the org through 4via6; `node`, a
//! mesh node of org 1. Sessions gw↔site and gw↔node are up once [`World::new`] returns.

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;
use meshd::core::{Core, Options, PeerUpdate, PublicKey, Transmit};
use registry::OrgNetwork;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

#[derive(Default)]
pub struct Wire {
    pub udp: Vec<(SocketAddr, Vec<u8>)>,
    pub tun: Vec<Vec<u8>>,
}

impl Transmit for Wire {
    fn send_udp(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        self.udp.push((to, datagram.to_vec()));
        true
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

pub struct Node {
    pub core: Core,
    pub addr: SocketAddr,
    pub public: PublicKey,
    pub tun: Vec<Vec<u8>>,
}

fn node(seed: u8, first_index: u32, options: Options) -> Node {
    let secret = StaticSecret::from([seed; 32]);
    let public = X25519Public::from(&secret).to_bytes();
    Node {
        core: Core::new(Some(secret), options, first_index),
        addr: SocketAddr::from(([10, 0, 0, seed], 51820)),
        public,
        tun: Vec::new(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn link(from: &mut Node, to: &Node, endpoint: bool, nets: &[&str]) {
    from.core.ensure_peer(Instant::now(), to.public);
    if endpoint {
        let update = PeerUpdate {
            endpoint: Some(to.addr),
            ..Default::default()
        };
        from.core.update_peer(&to.public, update);
    }
    let nets: Vec<IpNet> = nets.iter().map(|s| net(s)).collect();
    from.core.set_allowed_ips(&to.public, &nets);
}

pub const GATEWAY_MACHINE: &str = "fdaa:0:1:a7b:1:0:1:2";
pub const NODE_MACHINE: &str = "fdaa:0:1:a7b:2:0:1:2";
pub const SITE_HOST6: &str = "2001:db8:5::9";
/// The site's 4via6 /96: 10.20.0.5 behind it is fdaa:0:1:b1a:1:5:a14:5.
pub const VIA: &str = "fdaa:0:1:b1a:1:5::/96";

/// Which core a step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Gateway,
    Site,
    Node,
}

pub struct World {
    pub gw: Node,
    pub site: Node,
    pub node: Node,
    pub now: Instant,
}

impl World {
    pub fn new() -> World {
        // Every peer holds its tunnel for good here (idle_evict None): the links below are
        // made directly, not registered just in time.
        let gw_opts = Options {
            forward: true,
            org_isolation: true,
            idle_evict: None,
        };
        let mesh = Options {
            forward: false,
            org_isolation: true,
            idle_evict: None,
        };
        let mut gw = node(1, 100, gw_opts);
        let mut site = node(2, 200, Options::default());
        let mut n = node(3, 300, mesh);
        // The site is found by its handshake (no endpoint), as laptops and sites are.
        link(&mut gw, &site, false, &["fdaa:0:1:a7b:1:0:5:2/128", "2001:db8:5::/48"]);
        gw.core.set_site(
            &site.public,
            Some(VIA.parse().unwrap()),
            &["10.20.0.0/24".parse().unwrap()],
        );
        link(&mut gw, &n, true, &["fdaa:0:1:a7b:2::/80"]);
        gw.core
            .set_local_routes(&[net("fdaa:0:1:a7b:1::/80"), net("fdaa:0:2:a7b:1::/80")]);
        gw.core.set_org_policy(
            &[(net("2001:db8:5::/48"), OrgNetwork(1))],
            [(OrgNetwork(2), OrgNetwork(3))],
        );
        link(&mut site, &gw, true, &["::/0", "0.0.0.0/0"]);
        link(&mut n, &gw, true, &["fdaa:0:1::/48", "fdaa:0:2::/48"]);
        n.core.set_local_routes(&[net("fdaa:0:1:a7b:2::/80")]);
        let mut w = World {
            gw,
            site,
            node: n,
            now: Instant::now(),
        };
        // Handshakes, each carrying a first packet.
        w.tun(Who::Site, &udp6(SITE_HOST6, GATEWAY_MACHINE));
        w.tun(Who::Node, &udp6(NODE_MACHINE, GATEWAY_MACHINE));
        for (who, peer) in [(Who::Site, w.gw.public), (Who::Node, w.gw.public)] {
            let established = w.get(who).core.peer(&peer).and_then(|p| p.tunn.stats().0);
            assert!(established.is_some(), "{who:?}'s session with the gateway is up");
        }
        w
    }

    pub fn get(&mut self, who: Who) -> &mut Node {
        match who {
            Who::Gateway => &mut self.gw,
            Who::Site => &mut self.site,
            Who::Node => &mut self.node,
        }
    }

    fn by_addr(&mut self, addr: SocketAddr) -> Option<&mut Node> {
        [&mut self.gw, &mut self.site, &mut self.node]
            .into_iter()
            .find(|n| n.addr == addr)
    }

    /// `who` reads `packet` from its TUN; everything that follows is delivered.
    pub fn tun(&mut self, who: Who, packet: &[u8]) {
        let now = self.now;
        let mut out = Wire::default();
        self.get(who).core.handle_tun_packet(now, packet, &mut out);
        self.settle(who, out);
    }

    /// `who` receives `datagram` from `from`; everything that follows is delivered.
    pub fn datagram(&mut self, who: Who, from: SocketAddr, datagram: &[u8]) {
        let now = self.now;
        let mut out = Wire::default();
        self.get(who)
            .core
            .handle_datagram(now, from, datagram, &mut out);
        self.settle(who, out);
    }

    /// Every core's timers, at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        for who in [Who::Gateway, Who::Site, Who::Node] {
            let mut out = Wire::default();
            self.get(who).core.handle_timeout(now, &mut out);
            self.settle(who, out);
        }
    }

    /// Delivers what `from` sent, and the replies, until all are quiet (or a few rounds
    /// passed: a loop between cores is not this fixture's concern).
    fn settle(&mut self, from: Who, out: Wire) {
        let now = self.now;
        let from_addr = self.get(from).addr;
        self.get(from).tun.extend(out.tun);
        let mut pending: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = out
            .udp
            .into_iter()
            .map(|(to, d)| (from_addr, to, d))
            .collect();
        for _ in 0..8 {
            if pending.is_empty() {
                return;
            }
            let mut next = Vec::new();
            for (src, to, d) in pending.drain(..) {
                let Some(n) = self.by_addr(to) else {
                    continue;
                };
                let mut o = Wire::default();
                n.core.handle_datagram(now, src, &d, &mut o);
                n.tun.extend(o.tun);
                next.extend(o.udp.into_iter().map(|(t, d)| (to, t, d)));
            }
            pending = next;
        }
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

/// A UDP-in-IPv6 packet with an empty payload (the core checks no transport checksum).
pub fn udp6(src: &str, dst: &str) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let dst: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&53u16.to_be_bytes());
    p[44..46].copy_from_slice(&8u16.to_be_bytes());
    p
}
