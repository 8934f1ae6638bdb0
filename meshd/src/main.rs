use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use meshd::config::{Cli, Command, LogFormat, Mode};
use meshd::{daemon, key, uapi};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour codes only for a terminal, not for journald or a log file.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli.command {
        Some(Command::Pubkey { key: path }) => {
            return match key::load_or_create(&path) {
                Ok(secret) => {
                    println!("{}", key::public_of(&secret));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshd: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Man { dir }) => {
            return match man_pages(&dir) {
                Ok(n) => {
                    eprintln!("wrote {n} man pages to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshd: writing man pages into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let mode = match cli.run.resolve() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("meshd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Mode::DropIn(cfg) = &mode {
        if !cfg.foreground {
            return daemonise(&cfg.interface);
        }
    }
    // Before anything starts a thread (the etcd client starts its runtime when the registry
    // opens): threads inherit the mask, so the daemon's signal thread is the only one that
    // takes SIGINT and SIGTERM. (`Command` children start with an empty mask again.)
    let result = daemon::Signals::block().and_then(|signals| match mode {
        Mode::Mesh(cfg) => daemon::run_mesh(*cfg, signals),
        Mode::DropIn(cfg) => daemon::run_drop_in(cfg, signals),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What wg-quick expects of a userspace implementation: return once the interface and its
/// UAPI socket exist, leaving the daemon running.
fn daemonise(interface: &str) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("meshd: finding own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshd: starting the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sock = std::path::Path::new(uapi::SOCKET_DIR).join(format!("{interface}.sock"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("meshd: the daemon for {interface} exited ({status}); run with --foreground to see why");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("meshd: the daemon for {interface} did not come up within 10 s");
    ExitCode::FAILURE
}

/// Writes meshd.1 and a page per subcommand into `dir`; returns how many.
fn man_pages(dir: &std::path::Path) -> std::io::Result<usize> {
    man::write_pages(<Cli as clap::CommandFactory>::command(), "meshd", dir)
}

#[path = "../../build/man.rs"]
mod man;
