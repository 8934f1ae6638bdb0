//! `wgtool dig [TYPE] NAME`: the org's DNS through the in-process tunnel.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::config::TunnelConfig;
use super::dns::{self, QType};
use super::tunnel::UserspaceTunnel;
use crate::usage;
use crate::ReachArgs;

pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// `[TYPE] NAME` from the command line.
pub fn question(args: &[String]) -> Result<(QType, String), String> {
    let (qtype, name) = match args {
        [name] => (QType::Aaaa, name),
        [t, name] => (
            QType::parse(t).ok_or_else(|| format!("type `{t}`: AAAA or TXT"))?,
            name,
        ),
        _ => return Err("dig: give [TYPE] NAME".into()),
    };
    dns::check_name(name)?;
    Ok((qtype, name.clone()))
}

pub fn dig(config: &Path, reach: &ReachArgs, args: &[String], short: bool) -> Result<()> {
    let (qtype, name) = question(args).map_err(usage)?;
    let cfg = TunnelConfig::load(config).map_err(|e| usage(e.to_string()))?;
    super::shutdown::install();
    let mut t = UserspaceTunnel::open(&cfg, crate::reach(&cfg, reach)?)?;
    t.wait_up(HANDSHAKE_LIMIT)?;
    let r = super::resolve::ask(&mut t, &name, qtype)?;
    if short {
        for rec in &r.answers {
            println!("{}", rec.data);
        }
        return Ok(());
    }
    println!(
        ";; ->>HEADER<<- status: {}, id: {}{}",
        dns::rcode_name(r.rcode),
        r.id,
        if r.truncated { ", truncated" } else { "" }
    );
    println!(";; SERVER: {}#53 (through the tunnel)", cfg.dns);
    if !r.answers.is_empty() {
        println!("\n;; ANSWER SECTION:");
        for rec in &r.answers {
            println!("{rec}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_type_defaults_to_aaaa_and_is_checked() {
        assert_eq!(
            question(&args(&["web.internal"])).unwrap(),
            (QType::Aaaa, "web.internal".into())
        );
        assert_eq!(
            question(&args(&["txt", "_apps.internal"])).unwrap(),
            (QType::Txt, "_apps.internal".into())
        );
        assert_eq!(
            question(&args(&["MX", "web.internal"])).unwrap_err(),
            "type `MX`: AAAA or TXT"
        );
        assert!(question(&args(&[])).is_err());
        assert!(question(&args(&["a", "b", "c"])).is_err());
    }
}
