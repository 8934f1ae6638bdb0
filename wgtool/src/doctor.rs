//! `wgtool doctor`: checks a laptop's (or a host's) tunnel in the order things depend on
//! each other, one ✓/✗ line each, with a fix for every failure. Exit 1 if any fails.
//!
//! On a laptop it reads the tunnel file (or the interface) and asks the system: `ip` for the
//! interface, address and route, `wg` for the latest handshake; it sends one junk datagram
//! to the gateway's endpoint (a closed port answers with ICMP; meshd drops junk silently),
//! asks the org's DNS at `fdaa:<net>::3` for `_apps.internal` TXT, and resolves one of those
//! apps through the system resolver. On a host (`--host`) it checks meshd, dnsd, the
//! registry and the UDP port. With `--inproc FILE` it checks the way in without any
//! interface, through wgtool's in-process tunnel (`crate::inproc::checkup`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::Ipv6Net;

use crate::usage;

/// WireGuard's REJECT_AFTER_TIME: a session older than this carries nothing.
const HANDSHAKE_FRESH: i64 = 180;
const WAIT: Duration = Duration::from_secs(2);

/// What the checks need to know about the tunnel.
#[derive(Debug, Default)]
struct Tunnel {
    iface: String,
    address: Option<Ipv6Addr>,
    dns: Option<Ipv6Addr>,
    endpoint: Option<String>,
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, what: &str, result: std::result::Result<String, (String, String)>) {
        match result {
            Ok(detail) => println!("✓ {what}: {detail}"),
            Err((why, fix)) => {
                self.failed += 1;
                println!("✗ {what}: {why}\n    fix: {fix}");
            }
        }
    }
}

type Check = std::result::Result<String, (String, String)>;

fn fail(why: impl Into<String>, fix: impl Into<String>) -> Check {
    Err((why.into(), fix.into()))
}

pub fn run(target: Option<&str>, host: bool, src: &crate::admin::Source) -> Result<()> {
    let mut report = Report { failed: 0 };
    if host {
        host_checks(&mut report, src);
    } else {
        let tunnel = tunnel(target)?;
        laptop_checks(&mut report, &tunnel);
    }
    if report.failed > 0 {
        anyhow::bail!("{} check(s) failed", report.failed);
    }
    println!("all checks passed");
    Ok(())
}

/// `--inproc FILE`: the checks through an in-process tunnel, printed as the others are.
pub fn run_inproc(file: &Path, reach: &crate::cli::TransportArgs) -> Result<()> {
    let mut report = Report { failed: 0 };
    for (what, result) in crate::inproc::checkup::checks(file, reach)? {
        report.check(&what, result);
    }
    if report.failed > 0 {
        anyhow::bail!("{} check(s) failed", report.failed);
    }
    println!("all checks passed");
    Ok(())
}

/// The tunnel from a file (`wg-quick` format; the interface is the file's stem, as
/// wg-quick names it) or from a running interface.
fn tunnel(target: Option<&str>) -> Result<Tunnel> {
    let target = match target {
        Some(t) => t.to_string(),
        None => only_interface()?,
    };
    let path = Path::new(&target);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading `{}`", path.display()))?;
        let iface = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("the tunnel file has no name")?
            .to_string();
        let mut t = Tunnel {
            iface,
            ..Tunnel::default()
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "Address" => {
                    t.address = v
                        .split(',')
                        .filter_map(|a| a.trim().split('/').next()?.parse().ok())
                        .next()
                }
                "DNS" => t.dns = v.split(',').filter_map(|a| a.trim().parse().ok()).next(),
                "Endpoint" => t.endpoint = Some(v.to_string()),
                _ => {}
            }
        }
        if t.address.is_none() {
            return Err(usage(format!(
                "tunnel file `{}`: no IPv6 Address line; is it a sixpn tunnel file?",
                path.display()
            )));
        }
        return Ok(t);
    }
    if target.contains('/') || target.ends_with(".conf") {
        return Err(usage(format!("`{target}`: no such tunnel file")));
    }
    // An interface: its address from `ip`, the rest derived from it and from `wg`.
    let address = ip_addresses(&target).into_iter().find(|a| is_org_addr(*a));
    let endpoint = wg(&["show", &target, "endpoints"])
        .ok()
        .and_then(|o| o.split_whitespace().nth(1).map(str::to_string));
    Ok(Tunnel {
        iface: target,
        address,
        dns: address.map(dns_of),
        endpoint,
    })
}

