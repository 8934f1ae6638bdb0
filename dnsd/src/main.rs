//! `dnsd`: the binary. Parses flags, follows the registry, binds sockets, serves.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};

use dnsd::cache::Cache;
use dnsd::config::{Cli, Command, Config};
use dnsd::forward::Forwarder;
use dnsd::index::Options;
use dnsd::metrics::Metrics;
use dnsd::server::{self, Shared};

/// Receive buffer per UDP socket: absorbs bursts while a worker is busy.
const UDP_RECV_BUFFER: usize = 4 << 20;
/// How long a stale forwarded answer may still be served when upstreams are down.
const MAX_STALE: std::time::Duration = std::time::Duration::from_secs(86_400);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!("dnsd: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Man { dir }) = &cli.command {
        return match man_pages(dir) {
            Ok(n) => {
                eprintln!("wrote {n} man pages to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dnsd: writing man pages into {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let log_format = cli.log_format;
    let config = match Config::load(cli).and_then(|c| c.check_paths().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dnsd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        dnsd::config::LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour codes only for a terminal, not for journald or a log file.
        dnsd::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsd: {e:#}");
            let usage = e
                .downcast_ref::<registry::Error>()
                .is_some_and(|r| matches!(r, registry::Error::Invalid { .. }));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only means drops under bursts.
    let _ = sock.set_recv_buffer_size(UDP_RECV_BUFFER);
    sock.bind(&addr.into())?;
    let sock: UdpSocket = sock.into();
    if let Err(e) = dnsd::udp_batch::enable_pktinfo(&sock) {
        // Answers still go out, from the address the kernel picks for the way back.
        tracing::warn!(%addr, error = %e, "cannot learn each query's destination address");
    }
    Ok(sock)
}

/// Raises the soft open-file limit to the hard one: the caps (forwards, TCP connections)
/// need more descriptors than the usual soft 1024. Says so when even the hard limit is short.
fn raise_open_file_limit(needed: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(soft = lim.rlim_cur, hard = lim.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
        }
    }
    if (lim.rlim_cur as u128) < needed as u128 {
        tracing::warn!(
            limit = lim.rlim_cur,
            needed,
            "open-file limit below what max_forwards + max_tcp_connections need: past it, new forwards and TCP clients fail (raise LimitNOFILE or lower the caps)"
        );
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let reg = registry::open(&config.registry)?;
    let opts = Options {
        default_org: config.default_org.clone(),
        local_region: config.region.clone(),
        allow: config.allow.clone(),
    };
    let copy = config.registry_copy.clone().map(registry::LocalCopy::new);
    let (changes, builder, keeper) = dnsd::live::start(reg.clone(), &opts, copy);
    let metrics = Arc::new(Metrics::default());
    raise_open_file_limit(config.descriptors_needed());
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    let (upstreams, itself) =
        config.split_upstreams(resolv.as_deref(), &dnsd::config::local_addrs());
    for u in &itself {
        tracing::warn!(upstream = %u, "upstream dropped: it is dnsd itself (a local address on a port dnsd listens on); forwarding to it would loop");
    }
    if upstreams.is_empty() && !itself.is_empty() {
        tracing::warn!(dropped = ?itself, "every upstream is dnsd itself: no upstream left, names outside .internal get REFUSED; give --upstream another resolver");
    } else if upstreams.is_empty() {
        tracing::warn!("no upstream resolvers: names outside .internal get REFUSED");
    }
    let forwarder = (!upstreams.is_empty()).then(|| {
        Forwarder::new(
            upstreams.clone(),
            config.upstream_timeout,
            Cache::with_limits(config.cache_size, config.cache_bytes, MAX_STALE),
            metrics.clone(),
        )
        .with_max_inflight(config.max_forwards)
        .with_max_per_source(config.max_forwards_per_source)
    });
    let tcp_limits = server::TcpLimits {
        max_connections: config.max_tcp_connections,
        idle: config.tcp_idle_timeout,
        write: config.tcp_write_timeout,
    };
    let index = builder.index().clone();
    if config.default_org.is_some() && index.default_org.is_none() {
        tracing::warn!(org = ?config.default_org, "default org not in the registry (yet)");
    }
    let shared = Arc::new(Shared {
        index: ArcSwap::from_pointee(index),
        forwarder,
        metrics: metrics.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    for &addr in &config.listen {
        let sock = Arc::new(udp_socket(addr).with_context(|| format!("listen {addr}: udp"))?);
        for i in 0..config.udp_workers {
            let (shared, sock, handle) = (shared.clone(), sock.clone(), runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("udp-{addr}-{i}"))
                .spawn(move || server::udp_worker(shared, sock, handle))
                .context("starting a udp worker")?;
        }
        let listener = runtime
            .block_on(async { server::tcp_listen(addr) })
            .with_context(|| format!("listen {addr}: tcp"))?;
        runtime.spawn(server::tcp_listener_with(
            shared.clone(),
            listener,
            tcp_limits,
        ));
    }
    if let Some(addr) = config.metrics {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("metrics {addr}"))?;
        runtime.spawn(dnsd::metrics::serve(listener, metrics.clone()));
    }
    let keeper_at_stop = keeper.clone();
    runtime.spawn(dnsd::live::follow(
        reg,
        changes,
        builder,
        opts,
        shared.clone(),
        keeper,
    ));
    tracing::info!(
        listen = ?config.listen,
        upstreams = ?upstreams,
        allow = ?config.allow,
        revision = shared.index.load().revision,
        "dnsd serving"
    );
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("dnsd stopping");
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    if let Some(k) = keeper_at_stop {
        if !k.settle(STOP_SETTLE) {
            tracing::warn!("the local copy's last changes were not all written before the stop; a restart reads them from the registry");
        }
    }
    Ok(())
}

/// How long a stop waits for the local copy's writer.
const STOP_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes dnsd.1 and a page per subcommand into `dir`; returns how many.
fn man_pages(dir: &std::path::Path) -> std::io::Result<usize> {
    man::write_pages(<Cli as clap::CommandFactory>::command(), "dnsd", dir)
}

#[path = "../../build/man.rs"]
mod man;
