//! Output batching: what the core produces while the shell holds its lock is gathered here
//! and written after the lock is let go, with as few system calls as the kernel allows.
//!
//! - UDP: consecutive datagrams to one endpoint become one `sendmsg` with UDP GSO (one
//!   segment size, the last segment may be shorter), through `quinn-udp`, which also falls
//!   back to one datagram per call where the kernel lacks GSO.
//! - TUN: packets are kept with room for a virtio-net header in front, so that tun-rs can
//!   coalesce TCP and UDP segments of one flow into one GRO write when the device has
//!   `IFF_VNET_HDR` offload, and writes them one by one when it has not. IPv4 fragments that
//!   arrived together are joined first (`reassembly`).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::core::{ConnectionId, Transmit};
use crate::{reassembly, udp};

/// Bytes one UDP GSO send may carry (the UDP length field's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;
/// Packets gathered for the TUN before they are written even though the lock is held.
pub const TUN_BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Datagrams gathered before a flush, likewise.
const UDP_BATCH: usize = 256;
/// How long one flush may wait, in all, for room in a full socket buffer before the rest of
/// its datagrams are dropped (the I/O thread carries both directions, so it must not sit
/// on a stalled send for long).
const SEND_WAIT: Duration = Duration::from_millis(200);

/// Whether to use segmentation offload (TUN `IFF_VNET_HDR`, UDP GSO). On unless the
/// environment says `MESHD_OFFLOAD=off` (or `0`): for kernels that misbehave with it, and
/// for measuring what it is worth.
pub fn offload_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("MESHD_OFFLOAD").as_deref(),
            Ok("off" | "0" | "false" | "no")
        )
    })
}

/// One socket with what quinn-udp learned about it (GSO and GRO support).
pub struct Socket {
    pub sock: UdpSocket,
    pub state: quinn_udp::UdpSocketState,
}

impl Socket {
    pub fn new(sock: UdpSocket) -> std::io::Result<Socket> {
        // Leaves the socket non-blocking; the shell polls it.
        let state = quinn_udp::UdpSocketState::new((&sock).into())?;
        Ok(Socket { sock, state })
    }

    /// Waits until the socket is readable (`POLLIN`) or writable (`POLLOUT`), or `timeout`.
    pub fn wait(&self, events: libc::c_short, timeout: Duration) -> bool {
        wait_fd(self.sock.as_raw_fd(), events, timeout)
    }
}

/// Waits until `fd` is ready for `events`, or `timeout`.
fn wait_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, for the length of the call.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) > 0 }
}

/// A run of datagrams to one endpoint, stored back to back in `UdpBatch::buf`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    to: SocketAddr,
    start: usize,
    len: usize,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: GSO allows only the last segment to be shorter.
    closed: bool,
}

#[derive(Default)]
pub struct UdpBatch {
    buf: Vec<u8>,
    runs: Vec<Run>,
    datagrams: usize,
}

impl UdpBatch {
    pub fn len(&self) -> usize {
        self.datagrams
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// Adds a datagram, joining the last run if GSO can carry it there.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8], max_segments: usize) {
        let start = self.buf.len();
        self.buf.extend_from_slice(datagram);
        self.datagrams += 1;
        if let Some(run) = self.runs.last_mut() {
            if run.to == to
                && !run.closed
                && datagram.len() <= run.segment
                && run.count < max_segments
                && run.len + datagram.len() <= MAX_GSO_BYTES
            {
                run.len += datagram.len();
                run.count += 1;
                run.closed = datagram.len() < run.segment;
                return;
            }
        }
        self.runs.push(Run {
            to,
            start,
            len: datagram.len(),
            segment: datagram.len(),
            count: 1,
            closed: false,
        });
    }

    /// Sends everything, up to 64 runs per `sendmmsg`; returns how many datagrams could not
    /// be sent.
    pub fn flush(&mut self, socket: &Socket) -> u64 {
        let deadline = Instant::now() + SEND_WAIT;
        let mut failed = 0;
        let mut i = 0;
        while i < self.runs.len() {
            let rest = &self.runs[i..];
            if rest.len() > 1 {
                match sendmmsg_runs(socket.sock.as_raw_fd(), rest, &self.buf) {
                    Ok(sent) => {
                        i += sent;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if wait_writable(socket, deadline) {
                            continue;
                        }
                        // No room before the deadline: the rest is dropped.
                        failed += rest.iter().map(|r| r.count as u64).sum::<u64>();
                        break;
                    }
                    // The first run failed: it goes the careful way below, which also
                    // notices a kernel that refuses GSO.
                    Err(_) => {}
                }
            }
            let run = &self.runs[i];
            failed += send_run(
                socket,
                run,
                &self.buf[run.start..run.start + run.len],
                deadline,
            );
            i += 1;
        }
        self.buf.clear();
        self.runs.clear();
        self.datagrams = 0;
        failed
    }
}