/// The one WireGuard interface with an fdaa address, when no target is named.
fn only_interface() -> Result<String> {
    let out = wg(&["show", "interfaces"]).map_err(|e| {
        usage(format!(
            "name a tunnel file or an interface (`wg show interfaces` failed: {e})"
        ))
    })?;
    let ifaces: Vec<&str> = out.split_whitespace().collect();
    let ours: Vec<&str> = ifaces
        .iter()
        .copied()
        .filter(|i| ip_addresses(i).into_iter().any(is_org_addr))
        .collect();
    match ours.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(usage(
            "no WireGuard interface with a sixpn address is up; name the tunnel file: wgtool doctor FILE",
        )),
        many => Err(usage(format!(
            "several sixpn interfaces ({}); name one: wgtool doctor IFACE",
            many.join(", ")
        ))),
    }
}

fn is_org_addr(a: Ipv6Addr) -> bool {
    a.segments()[0] == 0xfdaa
}

/// The org's DNS address: `fdaa:<net>::3`, in the /48 of the address.
fn dns_of(a: Ipv6Addr) -> Ipv6Addr {
    let s = a.segments();
    Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 3)
}

fn laptop_checks(r: &mut Report, t: &Tunnel) {
    let iface = &t.iface;
    // 1. The interface.
    r.check(&format!("interface {iface} is up"), {
        match Command::new("ip").args(["-o", "link", "show", "dev", iface]).output() {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                if text.contains(",UP") || text.contains("<UP") {
                    Ok("present and up".into())
                } else {
                    fail("present but down", format!("ip link set {iface} up"))
                }
            }
            _ => fail(
                "no such interface",
                format!("bring the tunnel up: wg-quick up {iface} (or import the file into the WireGuard app)"),
            ),
        }
    });
    // 2. Address and route.
    let addrs = ip_addresses(iface);
    r.check(
        "its address",
        match t.address {
            Some(a) if addrs.contains(&a) => Ok(format!("{a}")),
            Some(a) => fail(
                format!("{a} is not on {iface} (it has: {addrs:?})"),
                format!(
                    "ip -6 addr add {a}/128 dev {iface}; wg-quick does this from the Address line"
                ),
            ),
            None => fail(
                "the tunnel has no fdaa address",
                "use the file `wgtool create` wrote",
            ),
        },
    );
    let net48 = t
        .address
        .map(|a| Ipv6Net::new(a, 48).map(|n| n.trunc()).unwrap_or_default());
    r.check("route to the org's /48", match net48 {
        Some(net) => {
            let probe = t.dns.unwrap_or(dns_of(net.addr()));
            match route_dev(probe) {
                Some(dev) if dev == *iface => Ok(format!("{net} via {iface}")),
                Some(dev) => fail(
                    format!("{probe} goes out {dev}, not {iface}"),
                    format!("ip -6 route add {net} dev {iface}; wg-quick adds it from AllowedIPs (unless Table = off)"),
                ),
                None => fail(
                    format!("no route to {probe}"),
                    format!("ip -6 route add {net} dev {iface}"),
                ),
            }
        }
        None => fail("unknown /48 (no address)", "use the file `wgtool create` wrote"),
    });
    // 3. The handshake.
    let handshake = wg(&["show", iface, "latest-handshakes"])
        .ok()
        .and_then(|o| {
            o.split_whitespace()
                .nth(1)
                .and_then(|t| t.parse::<i64>().ok())
        });
    let now = crate::peer::now_unix();
    r.check("latest handshake", match handshake {
        Some(t) if t > 0 && now - t <= HANDSHAKE_FRESH => {
            Ok(crate::status::ago(t, now))
        }
        Some(t) if t > 0 => fail(
            format!("{} (sessions end after 3 minutes)", crate::status::ago(t, now)),
            "send something (ping the DNS address) to start one; if none comes, see the checks below, and ask whether the peer expired or was removed (wgtool status)",
        ),
        _ => fail(
            "never",
            "the gateway does not know this key (removed or expired? wgtool status) or UDP to its endpoint is blocked",
        ),
    });
    // 4. The gateway's endpoint.
    r.check(
        "gateway endpoint answers",
        match &t.endpoint {
            None => fail("no endpoint", "the tunnel file's [Peer] needs Endpoint ="),
            Some(ep) => probe_udp(ep),
        },
    );
    // 5. The org's DNS through the tunnel.
    let dns = t.dns.or(t.address.map(dns_of));
    let apps = match dns {
        None => {
            r.check(
                "org DNS answers _apps.internal",
                fail("no DNS address", "add DNS = fdaa:<net>::3 to the file"),
            );
            None
        }
        Some(d) => {
            let res = ask_txt(d, "_apps.internal");
            let apps = res.as_ref().ok().cloned();
            r.check(&format!("org DNS [{d}]:53 answers _apps.internal"), match res {
                Ok(apps) => Ok(format!("{} app(s)", apps.len())),
                Err(why) => fail(
                    why,
                    "dnsd on the gateway must run and listen on the org's DNS address (fdaa:<net>::3)",
                ),
            });
            apps
        }
    };
    // 6. The system resolver.
    let name = apps
        .as_ref()
        .and_then(|a| a.first().cloned())
        .map(|app| format!("{app}.internal"));
    r.check("system resolver finds .internal names", match name {
        None => fail(
            "no app name to try (the org DNS gave none)",
            "fix the DNS check first; an org with no apps has no names",
        ),
        Some(n) => match (n.as_str(), 0u16).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                match (net48, addrs.iter().find(|a| matches!(a, IpAddr::V6(v) if net48.is_some_and(|n| n.contains(v))))) {
                    (_, Some(a)) => Ok(format!("{n} → {a}")),
                    _ => fail(
                        format!("{n} resolves outside the org: {addrs:?}"),
                        "point the system resolver at the DNS line's address",
                    ),
                }
            }
            Err(e) => fail(
                format!("{n}: {e}"),
                "wg-quick hands the DNS line to resolvconf (openresolv) or systemd-resolved; without either, put `nameserver <DNS address>` in /etc/resolv.conf while the tunnel is up",
            ),
        },
    });
}

