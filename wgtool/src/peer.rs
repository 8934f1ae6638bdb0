//! WireGuard peers: `create`, `list` and `remove`, in the shape of `fly wireguard`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use registry::{Change, Record};

use crate::admin::open;
use crate::cli::{CreateArgs, ListPeersArgs, RemovePeerArgs};
use crate::tunnel::{self, TunnelFile};
use crate::{key, prompt, table, usage};

/// What Fly's tunnel files use, so NAT mappings stay open.
const KEEPALIVE_SECS: u16 = 15;

pub fn create(location: &str, a: CreateArgs) -> Result<()> {
    let reg = open(location)?;
    let snap = reg.snapshot()?;
    let orgs: Vec<&str> = snap.orgs.keys().map(String::as_str).collect();
    let org = match a.org {
        Some(o) => o,
        None => prompt::ask("org", &format!("one of: {}", orgs.join(", ")))?,
    };
    let region = match (a.region, &a.gateway) {
        (Some(r), _) => Some(r),
        (None, Some(_)) => None,
        (None, None) => {
            let mut gw: Vec<&str> = snap
                .nodes
                .values()
                .filter(|n| n.gateway)
                .map(|n| n.region.as_str())
                .collect();
            gw.sort_unstable();
            gw.dedup();
            Some(prompt::ask(
                "region",
                &format!("with a gateway: {}", gw.join(", ")),
            )?)
        }
    };
    let name = match a.name {
        Some(n) => n,
        None => prompt::ask("name", "a DNS label for this peer, e.g. alice-laptop")?,
    };
    let file: Option<PathBuf> = a.file.filter(|f| f.as_os_str() != "-");
    if let Some(f) = &file {
        tunnel::check_writable(f).map_err(|e| usage(e.to_string()))?;
    }
    let expires = a.expires_in.map(|d| now_unix() + d.as_secs() as i64);

    let private_key = key::generate();
    let public_key = key::public(&private_key)?;
    let applied = reg.apply(&Change::AddPeer {
        org: org.clone(),
        name: name.clone(),
        region,
        gateway: a.gateway,
        public_key,
        routes: a.routes,
        expires,
    })?;
    let Some(Record::Peer(peer)) = applied.record else {
        anyhow::bail!("the registry did not return the new peer");
    };
    let written = render(&*reg, &peer, private_key).and_then(|text| match &file {
        Some(f) => tunnel::write_new(f, &text),
        None => {
            print!("{text}");
            Ok(())
        }
    });
    if let Err(e) = written {
        // Nothing half-done: the peer goes again if its file could not be made.
        let _ = reg.apply(&Change::RemovePeer { org, name });
        return Err(e);
    }
    if let Some(f) = &file {
        eprintln!(
            "Wrote WireGuard configuration for peer {} ({}) to {}; load it in your WireGuard client",
            peer.name,
            peer.addr,
            f.display()
        );
    }
    Ok(())
}

fn render(
    reg: &dyn registry::Registry,
    peer: &registry::Peer,
    private_key: String,
) -> Result<String> {
    let snap = reg.snapshot()?;
    let gw = snap.nodes.get(&peer.gateway).with_context(|| {
        format!(
            "gateway node `{}` vanished while the peer was made",
            peer.gateway
        )
    })?;
    let org = snap
        .orgs
        .get(&peer.org)
        .with_context(|| format!("org `{}` vanished while the peer was made", peer.org))?;
    Ok(TunnelFile {
        private_key,
        address: peer.addr,
        dns: org.network.dns_addr(),
        gateway_public_key: gw.public_key.clone(),
        allowed_ips: org.network.prefix(),
        endpoint: gw.endpoint,
        keepalive: KEEPALIVE_SECS,
    }
    .render())
}

pub fn list(location: &str, a: ListPeersArgs) -> Result<()> {
    let snap = open(location)?.snapshot()?;
    if let Some(o) = &a.org {
        if !snap.orgs.contains_key(o) {
            return Err(registry::Error::not_found(registry::Kind::Org, o).into());
        }
    }
    let peers: Vec<_> = snap
        .peers
        .values()
        .filter(|p| a.org.as_ref().is_none_or(|o| &p.org == o))
        .collect();
    if a.json {
        return table::json(&peers);
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.org.clone(),
                p.name.clone(),
                p.region.clone(),
                p.gateway.clone(),
                p.addr.to_string(),
                table::time(p.created),
                p.expires.map(table::time).unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table::print(
        &[
            "ORG", "NAME", "REGION", "GATEWAY", "ADDRESS", "CREATED", "EXPIRES",
        ],
        &rows,
    );
    Ok(())
}

pub fn remove(location: &str, a: RemovePeerArgs) -> Result<()> {
    let reg = open(location)?;
    let (org, name) = match a.args.as_slice() {
        [org, name] => (org.clone(), name.clone()),
        [name] => {
            let snap = reg.snapshot()?;
            let mut orgs = snap.orgs.keys();
            match (orgs.next(), orgs.next()) {
                (Some(only), None) => (only.clone(), name.clone()),
                _ => return Err(usage(
                    "org: several orgs (or none) exist; give it as `wgtool remove <org> <name>`",
                )),
            }
        }
        _ => return Err(usage("usage: wgtool remove [org] <name>")),
    };
    reg.apply(&Change::RemovePeer {
        org: org.clone(),
        name: name.clone(),
    })?;
    println!("removed peer {name} of org {org}");
    Ok(())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
