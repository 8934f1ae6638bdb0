//! WireGuard peers: `create`, `list` and `remove`, in the shape of `fly wireguard`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use registry::{Change, Kind, Peer, Record, Snapshot};

use crate::admin::{open, Source};
use crate::cli::{ConfigArgs, CreateArgs, ListPeersArgs, RemovePeerArgs};
use crate::tunnel::{self, TunnelFile};
use crate::{allowed_ips, key, prompt, table, usage};

/// What Fly's tunnel files use, so NAT mappings stay open.
const KEEPALIVE_SECS: u16 = 15;

pub fn create(src: &Source, a: CreateArgs) -> Result<()> {
    let reg = open(src)?;
    // The frame, not a snapshot: its orgs and gateways are all the prompts and the tunnel
    // file need, and its cost does not grow with the registry's machines and laptops.
    let snap = reg.frame()?;
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
        for path in tunnel::paths(f, a.format) {
            tunnel::check_writable(&path).map_err(|e| usage(e.to_string()))?;
        }
    }
    if a.qr && a.format != tunnel::Format::WgQuick {
        return Err(usage(
            "qr: the WireGuard apps read wg-quick files; drop --format with --qr",
        ));
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
    let written = reg
        .frame()
        .map_err(anyhow::Error::from)
        .and_then(|snap| tunnel_file(&snap, &peer, Some(private_key)))
        .and_then(|t| {
            let parts = t.render(a.format);
            if !a.qr {
                return emit(&parts, file.as_deref());
            }
            // The QR code first (it can fail: too long), then the file.
            let code = crate::qr::render(&parts[0].text)?;
            if let Some(f) = file.as_deref() {
                tunnel::write_parts(f, &parts)?;
            }
            print!("{code}");
            Ok(())
        });
    if let Err(e) = written {
        // Nothing half-done: the peer goes again if its file could not be made.
        let _ = reg.apply(&Change::RemovePeer { org, name });
        return Err(e);
    }
    if let Some(f) = &file {
        let names: Vec<String> = tunnel::paths(f, a.format)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        eprintln!(
            "Wrote WireGuard configuration for peer {} ({}) to {}; load it in your WireGuard client",
            peer.name,
            peer.addr,
            names.join(" and ")
        );
    }
    Ok(())
}

/// `wgtool config`: the configuration again, from the registry, without the private key.
pub fn config(src: &Source, a: ConfigArgs) -> Result<()> {
    let named = registry::RecordKey::Peer {
        org: a.org.clone(),
        name: a.name.clone(),
    };
    let snap = open(src)?.frame_with(&[named])?;
    let Some(peer) = snap.peers.get(&(a.org.clone(), a.name.clone())) else {
        if !snap.orgs.contains_key(&a.org) {
            return Err(registry::Error::not_found(registry::Kind::Org, &a.org).into());
        }
        return Err(registry::Error::not_found(registry::Kind::Peer, &a.name).into());
    };
    let file = a.output.filter(|f| f.as_os_str() != "-");
    if let Some(f) = &file {
        for path in tunnel::paths(f, a.format) {
            tunnel::check_writable(&path).map_err(|e| usage(e.to_string()))?;
        }
    }
    let parts = tunnel_file(&snap, peer, None)?.render(a.format);
    emit(&parts, file.as_deref())
}

/// Writes the parts under `file`, or prints them.
fn emit(parts: &[tunnel::Part], file: Option<&std::path::Path>) -> Result<()> {
    match file {
        Some(f) => tunnel::write_parts(f, parts).map(|_| ()),
        None => {
            tunnel::print(parts);
            Ok(())
        }
    }
}

/// Everything the peer's configuration says, from the registry.
fn tunnel_file(snap: &Snapshot, peer: &Peer, private_key: Option<String>) -> Result<TunnelFile> {
    let gw = snap.nodes.get(&peer.gateway).with_context(|| {
        format!(
            "gateway node `{}` of peer `{}` does not exist",
            peer.gateway, peer.name
        )
    })?;
    let org = snap
        .orgs
        .get(&peer.org)
        .with_context(|| format!("org `{}` of peer `{}` does not exist", peer.org, peer.name))?;
    let org_prefix = org.network.prefix();
    Ok(TunnelFile {
        org: peer.org.clone(),
        name: peer.name.clone(),
        private_key,
        public_key: peer.public_key,
        address: peer.addr,
        dns: org.network.dns_addr(),
        gateway: gw.name.clone(),
        gateway_public_key: gw.public_key,
        allowed_ips: allowed_ips::of(snap, peer, org_prefix, now_unix()),
        endpoint: gw.endpoint,
        keepalive: KEEPALIVE_SECS,
        org_prefix,
        site_routes: peer.routes.clone(),
        via: peer.via(),
    })
}

pub fn list(src: &Source, a: ListPeersArgs) -> Result<()> {
    let snap = open(src)?.snapshot_of(&[Kind::Org, Kind::Peer])?;
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

pub fn remove(src: &Source, a: RemovePeerArgs) -> Result<()> {
    let reg = open(src)?;
    let (org, name) = match a.args.as_slice() {
        [org, name] => (org.clone(), name.clone()),
        [name] => {
            let snap = reg.frame()?;
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

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