/// The addresses on an interface.
fn ip_addresses(iface: &str) -> Vec<Ipv6Addr> {
    let Ok(o) = Command::new("ip")
        .args(["-o", "-6", "addr", "show", "dev", iface])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet6")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The device the kernel routes `to` through.
fn route_dev(to: Ipv6Addr) -> Option<String> {
    let o = Command::new("ip")
        .args(["-6", "route", "get", &to.to_string()])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut w = text.split_whitespace();
    w.position(|x| x == "dev")?;
    w.next().map(str::to_string)
}

fn wg(args: &[&str]) -> std::result::Result<String, String> {
    let o = Command::new("wg")
        .args(args)
        .output()
        .map_err(|e| format!("wg: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// One junk datagram to the endpoint: ICMP port unreachable means nothing listens; silence
/// means something took it (meshd drops junk without answering).
fn probe_udp(endpoint: &str) -> Check {
    let addr: SocketAddr = match endpoint.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => {
            return fail(
                format!("{endpoint} does not resolve"),
                "check the Endpoint line",
            )
        }
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("fixed");
    let s = match UdpSocket::bind(bind).and_then(|s| s.connect(addr).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                format!("cannot send to {addr}: {e}"),
                "check the network: is there a route to the gateway?",
            )
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(700)));
    // Message type 0 exists in no WireGuard version.
    for _ in 0..2 {
        let _ = s.send(&[0, 0, 0, 0]);
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return fail(
                    format!("{addr} refuses UDP (ICMP port unreachable): nothing listens there"),
                    "meshd on the gateway is down, or listens on another port: restart it (systemctl restart meshd)",
                )
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return fail(format!("{addr}: {e}"), "check the network path to the gateway"),
            Ok(_) => {}
        }
    }
    Ok(format!("{addr} takes UDP (no ICMP refusal)"))
}

/// Asks `server` for `name` TXT over UDP; the TXT strings of the answer.
fn ask_txt(server: Ipv6Addr, name: &str) -> std::result::Result<Vec<String>, String> {
    let s = UdpSocket::bind("[::]:0").map_err(|e| format!("socket: {e}"))?;
    s.connect((server, 53))
        .map_err(|e| format!("[{server}]:53: {e}"))?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    let id = (crate::peer::now_unix() as u16) ^ 0x5a5a;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    let start = Instant::now();
    s.send(&q).map_err(|e| format!("[{server}]:53: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(format!(
                    "[{server}]:53 refuses (nothing listens: dnsd is down)"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "no answer from [{server}]:53 within {} s",
                    WAIT.as_secs()
                ))
            }
        };
        let a = &buf[..n];
        if n < 12 || a[0..2] != id.to_be_bytes() {
            if start.elapsed() > WAIT {
                return Err("no matching answer".into());
            }
            continue;
        }
        let rcode = a[3] & 0x0f;
        if rcode != 0 {
            let what = match rcode {
                3 => "NXDOMAIN",
                5 => "REFUSED (this address is not a member of the org?)",
                2 => "SERVFAIL",
                _ => "an error",
            };
            return Err(format!("answered {what}"));
        }
        return Ok(txt_strings(a));
    }
}

