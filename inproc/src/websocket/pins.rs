//! Trust on first use for gateways' WebSocket certificates: the first fingerprint seen for
//! `host:port` is kept in the user's state directory (`websocket-pins`, mode 0600, one
//! `host:port sha256` line per gateway) and required from then on. A gateway whose
//! certificate changed is refused until its line is removed or `--websocket-fingerprint`
//! names the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `$SIXPN_STATE_DIR`, else `$XDG_STATE_HOME/sixpn`, else `~/.local/state/sixpn`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SIXPN_STATE_DIR").filter(|d| !d.is_empty()) {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("sixpn"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/sixpn"))
}

pub fn file() -> Option<PathBuf> {
    state_dir().map(|d| d.join("websocket-pins"))
}

fn read(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The pinned fingerprint for `gateway` (`host:port`), if one was kept.
pub fn lookup(path: &Path, gateway: &str) -> Option<String> {
    read(path).remove(gateway)
}

/// Keeps `fingerprint` for `gateway`, writing the file anew (0600, under a temporary name
/// then renamed).
pub fn remember(path: &Path, gateway: &str, fingerprint: &str) -> Result<()> {
    let mut all = read(path);
    all.insert(gateway.to_string(), fingerprint.to_string());
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("making state directory `{}`", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing `{}`", tmp.display()))?;
    for (k, v) in &all {
        writeln!(f, "{k} {v}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_kept_per_gateway_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/websocket-pins");
        assert_eq!(lookup(&path, "192.0.2.1:443"), None);
        remember(&path, "192.0.2.1:443", &"ab".repeat(32)).unwrap();
        remember(&path, "[2001:db8::1]:443", &"cd".repeat(32)).unwrap();
        assert_eq!(lookup(&path, "192.0.2.1:443"), Some("ab".repeat(32)));
        assert_eq!(lookup(&path, "[2001:db8::1]:443"), Some("cd".repeat(32)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
