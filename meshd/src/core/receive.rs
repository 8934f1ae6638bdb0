//! Network → TUN: find the peer (receiver index, or static key for initiations),
//! decapsulate, check the source against the peer's allowed IPs and the org boundary, then
//! write to the TUN or (gateways) forward to the peer that routes the destination.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::send::{encapsulate, send};
use super::{nat64, packet, Core, Drop, Endpoint, PeerIndex, Target, Transmit, COOKIE_REPLY, DATA};

impl Core {
    /// A WireGuard datagram from the network: a UDP datagram (`from` a `SocketAddr`), or
    /// one framed on a gateway's WebSocket connection.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: impl Into<Endpoint>,
        datagram: &[u8],
        out: &mut impl Transmit,
    ) {
        let from: Endpoint = from.into();
        self.counters.count_rx(from.transport(), datagram.len());
        if !self.has_key {
            return self.counters.drop(Drop::NoKey);
        }
        // Set when this initiation made the peer's tunnel: undone if the tunnel refuses it.
        let mut made = false;
        let index = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return self.counters.drop(Drop::Malformed),
            Ok(Packet::HandshakeInit(init)) => {
                // MACs and the load check first: they are cheap, the DH below is not.
                if let Err(why) =
                    self.identity
                        .admit_handshake(now, from, datagram, &mut self.buf, out)
                {
                    return self.counters.drop(why);
                }
                let half = match parse_handshake_anon(
                    &self.identity.private,
                    &self.identity.public,
                    &init,
                ) {
                    Ok(h) => h,
                    Err(_) => return self.counters.drop(Drop::Decrypt),
                };
                let key = half.peer_static_public;
                match self.peers.index_of(&key) {
                    Some(i) => i,
                    None => match self.activate(now, &key) {
                        Some(i) => {
                            made = true;
                            i
                        }
                        None => return self.counters.drop(Drop::UnknownPeer),
                    },
                }
            }
            Ok(Packet::HandshakeResponse(p)) => {
                if let Err(why) =
                    self.identity
                        .admit_handshake(now, from, datagram, &mut self.buf, out)
                {
                    return self.counters.drop(why);
                }
                p.receiver_idx >> 8
            }
            Ok(Packet::PacketCookieReply(p)) => p.receiver_idx >> 8,
            Ok(Packet::PacketData(p)) => p.receiver_idx >> 8,
        };
        let Some(peer) = self.peers.get_mut(index) else {
            // Data for a registered peer whose tunnel was evicted: it is back.
            if datagram.first() == Some(&DATA) && self.registered.holds_index(index) {
                return self.wake(now, from, index, datagram.len(), out);
            }
            return self.counters.drop(Drop::UnknownIndex);
        };
        let result = peer
            .tunn
            .decapsulate(Some(from.ip()), datagram, &mut self.buf);
        if !matches!(result, TunnResult::Err(_)) {
            // Everything the session accepted, handshakes and keepalives included, as
            // wireguard-go counts it.
            peer.rx_bytes += datagram.len() as u64;
            if let Some(j) = peer.just_in_time.as_mut() {
                j.last_received = now;
                // A response or data proves the keys; an initiation may be a replay.
                j.confirmed |= matches!(datagram.first(), Some(2 | 4));
            }
        } else if made {
            // Anyone may name a registered key in an initiation; only its holder gets a
            // tunnel that stays.
            let why = match &result {
                TunnResult::Err(e) => Drop::of(e),
                _ => Drop::Decrypt,
            };
            let key = peer.public_key;
            self.evict(&key, now);
            return self.counters.drop(why);
        }
        let delivered = match result {
            TunnResult::Done => None,
            TunnResult::Err(e) => {
                tracing::trace!(peer = %peer.name, error = ?e, "datagram dropped");
                self.counters.drop(Drop::of(&e));
                None
            }
            TunnResult::WriteToNetwork(reply) => {
                if reply.first() != Some(&COOKIE_REPLY) {
                    // Authenticated: the peer is where this came from (roaming).
                    peer.endpoint = Some(from);
                    self.counters.handshakes += 1;
                }
                send(&mut self.counters, peer, now, from, reply, out);
                // Packets queued while the handshake ran can go now.
                while let TunnResult::WriteToNetwork(d) =
                    peer.tunn.decapsulate(None, &[], &mut self.buf)
                {
                    send(&mut self.counters, peer, now, from, d, out);
                }
                None
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                peer.endpoint = Some(from);
                Some(p.len())
            }
        };
        if let Some(len) = delivered {
            self.deliver(now, index, len, out);
        }
    }

    /// A packet `from` decapsulated into `self.buf[..len]`: check it, then hand it to the
    /// TUN or (gateways) to the peer that routes its destination.
    fn deliver(&mut self, now: Instant, from: PeerIndex, len: usize, out: &mut impl Transmit) {
        let buf = std::mem::take(&mut self.buf);
        self.deliver_packet(now, from, &buf[..len], out);
        self.buf = buf;
    }

    fn deliver_packet(
        &mut self,
        now: Instant,
        from: PeerIndex,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let Some((src, dst)) = packet::addrs(packet) else {
            return self.counters.drop(Drop::Malformed);
        };
        if let (IpAddr::V4(src4), IpAddr::V4(dst4)) = (src, dst) {
            if self.options.org_isolation {
                return self.translate_in(now, from, src4, dst4, packet, out);
            }
        }
        if self.router.lookup(src) != Some(Target::Peer(from)) {
            return self.counters.drop(Drop::SourceNotAllowed);
        }
        self.pass(now, from, src, dst, packet, out);
    }

    /// A packet from peer `from` whose source is checked: the org boundary, then on.
    fn pass(
        &mut self,
        now: Instant,
        from: PeerIndex,
        src: IpAddr,
        dst: IpAddr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        if self.options.org_isolation {
            if let Err(why) = self.policy.check(src, dst) {
                return self.counters.drop(why);
            }
        }
        match self.router.lookup(dst) {
            Some(Target::Peer(to)) if self.options.forward && to != from => {
                let Some(peer) = self.peers.get_mut(to) else {
                    let why = self.absent(to);
                    return self.counters.drop(why);
                };
                self.counters.forwarded += 1;
                encapsulate(&mut self.counters, peer, now, packet, &mut self.fwd, out);
            }
            Some(Target::Via(to)) if self.options.forward => {
                self.counters.forwarded += 1;
                self.translate_out(now, to, src, packet, out);
            }
            Some(Target::Peer(_) | Target::Via(_)) if self.options.org_isolation => {
                // Mesh mode without forwarding: not ours, and not ours to pass on.
                self.counters.drop(Drop::NoForward)
            }
            // Mesh mode knows every prefix of this host; nothing else goes to its kernel.
            None if self.options.org_isolation => self.counters.drop(Drop::NoRoute),
            _ => {
                self.counters.tun_tx_packets += 1;
                self.counters.tun_tx_bytes += packet.len() as u64;
                out.write_tun(packet);
            }
        }
    }

    /// An IPv4 packet from a site's LAN to a pool address: on into the mesh as IPv6 from the
    /// LAN host's 4via6 address to the source the pool address stands for.
    fn translate_in(
        &mut self,
        now: Instant,
        from: PeerIndex,
        src4: Ipv4Addr,
        dst4: Ipv4Addr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let Some(peer) = self.peers.get(from) else {
            return self.counters.drop(Drop::UnknownIndex);
        };
        let Some(via) = peer
            .via
            .filter(|_| peer.site_v4.iter().any(|n| n.contains(&src4)))
        else {
            return self.counters.drop(Drop::SourceNotAllowed);
        };
        let Some(dst6) = self.nat.inbound(dst4) else {
            return self.counters.drop(Drop::NoBinding);
        };
        let src6 = registry::addr::via_addr(via, src4);
        let mut buf = std::mem::take(&mut self.nat_buf);
        match nat64::four_to_six(packet, src6, dst6, &mut buf) {
            Ok(n) => self.pass(now, from, src6.into(), dst6.into(), &buf[..n], out),
            Err(_) => self.counters.drop(Drop::NotTranslated),
        }
        self.nat_buf = buf;
    }
}
