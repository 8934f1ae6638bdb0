//! smoltcp's view of the tunnel: IP packets in (decrypted from the gateway) and out (to be
//! encrypted), as two queues the tunnel loop fills and drains.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The tunnel's MTU, as wg-quick picks it for an IPv6 underlay (1500 - 80).
pub const MTU: usize = 1420;

#[derive(Default)]
pub struct PacketQueues {
    /// Plaintext IP packets from the gateway, for smoltcp.
    pub inbound: VecDeque<Vec<u8>>,
    /// IP packets smoltcp wrote, to encrypt and send.
    pub outbound: VecDeque<Vec<u8>>,
    /// Emptied buffers, reused so that steady traffic does not allocate.
    pub spare: Vec<Vec<u8>>,
}

pub struct Rx {
    packet: Vec<u8>,
}

pub struct Tx<'a> {
    outbound: &'a mut VecDeque<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::Device for PacketQueues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.inbound.pop_front()?;
        Some((
            Rx { packet },
            Tx {
                outbound: &mut self.outbound,
                spare: &mut self.spare,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            outbound: &mut self.outbound,
            spare: &mut self.spare,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.packet)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.outbound.push_back(buf);
        r
    }
}
