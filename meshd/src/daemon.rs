//! The thin shell: one thread that carries packets between the TUN and the UDP socket, and
//! threads that tick the timers, answer the UAPI socket and follow the registry, each
//! taking the core's lock for the length of one batch or one change.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use registry::{Change, NodeSpec};
use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::batch::{self, Batch, Out};
use crate::config::{DropInConfig, MeshConfig};
use crate::core::{timers::TICK, Core, Drop, Endpoint, Options};
use crate::{key, metrics, sync, tun, uapi, udp, websocket};

/// Why the process is ending.
#[derive(Debug)]
enum Exit {
    Signal(i32),
    TunGone(String),
}

pub struct Shell {
    core: Mutex<Core>,
    tun: SyncDevice,
    udp: ArcSwap<batch::Socket>,
    interface: String,
    health: Option<Arc<registry::Health>>,
    stopping: AtomicBool,
    /// IPv4 fragments joined before the TUN; kept outside the core so that counting them
    /// takes no lock.
    fragments_joined: AtomicU64,
    /// A gateway's WebSocket connections (none elsewhere).
    pub websockets: Arc<websocket::Connections>,
    /// The WebSocket listener's certificate fingerprint, when it listens with TLS.
    pub websocket_fingerprint: std::sync::OnceLock<String>,
    pub websocket_listening: AtomicBool,
}

