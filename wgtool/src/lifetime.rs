//! `wgtool status` and `wgtool prune`: peers as their gateways see them, and removing the
//! ones that expired or went quiet.

use std::path::Path;

use anyhow::Result;
use registry::{Change, Kind};

use crate::admin::{open, Source};
use crate::cli::{PruneArgs, StatusArgs};
use crate::peer::now_unix;
use crate::status::{self, PeerStatus};
use crate::{table, usage};

/// The peers with their live state: through the API (the server asks its host's meshd) or
/// from this host's meshd.
fn statuses(src: &Source, org: Option<&str>, name: Option<&str>) -> Result<Vec<PeerStatus>> {
    if src.uses_api() {
        let api = crate::admin::open_api(src)?;
        return Ok(api.status(org, name)?);
    }
    let snap = open(src)?.snapshot_of(&[Kind::Org, Kind::Node, Kind::Peer])?;
    if let Some(o) = org {
        if !snap.orgs.contains_key(o) {
            return Err(registry::Error::not_found(registry::Kind::Org, o).into());
        }
    }
    Ok(status::of(&snap, org, name, Path::new(status::SOCKET_DIR)))
}

pub fn status(src: &Source, a: StatusArgs) -> Result<()> {
    let peers = statuses(src, a.org.as_deref(), a.name.as_deref())?;
    if let (Some(n), true) = (&a.name, peers.is_empty()) {
        return Err(registry::Error::not_found(registry::Kind::Peer, n).into());
    }
    if a.json {
        return table::json(&peers);
    }
    let now = now_unix();
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let handshake = match (p.gateway_seen, p.live.last_handshake) {
                (false, _) => "unknown (gateway not on this host)".to_string(),
                (true, None) => "never connected".to_string(),
                (true, Some(t)) => status::ago(t, now),
            };
            let expired = p.expires.is_some_and(|e| e <= now);
            vec![
                p.org.clone(),
                p.name.clone(),
                p.gateway.clone(),
                p.address.clone(),
                p.live.endpoint.clone().unwrap_or_else(|| "-".into()),
                if expired {
                    format!("{handshake} (expired)")
                } else {
                    handshake
                },
                status::bytes(p.live.rx_bytes),
                status::bytes(p.live.tx_bytes),
            ]
        })
        .collect();
    table::print(
        &[
            "ORG",
            "NAME",
            "GATEWAY",
            "ADDRESS",
            "ENDPOINT",
            "HANDSHAKE",
            "RECEIVED",
            "SENT",
        ],
        &rows,
    );
    Ok(())
}

pub fn prune(src: &Source, a: PruneArgs) -> Result<()> {
    if !a.expired && a.idle.is_none() {
        return Err(usage(
            "prune: say what goes: --expired, --idle DURATION, or both",
        ));
    }
    let now = now_unix();
    let peers = statuses(src, a.org.as_deref(), None)?;
    let created = if a.idle.is_some() {
        // When a peer that never connected was made, from the registry.
        let snap = open(src)?.snapshot_of(&[Kind::Peer])?;
        snap.peers
            .values()
            .map(|p| ((p.org.clone(), p.name.clone()), p.created))
            .collect()
    } else {
        std::collections::BTreeMap::new()
    };
    let reg = if a.dry_run { None } else { Some(open(src)?) };
    let mut removed = 0;
    let mut unseen = 0;
    for p in &peers {
        let why = if a.expired && p.expires.is_some_and(|e| e <= now) {
            Some(format!("expired {}", table::time(p.expires.unwrap_or(0))))
        } else if let Some(idle) = a.idle {
            let idle = idle.as_secs() as i64;
            let since = p
                .live
                .last_handshake
                .or_else(|| created.get(&(p.org.clone(), p.name.clone())).copied());
            match (p.gateway_seen, since) {
                (false, _) => {
                    unseen += 1;
                    None
                }
                (true, Some(t)) if now - t >= idle => Some(match p.live.last_handshake {
                    Some(_) => format!("last handshake {}", status::ago(t, now)),
                    None => format!("never connected, made {}", status::ago(t, now)),
                }),
                _ => None,
            }
        } else {
            None
        };
        let Some(why) = why else { continue };
        match &reg {
            None => println!("would remove peer {} of org {} ({why})", p.name, p.org),
            Some(reg) => {
                reg.apply(&Change::RemovePeer {
                    org: p.org.clone(),
                    name: p.name.clone(),
                })?;
                println!("removed peer {} of org {} ({why})", p.name, p.org);
            }
        }
        removed += 1;
    }
    if unseen > 0 {
        eprintln!(
            "{unseen} peer(s) kept: their gateway's meshd is not on this host, so their last handshake is unknown here"
        );
    }
    if removed == 0 {
        eprintln!("nothing to prune");
    }
    Ok(())
}
