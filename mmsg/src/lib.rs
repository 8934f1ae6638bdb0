//! `sendmmsg(2)` in one place: many datagrams, each to its own address and with at most one
//! control message (meshd's UDP GSO segment size, dnsd's source address), in one system
//! call; and `sendmsg(2)` for one such datagram. Linux only, as the callers are.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Most datagrams one [`send`] call passes to the kernel.
pub const MAX: usize = 64;

/// Bytes of data a [`Cmsg`] holds: an `in6_pktinfo` (20) is the largest the callers send.
const CMSG_DATA_MAX: usize = 20;

/// A control buffer for one message: `u64`s keep it aligned for `cmsghdr`, and 64 bytes hold
/// `CMSG_SPACE` of [`CMSG_DATA_MAX`] bytes.
type Control = [u64; 8];

/// One control message sent with a datagram (`cmsg_level`, `cmsg_type` and its data).
#[derive(Clone, Copy, Debug)]
pub struct Cmsg {
    level: libc::c_int,
    kind: libc::c_int,
    len: usize,
    data: [u8; CMSG_DATA_MAX],
}

impl Cmsg {
    /// A control message carrying `value`'s bytes as they lie in memory (a C struct or an
    /// integer in host order, as the kernel reads them).
    ///
    /// # Panics
    /// If `T` is larger than 20 bytes.
    pub fn new<T: Copy>(level: libc::c_int, kind: libc::c_int, value: T) -> Cmsg {
        let len = size_of::<T>();
        assert!(len <= CMSG_DATA_MAX, "control message data of {len} bytes");
        let mut data = [0u8; CMSG_DATA_MAX];
        // SAFETY: `value` is `len` readable bytes and `data` has room for them; the two do
        // not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), data.as_mut_ptr(), len)
        };
        Cmsg {
            level,
            kind,
            len,
            data,
        }
    }

    /// Writes the message into `buf`; returns the `msg_controllen` it takes.
    fn write(&self, buf: &mut Control) -> usize {
        *buf = [0; 8];
        // SAFETY: `buf` is aligned for cmsghdr (u64) and 64 bytes long, room for the header
        // and CMSG_DATA_MAX bytes of data (CMSG_SPACE(20) is 40 on Linux); the CMSG_* helpers
        // compute within it.
        unsafe {
            let space = libc::CMSG_SPACE(self.len as u32) as usize;
            debug_assert!(space <= size_of::<Control>());
            let c = buf.as_mut_ptr().cast::<libc::cmsghdr>();
            (*c).cmsg_level = self.level;
            (*c).cmsg_type = self.kind;
            (*c).cmsg_len = libc::CMSG_LEN(self.len as u32) as _;
            std::ptr::copy_nonoverlapping(self.data.as_ptr(), libc::CMSG_DATA(c), self.len);
            space
        }
    }
}

/// One datagram to send: where to (in the socket's family: a dual-stack IPv6 socket wants
/// IPv4 peers v4-mapped), its bytes, and a control message if it needs one.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub cmsg: Option<Cmsg>,
}

/// Sends the first datagrams of `datagrams` (up to [`MAX`]) in one `sendmmsg`; returns how
/// many the kernel took, or the error of the first when it took none.
pub fn send<'a>(fd: RawFd, datagrams: impl IntoIterator<Item = Datagram<'a>>) -> io::Result<usize> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: [libc::sockaddr_storage; MAX] = unsafe { zeroed() };
    let mut iovs: [libc::iovec; MAX] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX] = unsafe { zeroed() };
    let mut controls = [[0u64; 8]; MAX];
    let mut k = 0;
    for d in datagrams.into_iter().take(MAX) {
        fill(
            &mut hdrs[k].msg_hdr,
            &d,
            &mut names[k],
            &mut iovs[k],
            &mut controls[k],
        );
        k += 1;
    }
    if k == 0 {
        return Ok(0);
    }
    // SAFETY: `hdrs[..k]` point into `names`, `iovs`, `controls` and the datagrams' bytes,
    // all alive for the call; the kernel only reads through them.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as libc::c_uint, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends one datagram with `sendmsg`.