impl Shell {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic elsewhere must not stop the data plane; the core's state stays coherent
        // per call.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core with the lock held, then writes what it produced.
    fn with_io<R>(&self, f: impl FnOnce(&mut Core, &mut Out<'_>) -> R) -> R {
        let sock = self.udp.load();
        let mut batch = Batch::default();
        let r = f(&mut self.lock(), &mut batch.out(&sock, &self.tun));
        self.flush(&mut batch, &sock);
        r
    }

    /// Writes a batch out (without the lock) and counts what the kernel refused.
    fn flush(&self, batch: &mut Batch, sock: &batch::Socket) {
        batch.flush(sock, &self.tun);
        let mut refused = 0;
        for (conn, frames, datagrams) in batch.websocket.take() {
            if !self.websockets.send(conn, frames, datagrams) {
                refused += datagrams;
            }
        }
        if refused > 0 {
            self.lock().counters.drop_many(Drop::SendFailed, refused);
        }
        let joined = batch.take_joined();
        if joined > 0 {
            self.fragments_joined.fetch_add(joined, Ordering::Relaxed);
        }
        let (udp, tun) = batch.take_failures();
        if udp + tun > 0 {
            let mut core = self.lock();
            core.counters.drop_many(Drop::SendFailed, udp);
            core.counters.drop_many(Drop::TunWriteFailed, tun);
        }
    }

    pub fn sample(&self) -> metrics::Sample {
        let core = self.lock();
        let now = SystemTime::now();
        metrics::Sample {
            counters: core.counters.clone(),
            fragments_joined: self.fragments_joined.load(Ordering::Relaxed),
            nat64_bindings: core.nat64_bindings(),
            per_peer: core
                .peers()
                .iter()
                .map(|p| metrics::PeerSample {
                    name: p.name.clone(),
                    public_key: key::to_base64(&p.public_key),
                    tx_bytes: p.tx_bytes,
                    rx_bytes: p.rx_bytes,
                    latest_handshake: p.latest_handshake(now).map_or(0, |d| d.as_secs()),
                })
                .collect(),
            peers: core.peers().len(),
            peers_with_session: core
                .peers()
                .iter()
                .filter(|p| p.tunn.stats().0.is_some())
                .count(),
            peers_registered: core.registered_count(),
            peers_active: core.active_count(),
            registry_reachable: self.health.as_ref().map(|h| h.reachable()),
            registry_failures: self.health.as_ref().map_or(0, |h| h.failures()),
            peers_on_websocket: core
                .peers()
                .iter()
                .filter(|p| matches!(p.endpoint, Some(Endpoint::WebSocket { .. })))
                .count(),
            websocket: self.websocket_listening.load(Ordering::Relaxed).then(|| {
                let w = &self.websockets;
                metrics::WebSocketSample {
                    open: w.open.load(Ordering::Relaxed) as u64,
                    accepted: w.accepted.load(Ordering::Relaxed),
                    refused: w.refused.load(Ordering::Relaxed),
                    queue_full: w.queue_full.load(Ordering::Relaxed),
                    closed: websocket::Close::ALL
                        .iter()
                        .map(|c| (*c, w.closed(*c)))
                        .collect(),
                    fingerprint: self.websocket_fingerprint.get().cloned(),
                }
            }),
        }
    }

    /// Datagrams framed on WebSocket connection `from`, as many as have come whole: one
    /// lock for all of them, then the answers out, as [`Shell::pump_in`] does for UDP.
    /// An error means the stream is bad and the connection is to be closed.
    pub fn handle_websocket(
        &self,
        from: Endpoint,
        frames: &mut websocket::framing::Deframer,
        batch: &mut Batch,
    ) -> std::result::Result<usize, websocket::framing::FrameError> {
        let sock = self.udp.load();
        let result = {
            let mut out = batch.out(&sock, &self.tun);
            let mut core = self.lock();
            let now = Instant::now();
            let mut n = 0;
            loop {
                match frames.next_datagram() {
                    Ok(Some(d)) => {
                        core.handle_datagram(now, from, d, &mut out);
                        n += 1;
                    }
                    Ok(None) => break Ok(n),
                    Err(e) => break Err(e),
                }
            }
        };
        self.flush(batch, &sock);
        result
    }

    fn socket_path(&self) -> PathBuf {
        PathBuf::from(uapi::SOCKET_DIR).join(format!("{}.sock", self.interface))
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))?;
    Ok(())
}

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
            bufs: vec![vec![0u8; 65_535]; batch::TUN_BATCH],
            sizes: vec![0usize; batch::TUN_BATCH],
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
    fn pump_in(&self, st: &mut Inbound, sock: &batch::Socket) -> usize {
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
fn io_loop(shell: Arc<Shell>, exit: mpsc::Sender<Exit>) {
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

fn timer_loop(shell: Arc<Shell>) {
    while !shell.stopping.load(Ordering::Relaxed) {
        shell.with_io(|core, io| core.handle_timeout(Instant::now(), io));
        std::thread::sleep(TICK);
    }
}

/// Makes the UAPI socket's directory if it is missing: 0700 whatever the umask, since
/// nobody but root has business there. One that exists is left as it is, as wireguard-go
/// leaves it (it makes the directory 0755 less the umask itself): it may be shared with
/// wireguard-go and wg-quick, and the socket's own mode is what keeps others out.
fn socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Another meshd or wireguard-go made it meanwhile: theirs, as above.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // `mkdir` takes the umask off the mode; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} mode 0700", dir.display()))
}

/// Binds the UAPI socket mode 0600 whatever the umask: `get=1` hands out the private key
/// and `set=1` the whole interface, so only root may connect. On Linux a socket file takes
/// its mode from the socket's inode (less the umask) when it is bound, so the mode is set
/// before `bind`: the file never exists with a wider one. wireguard-go gets the same by
/// setting the process's umask around its bind, which here would race the threads that
/// are already running.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // SAFETY: fchmod on a descriptor we own, for the length of the call.
    if unsafe { libc::fchmod(sock.as_raw_fd(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock.bind(&socket2::SockAddr::unix(path)?)?;
    // Also after, for a kernel that took no notice of the mode before `bind`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    sock.listen(128)?;
    Ok(sock.into())
}

fn uapi_listen(shell: Arc<Shell>) -> Result<()> {
    let path = shell.socket_path();
    socket_dir(Path::new(uapi::SOCKET_DIR))?;
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "interface {}: {} is in use by another process",
                shell.interface,
                path.display()
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = bind_private(&path).with_context(|| format!("binding {}", path.display()))?;
    spawn("uapi", move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let shell = shell.clone();
            let _ = spawn("uapi-conn", move || {
                if let Err(e) = uapi_conn(&shell, conn) {
                    tracing::debug!(error = %e, "UAPI connection");
                }
            });
        }
    })
}

fn uapi_conn(shell: &Shell, conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\n" {
                break;
            }
            request.push_str(&line);
        }
        // DNS, if the request names an endpoint, before the lock: never under it.
        let resolved = uapi::resolve_names(&request);
        let (mut response, effects) =
            uapi::handle_request(&mut shell.lock(), &request, &resolved, SystemTime::now());
        if let Some(port) = effects.listen_port {
            if let Err(errno) = rebind(shell, port) {
                response = format!("errno={errno}\n\n");
            }
        }
        writer.write_all(response.as_bytes())?;
    }
}

fn rebind(shell: &Shell, port: u16) -> std::result::Result<(), i32> {
    let current = shell.lock().listen_port;
    if port == current && port != 0 {
        return Ok(());
    }
    let sock = udp::bind(port).map_err(|e| e.raw_os_error().unwrap_or(98))?;
    let actual = sock.local_addr().map(|a| a.port()).unwrap_or(port);
    let sock = batch::Socket::new(sock).map_err(|e| e.raw_os_error().unwrap_or(22))?;
    shell.udp.store(Arc::new(sock));
    shell.lock().listen_port = actual;
    tracing::info!(port = actual, "listening");
    Ok(())
}

