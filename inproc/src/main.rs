//! `wgtool-tunnel`: the in-process tunnel's own binary, which `wgtool dig|ping|proxy|wsproxy`
//! exec once they have found the tunnel file (see the library's `Job`).

use std::process::ExitCode;

use inproc::{one_line, Job, Usage, HELP, TUNNEL_BIN};

fn main() -> ExitCode {
    // End quietly when the reader of our output goes away, as wgtool does.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut args = std::env::args_os().peekable();
    // wgtool execs this binary as `wgtool`, so that messages read as its own.
    let me = args
        .next()
        .and_then(|a| {
            let name = std::path::Path::new(&a).file_name()?.to_string_lossy();
            Some(name.into_owned())
        })
        .unwrap_or_else(|| TUNNEL_BIN.into());
    if args
        .peek()
        .is_some_and(|a| a == "--help" || a == "-h" || a == "help")
    {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.peek().is_some_and(|a| a == "--version" || a == "-V") {
        println!("{TUNNEL_BIN} {}", env!("SIXPN_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = Job::parse(args)
        .map_err(|e| {
            // wgtool only passes what this binary reads: a refusal then means the two are
            // from different builds.
            if me == "wgtool" {
                let path = std::env::current_exe().unwrap_or_else(|_| TUNNEL_BIN.into());
                inproc::usage(format!(
                    "{e} ({} is not from the build of this wgtool: install both from one)",
                    path.display()
                ))
            } else {
                inproc::usage(e)
            }
        })
        .and_then(|job| job.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{me}: {}", one_line(&e));
            let usage = e.chain().any(|c| c.is::<Usage>());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
