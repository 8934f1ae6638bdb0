//! The API's TLS: the server's certificate (given, or self-signed on first start and kept
//! beside its state), and the client's pin on that certificate's SHA-256.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::hex;

/// The SHA-256 of a DER certificate, lowercase hex: what `wgtool serve` prints and clients
/// pin.
pub fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// Reads a fingerprint as people paste it: optional `sha256:` or `SHA256 Fingerprint=`,
/// hex with or without colons, any case.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .or_else(|| t.strip_prefix("sha256 Fingerprint="))
        .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "api-fingerprint `{s}`: must be a SHA-256 as 64 hex digits (colons allowed), as `wgtool serve` prints it"
        ));
    }
    Ok(hex)
}

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

/// A client that trusts exactly one certificate: the one whose SHA-256 is `pin`.
pub fn client_config(pin: &str) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(provider::default_provider());
    let verifier = Arc::new(Pinned {
        pin: pin.to_string(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that records the certificate it is shown and trusts it (for `wgtool token
/// create --server`, run by the operator next to the server, to learn what to pin).
pub fn learning_config() -> (
    Arc<rustls::ClientConfig>,
    Arc<std::sync::Mutex<Option<String>>>,
) {
    let provider = Arc::new(provider::default_provider());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let verifier = Arc::new(Learning {
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), seen)
}

#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {seen}, not the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct Learning {
    seen: Arc<std::sync::Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Learning {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fingerprint(end_entity));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_as_people_paste_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), hex);
        assert_eq!(parse_fingerprint(&colons).unwrap(), hex);
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")).unwrap(), hex);
        assert_eq!(
            parse_fingerprint(&format!("SHA256 Fingerprint={colons}")).unwrap(),
            hex
        );
        assert!(parse_fingerprint("abcd")
            .unwrap_err()
            .contains("64 hex digits"));
    }

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
