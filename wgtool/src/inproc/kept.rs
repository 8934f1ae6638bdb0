//! A peer kept in the user's state directory, as flyctl keeps its `interactive-*` peers:
//! `wgtool dig|ping|proxy --org ORG` without `--config` uses `peers/ORG.conf` there (mode
//! 0600), and makes it on first use: a key pair made here, the public half registered as
//! peer `interactive-<host>-<uid>-<random>` through the registry or the API (`--token`), the
//! tunnel file written once. Later runs reuse it; nothing is created again.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::admin::Source;
use crate::cli::{CreateArgs, KeptPeerArgs};
use crate::usage;

/// The tunnel file to use: `--config`, or the org's kept peer (made if there is none yet).
pub fn tunnel_file(src: &Source, config: Option<&Path>, kept: &KeptPeerArgs) -> Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c.to_path_buf());
    }
    let Some(org) = kept.org.as_deref() else {
        return Err(usage(
            "--config FILE or --org ORG: give a tunnel file, or the org whose kept peer to use (made on first use)",
        ));
    };
    registry::name::label("org", org)?;
    let dir = inproc::websocket::pins::state_dir()
        .ok_or_else(|| usage("no state directory: set SIXPN_STATE_DIR, XDG_STATE_HOME or HOME"))?
        .join("peers");
    let file = dir.join(format!("{org}.conf"));
    if file.exists() {
        warn_if_readable(&file);
        return Ok(file);
    }
    let Some(region) = kept.region.clone() else {
        return Err(usage(format!(
            "--region: no peer of org `{org}` is kept in {} yet; name the region of a gateway (e.g. --region iad) to create one",
            dir.display()
        )));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("state directory `{}`: {e}", dir.display()))?;
    let name = peer_name(&hostname(), unsafe { libc::getuid() }, &random_hex());
    crate::peer::create(
        src,
        CreateArgs {
            org: Some(org.to_string()),
            region: Some(region),
            name: Some(name),
            file: Some(file.clone()),
            gateway: None,
            routes: Vec::new(),
            expires_in: None,
            format: crate::tunnel::Format::WgQuick,
            qr: false,
        },
    )?;
    Ok(file)
}

/// A tunnel file holds a private key: say so when others may read it (innernet does too).
fn warn_if_readable(file: &Path) {
    let Ok(meta) = std::fs::metadata(file) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "wgtool: warning: `{}` holds a private key and is mode {mode:o}; chmod 600 it",
            file.display()
        );
    }
}

/// `interactive-<host>-<uid>-<random>`: a DNS label (a-z, 0-9, '-', at most 63), so that
/// `wgtool list` shows whose laptop a peer is and two runs never pick the same name.
fn peer_name(host: &str, uid: u32, random: &str) -> String {
    let mut h: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    h.truncate(24);
    let h = h.trim_matches('-');
    let h = if h.is_empty() { "host" } else { h };
    format!("interactive-{h}-{uid}-{random}")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a writable buffer of the length given; gethostname NUL-terminates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn random_hex() -> String {
    let mut b = [0u8; 3];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::peer_name;

    #[test]
    fn a_kept_peers_name_is_a_dns_label() {
        assert_eq!(
            peer_name("Alice's MacBook.local", 501, "0a1b2c"),
            "interactive-alice-s-macbook-local-501-0a1b2c"
        );
        assert_eq!(peer_name("", 0, "ffffff"), "interactive-host-0-ffffff");
        let long = peer_name(&"x".repeat(200), u32::MAX, "abcdef");
        assert!(long.len() <= 63, "{long}");
        assert!(registry::name::label("peer", &long).is_ok());
        assert!(registry::name::label("peer", &peer_name("-a-", 1, "000000")).is_ok());
    }
}
