//! The cross-platform WireGuard configuration protocol (wireguard.com/xplatform), as
//! wireguard-go speaks it on `/var/run/wireguard/<iface>.sock`: `get=1` and `set=1`
//! requests of `key=value` lines, answered with `errno=N`. `handle_request` is a pure
//! function of the core, the request text, the endpoint names resolved beforehand
//! ([`resolve_names`]) and the time; the socket loop is in `daemon`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use x25519_dalek::StaticSecret;

use crate::core::{Core, PeerUpdate, PublicKey};

pub const SOCKET_DIR: &str = "/var/run/wireguard";

const EINVAL: i32 = 22;
const EPROTO: i32 = 71;

/// What the shell must do after a `set` (things the core does not own).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub listen_port: Option<u16>,
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex32(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The addresses of the endpoint names a request holds (`endpoint=host:port`), looked up
/// before the core's lock is taken: a resolver that takes seconds to answer must not stall
/// the data plane for as long. `wg` resolves names itself and sends addresses, so only
/// hand-written requests (`socat`, scripts) carry names; wireguard-go refuses them, meshd
/// has always taken them and still does. A name that does not resolve is absent here, and
/// the request gets EINVAL when it is applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved(HashMap<String, SocketAddr>);

impl Resolved {
    fn get(&self, name: &str) -> Option<SocketAddr> {
        self.0.get(name).copied()
    }
}

/// Looks up every endpoint name in a `set` request (does DNS: call it without the lock).
pub fn resolve_names(request: &str) -> Resolved {
    let mut lines = request.lines().filter(|l| !l.is_empty());
    if lines.next() != Some("set=1") {
        return Resolved::default();
    }
    let mut names = HashMap::new();
    for value in lines.filter_map(|l| l.strip_prefix("endpoint=")) {
        if value.parse::<SocketAddr>().is_ok() || names.contains_key(value) {
            continue;
        }
        if let Some(addr) = value.to_socket_addrs().ok().and_then(|mut a| a.next()) {
            names.insert(value.to_string(), addr);
        }
    }
    Resolved(names)
}

/// Answers one request (without its blank terminating line) as of `now` (the core's clock;
/// `wall` is the same moment in Unix time, for handshake times), with the endpoint names
/// `resolved` beforehand; does no I/O and reads no clock. Returns the response text (ending
/// in a blank line) and what the shell must do.
pub fn handle_request(
    core: &mut Core,
    request: &str,
    resolved: &Resolved,
    now: Instant,
    wall: SystemTime,
) -> (String, Effects) {
    let mut lines = request.lines().filter(|l| !l.is_empty());
    match lines.next() {
        Some("get=1") => (get(core, wall), Effects::default()),
        Some("get=evicted") => (get_evicted(core), Effects::default()),
        Some("set=1") => match set(core, lines, resolved, now) {
            Ok(fx) => ("errno=0\n\n".into(), fx),
            Err(errno) => (format!("errno={errno}\n\n"), Effects::default()),
        },
        _ => (format!("errno={EPROTO}\n\n"), Effects::default()),
    }
}

fn get(core: &Core, now: SystemTime) -> String {
    let mut s = String::new();
    if let Some(k) = core.private_key() {
        let _ = writeln!(s, "private_key={}", hex(&k));
    }
    let _ = writeln!(s, "listen_port={}", core.listen_port);
    if core.fwmark != 0 {
        let _ = writeln!(s, "fwmark={}", core.fwmark);
    }
    let mut peers: Vec<_> = core.peers().iter().collect();
    peers.sort_by_key(|p| p.index);
    for p in peers {
        let _ = writeln!(s, "public_key={}", hex(&p.public_key));
        if let Some(psk) = p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", hex(&psk));
        }
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let (sec, nsec) = p
            .latest_handshake(now)
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        let _ = writeln!(s, "last_handshake_time_sec={sec}");
        let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(s, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.keepalive.unwrap_or(0)
        );
        // A site's 4via6 /96 and the IPv4 routes behind it are part of what the peer may
        // carry, so `wg show` lists them with its allowed IPs (meshd checks them per peer
        // rather than routing on them).
        let via = p.via.iter().map(|n| ipnet::IpNet::V6(*n));
        let v4 = p.site_v4.iter().map(|n| ipnet::IpNet::V4(*n));
        for ip in p.allowed_ips.iter().copied().chain(via).chain(v4) {
            let _ = writeln!(s, "allowed_ip={ip}");
        }
    }
    s.push_str("errno=0\n\n");
    s
}