/// The character strings of every TXT record in a DNS answer (best effort, bounds-checked).
fn txt_strings(msg: &[u8]) -> Vec<String> {
    if msg.len() < 12 {
        return Vec::new();
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut i = 12;
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *msg.get(i)? as usize;
            if l == 0 {
                return Some(i + 1);
            }
            if l & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + l;
        }
    };
    for _ in 0..qd {
        let Some(j) = skip_name(i) else {
            return Vec::new();
        };
        i = j + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let Some(j) = skip_name(i) else { break };
        let Some(h) = msg.get(j..j + 10) else { break };
        let rtype = u16::from_be_bytes([h[0], h[1]]);
        let len = u16::from_be_bytes([h[8], h[9]]) as usize;
        let Some(rdata) = msg.get(j + 10..j + 10 + len) else {
            break;
        };
        if rtype == 16 {
            let mut k = 0;
            while k < rdata.len() {
                let l = rdata[k] as usize;
                if let Some(s) = rdata.get(k + 1..k + 1 + l) {
                    // `_apps.internal` holds comma-separated names.
                    for part in String::from_utf8_lossy(s).split(',') {
                        let p = part.trim();
                        if !p.is_empty() {
                            out.push(p.to_string());
                        }
                    }
                }
                k += 1 + l;
            }
        }
        i = j + 10 + len;
    }
    out
}

fn host_checks(r: &mut Report, src: &crate::admin::Source) {
    for daemon in ["meshd", "dnsd"] {
        r.check(
            &format!("{daemon} is running"),
            match running(daemon) {
                Some(pid) => Ok(format!("pid {pid}")),
                None => fail(
                    "not running",
                    format!("systemctl start {daemon} (examples/{daemon}.service)"),
                ),
            },
        );
    }
    // Its revision and nodes: the frame holds them.
    let snap = crate::admin::open(src).and_then(|reg| Ok(reg.frame()?));
    r.check(
        "registry is reachable",
        match &snap {
            Ok(s) => Ok(format!("revision {}", s.revision.0)),
            Err(e) => fail(
                crate::one_line(e),
                "check --registry / SIXPN_REGISTRY and that etcd (or the SQLite file) is there",
            ),
        },
    );
    // This host's node: the one whose key a meshd here holds and whose endpoint address
    // is one of this host's.
    let ifaces = crate::status::read_all(Path::new(crate::status::SOCKET_DIR));
    let node = snap.as_ref().ok().and_then(|s| {
        s.nodes
            .values()
            .find(|n| ifaces.contains_key(&n.public_key) && is_local(n.endpoint.ip()))
            .cloned()
    });
    r.check(
        "meshd's UDP port is open",
        match node {
            None => fail(
                "no meshd on this host holds a node key of the registry",
                "start meshd with this host's --node and --key",
            ),
            Some(n) => {
                let port = n.endpoint.port();
                if udp_port_bound(port) {
                    Ok(format!("node {} listens on UDP {port}", n.name))
                } else {
                    fail(
                        format!(
                            "node {} has endpoint {} but nothing here listens on UDP {port}",
                            n.name, n.endpoint
                        ),
                        "meshd --endpoint and its listen port must agree",
                    )
                }
            }
        },
    );
}

/// True if `ip` is an address of this host (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The pid of a process with this name.
fn running(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

fn udp_port_bound(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| format!("{a} ").ends_with(&hex))
                })
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_org_dns_address_is_in_the_addresses_48() {
        let a: Ipv6Addr = "fdaa:0:1:a7b:9c::2".parse().unwrap();
        assert_eq!(dns_of(a), "fdaa:0:1::3".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn txt_answers_are_read_and_bad_ones_do_not_panic() {
        // Header (1 question, 1 answer), question `_apps.internal TXT`, answer with a
        // compressed name and one string "web,db".
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x05_apps\x08internal\x00\x00\x10\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 5, 0, 7, 6]);
        m.extend_from_slice(b"web,db");
        assert_eq!(txt_strings(&m), vec!["web", "db"]);
        for cut in 12..m.len() {
            let _ = txt_strings(&m[..cut]);
        }
    }
}