/// Waits for room to send until `deadline`; false if there is none by then.
fn wait_writable(socket: &Socket, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    !left.is_zero() && socket.wait(libc::POLLOUT, left)
}

/// Runs per `sendmmsg`.
const SENDMMSG_MAX: usize = 64;
/// `UDP_SEGMENT` from linux/udp.h (the libc crate has it only for some targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Sends the first runs (up to `SENDMMSG_MAX`) in one `sendmmsg`, each a GSO message;
/// returns how many went. The socket is the dual-stack IPv6 one of `udp::bind`.
fn sendmmsg_runs(fd: RawFd, runs: &[Run], buf: &[u8]) -> std::io::Result<usize> {
    let k = runs.len().min(SENDMMSG_MAX);
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: [libc::sockaddr_in6; SENDMMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; SENDMMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; SENDMMSG_MAX] = unsafe { std::mem::zeroed() };
    // u64s keep each control buffer aligned for cmsghdr; 3 of them hold CMSG_SPACE(2).
    let mut controls = [[0u64; 3]; SENDMMSG_MAX];
    for (i, run) in runs[..k].iter().enumerate() {
        let SocketAddr::V6(to) = udp::to_wire(run.to) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let name = &mut names[i];
        name.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        name.sin6_port = to.port().to_be();
        name.sin6_flowinfo = to.flowinfo();
        name.sin6_addr.s6_addr = to.ip().octets();
        name.sin6_scope_id = to.scope_id();
        let contents = &buf[run.start..run.start + run.len];
        iovs[i] = libc::iovec {
            iov_base: contents.as_ptr() as *mut libc::c_void,
            iov_len: contents.len(),
        };
        let hdr = &mut hdrs[i].msg_hdr;
        hdr.msg_name = name as *mut libc::sockaddr_in6 as *mut libc::c_void;
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
        if run.count > 1 {
            let control = controls[i].as_mut_ptr() as *mut libc::cmsghdr;
            // SAFETY: `control` points at 24 aligned bytes, room for a cmsghdr and a u16;
            // the CMSG_* helpers compute within it.
            unsafe {
                (*control).cmsg_level = libc::SOL_UDP;
                (*control).cmsg_type = UDP_SEGMENT;
                (*control).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(control) as *mut u16, run.segment as u16);
                hdr.msg_control = control as *mut libc::c_void;
                hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
            }
        }
    }
    // SAFETY: `hdrs[..k]` point into `names`, `iovs`, `controls` and `buf`, all alive for the
    // call.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as libc::c_uint, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn send_run(socket: &Socket, run: &Run, contents: &[u8], deadline: Instant) -> u64 {
    let transmit = quinn_udp::Transmit {
        destination: udp::to_wire(run.to),
        ecn: None,
        contents,
        segment_size: (run.count > 1).then_some(run.segment),
        src_ip: None,
    };
    match try_send(socket, &transmit, deadline) {
        Ok(()) => 0,
        Err(e) if run.count > 1 => {
            // quinn-udp turns GSO off after the kernel refuses it; send them one by one.
            tracing::debug!(error = %e, segments = run.count, "GSO send failed; sending singly");
            let mut failed = 0;
            for chunk in contents.chunks(run.segment) {
                let single = quinn_udp::Transmit {
                    contents: chunk,
                    segment_size: None,
                    ..transmit
                };
                if try_send(socket, &single, deadline).is_err() {
                    failed += 1;
                }
            }
            failed
        }
        Err(e) => {
            tracing::trace!(to = %run.to, error = %e, "send failed");
            1
        }
    }
}

fn try_send(
    socket: &Socket,
    transmit: &quinn_udp::Transmit<'_>,
    deadline: Instant,
) -> std::io::Result<()> {
    loop {
        match socket.state.try_send((&socket.sock).into(), transmit) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The socket buffer is full: wait for room, as a blocking send would, but
                // not past the flush's deadline.
                if !wait_writable(socket, deadline) {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

/// Packets for the TUN, each behind `VIRTIO_NET_HDR_LEN` bytes of room.
#[derive(Default)]
pub struct TunBatch {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: GROTable,
    /// Fragments joined into the datagram before them since the last look.
    joined: u64,
}

impl TunBatch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            // Room for coalescing a whole 64 KiB GRO packet into the first of a flow.
            self.bufs
                .push(Vec::with_capacity(VIRTIO_NET_HDR_LEN + 65_535));
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
    }

    /// Writes everything; returns whether the device took it all.
    pub fn flush(&mut self, tun: &SyncDevice) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let packets = std::mem::take(&mut self.len);
        let n = reassembly::join_fragments(&mut self.bufs, packets, VIRTIO_NET_HDR_LEN);
        self.joined += (packets - n) as u64;
        tun.send_multiple(&mut self.gro, &mut self.bufs[..n], VIRTIO_NET_HDR_LEN)
            .map(|_| ())
    }
}

