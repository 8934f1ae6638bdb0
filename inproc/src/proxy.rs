//! `wgtool proxy [BIND:]LOCAL_PORT REMOTE_HOST:REMOTE_PORT`: each TCP connection accepted
//! on the local port gets a TCP connection through the in-process tunnel to the remote, and
//! bytes flow both ways until each side has closed (half-closes are passed on).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpAddress;

use super::config::TunnelConfig;
use super::tunnel::UserspaceTunnel;
use crate::usage;
use crate::ReachArgs;

/// Per connection, in the tunnel: what may be in flight each way.
const RX_BUFFER: usize = 512 * 1024;
const TX_BUFFER: usize = 256 * 1024;
/// The loop wakes at least this often (signals also wake it).
const TICK: Duration = Duration::from_millis(250);

/// `[BIND:]PORT`: where to listen (default 127.0.0.1).
pub fn parse_local(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (Some(h), p),
        None => (None, s),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("local port `{port}`: a number from 0 to 65535"))?;
    let ip = match host {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("bind address `{h}`: an IP address (IPv6 in brackets)"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// `HOST:PORT`: a name (resolved through the org's DNS) or an IPv6 address in brackets.
pub fn parse_remote(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("remote `{s}`: give HOST:PORT, e.g. web.internal:8080"))?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("remote port `{port}`: a number from 1 to 65535")),
    };
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let a: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("remote address `{inner}`: not an IPv6 address"))?;
        return Ok((a.to_string(), port));
    }
    if host.contains(':') {
        return Err(format!(
            "remote `{s}`: put an IPv6 address in brackets, e.g. [fdaa:0:18::2]:8080"
        ));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Err(format!(
            "remote host `{host}`: the org network is IPv6; give a .internal name or an fdaa: address"
        ));
    }
    super::dns::check_name(host).map_err(|e| format!("remote host: {e}"))?;
    Ok((host.to_string(), port))
}

/// One proxied connection: the local stream and its socket in the tunnel.
struct Conn {
    local: TcpStream,
    handle: SocketHandle,
    /// The local side sent FIN and the tunnel side was closed for writing.
    local_done: bool,
    /// The remote sent FIN and the local side was shut down for writing.
    remote_done: bool,
    /// The local client, and bytes moved each way, for `--verbose` and Ctrl-C.
    client: SocketAddr,
    up: u64,
    down: u64,
    opened: Instant,
}

impl Conn {
    fn describe(&self, state: State) -> String {
        format!(
            "{}: {} after {:.1} s, {} B up, {} B down",
            self.client,
            state,
            self.opened.elapsed().as_secs_f64(),
            self.up,
            self.down
        )
    }
}

