//! SIGINT and SIGTERM, taken by one thread and turned into an [`Exit`].

use std::sync::mpsc;

use anyhow::{bail, Result};

use super::{spawn, Exit};

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
pub(super) fn catch_signals(signals: Signals, exit: mpsc::Sender<Exit>) -> Result<()> {
    spawn("signals", move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the set the signals were blocked with.
        if unsafe { libc::sigwait(&signals.set, &mut sig) } == 0 {
            let _ = exit.send(Exit::Signal(sig));
        }
    })
}
