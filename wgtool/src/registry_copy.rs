//! `wgtool registry copy <from-url> <to-url>`: moves a registry to another backend, e.g. the
//! embedded SQLite file to etcd when an organisation outgrows one host. The target must be
//! empty; network ids, host parts, addresses, machine ids and the revision come across as
//! they are, so nothing that cached an address or a tunnel file breaks.

use anyhow::{Context, Result};

pub fn run(from: &str, to: &str) -> Result<()> {
    let source = registry::open(from).context("the registry to copy from")?;
    let target = registry::open(to).context("the registry to copy to")?;
    let copied = registry::copy(&*source, &*target)
        .with_context(|| format!("copying {} to {}", source.location(), target.location()))?;
    println!(
        "copied {} record(s) at revision {} from {} to {}",
        copied.records,
        copied.revision.0,
        source.location(),
        target.location()
    );
    Ok(())
}