/// SIGINT and SIGTERM, blocked in the thread that made this and in every thread started
/// from it afterwards. `main` makes it before anything starts a thread (the etcd client's
/// runtime among them), so that the waiting thread [`start`] spawns is the only one that
/// takes these signals and meshd always ends through [`wait_and_stop`], which removes the
/// UAPI socket. A signal that comes before that thread exists stays pending until it does.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    pub fn block() -> Result<Signals> {
        // SAFETY: plain libc signal-mask calls on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let err = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if err != 0 {
                bail!(
                    "blocking SIGINT and SIGTERM: {}",
                    std::io::Error::from_raw_os_error(err)
                );
            }
            Ok(Signals { set })
        }
    }
}

/// Turns the blocked signals into an `Exit` for main.
fn catch_signals(signals: Signals, exit: mpsc::Sender<Exit>) -> Result<()> {
    spawn("signals", move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the set the signals were blocked with.
        if unsafe { libc::sigwait(&signals.set, &mut sig) } == 0 {
            let _ = exit.send(Exit::Signal(sig));
        }
    })
}

fn start(
    signals: Signals,
    interface: &str,
    core: Core,
    port: u16,
    health: Option<Arc<registry::Health>>,
) -> Result<(Arc<Shell>, mpsc::Receiver<Exit>, mpsc::Sender<Exit>)> {
    let (tx, rx) = mpsc::channel();
    catch_signals(signals, tx.clone())?;
    let sock = udp::bind(port).with_context(|| format!("binding UDP port {port}"))?;
    let actual = sock.local_addr().map(|a| a.port()).unwrap_or(port);
    let sock = batch::Socket::new(sock).context("setting up the UDP socket")?;
    let tun = tun::open(interface)?;
    let mut core = core;
    core.listen_port = actual;
    let shell = Arc::new(Shell {
        core: Mutex::new(core),
        tun,
        udp: ArcSwap::from_pointee(sock),
        interface: interface.into(),
        health,
        stopping: AtomicBool::new(false),
        fragments_joined: AtomicU64::new(0),
        websockets: Default::default(),
        websocket_fingerprint: Default::default(),
        websocket_listening: AtomicBool::new(false),
    });
    uapi_listen(shell.clone())?;
    let s = shell.clone();
    let t = tx.clone();
    spawn("io", move || io_loop(s, t))?;
    let s = shell.clone();
    spawn("timers", move || timer_loop(s))?;
    Ok((shell, rx, tx))
}

fn wait_and_stop(shell: &Shell, rx: mpsc::Receiver<Exit>) -> Result<()> {
    let why = rx.recv().unwrap_or(Exit::Signal(0));
    shell.stopping.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_file(shell.socket_path());
    match why {
        Exit::Signal(sig) => {
            tracing::info!(signal = sig, "stopping");
            Ok(())
        }
        Exit::TunGone(e) => {
            tracing::info!(error = %e, "interface is gone; stopping");
            Ok(())
        }
    }
}

fn random_index() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}

/// A plain userspace WireGuard interface, configured only through the UAPI socket.
pub fn run_drop_in(cfg: DropInConfig, signals: Signals) -> Result<()> {
    let core = Core::new(None, Options::default(), random_index());
    let (shell, rx, _tx) = start(signals, &cfg.interface, core, 0, None)?;
    if let Some(addr) = cfg.metrics {
        metrics::serve(addr, shell.clone()).context("serving metrics")?;
    }
    tracing::info!(interface = %cfg.interface, "up (drop-in)");
    wait_and_stop(&shell, rx)
}

