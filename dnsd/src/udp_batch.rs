//! Batched UDP: one `recvmmsg` takes every query waiting on the socket (up to [`BATCH`]) and
//! one `sendmmsg` sends all their answers, so under load the syscall cost per query shrinks
//! by the batch size. Under light load a batch is one packet, as with `recv_from`.
//!
//! Each answer leaves from the address its query went to (IP_PKTINFO / IPV6_PKTINFO): a
//! socket on `[::]:53` on a host with every org's `fdaa:<net>::3` would otherwise answer from
//! whichever address the kernel picks for the way back, and resolvers drop such answers.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Most datagrams handled per syscall.
pub const BATCH: usize = 32;
/// Receive buffer per datagram; a query that does not fit is dropped (MSG_TRUNC).
pub const MAX_QUERY: usize = 4096;

/// Room for one PKTINFO control message of either family (aligned for `cmsghdr`).
type Control = [u64; 8];

/// Asks the kernel to say which local address each datagram on `sock` went to.
pub fn enable_pktinfo(sock: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: a c_int option value of the right size, on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match sock.local_addr()? {
        SocketAddr::V4(_) => set(libc::IPPROTO_IP, libc::IP_PKTINFO),
        // IPv4 datagrams through a dual-stack socket get IPV6_PKTINFO too (v4-mapped), and
        // an answer sent with it leaves from that IPv4 address.
        SocketAddr::V6(_) => set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    }
}

