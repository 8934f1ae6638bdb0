//! The loop's one owner of the WireGuard session, the UDP socket to the gateway and the
//! userspace IPv6 interface. Callers add smoltcp sockets, call [`UserspaceTunnel::poll`]
//! (which waits for the gateway, the caller's own file descriptors or a timer, and moves
//! packets both ways), then look at their sockets again.
//!
//! The socket goes to the gateway over UDP, or to a local WebSocket bridge
//! (`crate::websocket::bridge`) that carries the datagrams to the gateway over `wss://`;
//! with `--transport auto` the tunnel starts on UDP and moves to the bridge when no
//! handshake completes within [`UDP_TRY`].

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use boringtun::noise::{Tunn, TunnResult};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::config::TunnelConfig;
use super::device::PacketQueues;
use crate::websocket::bridge::{self, Bridge, Target};
use crate::websocket::Transport;

/// How the tunnel reaches its gateway (`--transport`, and the WebSocket's settings).
#[derive(Debug, Clone)]
pub struct Reach {
    pub transport: Transport,
    pub websocket: Target,
}

impl Reach {
    /// The WebSocket goes to the tunnel file's Endpoint host on `port`.
    pub fn new(
        cfg: &TunnelConfig,
        transport: Transport,
        port: u16,
        plain: bool,
        fingerprint: Option<String>,
    ) -> Reach {
        Reach {
            transport,
            websocket: Target {
                gateway: SocketAddr::new(cfg.endpoint.ip(), port),
                plain,
                fingerprint,
            },
        }
    }
}

/// How often boringtun's timers run (handshake retries, keepalives, rekeying).
const TIMER_TICK: Duration = Duration::from_millis(100);
/// How often [`UserspaceTunnel::wait_up`] sends a new handshake initiation.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(1);
/// `--transport auto`: how long UDP gets before the WebSocket is tried (four handshake
/// attempts; flyctl probes for 5 s).
pub const UDP_TRY: Duration = Duration::from_secs(4);
/// Datagrams read from the gateway before smoltcp gets to run.
const READ_BATCH: usize = 64;
/// The largest datagram boringtun may hand back (a whole decrypted packet).
const SCRATCH: usize = 65_536;

pub struct UserspaceTunnel {
    tunn: Tunn,
    udp: UdpSocket,
    pub endpoint: SocketAddr,
    pub dns: Ipv6Addr,
    reach: Reach,
    /// Set once the tunnel goes over the WebSocket bridge.
    bridge: Option<Bridge>,
    queues: PacketQueues,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    next_tick: Instant,
    scratch: Vec<u8>,
    datagram: Vec<u8>,
}

