//! Keys for `scale_registry` and `scale_handshake`: both make the same ones from a seed.

#![allow(dead_code)]
use x25519_dalek::StaticSecret;

/// splitmix64: the n-th number of the stream for `seed`.
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The private key of laptop `i` (and, as `u64::MAX`, of the gateway), as
/// `scale_handshake` makes it again.
pub fn secret(seed: u64, i: u64) -> StaticSecret {
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &mix(seed ^ 0x5ca1e, i.wrapping_mul(4).wrapping_add(k as u64)).to_le_bytes(),
        );
    }
    StaticSecret::from(bytes)
}

pub fn b64(key: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}
