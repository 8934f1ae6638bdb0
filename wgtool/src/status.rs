//! Live peer state from the gateways' meshd: each peer's endpoint, latest handshake and
//! bytes, read over WireGuard's UAPI socket (`get=1`, what `wg show` reads) on this host.
//!
//! A gateway's meshd is found by its key: every socket in `/var/run/wireguard` is asked,
//! and the ones whose public key is a gateway node's in the registry are that node. Peers on
//! gateways whose meshd is not on this host have no live state here (`wgtool status` and the
//! API say so); run `wgtool serve` on each gateway host to see them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use registry::{PublicKey, Snapshot};
use serde::{Deserialize, Serialize};

pub const SOCKET_DIR: &str = "/var/run/wireguard";
const TIMEOUT: Duration = Duration::from_secs(2);

/// One WireGuard peer as its gateway sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub endpoint: Option<String>,
    /// Unix seconds; `None` if it never completed a handshake.
    pub last_handshake: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A peer of the registry with what its gateway says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub org: String,
    pub name: String,
    pub gateway: String,
    pub address: String,
    pub expires: Option<i64>,
    /// False when the gateway's meshd could not be asked from here.
    pub gateway_seen: bool,
    #[serde(flatten)]
    pub live: Live,
}

/// Peers of every interface in `dir`, keyed by the interface's public key (base64), then by
/// peer public key (base64).
pub fn read_all(dir: &Path) -> BTreeMap<PublicKey, BTreeMap<PublicKey, Live>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("sock") {
            continue;
        }
        if let Ok(text) = ask(&path, "get=1") {
            if let Some((own, mut peers)) = parse(&text) {
                // A gateway's meshd lists only peers holding a tunnel; those whose tunnel
                // was evicted for idling it tells on its own request, with their latest
                // handshake (other WireGuard implementations refuse the request: nothing).
                if let Ok(text) = ask(&path, "get=evicted") {
                    for (key, live) in parse_peers(&text) {
                        peers.entry(key).or_insert(live);
                    }
                }
                out.insert(own, peers);
            }
        }
    }
    out
}

fn ask(path: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(format!("{request}\n\n").as_bytes())?;
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("errno=") && text.ends_with("\n\n") {
            break;
        }
        if text.len() > 16 << 20 {
            break;
        }
    }
    Ok(text)
}

/// `get=1` output: the interface's public key (from its private key, which goes no
/// further) and its peers.
fn parse(text: &str) -> Option<(PublicKey, BTreeMap<PublicKey, Live>)> {
    let v = text.lines().find_map(|l| l.strip_prefix("private_key="))?;
    let bytes: [u8; 32] = decode_hex(v)?;
    let secret = x25519_dalek::StaticSecret::from(bytes);
    let own = x25519_dalek::PublicKey::from(&secret).to_bytes().into();
    Some((own, parse_peers(text)))
}

/// The peer sections of a `get=1` (or `get=evicted`) answer, by public key (base64). A
/// section whose key is not 32 bytes of hex is skipped.
fn parse_peers(text: &str) -> BTreeMap<PublicKey, Live> {
    let mut peers = BTreeMap::new();
    let mut current: Option<(Option<PublicKey>, Live)> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "public_key" => {
                if let Some((Some(k), l)) = current.take() {
                    peers.insert(k, l);
                }
                current = Some((decode_hex::<32>(v).map(PublicKey::from), Live::default()));
            }
            "endpoint" => {
                if let Some((_, l)) = current.as_mut() {
                    l.endpoint = Some(v.to_string());
                }
            }
            "last_handshake_time_sec" => {
                if let Some((_, l)) = current.as_mut() {
                    l.last_handshake = v.parse::<i64>().ok().filter(|s| *s > 0);
                }
            }
            "rx_bytes" => {
                if let Some((_, l)) = current.as_mut() {
                    l.rx_bytes = v.parse().unwrap_or(0);
                }
            }
            "tx_bytes" => {
                if let Some((_, l)) = current.as_mut() {
                    l.tx_bytes = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    if let Some((Some(k), l)) = current.take() {
        peers.insert(k, l);
    }
    peers
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Every peer of `org` (or of every org) with its gateway's live view, where this host has
/// that gateway's meshd.
pub fn of(snap: &Snapshot, org: Option<&str>, name: Option<&str>, dir: &Path) -> Vec<PeerStatus> {
    let interfaces = read_all(dir);
    snap.peers
        .values()
        .filter(|p| org.is_none_or(|o| p.org == o) && name.is_none_or(|n| p.name == n))
        .map(|p| {
            let gw = snap.nodes.get(&p.gateway);
            let seen = gw.and_then(|g| interfaces.get(&g.public_key));
            PeerStatus {
                org: p.org.clone(),
                name: p.name.clone(),
                gateway: p.gateway.clone(),
                address: p.addr.to_string(),
                expires: p.expires,
                gateway_seen: seen.is_some(),
                live: seen
                    .and_then(|peers| peers.get(&p.public_key))
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
pub fn ago(then: i64, now: i64) -> String {
    let d = (now - then).max(0);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

/// Bytes as people read them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_get_output_is_read_per_peer() {
        let text = "private_key=0000000000000000000000000000000000000000000000000000000000000001\n\
                    listen_port=51820\n\
                    public_key=0101010101010101010101010101010101010101010101010101010101010101\n\
                    endpoint=10.0.0.2:51820\n\
                    last_handshake_time_sec=1700000000\n\
                    last_handshake_time_nsec=5\n\
                    rx_bytes=100\ntx_bytes=200\n\
                    public_key=0202020202020202020202020202020202020202020202020202020202020202\n\
                    last_handshake_time_sec=0\nrx_bytes=0\ntx_bytes=0\n\
                    errno=0\n\n";
        let (own, peers) = parse(text).unwrap();
        assert_eq!(own.to_string().len(), 44);
        let one = &peers[&PublicKey::from([1u8; 32])];
        assert_eq!(one.endpoint.as_deref(), Some("10.0.0.2:51820"));
        assert_eq!(one.last_handshake, Some(1_700_000_000));
        assert_eq!((one.rx_bytes, one.tx_bytes), (100, 200));
        let two = &peers[&PublicKey::from([2u8; 32])];
        assert_eq!(two.last_handshake, None);
        assert!(parse("errno=0\n\n").is_none(), "no key, no interface");
    }

    #[test]
    fn evicted_peers_are_read_without_an_interface_key() {
        let text = "public_key=0303030303030303030303030303030303030303030303030303030303030303\n\
                    last_handshake_time_sec=1700000100\nlast_handshake_time_nsec=0\n\
                    public_key=zz\nlast_handshake_time_sec=5\n\
                    errno=0\n\n";
        let peers = parse_peers(text);
        assert_eq!(
            peers.len(),
            1,
            "the section with a bad key is skipped: {peers:?}"
        );
        assert_eq!(
            peers[&PublicKey::from([3u8; 32])].last_handshake,
            Some(1_700_000_100)
        );
        assert!(parse_peers("errno=1\n\n").is_empty());
    }

    #[test]
    fn times_and_sizes_read_like_wg_show() {
        assert_eq!(ago(100, 112), "12 s ago");
        assert_eq!(ago(0, 600), "10 min ago");
        assert_eq!(ago(0, 3 * 86_400), "3 d ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
