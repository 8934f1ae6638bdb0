//! Wakes a waiting reader when the registry file changes, instead of polling it: inotify on
//! the file's folder reports every write another process makes (a WAL commit appends to
//! `<file>-wal`). Events queue in the descriptor from the moment the watch exists, so a write
//! that lands between a revision check and the wait is never missed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

pub struct FileChanges {
    fd: OwnedFd,
}

impl FileChanges {
    /// Watches `dir`; `None` where inotify is unavailable (the caller then polls).
    pub fn watch(dir: &Path) -> Option<FileChanges> {
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: plain system calls; the descriptor is owned from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        (wd >= 0).then_some(FileChanges { fd })
    }

    /// Blocks until something in the folder changed or `timeout` passed; drains the events.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return false;
        }
        self.drain();
        true
    }

    /// Discards queued events (only their arrival matters).
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer we own; the descriptor is non-blocking.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_write_in_the_folder_wakes_the_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let changes = FileChanges::watch(dir.path()).expect("inotify works here");
        assert!(
            !changes.wait(Duration::from_millis(20)),
            "nothing changed yet"
        );
        let path = dir.path().join("r.db-wal");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            std::fs::write(path, b"x").unwrap();
        });
        let start = Instant::now();
        assert!(changes.wait(Duration::from_secs(5)));
        assert!(start.elapsed() < Duration::from_secs(5));
        writer.join().unwrap();
    }
}