/// The local address a datagram went to, as its PKTINFO said.
#[derive(Clone, Copy)]
pub enum Dst {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

/// Buffers for one batch, reused for every batch.
pub struct Batch {
    bufs: Vec<[u8; MAX_QUERY]>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<Control>,
    dsts: Vec<Option<Dst>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    /// Answers to send: (index of the query it answers, bytes).
    pub replies: Vec<Vec<u8>>,
    reply_to: Vec<usize>,
    count: usize,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` only ever point into this struct's own vectors and
// are rebuilt before every syscall.
unsafe impl Send for Batch {}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        Batch {
            bufs: vec![[0u8; MAX_QUERY]; BATCH],
            addrs: vec![zero_addr; BATCH],
            ctrl: vec![[0; 8]; BATCH],
            dsts: vec![None; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            hdrs: vec![zero_hdr; BATCH],
            lens: vec![0; BATCH],
            truncated: vec![false; BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            reply_to: Vec::with_capacity(BATCH),
            count: 0,
        }
    }

    /// Blocks for at least one datagram; takes up to [`BATCH`]. Returns how many.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<Control>() as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for i in 0..self.count {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(MAX_QUERY);
            self.truncated[i] = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.dsts[i] = pktinfo(&self.hdrs[i].msg_hdr);
        }
        self.reply_to.clear();
        Ok(self.count)
    }

    /// Datagram `i` of the batch: its bytes (None if it did not fit) and its sender.
    pub fn packet(&self, i: usize) -> (Option<&[u8]>, Option<SocketAddr>) {
        let bytes = (!self.truncated[i]).then(|| &self.bufs[i][..self.lens[i]]);
        (bytes, to_socket_addr(&self.addrs[i]))
    }

    /// Datagram `i` (None if it did not fit), its sender, and the buffer for its answer.
    pub fn slot(&mut self, i: usize) -> (Option<&[u8]>, Option<SocketAddr>, &mut Vec<u8>) {
        let bytes = (!self.truncated[i]).then(|| &self.bufs[i][..self.lens[i]]);
        (bytes, to_socket_addr(&self.addrs[i]), &mut self.replies[i])
    }

    /// The local address datagram `i` went to (for an answer sent later by [`send_one`]).
    pub fn dst(&self, i: usize) -> Option<Dst> {
        self.dsts[i]
    }

    /// The buffer to write the answer to datagram `i` into.
    pub fn reply_buf(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.replies[i]
    }

    /// Marks the answer in `reply_buf(i)` for sending (if its sender has an address to
    /// answer: from an IP socket, always).
    pub fn reply(&mut self, i: usize) {
        if to_socket_addr(&self.addrs[i]).is_some() {
            self.reply_to.push(i);
        }
    }

    /// Sends every marked answer back to its sender; returns how many went out.
    pub fn send(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let n = self.reply_to.len();
        let mut sent = 0;
        while sent < n {
            // `reply` took only answers with an address, so none is left out here and the
            // count the kernel returns is of `reply_to[sent..]`.
            let answers = self.reply_to[sent..].iter().filter_map(|&i| {
                Some(mmsg::Datagram {
                    to: to_socket_addr(&self.addrs[i])?,
                    bytes: &self.replies[i],
                    cmsg: self.dsts[i].map(source),
                })
            });
            match mmsg::send(sock.as_raw_fd(), answers) {
                Ok(r) => sent += r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Skip the datagram that failed (e.g. an unreachable sender) and go on.
                    sent += 1;
                    if sent >= n {
                        return Err(e);
                    }
                }
            }
        }
        self.reply_to.clear();
        Ok(sent)
    }
}

/// Sends one answer to `to`, leaving from `dst` (the address its query went to) if known.
pub fn send_one(sock: &UdpSocket, buf: &[u8], to: SocketAddr, dst: Option<Dst>) -> io::Result<()> {
    mmsg::send_one(
        sock.as_raw_fd(),
        &mmsg::Datagram {
            to,
            bytes: buf,
            cmsg: dst.map(source),
        },
    )
}

/// The PKTINFO control message of a received datagram, if any.
fn pktinfo(h: &libc::msghdr) -> Option<Dst> {
    // SAFETY: `h` was filled by recvmmsg; the CMSG_* walk stays inside its control buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    return Some(Dst::V6(info));
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    return Some(Dst::V4(info));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// The control message that makes an answer leave from `dst`.
fn source(dst: Dst) -> mmsg::Cmsg {
    match dst {
        Dst::V4(info) => {
            // Leave from the address the query was sent to, on whatever interface.
            let out = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: info.ipi_addr,
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            mmsg::Cmsg::new(libc::IPPROTO_IP, libc::IP_PKTINFO, out)
        }
        Dst::V6(info) => mmsg::Cmsg::new(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info),
    }
}

fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and storage is large
            // and aligned enough for any socket address.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_receives_several_datagrams_and_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8; 5], addr).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut b = Batch::new();
        let n = b.recv(&server).unwrap();
        assert_eq!(n, 3);
        for i in 0..n {
            let (bytes, src) = b.packet(i);
            let bytes = bytes.unwrap().to_vec();
            assert_eq!(
                src,
                Some(clients[usize::from(bytes[0])].local_addr().unwrap())
            );
            let out = b.reply_buf(i);
            out.clear();
            out.extend_from_slice(&[bytes[0], 0xee]);
            b.reply(i);
        }
        assert_eq!(b.send(&server).unwrap(), 3);
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 16];
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], from), (&[i as u8, 0xee][..], addr));
        }
    }

    /// A query to 127.0.0.2 from 127.0.0.1: without PKTINFO the kernel would answer from
    /// 127.0.0.1 (the loopback route's source), which the client must not accept.
    #[test]
    fn answers_leave_from_the_address_the_query_went_to() {
        for bind in ["0.0.0.0:0", "[::]:0"] {
            let server = UdpSocket::bind(bind).unwrap();
            enable_pktinfo(&server).unwrap();
            let port = server.local_addr().unwrap().port();
            let asked: SocketAddr = ([127, 0, 0, 2], port).into();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            for later in [false, true] {
                client.send_to(b"q", asked).unwrap();
                let mut b = Batch::new();
                assert_eq!(b.recv(&server).unwrap(), 1);
                let (_, src) = b.packet(0);
                let src = src.unwrap();
                if later {
                    // As a forwarded answer goes: after the batch, on its own.
                    send_one(&server, b"a", src, b.dst(0)).unwrap();
                } else {
                    b.reply_buf(0).clear();
                    b.reply_buf(0).extend_from_slice(b"a");
                    b.reply(0);
                    assert_eq!(b.send(&server).unwrap(), 1);
                }
                let mut buf = [0u8; 4];
                let (_, from) = client.recv_from(&mut buf).unwrap();
                assert_eq!(from, asked, "{bind}, later: {later}");
            }
        }
    }
}
