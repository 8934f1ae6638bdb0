//! The API's TLS: the server's certificate (given, or self-signed on first start and kept
//! beside its state); the client's pin on that certificate's SHA-256 is the `inproc` crate's
//! (a gateway's WebSocket certificate is pinned the same way).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use inproc::pin::{client_config, fingerprint, learning_config, parse_fingerprint};

/// The server's certificate chain and key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

/// Files given with `--tls-cert`/`--tls-key`, or `api.crt`/`api.key` in `state_dir`,
/// made (self-signed, the key 0600) on first start.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
    names: &[String],
) -> Result<(Identity, Option<PathBuf>)> {
    let (cert, key, made) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), None),
        (None, None) => {
            let c = state_dir.join("api.crt");
            let k = state_dir.join("api.key");
            let made = if c.exists() && k.exists() {
                None
            } else {
                make_self_signed(state_dir, &c, &k, names)?;
                Some(c.clone())
            };
            (c, k, made)
        }
        _ => bail!(crate::usage(
            "tls-cert, tls-key: give both or neither (neither makes a self-signed certificate)"
        )),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading tls-cert `{}`", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls-cert `{}`: not PEM certificates", cert.display()))?;
    if chain.is_empty() {
        bail!(crate::usage(format!(
            "tls-cert `{}`: holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("tls-key `{}`: not a PEM private key", key.display()))?;
    Ok((Identity { chain, key }, made))
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("making state directory `{}`", dir.display()))?;
    let mut sans = vec!["sixpn-api".to_string()];
    sans.extend(names.iter().cloned());
    let made = rcgen::generate_simple_self_signed(sans).context("making a certificate")?;
    // Key first, under a temporary name, then renamed: a crash leaves no half pair.
    let write = |path: &Path, data: &[u8], mode: u32| -> Result<()> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing `{}`", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing `{}`", path.display()))
    };
    write(key, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write(cert, made.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

pub fn server_config(id: Identity) -> Result<Arc<rustls::ServerConfig>> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(id.chain, id.key)
            .context("tls-cert and tls-key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_identity_is_made_once_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("api");
        let (id, made) = server_identity(None, None, &state, &[]).unwrap();
        assert!(made.is_some());
        let mode = std::fs::metadata(state.join("api.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = server_identity(None, None, &state, &[]).unwrap();
        assert!(made.is_none());
        assert_eq!(again.fingerprint(), id.fingerprint());
        assert!(server_config(again).is_ok());
    }
}
