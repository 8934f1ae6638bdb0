//! The data plane's thread: TUN → core → UDP and UDP → core → TUN, a batch per wake-up;
//! and the timer thread beside it.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tun_rs::VIRTIO_NET_HDR_LEN;

use super::{Exit, Shell};
use crate::batch::Batch;
use crate::core::{timers::TICK, Drop};
use crate::{tun, udp};

/// Whether a TUN read error means the device is gone (as opposed to one bad packet, such
/// as a GSO packet tun-rs could not split).
fn tun_fatal(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        Some(code) => !matches!(code, libc::EINTR | libc::EAGAIN | libc::EINVAL),
        None => false,
    }
}

/// Room a TUN read needs in the batch: the kernel puts at most this many segments in one
/// offloaded packet (`tun::open` sets the device's `gso_max_segs`).
const TUN_READ_ROOM: usize = tun::MAX_GSO_SEGMENTS;
/// Most reads gathered into one batch.
const TUN_DRAIN: usize = 32;
/// How many receive buffers one `recvmmsg` fills; with UDP GRO each holds up to 64 KiB of
/// datagrams from one sender.
const UDP_RECV_BATCH: usize = 16;

/// The TUN → UDP direction's buffers, kept from one wake-up to the next so that nothing is
/// allocated per packet.
struct Outbound {
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    batch: Batch,
}

impl Outbound {
    fn new() -> Outbound {
        Outbound {
            raw: vec![0u8; VIRTIO_NET_HDR_LEN + 65_535],
            bufs: vec![vec![0u8; 65_535]; tun::TUN_BATCH],
            sizes: vec![0usize; tun::TUN_BATCH],
            batch: Batch::default(),
        }
    }
}

/// The UDP → TUN direction's buffers, likewise.
struct Inbound {
    storage: Vec<[u8; 65_536]>,
    meta: Vec<quinn_udp::RecvMeta>,
    batch: Batch,
}

impl Inbound {
    fn new() -> Inbound {
        Inbound {
            storage: vec![[0u8; 65_536]; UDP_RECV_BATCH],
            meta: vec![quinn_udp::RecvMeta::default(); UDP_RECV_BATCH],
            batch: Batch::default(),
        }
    }
}

impl Shell {
    /// TUN → core → UDP: every read waiting (each, with offload, a TCP segment of up to
    /// 64 KiB split into packets), one lock, then the datagrams out in GSO runs. Returns
    /// how many packets went, or why the device is gone.
    fn pump_out(&self, st: &mut Outbound) -> std::result::Result<usize, String> {
        let Outbound {
            raw,
            bufs,
            sizes,
            batch,
        } = st;
        let mut n = 0;
        let mut failed = 0;
        for _ in 0..TUN_DRAIN {
            if n + TUN_READ_ROOM > bufs.len() {
                break;
            }
            match self
                .tun
                .recv_multiple(raw, &mut bufs[n..], &mut sizes[n..], 0)
            {
                Ok(got) => n += got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if tun_fatal(&e) => return Err(e.to_string()),
                Err(e) => {
                    failed += 1;
                    tracing::debug!(error = %e, "TUN read failed");
                }
            }
        }
        if failed > 0 {
            self.lock().counters.drop_many(Drop::TunReadFailed, failed);
        }
        if n == 0 {
            return Ok(0);
        }
        let sock = self.udp.load();
        {
            let mut out = batch.out(&sock, &self.tun);
            let mut core = self.lock();
            let now = Instant::now();
            for (buf, size) in bufs.iter().zip(sizes.iter()).take(n) {
                if *size > 0 {
                    core.handle_tun_packet(now, &buf[..*size], &mut out);
                }
            }
        }
        self.flush(batch, &sock);
        Ok(n)
    }

