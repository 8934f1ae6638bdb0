//! The UAPI socket: its directory and mode, one thread per connection, the request framing
//! (`uapi` answers), and the rebind a new listen port asks for.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use super::{spawn, Shell};
use crate::{uapi, udp};

/// Makes the UAPI socket's directory if it is missing: 0700 whatever the umask, since
/// nobody but root has business there. One that exists is left as it is, as wireguard-go
/// leaves it (it makes the directory 0755 less the umask itself): it may be shared with
/// wireguard-go and wg-quick, and the socket's own mode is what keeps others out.
fn socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Another meshd or wireguard-go made it meanwhile: theirs, as above.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // `mkdir` takes the umask off the mode; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} mode 0700", dir.display()))
}

/// Binds the UAPI socket mode 0600 whatever the umask: `get=1` hands out the private key
/// and `set=1` the whole interface, so only root may connect. On Linux a socket file takes
/// its mode from the socket's inode (less the umask) when it is bound, so the mode is set
/// before `bind`: the file never exists with a wider one. wireguard-go gets the same by
/// setting the process's umask around its bind, which here would race the threads that
/// are already running.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // SAFETY: fchmod on a descriptor we own, for the length of the call.
    if unsafe { libc::fchmod(sock.as_raw_fd(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock.bind(&socket2::SockAddr::unix(path)?)?;
    // Also after, for a kernel that took no notice of the mode before `bind`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    sock.listen(128)?;
    Ok(sock.into())
}

pub(super) fn uapi_listen(shell: Arc<Shell>) -> Result<()> {
    let path = shell.socket_path();
    socket_dir(Path::new(uapi::SOCKET_DIR))?;
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "interface {}: {} is in use by another process",
                shell.interface,
                path.display()
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = bind_private(&path).with_context(|| format!("binding {}", path.display()))?;
    spawn("uapi", move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let shell = shell.clone();
            let _ = spawn("uapi-conn", move || {
                if let Err(e) = uapi_conn(&shell, conn) {
                    tracing::debug!(error = %e, "UAPI connection");
                }
            });
        }
    })
}

fn uapi_conn(shell: &Shell, conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\n" {
                break;
            }
            request.push_str(&line);
        }
        // DNS, if the request names an endpoint, before the lock: never under it.
        let resolved = uapi::resolve_names(&request);
        let (mut response, effects) = uapi::handle_request(
            &mut shell.lock(),
            &request,
            &resolved,
            Instant::now(),
            SystemTime::now(),
        );
        if let Some(port) = effects.listen_port {
            if let Err(errno) = rebind(shell, port) {
                response = format!("errno={errno}\n\n");
            }
        }
        writer.write_all(response.as_bytes())?;
    }
}

fn rebind(shell: &Shell, port: u16) -> std::result::Result<(), i32> {
    let current = shell.lock().listen_port;
    if port == current && port != 0 {
        return Ok(());
    }
    let sock = udp::bind(port).map_err(|e| e.raw_os_error().unwrap_or(98))?;
    let actual = sock.local_addr().map(|a| a.port()).unwrap_or(port);
    let sock = udp::Socket::new(sock).map_err(|e| e.raw_os_error().unwrap_or(22))?;
    shell.udp.store(Arc::new(sock));
    shell.lock().listen_port = actual;
    tracing::info!(port = actual, "listening");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::path::PathBuf;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    // The umask these run under (022 for cargo test, usually) would leave the directory
    // 0755 and the socket 0755 without the explicit modes.
    #[test]
    fn socket_directory_is_made_0700_and_the_socket_0600() {
        let base = temp_dir("uapi");
        let dir = base.join("run").join("wireguard");
        socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let path = dir.join("wg0.sock");
        let _listener = bind_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        UnixStream::connect(&path).expect("the socket answers");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_socket_directory_that_exists_is_left_as_it_is() {
        let dir = temp_dir("uapi-shared");
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
