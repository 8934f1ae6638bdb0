//! A child process that is killed and reaped on drop, its output in a log file.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process, killed (SIGKILL) and reaped on drop, panics included.
pub struct Proc {
    child: Child,
    log: PathBuf,
    /// Started as the leader of its own process group, killed as a group (so socat's
    /// per-connection children go too).
    group: bool,
    /// The log is this guard's own temp file, removed with it.
    owns_log: bool,
}

impl Proc {
    /// Starts `cmd` in a process group of its own, stdout and stderr appended to `log`
    /// (which stays, for whoever owns its folder).
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
        let file = OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc {
            child,
            log: log.to_path_buf(),
            group: true,
            owns_log: false,
        })
    }

    /// Starts `cmd` in this process group with stdout and stderr in a temp file of its own,
    /// removed on drop.
    pub(crate) fn spawn_logged(mut cmd: Command, tag: &str) -> Result<Proc> {
        let log = std::env::temp_dir().join(format!("{tag}-{}.log", crate::unique("p")));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc {
            child,
            log,
            group: false,
            owns_log: true,
        })
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the output holds `text`; returns the output then.
    pub fn wait_log(&self, text: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(text) {
                return Ok(log);
            }
            if start.elapsed() > limit {
                bail!("no `{text}` within {limit:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it at once (SIGKILL, to the whole group if it has one) and reaps it.
    pub fn kill(&mut self) {
        if self.group {
            // SAFETY: a plain kill(2) on the group this guard created.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// True while it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if self.owns_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
