//! What the core produces while the shell holds its lock is gathered here and written after
//! the lock is let go, with as few system calls as the kernel allows: datagrams in a
//! [`UdpBatch`] (`udp`), packets for the TUN in a [`TunBatch`] (`tun`), and a gateway's
//! WebSocket datagrams framed per connection.

use std::net::SocketAddr;

use tun_rs::SyncDevice;

use crate::core::{ConnectionId, Transmit};
use crate::tun::{self, TunBatch, TUN_BATCH};
use crate::udp::{Socket, UdpBatch};

/// Datagrams gathered before a flush, likewise.
const UDP_BATCH: usize = 256;

/// The most bytes of frames one WebSocket message carries; the next frame starts another
/// message. A laptop's WebSocket library (tungstenite, gorilla) holds a whole message
/// before it hands any of it on, so this is what a message costs its reader: whole
/// flushes of a busy TUN (up to the queue's megabyte) cost a laptop megabytes of RSS.
/// 64 KiB is still dozens of full-size datagrams per message.
pub const WEBSOCKET_MESSAGE_BYTES: usize = 64 << 10;

/// Datagrams for WebSocket connections (a gateway's), framed, in buffers of at most
/// [`WEBSOCKET_MESSAGE_BYTES`] per connection (a frame is never split): each becomes one
/// WebSocket message when the shell flushes.
#[derive(Default)]
pub struct WebSocketBatch {
    /// Connection, its frames, how many datagrams they hold; a connection's buffers in the
    /// order they are to go out.
    items: Vec<(ConnectionId, Vec<u8>, u64)>,
}

impl WebSocketBatch {
    pub fn push(&mut self, conn: ConnectionId, datagram: &[u8]) {
        // A batch holds one connection, or a few: a scan is cheaper than a map.
        let fits = |frames: &Vec<u8>| frames.len() + 4 + datagram.len() <= WEBSOCKET_MESSAGE_BYTES;
        let i = match self.items.iter().rposition(|(c, ..)| *c == conn) {
            Some(i) if fits(&self.items[i].1) => i,
            _ => {
                self.items
                    .push((conn, Vec::with_capacity(4 + datagram.len()), 0));
                self.items.len() - 1
            }
        };
        let item = &mut self.items[i];
        crate::websocket::framing::frame(&mut item.1, datagram);
        item.2 += 1;
    }

    pub fn take(&mut self) -> std::vec::Drain<'_, (ConnectionId, Vec<u8>, u64)> {
        self.items.drain(..)
    }
}

/// Buffers a thread keeps from one lock to the next, so that nothing is allocated per
/// packet once they have grown to the traffic.
#[derive(Default)]
pub struct Batch {
    pub udp: UdpBatch,
    pub packets: TunBatch,
    pub websocket: WebSocketBatch,
    /// Datagrams and TUN writes the kernel refused, for the drop counters.
    send_failures: u64,
    tun_failures: u64,
}

impl Batch {
    /// The core's [`Transmit`] over this batch, for `socket` and `tun`.
    pub fn out<'a>(&'a mut self, socket: &'a Socket, tun: &'a SyncDevice) -> Out<'a> {
        Out {
            max_segments: max_segments(socket),
            batch: self,
            socket,
            tun,
        }
    }

    fn flush_udp(&mut self, socket: &Socket) {
        if !self.udp.is_empty() {
            self.send_failures += self.udp.flush(socket);
        }
    }

    fn flush_tun(&mut self, tun: &SyncDevice) {
        if let Err(e) = self.packets.flush(tun) {
            tracing::trace!(error = %e, "TUN write failed");
            self.tun_failures += 1;
        }
    }

    /// Writes everything out.
    pub fn flush(&mut self, socket: &Socket, tun: &SyncDevice) {
        self.flush_udp(socket);
        self.flush_tun(tun);
    }

    /// Failures since the last call (datagrams, TUN writes), and resets them.
    pub fn take_failures(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.send_failures),
            std::mem::take(&mut self.tun_failures),
        )
    }

    /// IPv4 fragments joined to the one before them since the last call, and resets it.
    pub fn take_joined(&mut self) -> u64 {
        self.packets.take_joined()
    }
}

fn max_segments(socket: &Socket) -> usize {
    if tun::offload_enabled() {
        socket.state.max_gso_segments().max(1)
    } else {
        1
    }
}

/// What the core writes to while the shell holds its lock: gathered in a [`Batch`], written
/// by [`Batch::flush`] after. A full batch is written at once, lock or not.
pub struct Out<'a> {
    batch: &'a mut Batch,
    socket: &'a Socket,
    tun: &'a SyncDevice,
    max_segments: usize,
}

impl Transmit for Out<'_> {
    fn send_udp(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.batch.udp.len() >= UDP_BATCH {
            self.batch.flush_udp(self.socket);
            // GSO may have been found wanting.
            self.max_segments = max_segments(self.socket);
        }
        self.batch.udp.push(to, datagram, self.max_segments);
        true
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if self.batch.packets.len() >= TUN_BATCH {
            self.batch.flush_tun(self.tun);
        }
        self.batch.packets.push(packet);
    }

    fn send_websocket(&mut self, conn: ConnectionId, datagram: &[u8]) -> bool {
        // Queued for the connection when the shell flushes, after the lock.
        self.batch.websocket.push(conn, datagram);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::framing::{Deframer, MAX_DATAGRAM};

    /// The datagrams of each message, checking that it holds whole frames only.
    fn deframe(frames: &[u8]) -> Vec<Vec<u8>> {
        let mut d = Deframer::without_magic();
        d.push(frames);
        let mut got = Vec::new();
        while let Some(x) = d.next_datagram().unwrap() {
            got.push(x.to_vec());
        }
        d.finish().unwrap();
        got
    }

    #[test]
    fn a_websocket_message_never_exceeds_the_cap_and_keeps_each_connections_order() {
        let mut b = WebSocketBatch::default();
        // Two laptops on WebSockets, interleaved; full-size datagrams and small ones.
        let sizes = [1452, 148, 32, 1452, 92];
        let mut sent: [Vec<Vec<u8>>; 2] = Default::default();
        for i in 0..3000 {
            let conn = u64::from(i % 3 == 0);
            let d = vec![i as u8; sizes[i % sizes.len()]];
            b.push(conn, &d);
            sent[conn as usize].push(d);
        }
        let mut got: [Vec<Vec<u8>>; 2] = Default::default();
        let mut messages = 0;
        for (conn, frames, datagrams) in b.take() {
            assert!(frames.len() <= WEBSOCKET_MESSAGE_BYTES, "{}", frames.len());
            let these = deframe(&frames);
            assert_eq!(these.len() as u64, datagrams);
            got[conn as usize].extend(these);
            messages += 1;
        }
        assert_eq!(got, sent);
        // Full messages, not one per datagram.
        let bytes: usize = sent.iter().flatten().map(|d| d.len() + 4).sum();
        assert!(
            messages <= bytes / WEBSOCKET_MESSAGE_BYTES + 4,
            "{messages}"
        );
        assert_eq!(b.take().count(), 0, "taken");
    }

    #[test]
    fn a_frame_longer_than_the_cap_goes_alone_and_whole() {
        let mut b = WebSocketBatch::default();
        b.push(7, &[1; 100]);
        b.push(7, &[2; MAX_DATAGRAM]);
        b.push(7, &[3; 100]);
        let messages: Vec<_> = b.take().map(|(_, f, n)| (deframe(&f), n)).collect();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1], (vec![vec![2; MAX_DATAGRAM]], 1));
        assert_eq!(messages[2], (vec![vec![3; 100]], 1));
    }
}
