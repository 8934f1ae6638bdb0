//! The SQLite registry on a disk that fills up during a write: the write fails with an error
//! that names the cause, leaves nothing behind, every write acknowledged before it survives a
//! reopen, and writes work again once there is room. Needs root (it mounts a 2 MiB tmpfs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{node, setup, KEY_B};
use registry::sqlite::SqliteRegistry;
use registry::{Change, Error, Record, Registry};

/// A small tmpfs, unmounted when dropped, panics included.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs (this test needs root)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free for an unprivileged writer.
    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string and a zeroed statvfs for the call to fill.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so an open registry (a panic mid-test) cannot keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn add_machine(i: usize) -> Change {
    // A new app each time: two records per write, so the disk fills sooner.
    Change::AddMachine {
        org: "acme".into(),
        app: format!("app-{i}"),
        region: "iad".into(),
        node: "host-a".into(),
        process_group: None,
    }
}

fn open(path: &Path) -> SqliteRegistry {
    SqliteRegistry::open(path.to_str().unwrap()).expect("open the registry")
}

#[test]
fn sqlite_write_on_a_full_disk_fails_whole_and_clearly() {
    let fs = Tmpfs::mount("2m");
    let db: PathBuf = fs.path().join("registry.db");
    let reg = open(&db);
    setup(&reg);

    // Leave 1 MiB free: the registry's file, its WAL and its shm index share it.
    let filler = fs.path().join("filler");
    let fill = fs.free().saturating_sub(1024 * 1024);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("filler");

    let mut acknowledged = Vec::new();
    let mut failure = None;
    for i in 0..100_000 {
        let before = reg.snapshot().expect("snapshot before a write");
        match reg.apply(&add_machine(i)) {
            Ok(applied) => {
                assert_eq!(applied.revision.0, before.revision.0 + 1);
                let Some(Record::Machine(m)) = applied.record else {
                    panic!("AddMachine returns the machine")
                };
                acknowledged.push(m);
            }
            Err(e) => {
                failure = Some((i, before, e));
                break;
            }
        }
    }
    let (failed_at, before, error) = failure.expect("the disk never filled");
    eprintln!(
        "disk full after {} acknowledged writes (revision {}), error: {error}",
        acknowledged.len(),
        before.revision.0
    );
    assert!(
        !acknowledged.is_empty(),
        "the first write already failed: {error}"
    );

    // The error names the registry and the cause.
    let message = error.to_string();
    assert!(
        matches!(error, Error::Storage { .. }),
        "a storage error: {error:?}"
    );
    assert!(
        message.contains(db.to_str().unwrap()),
        "names the registry: {message}"
    );
    assert!(
        message.contains("full"),
        "names the cause (disk full): {message}"
    );
    assert!(!error.is_user_error(), "not the caller's fault: {message}");

    // Nothing of the failed write is visible, on this handle or a fresh one.
    assert_eq!(
        reg.snapshot().unwrap(),
        before,
        "the failed write left a trace"
    );
    assert_eq!(reg.revision().unwrap(), before.revision);
    // Still full: another write fails the same way and still changes nothing.
    let again = reg.apply(&add_machine(failed_at)).unwrap_err();
    assert!(again.to_string().contains("full"), "{again}");
    assert_eq!(reg.snapshot().unwrap(), before);
    drop(reg);

    let reg = open(&db);
    let after = reg.snapshot().unwrap();
    assert_eq!(after, before, "reopened: not what was acknowledged");
    for m in &acknowledged {
        assert_eq!(
            after.machines.get(&m.id),
            Some(m),
            "acknowledged machine lost"
        );
    }

    // Room again: the same write now succeeds, at the next revision.
    std::fs::remove_file(&filler).unwrap();
    let applied = reg
        .apply(&add_machine(failed_at))
        .expect("a write once there is room");
    assert_eq!(applied.revision.0, before.revision.0 + 1);
    reg.apply(&node("host-b", KEY_B, false))
        .expect("another write");
    drop(reg);
    let reg = open(&db);
    assert_eq!(
        reg.snapshot().unwrap().machines.len(),
        acknowledged.len() + 1
    );
}
