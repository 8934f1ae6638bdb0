//! WireGuard keys, made here with x25519-dalek: the private key never leaves this machine.

use anyhow::{bail, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x25519_dalek::{PublicKey, StaticSecret};

/// A new private key, base64, clamped as Curve25519 wants (like `wg genkey`), so that what
/// WireGuard tools show back is the same string.
pub fn generate() -> String {
    let mut bytes = StaticSecret::random().to_bytes();
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
    STANDARD.encode(bytes)
}

/// The public key of a base64 private key (like `wg pubkey`).
pub fn public(private_b64: &str) -> Result<registry::PublicKey> {
    let bytes = STANDARD.decode(private_b64.trim()).map_err(|_| {
        anyhow::anyhow!("private key: must be base64 (44 characters, as `wgtool genkey` prints)")
    })?;
    let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!(
            "private key: must be 32 bytes in base64 (this is {} bytes)",
            bytes.len()
        );
    };
    let secret = StaticSecret::from(raw);
    Ok(PublicKey::from(&secret).to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public_key = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            public(&STANDARD.encode(private)).unwrap().to_string(),
            STANDARD.encode(public_key)
        );
    }

    #[test]
    fn generated_keys_differ_and_derive() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        let raw = STANDARD.decode(&a).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(
            (raw[0] & 7, raw[31] & 0xc0),
            (0, 0x40),
            "clamped like `wg genkey`"
        );
        assert_eq!(public(&a).unwrap().to_string().len(), 44);
    }

    #[test]
    fn bad_private_keys_name_the_rule() {
        assert!(public("not base64!")
            .unwrap_err()
            .to_string()
            .contains("must be base64"));
        assert!(public("AAAA").unwrap_err().to_string().contains("32 bytes"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
