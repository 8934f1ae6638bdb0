//! TUN → peer: route the packet, check the org boundary, encapsulate and send (IPv6 to a
//! site's 4via6 address is translated to IPv4 first).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use boringtun::noise::TunnResult;

use super::{
    nat64, packet, transmit, Core, Counters, Drop, Endpoint, Peer, PeerIndex, Target, Transmit,
};

impl Core {
    /// A packet a local process sent into the TUN.
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut impl Transmit) {
        self.counters.tun_rx_packets += 1;
        self.counters.tun_rx_bytes += packet.len() as u64;
        if !self.has_key {
            return self.counters.drop(Drop::NoKey);
        }
        let Some((src, dst)) = packet::addrs(packet) else {
            return self.counters.drop(Drop::Malformed);
        };
        if self.options.org_isolation {
            if let Err(why) = self.policy.check(src, dst) {
                tracing::trace!(%src, %dst, reason = why.as_str(), "packet from the TUN dropped");
                return self.counters.drop(why);
            }
        }
        match self.router.lookup(dst) {
            Some(Target::Peer(index)) => {
                let Some(peer) = self.peers.get_mut(index) else {
                    let why = self.absent(index);
                    return self.counters.drop(why);
                };
                encapsulate(&mut self.counters, peer, now, packet, &mut self.buf, out);
            }
            Some(Target::Via(index)) => self.translate_out(now, index, src, packet, out),
            _ => self.counters.drop(Drop::NoRoute),
        }
    }

    /// An org's IPv6 packet to a 4via6 address of site `to`: out to the site as IPv4, from
    /// the pool address that stands for its source.
    pub(super) fn translate_out(
        &mut self,
        now: Instant,
        to: PeerIndex,
        src: IpAddr,
        packet: &[u8],
        out: &mut impl Transmit,
    ) {
        let (IpAddr::V6(src6), Some(dst4)) = (src, packet.get(36..40)) else {
            return self.counters.drop(Drop::NotTranslated);
        };
        let dst4 = Ipv4Addr::new(dst4[0], dst4[1], dst4[2], dst4[3]);
        let Some(peer) = self.peers.get_mut(to) else {
            let why = self.absent(to);
            return self.counters.drop(why);
        };
        if !peer.site_v4.iter().any(|n| n.contains(&dst4)) {
            return self.counters.drop(Drop::NotTranslated);
        }
        let src4 = self.nat.outbound(src6);
        match nat64::six_to_four(packet, src4, &mut self.nat_buf) {
            Ok(n) => encapsulate(
                &mut self.counters,
                peer,
                now,
                &self.nat_buf[..n],
                &mut self.fwd,
                out,
            ),
            Err(_) => self.counters.drop(Drop::NotTranslated),
        }
    }
}

pub(super) fn send(
    counters: &mut Counters,
    peer: &mut Peer,
    now: Instant,
    to: Endpoint,
    datagram: &[u8],
    out: &mut impl Transmit,
) {
    if transmit(out, to, datagram) {
        counters.count_tx(to.transport(), datagram.len());
        peer.tx_bytes += datagram.len() as u64;
        peer.last_sent = Some(now);
    } else {
        counters.drop(Drop::SendFailed);
    }
}

pub(super) fn encapsulate(
    counters: &mut Counters,
    peer: &mut Peer,
    now: Instant,
    packet: &[u8],
    buf: &mut [u8],
    out: &mut impl Transmit,
) {
    match peer.tunn.encapsulate(packet, buf) {
        TunnResult::WriteToNetwork(d) => match peer.endpoint {
            Some(ep) => send(counters, peer, now, ep, d, out),
            None => counters.drop(Drop::NoEndpoint),
        },
        TunnResult::Err(e) => counters.drop(Drop::of(&e)),
        // Queued until the handshake completes.
        _ => {}
    }
}
