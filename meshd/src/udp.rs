//! The UDP side: one dual-stack socket; IPv4 peers appear as IPv4 addresses everywhere
//! except on the socket itself, where they are v4-mapped.
//!
//! Datagrams the core produces under the lock are gathered in a [`UdpBatch`] and sent after
//! it: consecutive datagrams to one endpoint become one message with UDP GSO (one segment
//! size, the last segment may be shorter), several such runs go in one `sendmmsg`, and
//! `quinn-udp` sends a run alone where that fails, falling back to one datagram per call
//! where the kernel lacks GSO.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Type};

/// How long a blocked receive waits before the loop looks at the socket again (a `wg set
/// listen-port` swaps it).
pub const RECV_TIMEOUT: Duration = Duration::from_millis(500);
const BUFFER_BYTES: usize = 4 << 20;

pub fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    let _ = s.set_send_buffer_size(BUFFER_BYTES);
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(s.into())
}

/// The address as the socket wants it.
pub fn to_wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// The address as people read it.
pub fn from_wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => SocketAddr::V6(a),
        },
        v4 => v4,
    }
}

/// Bytes one UDP GSO send may carry (the UDP length field's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;
/// How long one flush may wait, in all, for room in a full socket buffer before the rest of
/// its datagrams are dropped (the I/O thread carries both directions, so it must not sit
/// on a stalled send for long).
const SEND_WAIT: Duration = Duration::from_millis(200);

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

    /// Sends everything, up to `mmsg::MAX` runs per `sendmmsg`; returns how many datagrams could not
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

/// `UDP_SEGMENT` from linux/udp.h (the libc crate has it only for some targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Sends the first runs (up to `mmsg::MAX`) in one `sendmmsg`, each a GSO message; returns
/// how many went. The socket is the dual-stack IPv6 one of [`bind`].
fn sendmmsg_runs(fd: RawFd, runs: &[Run], buf: &[u8]) -> std::io::Result<usize> {
    mmsg::send(
        fd,
        runs.iter().map(|run| mmsg::Datagram {
            to: to_wire(run.to),
            bytes: &buf[run.start..run.start + run.len],
            cmsg: (run.count > 1)
                .then(|| mmsg::Cmsg::new(libc::SOL_UDP, UDP_SEGMENT, run.segment as u16)),
        }),
    )
}

fn send_run(socket: &Socket, run: &Run, contents: &[u8], deadline: Instant) -> u64 {
    let transmit = quinn_udp::Transmit {
        destination: to_wire(run.to),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips() {
        let a: SocketAddr = "10.1.0.1:51820".parse().unwrap();
        assert_eq!(to_wire(a).to_string(), "[::ffff:10.1.0.1]:51820");
        assert_eq!(from_wire(to_wire(a)), a);
        let b: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(from_wire(to_wire(b)), b);
    }

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
        let tx = Socket::new(bind(0).unwrap()).unwrap();
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
