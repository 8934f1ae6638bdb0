//! wgtool: keys made locally, tunnel files, and administration of the sixpn registry.
//!
//! Exit status: 0 on success, 2 for usage and validation errors (one line on stderr),
//! 1 for other failures. A failing command writes nothing.

mod admin;
mod allowed_ips;
mod api;
mod cli;
mod doctor;
mod inproc;
mod key;
mod lifetime;
mod peer;
mod prompt;
mod qr;
mod registry_copy;
mod status;
mod table;
mod token;
mod tunnel;

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// An error in what the user asked for (exit 2), as opposed to a failure of the system:
/// the in-process tunnel's, whose binary exits as wgtool does.
pub use ::inproc::{usage, Usage};

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`wgtool org list --json | head`) instead of panicking on a broken pipe.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgtool: {}", one_line(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}

#[path = "../../build/man.rs"]
mod man;

/// Writes `wgtool.1` and a page for every subcommand (`wgtool-org-create.1`, ...) into `dir`.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(usage(format!(
            "man directory `{}`: must be an existing folder",
            dir.display()
        )));
    }
    let written = man::write_pages(<Cli as clap::CommandFactory>::command(), "wgtool", dir)?;
    // wgtool-tunnel, which the in-process commands exec, installed beside wgtool.
    let tunnel = clap::Command::new(::inproc::TUNNEL_BIN)
        .version(env!("SIXPN_VERSION"))
        .about("The in-process tunnel that wgtool dig, ping, proxy and wsproxy run")
        .long_about(::inproc::HELP);
    let written = written + man::write_pages(tunnel, ::inproc::TUNNEL_BIN, dir)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let src = admin::Source {
        registry: cli.registry.clone(),
        api: cli.api.clone(),
        token: cli.token.clone(),
        fingerprint: cli.api_fingerprint.clone(),
    };
    match cli.command {
        Command::Genkey => {
            println!("{}", key::generate());
            Ok(())
        }
        Command::Pubkey => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            let public = key::public(&input).map_err(|e| usage(e.to_string()))?;
            println!("{public}");
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "wgtool", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man_pages(&dir),
        Command::Org(c) => admin::org(&src, c),
        Command::Node(c) => admin::node(&src, c),
        Command::Machine(c) => admin::machine(&src, c),
        Command::App(c) => admin::app(&src, c),
        Command::Registry(c) => admin::registry(&src, c),
        Command::Create(a) => peer::create(&src, a),
        Command::List(a) => peer::list(&src, a),
        Command::Remove(a) => peer::remove(&src, a),
        Command::Config(a) => peer::config(&src, a),
        Command::Token(c) => token::run(&src, c),
        Command::Status(a) => lifetime::status(&src, a),
        Command::Doctor {
            target,
            host,
            inproc,
            reach,
        } => match (inproc, target) {
            (true, Some(file)) => doctor::run_inproc(std::path::Path::new(&file), &reach),
            (_, target) => doctor::run(target.as_deref(), host, &src),
        },
        Command::Prune(a) => lifetime::prune(&src, a),
        Command::Dig(a) => launch(::inproc::Job::Dig {
            config: inproc::kept::tunnel_file(&src, a.config.as_deref(), &a.kept)?,
            reach: (&a.reach).into(),
            question: a.question,
            short: a.short,
        }),
        Command::Ping(a) => launch(::inproc::Job::Ping {
            config: inproc::kept::tunnel_file(&src, a.config.as_deref(), &a.kept)?,
            reach: (&a.reach).into(),
            target: a.target,
            count: a.count,
            interval: a.interval,
        }),
        Command::Proxy(a) => launch(::inproc::Job::Proxy {
            config: inproc::kept::tunnel_file(&src, a.config.as_deref(), &a.kept)?,
            reach: (&a.reach).into(),
            local: a.local,
            remote: a.remote,
            verbose: a.verbose,
        }),
        Command::Wsproxy(a) => launch(::inproc::Job::Wsproxy {
            config: a.config,
            listen: a.listen,
            reach: ::inproc::ReachArgs {
                transport: ::inproc::Transport::Websocket,
                websocket_port: a.websocket_port,
                websocket_fingerprint: a.websocket_fingerprint,
                websocket_plain: a.websocket_plain,
            },
        }),
        Command::Serve(a) => {
            if src.uses_api() {
                return Err(usage(
                    "serve: runs in front of the registry itself; drop --api and --token",
                ));
            }
            api::server::serve(api::server::ServeOptions {
                registry: cli.registry,
                listen: a.listen,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                state_dir: a.state_dir,
                names: a.names,
            })
        }
    }
}

use ::inproc::one_line;

/// Hands an in-process tunnel's command to `wgtool-tunnel` (or runs it here).
fn launch(job: ::inproc::Job) -> anyhow::Result<()> {
    ::inproc::launch(&job, env!("SIXPN_VERSION"))
}

fn exit_status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return 2;
        }
        if let Some(r) = cause.downcast_ref::<registry::Error>() {
            return if r.is_user_error() { 2 } else { 1 };
        }
    }
    1
}