impl UserspaceTunnel {
    /// A tunnel to the file's gateway; the handshake starts at once.
    pub fn open(cfg: &TunnelConfig, reach: Reach) -> Result<UserspaceTunnel> {
        let secret = x25519_dalek::StaticSecret::from(cfg.private_key);
        let gateway = x25519_dalek::PublicKey::from(cfg.gateway_public_key.to_bytes());
        let keepalive = (cfg.keepalive > 0).then_some(cfg.keepalive);
        let index = rand_index();
        let tunn = Tunn::new(secret, gateway, None, keepalive, index, None);
        let bind: SocketAddr = match cfg.endpoint {
            SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
            SocketAddr::V6(_) => "[::]:0".parse()?,
        };
        let udp = UdpSocket::bind(bind).context("UDP socket for the tunnel")?;
        udp.connect(cfg.endpoint)
            .with_context(|| format!("gateway endpoint {}", cfg.endpoint))?;
        prepare(&udp)?;

        let mut queues = PacketQueues::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut queues,
            smoltcp::time::Instant::now(),
        );
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(cfg.address), 128));
        });
        // Everything goes into the tunnel: the gateway routes it (AllowedIPs is its job).
        iface
            .routes_mut()
            .add_default_ipv6_route(cfg.dns)
            .map_err(|_| anyhow::anyhow!("smoltcp route table full"))?;

        let mut t = UserspaceTunnel {
            tunn,
            udp,
            endpoint: cfg.endpoint,
            dns: cfg.dns,
            reach,
            bridge: None,
            queues,
            iface,
            sockets: SocketSet::new(Vec::new()),
            next_tick: Instant::now() + TIMER_TICK,
            scratch: vec![0; SCRATCH],
            datagram: vec![0; SCRATCH],
        };
        if t.reach.transport == Transport::Websocket {
            t.use_websocket()?;
        } else if let TunnResult::WriteToNetwork(p) =
            t.tunn.format_handshake_initiation(&mut t.scratch, false)
        {
            let _ = t.udp.send(p);
        }
        Ok(t)
    }

    /// Moves the tunnel onto a WebSocket bridge to the gateway and starts a handshake
    /// there.
    fn use_websocket(&mut self) -> Result<()> {
        let mine = UdpSocket::bind("127.0.0.1:0").context("UDP socket for the bridge")?;
        let theirs = UdpSocket::bind("127.0.0.1:0").context("UDP socket for the bridge")?;
        let b = bridge::start(
            theirs,
            Some(mine.local_addr()?),
            self.reach.websocket.clone(),
        )?;
        mine.connect(b.local)?;
        prepare(&mine)?;
        self.udp = mine;
        self.bridge = Some(b);
        if let TunnResult::WriteToNetwork(p) = self
            .tunn
            .format_handshake_initiation(&mut self.scratch, true)
        {
            let _ = self.udp.send(p);
        }
        Ok(())
    }

    /// What the tunnel goes over, for people: `udp HOST:PORT` or the WebSocket's URL.
    pub fn transport(&self) -> String {
        match &self.bridge {
            Some(_) => self.reach.websocket.url(),
            None => format!("udp {}", self.endpoint),
        }
    }

    /// Whether a handshake with the gateway has completed.
    pub fn is_up(&self) -> bool {
        self.tunn.stats().0.is_some()
    }

    /// Sends what smoltcp has to send, waits at most `wait` for the gateway, for one of
    /// `fds` (their `revents` are set) or for a timer, then takes in what arrived.
    pub fn poll(&mut self, wait: Duration, fds: &mut [libc::pollfd]) -> Result<()> {
        self.step();
        let now = smoltcp::time::Instant::now();
        let mut wait = wait.min(self.next_tick.saturating_duration_since(Instant::now()));
        if let Some(d) = self.iface.poll_delay(now, &self.sockets) {
            wait = wait.min(Duration::from_micros(d.total_micros()));
        }
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.push(libc::pollfd {
            fd: self.udp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        all.extend_from_slice(fds);
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `all` is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(all.as_mut_ptr(), all.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll");
            }
        }
        for (f, a) in fds.iter_mut().zip(&all[1..]) {
            f.revents = if n > 0 { a.revents } else { 0 };
        }
        if n > 0 && all[0].revents != 0 {
            self.read_gateway();
        }
        if Instant::now() >= self.next_tick {
            self.next_tick = Instant::now() + TIMER_TICK;
            self.run_timers();
        }
        self.step();
        Ok(())
    }

    /// Lets smoltcp process what came in and encrypts what it wrote.
    fn step(&mut self) {
        let now = smoltcp::time::Instant::now();
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        while let Some(packet) = self.queues.outbound.pop_front() {
            if let TunnResult::WriteToNetwork(p) = self.tunn.encapsulate(&packet, &mut self.scratch)
            {
                let _ = self.udp.send(p);
            }
            self.queues.spare.push(packet);
        }
    }

    fn read_gateway(&mut self) {
        let from = Some(self.endpoint.ip());
        for _ in 0..READ_BATCH {
            let n = match self.udp.recv(&mut self.datagram) {
                Ok(n) => n,
                Err(_) => return,
            };
            match self
                .tunn
                .decapsulate(from, &self.datagram[..n], &mut self.scratch)
            {
                TunnResult::WriteToNetwork(p) => {
                    let _ = self.udp.send(p);
                    // boringtun hands back queued packets one call at a time.
                    while let TunnResult::WriteToNetwork(p) =
                        self.tunn.decapsulate(from, &[], &mut self.scratch)
                    {
                        let _ = self.udp.send(p);
                    }
                }
                TunnResult::WriteToTunnelV6(p, _) => {
                    let mut buf = self.queues.spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(p);
                    self.queues.inbound.push_back(buf);
                }
                // Nothing but IPv6 is ours; errors are the gateway's noise, counted nowhere.
                TunnResult::WriteToTunnelV4(..) | TunnResult::Done | TunnResult::Err(_) => {}
            }
            // Let smoltcp keep up with a long burst (ACKs, window updates).
            if self.queues.inbound.len() >= READ_BATCH / 2 {
                self.step();
            }
        }
    }

    fn run_timers(&mut self) {
        match self.tunn.update_timers(&mut self.scratch) {
            TunnResult::WriteToNetwork(p) => {
                let _ = self.udp.send(p);
            }
            TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => {
                if let TunnResult::WriteToNetwork(p) = self
                    .tunn
                    .format_handshake_initiation(&mut self.scratch, false)
                {
                    let _ = self.udp.send(p);
                }
            }
            _ => {}
        }
    }

    /// Waits for the handshake, up to `limit` (with `--transport auto`: [`UDP_TRY`] on
    /// UDP, then `limit` on the WebSocket).
    pub fn wait_up(&mut self, limit: Duration) -> Result<()> {
        let mut start = Instant::now();
        let mut last_try = start;
        while !self.is_up() {
            if self.reach.transport == Transport::Auto
                && self.bridge.is_none()
                && start.elapsed() >= UDP_TRY
            {
                eprintln!(
                    "wgtool: no handshake over UDP with {} within {} s; trying {}",
                    self.endpoint,
                    UDP_TRY.as_secs(),
                    self.reach.websocket.url()
                );
                self.use_websocket()?;
                start = Instant::now();
                last_try = start;
            }
            // Someone is waiting at a prompt: retry each second rather than WireGuard's 5 s,
            // so that one lost datagram costs a second, not five.
            if last_try.elapsed() >= HANDSHAKE_RETRY {
                last_try = Instant::now();
                if let TunnResult::WriteToNetwork(p) = self
                    .tunn
                    .format_handshake_initiation(&mut self.scratch, true)
                {
                    let _ = self.udp.send(p);
                }
            }
            let limit = match (self.reach.transport, &self.bridge) {
                (Transport::Auto, None) => UDP_TRY + limit,
                _ => limit,
            };
            if start.elapsed() > limit {
                let why = self
                    .bridge
                    .as_ref()
                    .and_then(|b| b.last_error())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "no WireGuard handshake with the gateway at {} over {} within {} s{why}",
                    self.endpoint,
                    self.transport(),
                    limit.as_secs()
                );
            }
            self.poll(TIMER_TICK, &mut [])?;
            if super::shutdown::requested() {
                anyhow::bail!("interrupted");
            }
        }
        if self.bridge.is_some() {
            eprintln!("wgtool: tunnel up over {}", self.transport());
        }
        Ok(())
    }
}

/// Non-blocking, with room for a burst from the gateway while smoltcp catches up (the
/// kernel caps it at net.core.rmem_max; a smaller buffer only means more retransmissions).
fn prepare(udp: &UdpSocket) -> Result<()> {
    udp.set_nonblocking(true)?;
    set_buffer(udp, libc::SO_RCVBUF, 4 << 20);
    set_buffer(udp, libc::SO_SNDBUF, 1 << 20);
    Ok(())
}

fn set_buffer(udp: &UdpSocket, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: a valid socket and a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A random sender index, so that two runs do not collide at the gateway.
fn rand_index() -> u32 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u32::from_le_bytes(b) >> 8
}