/// A mesh node: registers itself, follows the registry, keeps the peers in step.
pub fn run_mesh(cfg: MeshConfig, signals: Signals) -> Result<()> {
    let secret = key::load_or_create(&cfg.key)?;
    let public = key::to_base64(&key::public_of(&secret));
    let reg = registry::open(&cfg.registry)
        .with_context(|| format!("opening registry {}", registry::shown(&cfg.registry)))?;
    let spec = NodeSpec {
        name: cfg.node.clone(),
        region: cfg.region.clone(),
        public_key: public.clone(),
        endpoint: cfg.endpoint,
        gateway: cfg.gateway,
    };
    let registered = match reg.apply(&Change::RegisterNode(spec.clone())) {
        Ok(_) => true,
        Err(e) if e.is_user_error() => {
            // Bad input will not fix itself: say so and stop.
            bail!("registering node {}: {e}", cfg.node);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot register yet; will retry");
            false
        }
    };
    let follower = registry::follow_changes(reg.clone());
    let options = Options {
        forward: cfg.gateway,
        org_isolation: true,
        // Gateways hold their laptops' and sites' tunnels just in time.
        idle_evict: cfg.gateway.then_some(cfg.idle_evict),
    };
    let core = Core::new(Some(secret), options, random_index());
    let (shell, rx, _tx) = start(
        signals,
        &cfg.interface,
        core,
        cfg.listen_port,
        Some(follower.health.clone()),
    )?;
    tun::configure_mesh(&cfg.interface)?;
    if let Some(ws) = &cfg.websocket {
        let dir = cfg.key.parent().unwrap_or(Path::new("."));
        websocket::serve(ws, dir, shell.clone()).context("serving WebSockets")?;
    }
    if let Some(addr) = cfg.metrics {
        metrics::serve(addr, shell.clone()).context("serving metrics")?;
    }
    tracing::info!(node = %cfg.node, interface = %cfg.interface, public_key = %public, gateway = cfg.gateway, idle_evict_s = cfg.idle_evict.as_secs_f64(), "up");
    let s = shell.clone();
    let name = cfg.node.clone();
    spawn("registry-sync", move || {
        sync_loop(s, follower, reg, spec, registered, name)
    })?;
    wait_and_stop(&shell, rx)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Follows the registry change by change: each revision's delta goes into the model of this
/// node's desired state, and what it touched into the core, the interface's addresses and
/// the kernel routes, in the size of the change. A whole snapshot (at start, after falling
/// behind the change log, or from a backend without one) is applied whole.
fn sync_loop(
    shell: Arc<Shell>,
    changes: registry::Changes,
    reg: Arc<dyn registry::Registry>,
    spec: NodeSpec,
    mut registered: bool,
    me: String,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the registry");
            return;
        }
    };
    let registry::Changes {
        first, mut updates, ..
    } = changes;
    let mut model = sync::model::Model::new(&me);
    model.reset(&first, unix_now());
    let mut revision = first.revision;
    drop(first);
    release_freed_memory();
    // After a reset the core is brought to the whole desired state (which also drops
    // peers the model never knew); after a delta, only what it touched.
    let mut whole = true;
    // Time spent applying updates to the model since the core was last brought along.
    let mut model_time = Duration::ZERO;
    let mut logged = revision;
    let mut addresses: BTreeSet<Ipv6Addr> = BTreeSet::new();
    let mut routes: BTreeSet<sync::KernelRoute> = BTreeSet::new();
    rt.block_on(async {
        loop {
            if !registered {
                match reg.apply(&Change::RegisterNode(spec.clone())) {
                    Ok(_) => {
                        registered = true;
                        tracing::info!("registered");
                    }
                    Err(e) => tracing::debug!(error = %e, "registering"),
                }
            }
            let started = Instant::now();
            model.tick(unix_now());
            let dirty = model.take_dirty();
            model_time += started.elapsed();
            if whole || !dirty.is_empty() {
                let started = Instant::now();
                let applied = if whole {
                    let want = model.desired();
                    shell.with_io(|core, io| sync::apply(core, &want, Instant::now(), io))
                } else {
                    shell.with_io(|core, io| {
                        sync::model::apply_dirty(core, &model, &dirty, Instant::now(), io)
                    })
                };
                // The model's and the core's work; the kernel's (addresses, routes: `ip`
                // commands) is timed on its own.
                let took_us = (model_time + started.elapsed()).as_micros() as u64;
                let started = Instant::now();
                if whole || dirty.addresses {
                    sync_addresses(&shell, &mut addresses, &model.addresses());
                }
                if whole || dirty.routes {
                    sync_routes(&shell, &mut routes, &model.routes());
                }
                let kernel_us = started.elapsed().as_micros() as u64;
                if whole || applied != sync::Applied::default() {
                    tracing::info!(
                        revision = revision.0,
                        whole,
                        added = applied.added,
                        removed = applied.removed,
                        updated = applied.updated,
                        addresses = addresses.len(),
                        site_routes = routes.len(),
                        took_us,
                        kernel_us,
                        "applied registry"
                    );
                } else {
                    tracing::debug!(
                        revision = revision.0,
                        took_us,
                        kernel_us,
                        "applied registry"
                    );
                }
                whole = false;
            } else if revision != logged {
                // A change that touched nothing here: the model's work only.
                let took_us = model_time.as_micros() as u64;
                tracing::debug!(
                    revision = revision.0,
                    took_us,
                    kernel_us = 0,
                    "applied registry"
                );
            }
            model_time = Duration::ZERO;
            logged = revision;
            // Wait for the next revision, or until the next peer expires (an expired
            // laptop's tunnel is cut within a second), or 5 s.
            let wait = until_unix(
                model.next_expiry(),
                SystemTime::now(),
                Duration::from_secs(5),
            );
            let mut next = match tokio::time::timeout(wait, updates.recv()).await {
                Ok(Some(u)) => Some(u),
                Ok(None) => return,
                Err(_) => None,
            };
            // Take every update already queued before touching the core again.
            let started = Instant::now();
            while let Some(u) = next {
                revision = u.revision();
                match u {
                    registry::Update::Reset(snap) => {
                        model.reset(&snap, unix_now());
                        drop(snap);
                        release_freed_memory();
                        whole = true;
                    }
                    registry::Update::Delta(d) => model.apply(&d),
                }
                next = updates.try_recv().ok();
            }
            model_time += started.elapsed();
            if shell.stopping.load(Ordering::Relaxed) {
                return;
            }
        }
    });
}

