//! What sixpn's tests run on, in one place: network namespaces that clean up after
//! themselves ([`Netns`]), an [`Underlay`] joining them, child processes killed on drop
//! ([`Proc`]), free ports, a real etcd started by the test ([`Etcd`]), a Prometheus text
//! reader ([`metrics`]) and the workspace's binaries ([`bin`]).
//!
//! Everything a test makes carries the test process id and a counter ([`unique`]), so test
//! binaries and the tests inside them run in parallel, and is torn down on drop, also when
//! the test panics.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

pub mod etcd;
pub mod metrics;
mod netns;
mod port;
mod process;
pub mod tempdir;
mod underlay;

pub use etcd::Etcd;
pub use netns::{in_netns, Netns};
pub use port::{free_port, free_port_on};
pub use process::Proc;
pub use underlay::Underlay;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A short name unique to this test process: `<prefix><pid hex><n>`, at most 15 characters
/// so it also fits interface names.
pub fn unique(prefix: &str) -> String {
    let name = format!("{prefix}{:x}{:x}", std::process::id() & 0xfffff, next());
    assert!(
        name.len() <= 15,
        "name `{name}` is longer than an interface name may be"
    );
    name
}

/// Runs a command on the host, failing with its stderr when it exits non-zero.
pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("running `{cmd}`"))?;
    check(cmd, out)
}

/// The stdout of a finished command, or an error with its status, stderr and stdout.
fn check(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A workspace binary in `$CARGO_TARGET_DIR/debug` (or the workspace's `target/debug`):
/// `scripts/test` builds them before the tests run. A crate's tests of its own binary use
/// `env!("CARGO_BIN_EXE_<name>")` instead.
pub fn bin(name: &str) -> PathBuf {
    // A test runs from `<target>/debug/deps/`: its binaries are two levels up. The
    // manifest's path is compiled in, and a build that cargo reused from another checkout
    // keeps that checkout's.
    let beside_test = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(name)))
        .filter(|p| p.exists());
    let path = beside_test.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("debug").join(name)
    });
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}