/// Datagrams for WebSocket connections (a gateway's), framed, one buffer per connection:
/// each becomes one WebSocket message when the shell flushes.
#[derive(Default)]
pub struct WebSocketBatch {
    /// Connection, its frames, how many datagrams they hold.
    items: Vec<(ConnectionId, Vec<u8>, u64)>,
}

impl WebSocketBatch {
    pub fn push(&mut self, conn: ConnectionId, datagram: &[u8]) {
        // A batch holds one connection, or a few: a scan is cheaper than a map.
        let i = match self.items.iter().position(|(c, ..)| *c == conn) {
            Some(i) => i,
            None => {
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
        std::mem::take(&mut self.packets.joined)
    }
}

fn max_segments(socket: &Socket) -> usize {
    if offload_enabled() {
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

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn runs_join_same_endpoint_same_size_with_a_shorter_last() {
        let a = addr("10.0.0.1:1");
        let b = addr("10.0.0.2:1");
        let mut batch = UdpBatch::default();
        for _ in 0..3 {
            batch.push(a, &[1; 100], 64);
        }
        batch.push(a, &[2; 40], 64); // shorter: ends the run
        batch.push(a, &[3; 100], 64); // so this starts a new one
        batch.push(b, &[4; 100], 64); // another endpoint
        batch.push(b, &[5; 120], 64); // longer than the segment: new run
        let shape: Vec<(SocketAddr, usize, usize, usize)> = batch
            .runs
            .iter()
            .map(|r| (r.to, r.segment, r.count, r.len))
            .collect();
        assert_eq!(
            shape,
            vec![
                (a, 100, 4, 340),
                (a, 100, 1, 100),
                (b, 100, 1, 100),
                (b, 120, 1, 120)
            ]
        );
        assert_eq!(batch.len(), 7);
        // The bytes are back to back in push order.
        let run = batch.runs[0];
        assert_eq!(&batch.buf[run.start + 300..run.start + 340], &[2; 40]);
        assert_eq!(batch.buf[batch.runs[3].start], 5);
    }

    #[test]
    fn runs_respect_the_segment_and_byte_limits() {
        let a = addr("[fd00::1]:7");
        let mut batch = UdpBatch::default();
        for _ in 0..5 {
            batch.push(a, &[0; 1452], 2);
        }
        let counts: Vec<usize> = batch.runs.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![2, 2, 1]);

        let mut batch = UdpBatch::default();
        for _ in 0..50 {
            batch.push(a, &[0; 1452], 64);
        }
        assert!(batch.runs.iter().all(|r| r.len <= MAX_GSO_BYTES));
        assert_eq!(batch.runs[0].count, MAX_GSO_BYTES / 1452);
        assert_eq!(batch.runs.iter().map(|r| r.count).sum::<usize>(), 50);
    }

    #[test]
    fn gso_runs_arrive_as_the_datagrams_they_were() {
        // Real sockets on loopback: what is sent as GSO runs is received datagram by
        // datagram, in order, whatever the kernel supports.
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = Socket::new(udp::bind(0).unwrap()).unwrap();
        let mut batch = UdpBatch::default();
        let sizes = [300, 300, 300, 120, 300, 500];
        for (i, n) in sizes.iter().enumerate() {
            batch.push(to, &vec![i as u8; *n], tx.state.max_gso_segments());
        }
        // Runs to a second endpoint in between: several runs, so one sendmmsg.
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        batch.push(
            other.local_addr().unwrap(),
            &[9; 77],
            tx.state.max_gso_segments(),
        );
        batch.push(to, &[6; 300], tx.state.max_gso_segments());
        assert!(batch.runs.len() >= 3);
        assert_eq!(batch.flush(&tx), 0);
        let mut buf = [0u8; 2048];
        let (got, _) = other.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], &[9; 77]);
        for (i, n) in sizes.iter().enumerate() {
            let (got, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(got, *n, "datagram {i}");
            assert!(buf[..got].iter().all(|b| *b == i as u8), "datagram {i}");
        }
        let (got, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], &[6; 300]);
        assert!(batch.is_empty());
    }
}