/// meshd's own request (`get=evicted`; `wg` never sends it): the gateway's registered peers
/// whose tunnels were evicted, each with its latest handshake, in `get=1`'s form. `get=1`
/// lists only peers holding a tunnel (what `wg show` shows); a tool that reports when a
/// peer was last seen (`wgtool status`, `prune --idle`) asks for both.
fn get_evicted(core: &Core) -> String {
    let mut peers: Vec<_> = core.evicted().collect();
    peers.sort();
    let mut s = String::new();
    for (key, secs) in peers {
        let _ = writeln!(s, "public_key={}", hex(key));
        let _ = writeln!(s, "last_handshake_time_sec={secs}");
        let _ = writeln!(s, "last_handshake_time_nsec=0");
    }
    s.push_str("errno=0\n\n");
    s
}

/// The peer section being applied.
struct Section {
    key: PublicKey,
    /// `update_only` for a peer we do not have, or `remove`: ignore the rest.
    skip: bool,
}

fn set<'a>(
    core: &mut Core,
    lines: impl Iterator<Item = &'a str>,
    resolved: &Resolved,
    now: Instant,
) -> Result<Effects, i32> {
    let mut fx = Effects::default();
    let mut section: Option<Section> = None;
    for line in lines {
        let (key, value) = line.split_once('=').ok_or(EPROTO)?;
        if key == "public_key" {
            let k = unhex32(value).ok_or(EINVAL)?;
            if core.public_key() == Some(k) {
                // Our own key as a peer: ignored, as wireguard-go does.
                section = Some(Section { key: k, skip: true });
                continue;
            }
            core.ensure_peer(now, k);
            section = Some(Section {
                key: k,
                skip: false,
            });
            continue;
        }
        let Some(sec) = section.as_mut() else {
            device_key(core, key, value, &mut fx)?;
            continue;
        };
        if sec.skip {
            continue;
        }
        let k = sec.key;
        match key {
            "update_only" => {
                // We create on `public_key`; undo that if the peer is new. A peer that
                // existed before has a handshake state or settings; a new one has neither.
                // A gateway's registered peer exists whether or not it has a tunnel now.
                if value == "true" && is_fresh(core, &k) && !core.is_registered(&k) {
                    core.remove_peer(&k);
                    sec.skip = true;
                }
            }
            "remove" if value == "true" => {
                core.remove_peer(&k);
                sec.skip = true;
            }
            "remove" => {}
            "preshared_key" => {
                let psk = unhex32(value).ok_or(EINVAL)?;
                let psk = (psk != [0u8; 32]).then_some(psk);
                core.update_peer(
                    &k,
                    PeerUpdate {
                        preshared_key: Some(psk),
                        ..Default::default()
                    },
                );
            }
            "endpoint" => {
                let ep = value
                    .parse()
                    .ok()
                    .or_else(|| resolved.get(value))
                    .ok_or(EINVAL)?;
                core.update_peer(
                    &k,
                    PeerUpdate {
                        endpoint: Some(ep),
                        ..Default::default()
                    },
                );
            }
            "persistent_keepalive_interval" => {
                let n: u16 = value.parse().map_err(|_| EINVAL)?;
                core.update_peer(
                    &k,
                    PeerUpdate {
                        keepalive: Some(Some(n)),
                        ..Default::default()
                    },
                );
            }
            "replace_allowed_ips" => {
                if value == "true" {
                    core.clear_allowed_ips(&k);
                }
            }
            "allowed_ip" => {
                let net: IpNet = value.parse().map_err(|_| EINVAL)?;
                core.add_allowed_ip(&k, net);
            }
            "protocol_version" => {
                if value != "1" {
                    return Err(EINVAL);
                }
            }
            _ => return Err(EINVAL),
        }
    }
    Ok(fx)
}

fn is_fresh(core: &Core, key: &PublicKey) -> bool {
    core.peer(key).is_some_and(|p| {
        p.endpoint.is_none()
            && p.allowed_ips.is_empty()
            && p.tx_bytes == 0
            && p.rx_bytes == 0
            && p.keepalive.is_none()
    })
}

fn device_key(core: &mut Core, key: &str, value: &str, fx: &mut Effects) -> Result<(), i32> {
    match key {
        "private_key" => {
            let k = unhex32(value).ok_or(EINVAL)?;
            let secret = (k != [0u8; 32]).then(|| StaticSecret::from(k));
            core.set_private_key(secret);
        }
        "listen_port" => {
            let port: u16 = value.parse().map_err(|_| EINVAL)?;
            fx.listen_port = Some(port);
        }
        "fwmark" => core.fwmark = value.parse().map_err(|_| EINVAL)?,
        "replace_peers" => {
            if value == "true" {
                core.clear_peers();
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
