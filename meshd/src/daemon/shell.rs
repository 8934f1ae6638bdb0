//! The state the threads share: the core behind its lock, the TUN, the UDP socket (swapped
//! by `wg set listen-port`), a gateway's WebSocket connections; and the one way to run the
//! core and write what it produced after the lock is let go.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tun_rs::SyncDevice;

use crate::batch::{Batch, Out};
use crate::core::{Core, Drop, Endpoint};
use crate::udp;
use crate::{metrics, uapi, websocket};

pub struct Shell {
    pub(super) core: Mutex<Core>,
    pub(super) tun: SyncDevice,
    pub(super) udp: ArcSwap<udp::Socket>,
    pub(super) interface: String,
    pub(super) health: Option<Arc<registry::Health>>,
    /// The registry revision the core, addresses and routes were last brought to.
    pub(super) revision: AtomicU64,
    pub(super) stopping: AtomicBool,
    /// IPv4 fragments joined before the TUN; kept outside the core so that counting them
    /// takes no lock.
    pub(super) fragments_joined: AtomicU64,
    /// A gateway's WebSocket connections (none elsewhere).
    pub websockets: Arc<websocket::Connections>,
    /// The WebSocket listener's certificate fingerprint, when it listens with TLS.
    pub websocket_fingerprint: std::sync::OnceLock<String>,
    pub websocket_listening: AtomicBool,
}

impl Shell {
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic elsewhere must not stop the data plane; the core's state stays coherent
        // per call.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core with the lock held, then writes what it produced.
    pub(super) fn with_io<R>(&self, f: impl FnOnce(&mut Core, &mut Out<'_>) -> R) -> R {
        let sock = self.udp.load();
        let mut batch = Batch::default();
        let r = f(&mut self.lock(), &mut batch.out(&sock, &self.tun));
        self.flush(&mut batch, &sock);
        r
    }

    /// Writes a batch out (without the lock) and counts what the kernel refused.
    pub(super) fn flush(&self, batch: &mut Batch, sock: &udp::Socket) {
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
                    public_key: registry::PublicKey::from(p.public_key).to_string(),
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
            registry_revision: self.revision.load(Ordering::Relaxed),
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

    pub(super) fn socket_path(&self) -> PathBuf {
        PathBuf::from(uapi::SOCKET_DIR).join(format!("{}.sock", self.interface))
    }
}

/// The WebSocket listener's way into the core: datagrams framed on a connection, as many as
/// have come whole, take one lock for all of them, then the answers go out, as
/// [`Shell::pump_in`] does for UDP.
impl websocket::PeerPath for Shell {
    type Scratch = Batch;

    fn connections(&self) -> &Arc<websocket::Connections> {
        &self.websockets
    }

    fn listening(&self, fingerprint: Option<String>) {
        if let Some(f) = fingerprint {
            let _ = self.websocket_fingerprint.set(f);
        }
        self.websocket_listening.store(true, Ordering::Relaxed);
    }

    fn datagrams(
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
}