pub fn send_one(fd: RawFd, datagram: &Datagram<'_>) -> io::Result<()> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov: libc::iovec = unsafe { zeroed() };
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    let mut control: Control = [0; 8];
    fill(&mut hdr, datagram, &mut name, &mut iov, &mut control);
    // SAFETY: as in `send`, for one header.
    if unsafe { libc::sendmsg(fd, &hdr, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points `hdr` at `d`'s address (written into `name`), bytes (through `iov`) and control
/// message (written into `control`).
fn fill(
    hdr: &mut libc::msghdr,
    d: &Datagram<'_>,
    name: &mut libc::sockaddr_storage,
    iov: &mut libc::iovec,
    control: &mut Control,
) {
    *iov = libc::iovec {
        // sendmsg only reads through it.
        iov_base: d.bytes.as_ptr().cast_mut().cast(),
        iov_len: d.bytes.len(),
    };
    hdr.msg_namelen = sockaddr(d.to, name);
    hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    hdr.msg_flags = 0;
    match d.cmsg {
        Some(c) => {
            hdr.msg_controllen = c.write(control) as _;
            hdr.msg_control = control.as_mut_ptr().cast();
        }
        None => {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        }
    }
}

/// Writes `addr` into `ss` in its family; returns its length.
pub fn sockaddr(addr: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: storage is large and aligned enough for a sockaddr_in.
            let s =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    fn receiver(bind: &str) -> UdpSocket {
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn one_call_sends_each_datagram_to_its_own_address_in_order() {
        let (a, b) = (receiver("127.0.0.1:0"), receiver("[::1]:0"));
        let tx = UdpSocket::bind("[::]:0").unwrap();
        let a_mapped: SocketAddr = match a.local_addr().unwrap() {
            SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped(), v4.port()).into(),
            v6 => v6,
        };
        let to = [a_mapped, b.local_addr().unwrap(), a_mapped];
        let payloads = [[0u8; 3], [1; 3], [2; 3]];
        let sent = send(
            tx.as_raw_fd(),
            to.iter().zip(&payloads).map(|(to, bytes)| Datagram {
                to: *to,
                bytes,
                cmsg: None,
            }),
        )
        .unwrap();
        assert_eq!(sent, 3);
        let mut buf = [0u8; 8];
        for want in [0u8, 2] {
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[want; 3]);
        }
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[1; 3]);
        assert_eq!(send(tx.as_raw_fd(), std::iter::empty()).unwrap(), 0);
    }

    #[test]
    fn a_control_message_reaches_the_kernel() {
        // IP_TOS on an IPv4 socket: the receiver sees the byte the control message set.
        let rx = receiver("127.0.0.1:0");
        let on: libc::c_int = 1;
        // SAFETY: a c_int option on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVTOS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tos: libc::c_int = 0x28;
        send_one(
            tx.as_raw_fd(),
            &Datagram {
                to: rx.local_addr().unwrap(),
                bytes: b"x",
                cmsg: Some(Cmsg::new(libc::IPPROTO_IP, libc::IP_TOS, tos)),
            },
        )
        .unwrap();
        let mut buf = [0u8; 4];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control: Control = [0; 8];
        // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<Control>() as _;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::recvmsg(rx.as_raw_fd(), &mut hdr, 0) }, 1);
        // SAFETY: the walk stays inside the control buffer recvmsg filled.
        let got = unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            assert!(!c.is_null());
            assert_eq!(
                ((*c).cmsg_level, (*c).cmsg_type),
                (libc::IPPROTO_IP, libc::IP_TOS)
            );
            *libc::CMSG_DATA(c)
        };
        assert_eq!(got, 0x28);
    }
}
