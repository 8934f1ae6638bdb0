//! The WebSocket listener's certificate: the operator's (`--tls-cert`, `--tls-key`), or one
//! made self-signed on first start and kept beside the node's key, so that its fingerprint
//! (which laptops pin) survives restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::crypto::ring as provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The SHA-256 of a DER certificate, lowercase hex: what laptops pin
/// (`wgtool --websocket-fingerprint`), as `wgtool serve`'s clients pin the API's.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server's TLS config and its certificate's fingerprint. `given`: the operator's
/// files; otherwise `websocket.crt`/`websocket.key` in `dir`, made if missing.
pub fn server_config(
    given: Option<&(PathBuf, PathBuf)>,
    dir: &Path,
) -> Result<(Arc<rustls::ServerConfig>, String)> {
    let (cert, key) = match given {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let c = dir.join("websocket.crt");
            let k = dir.join("websocket.key");
            if !(c.exists() && k.exists()) {
                make_self_signed(&c, &k)?;
                tracing::info!(cert = %c.display(), "made a self-signed WebSocket certificate");
            }
            (c, k)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading tls_cert `{}`", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls_cert `{}`: not PEM certificates", cert.display()))?;
    let Some(first) = chain.first() else {
        bail!("tls_cert `{}`: holds no certificate", cert.display());
    };
    let fp = fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("tls_key `{}`: not a PEM private key", key.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("tls_cert and tls_key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fp))
}

fn make_self_signed(cert: &Path, key: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let made = rcgen::generate_simple_self_signed(vec!["sixpn-gateway".to_string()])
        .context("making a certificate")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshd-ws-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (_, first) = server_config(None, &dir).unwrap();
        let (_, again) = server_config(None, &dir).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(dir.join("websocket.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
