//! `wgtool-tunnel`: the in-process tunnel's own binary, which `wgtool dig|ping|proxy|wsproxy`
//! exec once they have found the tunnel file (see the library's `Job`).

use std::process::ExitCode;

use inproc::{one_line, Job, Usage, HELP, LAUNCHED_BY, TUNNEL_BIN};

const VERSION: &str = env!("SIXPN_VERSION");

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
        println!("{TUNNEL_BIN} {VERSION}");
        return ExitCode::SUCCESS;
    }
    // The wgtool that ran this one, where it is of another build.
    let other = std::env::var_os(LAUNCHED_BY)
        .filter(|by| by != VERSION)
        .map(|by| by.to_string_lossy().into_owned());
    let mismatch = |by: Option<&str>| {
        let path = std::env::current_exe().unwrap_or_else(|_| TUNNEL_BIN.into());
        let wgtool = match by {
            Some(by) => format!("is {VERSION} and the wgtool that ran it {by}"),
            None => "is not of the build of the wgtool that ran it".into(),
        };
        format!("{} {wgtool}: install both from one build", path.display())
    };
    let result = match Job::parse(args) {
        // wgtool passes only what this binary reads: a refusal means another build.
        Err(e) if me == "wgtool" => Err(inproc::usage(format!(
            "{e} ({})",
            mismatch(other.as_deref())
        ))),
        Err(e) => Err(inproc::usage(e)),
        Ok(job) => {
            if let Some(by) = &other {
                eprintln!("{me}: warning: {}", mismatch(Some(by)));
            }
            job.run()
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{me}: {}", one_line(&e));
            let usage = e.chain().any(|c| c.is::<Usage>());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
