//! wgtool: keys made locally, tunnel files, and administration of the sixpn registry.
//!
//! Exit status: 0 on success, 2 for usage and validation errors (one line on stderr),
//! 1 for other failures. A failing command writes nothing.

mod admin;
mod allowed_ips;
mod cli;
mod key;
mod peer;
mod prompt;
mod registry_copy;
mod table;
mod tunnel;

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// An error in what the user asked for (exit 2), as opposed to a failure of the system.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

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

fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Org(c) => admin::org(&cli.registry, c),
        Command::Node(c) => admin::node(&cli.registry, c),
        Command::Machine(c) => admin::machine(&cli.registry, c),
        Command::App(c) => admin::app(&cli.registry, c),
        Command::Registry(c) => admin::registry(&cli.registry, c),
        Command::Create(a) => peer::create(&cli.registry, a),
        Command::List(a) => peer::list(&cli.registry, a),
        Command::Remove(a) => peer::remove(&cli.registry, a),
        Command::Config(a) => peer::config(&cli.registry, a),
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
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