/// Hands memory freed after reading a whole snapshot back to the system: the model keeps a
/// small part of what the snapshot held, and glibc's allocator otherwise keeps the rest in the
/// process (a gateway of 10,000 peers in a registry of 100,000 machines stayed at 108 MB).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live data.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long from `now` until Unix second `next` (a peer's expiry), a little over so that it
/// has passed by then; at most `limit`, and `limit` when there is none.
fn until_unix(next: Option<i64>, now: SystemTime, limit: Duration) -> Duration {
    next.and_then(|e| u64::try_from(e).ok())
        .and_then(|e| {
            (UNIX_EPOCH + Duration::from_secs(e))
                .duration_since(now)
                .ok()
        })
        .map_or(limit, |d| (d + Duration::from_millis(20)).min(limit))
}

/// Brings the interface's addresses to `want`.
fn sync_addresses(shell: &Shell, have: &mut BTreeSet<Ipv6Addr>, want: &BTreeSet<Ipv6Addr>) {
    let (add, del) = sync::address_diff(have, want);
    for a in add {
        match tun::add_address(&shell.interface, a) {
            Ok(()) => {
                have.insert(a);
            }
            Err(e) => tracing::warn!(error = %e, "adding an address"),
        }
    }
    for a in del {
        if let Err(e) = tun::remove_address(&shell.interface, a) {
            tracing::warn!(error = %e, "removing an address");
        }
        have.remove(&a);
    }
}

/// Brings the kernel's site routes into the interface to `want`. Removals first: a route
/// whose preferred source changed is removed, then added again with the new one.
fn sync_routes(
    shell: &Shell,
    have: &mut BTreeSet<sync::KernelRoute>,
    want: &BTreeSet<sync::KernelRoute>,
) {
    let (add, del) = sync::route_diff(have, want);
    for r in del {
        if let Err(e) = tun::remove_route(&shell.interface, r.0) {
            tracing::warn!(error = %e, route = %r.0, "removing a site route");
        }
        have.remove(&r);
    }
    for r in add {
        match tun::add_route(&shell.interface, r.0, r.1) {
            Ok(()) => {
                have.insert(r);
            }
            Err(e) => tracing::warn!(error = %e, route = %r.0, "adding a site route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    // The umask these run under (022 for cargo test, usually) would leave the directory
    // 0755 and the socket 0755 without the explicit modes.
    #[test]
    fn socket_directory_is_made_0700_and_the_socket_0600() {
        let base = temp_dir("uapi");
        let dir = base.join("run").join("wireguard");
        socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let path = dir.join("wg0.sock");
        let _listener = bind_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        UnixStream::connect(&path).expect("the socket answers");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_loop_wakes_when_the_next_peer_expires() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000_500);
        let limit = Duration::from_secs(5);
        assert_eq!(until_unix(None, now, limit), limit, "none ahead");
        assert_eq!(
            until_unix(Some(1_000_000), now, limit),
            limit,
            "already past"
        );
        assert_eq!(
            until_unix(Some(1_000_001), now, limit),
            Duration::from_millis(520)
        );
        assert_eq!(until_unix(Some(i64::MAX), now, limit), limit);
        assert_eq!(until_unix(Some(-5), now, limit), limit);
    }

    #[test]
    fn a_socket_directory_that_exists_is_left_as_it_is() {
        let dir = temp_dir("uapi-shared");
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
