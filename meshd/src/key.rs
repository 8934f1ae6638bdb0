//! The node's private key: a base64 file, created mode 0600 on first start, never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::error::{Error, Result};

fn key_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A private key from its file's base64 text (`wg genkey` format). Public keys are
/// [`registry::PublicKey`]s; this one stays here, and no message repeats it.
fn parse_private(text: &str) -> Result<[u8; 32]> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| Error::invalid("private key", "not base64"))?;
    bytes
        .try_into()
        .map_err(|_| Error::invalid("private key", "a key is 32 bytes (44 base64 characters)"))
}

/// Reads the key, or creates it (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<StaticSecret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = parse_private(&text).map_err(|e| key_err(path, e.to_string()))?;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "key file is readable by others; chmod 600 it");
                }
            }
            Ok(StaticSecret::from(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(key_err(path, e.to_string())),
    }
}

fn create(path: &Path) -> Result<StaticSecret> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| key_err(path, e.to_string()))?;
    }
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| key_err(path, e.to_string()))?;
    file.write_all(format!("{}\n", STANDARD.encode(secret.to_bytes())).as_bytes())
        .map_err(|e| key_err(path, e.to_string()))?;
    tracing::info!(path = %path.display(), "created a new private key");
    Ok(secret)
}

pub fn public_of(secret: &StaticSecret) -> registry::PublicKey {
    PublicKey::from(secret).to_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_then_reads_the_same_key() {
        let dir = std::env::temp_dir().join(format!("meshd-key-{}", std::process::id()));
        let path = dir.join("k");
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        std::fs::write(&path, "nonsense").unwrap();
        assert!(load_or_create(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
