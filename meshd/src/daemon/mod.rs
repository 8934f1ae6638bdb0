//! The thin shell: one thread that carries packets between the TUN and the UDP socket, and
//! threads that tick the timers, answer the UAPI socket and follow the registry, each
//! taking the core's lock for the length of one batch or one change.

mod io_loop;
mod registry_start;
mod registry_sync;
mod shell;
mod signals;
mod uapi_socket;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use registry::{Change, NodeSpec};

use crate::config::{DropInConfig, MeshConfig};
use crate::core::{Core, Options};
use crate::{key, metrics, tun, udp, websocket};

pub use shell::Shell;
pub use signals::Signals;

/// Why the process is ending.
#[derive(Debug)]
pub(super) enum Exit {
    Signal(i32),
    TunGone(String),
}

pub(super) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))?;
    Ok(())
}

fn start(
    signals: Signals,
    interface: &str,
    core: Core,
    port: u16,
    health: Option<Arc<registry::Health>>,
) -> Result<(Arc<Shell>, mpsc::Receiver<Exit>, mpsc::Sender<Exit>)> {
    let (tx, rx) = mpsc::channel();
    signals::catch_signals(signals, tx.clone())?;
    let sock = udp::bind(port).with_context(|| format!("binding UDP port {port}"))?;
    let actual = sock.local_addr().map(|a| a.port()).unwrap_or(port);
    let sock = udp::Socket::new(sock).context("setting up the UDP socket")?;
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
        revision: AtomicU64::new(0),
        websockets: Default::default(),
        websocket_fingerprint: Default::default(),
        websocket_listening: AtomicBool::new(false),
    });
    uapi_socket::uapi_listen(shell.clone())?;
    let s = shell.clone();
    let t = tx.clone();
    spawn("io", move || io_loop::io_loop(s, t))?;
    let s = shell.clone();
    spawn("timers", move || io_loop::timer_loop(s))?;
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
        let shell = shell.clone();
        metrics::serve(addr, move || shell.sample()).context("serving metrics")?;
    }
    tracing::info!(interface = %cfg.interface, "up (drop-in)");
    wait_and_stop(&shell, rx)
}

/// A mesh node: registers itself, follows the registry, keeps the peers in step.
pub fn run_mesh(cfg: MeshConfig, signals: Signals) -> Result<()> {
    let secret = key::load_or_create(&cfg.key)?;
    let public = key::public_of(&secret);
    let reg = registry::open(&cfg.registry)
        .with_context(|| format!("opening registry {}", registry::shown(&cfg.registry)))?;
    let spec = NodeSpec {
        name: cfg.node.clone(),
        region: cfg.region.clone(),
        public_key: public,
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
    let copy = cfg.registry_copy.as_ref().map(registry::LocalCopy::new);
    let started = registry_start::start(reg.clone(), &cfg.node, copy);
    let health = started.changes.health.clone();
    let options = Options {
        forward: cfg.gateway,
        org_isolation: true,
        // Gateways hold their laptops' and sites' tunnels just in time.
        idle_evict: cfg.gateway.then_some(cfg.idle_evict),
    };
    let core = Core::new(Some(secret), options, random_index());
    let (shell, rx, _tx) = start(signals, &cfg.interface, core, cfg.listen_port, Some(health))?;
    tun::configure_mesh(&cfg.interface)?;
    if let Some(ws) = &cfg.websocket {
        let dir = cfg.key.parent().unwrap_or(Path::new("."));
        websocket::serve(ws, dir, shell.clone()).context("serving WebSockets")?;
    }
    if let Some(addr) = cfg.metrics {
        let shell = shell.clone();
        metrics::serve(addr, move || shell.sample()).context("serving metrics")?;
    }
    tracing::info!(node = %cfg.node, interface = %cfg.interface, public_key = %public, gateway = cfg.gateway, idle_evict_s = cfg.idle_evict.as_secs_f64(), "up");
    let keeper = started.keeper.clone();
    let s = shell.clone();
    spawn("registry-sync", move || {
        registry_sync::sync_loop(s, started, reg, spec, registered)
    })?;
    let stopped = wait_and_stop(&shell, rx);
    if let Some(k) = keeper {
        if !k.settle(STOP_SETTLE) {
            tracing::warn!("the local copy's last changes were not all written before the stop; a restart reads them from the registry");
        }
    }
    stopped
}

/// How long a stop waits for the local copy's writer.
const STOP_SETTLE: Duration = Duration::from_secs(2);
