//! Fixtures the fuzz targets share: a small registry world for dnsd, three meshd cores with
//! sessions up for meshd, and the input splitting the stateful targets use.

pub mod dns;
pub mod mesh;

/// Splits fuzz input into `(selector, chunk)` records: a selector byte, a big-endian u16
/// length, then that many bytes (fewer at the end of the input). libFuzzer's mutators keep
/// such framing well enough, and a seed can be written by hand (corpus/make_seeds.py).
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&selector, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(rest.len());
        let (chunk, rest) = rest.split_at(len);
        data = rest;
        Some((selector, chunk))
    })
}