    /// UDP → core → TUN: one `recvmmsg` (with GRO, many datagrams per buffer), one lock,
    /// then the packets to the TUN coalesced per flow. Returns how many buffers came.
    fn pump_in(&self, st: &mut Inbound, sock: &udp::Socket) -> usize {
        let Inbound {
            storage,
            meta,
            batch,
        } = st;
        let mut iov: [IoSliceMut<'_>; UDP_RECV_BATCH] = {
            let mut bufs = storage.iter_mut();
            std::array::from_fn(|_| {
                IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))
            })
        };
        let n = match sock.state.recv((&sock.sock).into(), &mut iov, meta) {
            Ok(n) => n,
            Err(e) => {
                // WouldBlock (nothing waiting), ICMP errors and the like: go on.
                tracing::trace!(error = %e, "UDP receive");
                return 0;
            }
        };
        {
            let mut out = batch.out(sock, &self.tun);
            let mut core = self.lock();
            let now = Instant::now();
            for (m, buf) in meta.iter().zip(storage.iter()).take(n) {
                let from = udp::from_wire(m.addr);
                if m.len == 0 {
                    // An empty datagram is one too (malformed), though it has no chunks.
                    core.handle_datagram(now, from, &[], &mut out);
                    continue;
                }
                let stride = m.stride.max(1);
                for datagram in buf[..m.len].chunks(stride) {
                    core.handle_datagram(now, from, datagram, &mut out);
                }
            }
        }
        self.flush(batch, sock);
        n
    }
}

/// The data plane: one thread waits on both the TUN and the UDP socket and carries each
/// wake-up's work through to the last write, in both directions.
///
/// One thread rather than one per direction because, on the machines measured (see
/// BENCHMARKS.md), a second thread asleep on the other descriptor costs more than it gives:
/// a packet written to the TUN is answered by the kernel (an ICMP reply, a TCP ACK) before
/// the write returns, and waking a thread on another CPU to carry the answer added ~60 µs
/// to each round trip, while throughput was no higher with two.
pub(super) fn io_loop(shell: Arc<Shell>, exit: mpsc::Sender<Exit>) {
    if let Err(why) = carry(&shell) {
        let _ = exit.send(Exit::TunGone(why));
    }
}

/// The body of [`io_loop`]: returns when meshd stops (`Ok`) or the TUN is gone (`Err`).
fn carry(shell: &Shell) -> std::result::Result<(), String> {
    // Non-blocking, so that a wake-up takes every packet waiting; `poll` does the waiting.
    shell
        .tun
        .set_nonblocking(true)
        .map_err(|e| format!("making the TUN non-blocking: {e}"))?;
    let mut outbound = Outbound::new();
    let mut inbound = Inbound::new();
    while !shell.stopping.load(Ordering::Relaxed) {
        // Loaded per wake-up: `wg set listen-port` may swap the socket.
        let sock = shell.udp.load_full();
        let mut fds = [
            libc::pollfd {
                fd: shell.tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sock.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = udp::RECV_TIMEOUT.as_millis() as libc::c_int;
        // SAFETY: two valid pollfds on the stack, for the length of the call. (epoll, which
        // registers them once, measured no faster here.)
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } <= 0 {
            continue;
        }
        let (tun_ready, udp_ready) = (fds[0].revents != 0, fds[1].revents != 0);
        // Each pump that moved packets makes the other direction worth one try: what was
        // written to the TUN may already be answered, what was sent may have drawn a reply.
        let sent = if tun_ready {
            shell.pump_out(&mut outbound)?
        } else {
            0
        };
        if (udp_ready || sent > 0) && shell.pump_in(&mut inbound, &sock) > 0 {
            shell.pump_out(&mut outbound)?;
        }
    }
    Ok(())
}

pub(super) fn timer_loop(shell: Arc<Shell>) {
    while !shell.stopping.load(Ordering::Relaxed) {
        shell.with_io(|core, io| {
            let now = Instant::now();
            // The core reads no clock: its Unix time follows the system's (NTP steps too).
            core.set_wall_clock(now, std::time::SystemTime::now());
            core.handle_timeout(now, io)
        });
        std::thread::sleep(TICK);
    }
}
