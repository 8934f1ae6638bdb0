//! The end-to-end harness: "hosts" are network namespaces joined by veth pairs, processes
//! run inside them, and everything is torn down on drop, also when a test panics (all of
//! that is `sixpn-testkit`'s); on top of it, meshd and site helpers.

use anyhow::{Context, Result};

pub mod meshd_harness;
pub mod site_harness;

pub use sixpn_testkit::{bin, sh, tempdir, unique, Netns, Proc, Underlay};

/// A temporary registry file for one test.
pub fn temp_registry() -> Result<(tempdir::Dir, String)> {
    let dir = tempdir::Dir::new()?;
    let path = dir
        .path()
        .join("registry.db")
        .to_string_lossy()
        .into_owned();
    Ok((dir, path))
}

/// Sent and received counts from ping's summary line ("5 packets transmitted, 5 received").
pub fn ping_summary(text: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in:\n{text}"))?;
    let number = |word: &str| -> Result<u64> {
        let part = line
            .split(',')
            .find(|part| part.contains(word))
            .with_context(|| format!("no `{word}` in {line:?}"))?;
        Ok(part.split_whitespace().next().unwrap_or("").parse()?)
    };
    Ok((number("transmitted")?, number("received")?))
}
