//! What the data plane counts, for metrics and tests. Plain integers: the core is owned by
//! one thread at a time.

use super::Transport;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not a WireGuard message, or the wrong length for its type.
    Malformed,
    /// A handshake from a key we do not know.
    UnknownPeer,
    /// A message for a receiver index no peer holds.
    UnknownIndex,
    InvalidMac,
    /// A counter seen before (replay) or too old.
    Replay,
    /// Authentication failed (bad tag, bad key, stale timestamp).
    Decrypt,
    /// A handshake answered with a cookie because we are under load.
    UnderLoad,
    /// A handshake under load from a source that has had its cookie replies for now
    /// (see `cookie_budget`): dropped without one.
    CookieLimited,
    /// Data for a session we no longer have.
    NoSession,
    /// A decapsulated packet whose source is outside the sender's allowed IPs.
    SourceNotAllowed,
    /// Source and destination in different orgs that the registry has not peered.
    OrgMismatch,
    /// A source address that belongs to no org (not a mesh address, not a site prefix).
    SourceNoOrg,
    /// A destination that belongs to no org: a gateway's own addresses, the internet.
    DestinationNoOrg,
    /// A packet for a site's IPv4 LAN (4via6) the translator does not carry: fragments,
    /// extension headers, ICMP other than echo, an address outside the site's routes.
    NotTranslated,
    /// An IPv4 answer from a site to a pool address that stands for no one (any more).
    NoBinding,
    /// No peer routes the destination.
    NoRoute,
    /// The peer's endpoint is not known yet.
    NoEndpoint,
    /// This node does not forward between peers.
    NoForward,
    /// No private key configured.
    NoKey,
    /// The socket refused to send.
    SendFailed,
    /// The TUN device refused a write.
    TunWriteFailed,
    /// A TUN read failed without the device being gone (an offloaded segment that could
    /// not be split).
    TunReadFailed,
    /// A packet for a peer registered at this gateway that holds no tunnel now (it has not
    /// connected, or its idle tunnel was evicted): a laptop or site initiates, the gateway
    /// does not. Also a stale session's packet from such a peer, which instead prompts a
    /// handshake from the gateway (see `just_in_time`).
    PeerInactive,
}

impl Drop {
    pub const ALL: [Drop; 23] = [
        Drop::Malformed,
        Drop::UnknownPeer,
        Drop::UnknownIndex,
        Drop::InvalidMac,
        Drop::Replay,
        Drop::Decrypt,
        Drop::UnderLoad,
        Drop::CookieLimited,
        Drop::NoSession,
        Drop::SourceNotAllowed,
        Drop::OrgMismatch,
        Drop::SourceNoOrg,
        Drop::DestinationNoOrg,
        Drop::NotTranslated,
        Drop::NoBinding,
        Drop::NoRoute,
        Drop::NoEndpoint,
        Drop::NoForward,
        Drop::NoKey,
        Drop::SendFailed,
        Drop::TunWriteFailed,
        Drop::TunReadFailed,
        Drop::PeerInactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::UnknownPeer => "unknown_peer",
            Drop::UnknownIndex => "unknown_index",
            Drop::InvalidMac => "invalid_mac",
            Drop::Replay => "replay",
            Drop::Decrypt => "decrypt",
            Drop::UnderLoad => "under_load",
            Drop::CookieLimited => "cookie_limited",
            Drop::NoSession => "no_session",
            Drop::SourceNotAllowed => "source_not_allowed",
            Drop::OrgMismatch => "org_mismatch",
            Drop::SourceNoOrg => "source_no_org",
            Drop::DestinationNoOrg => "destination_no_org",
            Drop::NotTranslated => "not_translated",
            Drop::NoBinding => "no_binding",
            Drop::NoRoute => "no_route",
            Drop::NoEndpoint => "no_endpoint",
            Drop::NoForward => "no_forward",
            Drop::NoKey => "no_key",
            Drop::SendFailed => "send_failed",
            Drop::TunWriteFailed => "tun_write_failed",
            Drop::TunReadFailed => "tun_read_failed",
            Drop::PeerInactive => "peer_inactive",
        }
    }

    pub fn of(e: &boringtun::noise::errors::WireGuardError) -> Drop {
        use boringtun::noise::errors::WireGuardError as E;
        match e {
            E::DuplicateCounter | E::InvalidCounter => Drop::Replay,
            E::InvalidMac => Drop::InvalidMac,
            E::UnderLoad => Drop::UnderLoad,
            E::NoCurrentSession | E::ConnectionExpired => Drop::NoSession,
            E::WrongIndex => Drop::UnknownIndex,
            E::InvalidAeadTag
            | E::WrongKey
            | E::InvalidTai64nTimestamp
            | E::WrongTai64nTimestamp
            | E::UnexpectedPacket => Drop::Decrypt,
            _ => Drop::Malformed,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// UDP datagrams and bytes received and sent.
    pub udp_rx_packets: u64,
    pub udp_rx_bytes: u64,
    pub udp_tx_packets: u64,
    pub udp_tx_bytes: u64,
    /// The same for datagrams framed on WebSocket connections (gateways).
    pub websocket_rx_packets: u64,
    pub websocket_rx_bytes: u64,
    pub websocket_tx_packets: u64,
    pub websocket_tx_bytes: u64,
    /// Inner packets read from and written to the TUN.
    pub tun_rx_packets: u64,
    pub tun_rx_bytes: u64,
    pub tun_tx_packets: u64,
    pub tun_tx_bytes: u64,
    /// Packets a gateway passed from one peer to another.
    pub forwarded: u64,
    /// Handshake messages that completed a handshake step.
    pub handshakes: u64,
    /// Tunnels a gateway made just in time for registered peers, and evicted again (idle,
    /// or made for an initiation the tunnel then refused).
    pub tunnels_made: u64,
    pub tunnels_evicted: u64,
    /// Handshakes a gateway started toward a registered peer whose evicted tunnel's
    /// session it sent data on.
    pub wakes: u64,
    drops: [u64; Drop::ALL.len()],
}

impl Counters {
    pub fn count_rx(&mut self, transport: Transport, bytes: usize) {
        let (packets, total) = match transport {
            Transport::Udp => (&mut self.udp_rx_packets, &mut self.udp_rx_bytes),
            Transport::WebSocket => (&mut self.websocket_rx_packets, &mut self.websocket_rx_bytes),
        };
        *packets += 1;
        *total += bytes as u64;
    }

    pub fn count_tx(&mut self, transport: Transport, bytes: usize) {
        let (packets, total) = match transport {
            Transport::Udp => (&mut self.udp_tx_packets, &mut self.udp_tx_bytes),
            Transport::WebSocket => (&mut self.websocket_tx_packets, &mut self.websocket_tx_bytes),
        };
        *packets += 1;
        *total += bytes as u64;
    }

    pub fn drop(&mut self, why: Drop) {
        self.drops[why as usize] += 1;
    }

    pub fn drop_many(&mut self, why: Drop, n: u64) {
        self.drops[why as usize] += n;
    }

    pub fn drops(&self, why: Drop) -> u64 {
        self.drops[why as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}
