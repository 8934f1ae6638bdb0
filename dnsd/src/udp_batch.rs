//! Batched UDP: one `recvmmsg` takes every query waiting on the socket (up to [`BATCH`]) and
//! one `sendmmsg` sends all their answers, so under load the syscall cost per query shrinks
//! by the batch size. Under light load a batch is one packet, as with `recv_from`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Most datagrams handled per syscall.
pub const BATCH: usize = 32;
/// Receive buffer per datagram; a query that does not fit is dropped (MSG_TRUNC).
pub const MAX_QUERY: usize = 4096;

/// Buffers for one batch, reused for every batch.
pub struct Batch {
    bufs: Vec<[u8; MAX_QUERY]>,
    addrs: Vec<libc::sockaddr_storage>,
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
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
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

    /// The buffer to write the answer to datagram `i` into.
    pub fn reply_buf(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.replies[i]
    }

    /// Marks the answer in `reply_buf(i)` for sending.
    pub fn reply(&mut self, i: usize) {
        self.reply_to.push(i);
    }

    /// Sends every marked answer back to its sender; returns how many went out.
    pub fn send(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let n = self.reply_to.len();
        for (k, &i) in self.reply_to.iter().enumerate() {
            self.iovs[k] = libc::iovec {
                iov_base: self.replies[i].as_mut_ptr().cast(),
                iov_len: self.replies[i].len(),
            };
            let namelen = match i32::from(self.addrs[i].ss_family) {
                libc::AF_INET => size_of::<libc::sockaddr_in>(),
                _ => size_of::<libc::sockaddr_in6>(),
            };
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen as libc::socklen_t;
            h.msg_iov = &mut self.iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers `sent..n` point at buffers owned by `self`.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. an unreachable sender) and go on.
                sent += 1;
                if sent >= n {
                    return Err(e);
                }
                continue;
            }
            sent += r as usize;
        }
        self.reply_to.clear();
        Ok(sent)
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
}