pub fn proxy(
    config: &Path,
    reach: &ReachArgs,
    local: &str,
    remote: &str,
    verbose: bool,
) -> Result<()> {
    let bind = parse_local(local).map_err(usage)?;
    let (host, port) = parse_remote(remote).map_err(usage)?;
    let cfg = TunnelConfig::load(config).map_err(|e| usage(e.to_string()))?;
    let listener = TcpListener::bind(bind).with_context(|| format!("listening on {bind}"))?;
    listener.set_nonblocking(true)?;
    super::shutdown::install();
    let mut t = UserspaceTunnel::open(&cfg, crate::reach(&cfg, reach)?)?;
    t.wait_up(super::dig::HANDSHAKE_LIMIT)?;
    let addr = super::resolve::address(&mut t, &host)?;
    println!("listening on {}", listener.local_addr()?);
    eprintln!("wgtool: forwarding to [{addr}]:{port} through the tunnel");
    let _ = std::io::stdout().flush();

    let mut conns: Vec<Conn> = Vec::new();
    let mut next_port = 49152 + (std::process::id() % 16384) as u16;
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !super::shutdown::requested() {
        fds.clear();
        fds.push(pollin(listener.as_raw_fd()));
        for c in &conns {
            let s = t.sockets.get::<tcp::Socket>(c.handle);
            let mut events = 0;
            if !c.local_done && s.can_send() {
                events |= libc::POLLIN;
            }
            if s.can_recv() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.local.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        t.poll(TICK, &mut fds)?;
        if fds[0].revents != 0 {
            accept(&listener, &mut t, &mut conns, addr, port, &mut next_port);
        }
        conns.retain_mut(|c| {
            let s = t.sockets.get_mut::<tcp::Socket>(c.handle);
            let finished = pump(c, s);
            if finished && verbose {
                eprintln!("wgtool: {}", c.describe(s.state()));
            }
            if finished {
                t.sockets.remove(c.handle);
            }
            !finished
        });
    }
    // Ctrl-C: reset what is open in the tunnel so the remote is not left waiting.
    for c in &conns {
        let s = t.sockets.get_mut::<tcp::Socket>(c.handle);
        eprintln!("wgtool: cut {}", c.describe(s.state()));
        s.abort();
    }
    t.poll(Duration::ZERO, &mut [])?;
    eprintln!("wgtool: proxy stopped ({} connection(s) cut)", conns.len());
    Ok(())
}

fn pollin(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn accept(
    listener: &TcpListener,
    t: &mut UserspaceTunnel,
    conns: &mut Vec<Conn>,
    addr: Ipv6Addr,
    port: u16,
    next_port: &mut u16,
) {
    while let Ok((local, client)) = listener.accept() {
        if local.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = local.set_nodelay(true);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
        );
        s.set_nagle_enabled(false);
        *next_port = next_port.checked_add(1).unwrap_or(49152);
        if s.connect(t.iface.context(), (IpAddress::Ipv6(addr), port), *next_port)
            .is_err()
        {
            continue;
        }
        let handle = t.sockets.add(s);
        conns.push(Conn {
            local,
            handle,
            local_done: false,
            remote_done: false,
            client,
            up: 0,
            down: 0,
            opened: Instant::now(),
        });
    }
}

/// Moves what can move each way; true when the connection is over.
fn pump(c: &mut Conn, s: &mut tcp::Socket) -> bool {
    // Local to tunnel.
    while !c.local_done && s.can_send() {
        let read = s.send(|buf| match c.local.read(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match read {
            Ok(Ok(0)) => {
                c.local_done = true;
                s.close();
            }
            Ok(Ok(n)) => c.up += n as u64,
            Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Ok(Err(_)) | Err(_) => {
                s.abort();
                return true;
            }
        }
    }
    // Tunnel to local.
    while s.can_recv() {
        let wrote = s.recv(|buf| match c.local.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match wrote {
            Ok(Ok(n)) => c.down += n as u64,
            Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Ok(Err(_)) | Err(_) => {
                s.abort();
                return true;
            }
        }
    }
    let drained = s.recv_queue() == 0;
    let remote_fin = matches!(
        s.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    );
    if drained && remote_fin && !c.remote_done {
        c.remote_done = true;
        let _ = c.local.shutdown(Shutdown::Write);
    }
    drained && matches!(s.state(), State::Closed | State::TimeWait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_side_defaults_to_loopback() {
        assert_eq!(parse_local("0").unwrap(), "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            parse_local("0.0.0.0:5432").unwrap(),
            "0.0.0.0:5432".parse().unwrap()
        );
        assert_eq!(
            parse_local("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_local("x").unwrap_err().starts_with("local port `x`"));
        assert!(parse_local("70000").is_err());
        assert!(parse_local("nowhere:80")
            .unwrap_err()
            .starts_with("bind address"));
    }

    #[test]
    fn the_remote_is_a_name_or_a_bracketed_ipv6_address() {
        assert_eq!(
            parse_remote("web.internal:8080").unwrap(),
            ("web.internal".into(), 8080)
        );
        assert_eq!(
            parse_remote("[fdaa:0:18::2]:80").unwrap(),
            ("fdaa:0:18::2".into(), 80)
        );
        assert!(parse_remote("web.internal")
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(parse_remote("web.internal:0")
            .unwrap_err()
            .starts_with("remote port"));
        assert!(parse_remote("fdaa::2:80").unwrap_err().contains("brackets"));
        assert!(parse_remote("10.0.0.1:80").unwrap_err().contains("IPv6"));
        assert!(parse_remote("[nope]:80").is_err());
        assert!(parse_remote("a..b:80").is_err());
    }
}
