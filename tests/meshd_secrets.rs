//! meshd keeps its secrets: the UAPI socket, which hands out the private key and takes the
//! whole interface's configuration, is root's alone whatever the umask; a password in the
//! registry URL is printed nowhere; and SIGTERM ends meshd through its cleanup (the socket
//! file removed) even while the etcd client's threads run.
//!
//! Each meshd runs in a network namespace and in a mount namespace of its own with `/run`
//! (and so `/var/run/wireguard`) bound to a folder of the test's: the folder starts empty,
//! is no other test's business, and can still be looked at once meshd has exited.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use sixpn_tests::{bin, tempdir, unique, Netns, Proc};

const SECS10: Duration = Duration::from_secs(10);
const PASSWORD: &str = "s3cret";
/// An etcd that is not there: nothing listens on port 1.
const UNREACHABLE: &str = "etcd://user:s3cret@127.0.0.1:1/x";
/// The same as meshd shows it.
const UNREACHABLE_SHOWN: &str = "etcd://user@127.0.0.1:1/x";

/// A meshd started under `umask 000` with `/run` private to it.
struct Meshd {
    _ns: Netns,
    run: tempdir::Dir,
    /// Key file and the like.
    _files: tempdir::Dir,
    iface: String,
    proc: Proc,
}

impl Meshd {
    /// `args` after the binary, for `sh -c`; `{key}` becomes a fresh key file's path.
    fn start(args: &str) -> Result<Meshd> {
        let ns = Netns::new("sec")?;
        let run = tempdir::Dir::new()?;
        let files = tempdir::Dir::new()?;
        let iface = unique("sec");
        let key = files.path().join("meshd.key");
        let args = args
            .replace("{iface}", &iface)
            .replace("{key}", &key.to_string_lossy());
        let script = format!(
            "mount --bind {} /run && umask 000 && exec {} {args}",
            run.path().display(),
            bin("meshd").display()
        );
        let proc = ns.spawn(
            "unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        )?;
        Ok(Meshd {
            _ns: ns,
            run,
            _files: files,
            iface,
            proc,
        })
    }

    fn socket_dir(&self) -> PathBuf {
        self.run.path().join("wireguard")
    }

    fn socket(&self) -> PathBuf {
        self.socket_dir().join(format!("{}.sock", self.iface))
    }

    fn wait_socket(&mut self) -> Result<()> {
        let start = Instant::now();
        while !self.socket().exists() {
            if !self.proc.running() || start.elapsed() > SECS10 {
                bail!(
                    "no {} from meshd:\n{}",
                    self.socket().display(),
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to our own child, which the harness has not reaped yet.
        unsafe {
            libc::kill(self.proc.pid() as libc::pid_t, sig);
        }
    }

    fn wait_exit(&mut self) -> Result<()> {
        let start = Instant::now();
        while self.proc.running() {
            if start.elapsed() > SECS10 {
                bail!("meshd still runs:\n{}", self.proc.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Mesh-mode flags for a node whose registry is `url`.
fn mesh_args(url: &str) -> String {
    format!(
        "--registry '{url}' --node n1 --region iad --endpoint 10.9.9.1:51820 \
         --key {{key}} --interface {{iface}}"
    )
}

#[test]
fn uapi_socket_is_root_only_whatever_the_umask() -> Result<()> {
    let mut meshd = Meshd::start("-f {iface}")?;
    meshd.wait_socket()?;
    let (dir, sock) = (mode(&meshd.socket_dir())?, mode(&meshd.socket())?);
    ensure!(
        dir == 0o700 && sock == 0o600,
        "under umask 000: {} is {dir:o}, {} is {sock:o} (want 700 and 600)",
        meshd.socket_dir().display(),
        meshd.socket().display()
    );
    Ok(())
}

#[test]
fn registry_password_is_printed_nowhere() -> Result<()> {
    // etcd is down: meshd comes up anyway, and says so naming the registry without the
    // password.
    let mut meshd = Meshd::start(&mesh_args(UNREACHABLE))?;
    meshd.wait_socket()?;
    meshd.proc.wait_log("cannot register yet", SECS10)?;
    meshd.proc.wait_log("etcd unreachable", SECS10)?;
    meshd.signal(libc::SIGTERM);
    meshd.wait_exit()?;
    let log = meshd.proc.log();
    ensure!(log.contains(UNREACHABLE_SHOWN), "{log}");
    ensure!(
        !log.contains(PASSWORD),
        "the password is in meshd's output:\n{log}"
    );

    // URLs the registry refuses: meshd stops at once and says why, without the password.
    let ns = Netns::new("sec")?;
    let files = tempdir::Dir::new()?;
    let key = files.path().join("meshd.key");
    for (url, why) in [
        (
            "etcd://user:s3cret@127.0.0.1:1/x?bogus=1",
            "unknown option `bogus`",
        ),
        ("etdc://user:s3cret@127.0.0.1:1/x", "unknown scheme `etdc`"),
    ] {
        let args = mesh_args(url)
            .replace("{key}", &key.to_string_lossy())
            .replace("{iface}", &unique("sec"));
        let out = ns.output(&format!("timeout 20 {} {args}", bin("meshd").display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "{url}: {}\n{stderr}",
            out.status
        );
        ensure!(
            stderr.contains("meshd: opening registry") && stderr.contains(why),
            "{url}: not a clear error:\n{stderr}"
        );
        ensure!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
            "{url}: the password is in meshd's output:\n{stdout}{stderr}"
        );
    }
    Ok(())
}

#[test]
fn sigterm_during_an_etcd_outage_removes_the_socket() -> Result<()> {
    let mut meshd = Meshd::start(&mesh_args(UNREACHABLE))?;
    meshd.wait_socket()?;
    // By now the etcd client's runtime thread has tried (and failed) to reach etcd.
    meshd.proc.wait_log("etcd unreachable", SECS10)?;
    meshd.signal(libc::SIGTERM);
    meshd.wait_exit()?;
    let log = meshd.proc.log();
    ensure!(
        !meshd.socket().exists(),
        "SIGTERM left {} behind:\n{log}",
        meshd.socket().display()
    );
    ensure!(log.contains("stopping signal=15"), "{log}");
    Ok(())
}
