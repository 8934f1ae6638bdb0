//! Site end-to-end helpers on top of [`crate::meshd_harness`]: WireGuard peers (laptops and
//! site routers) on stock wireguard-go from `wgtool create` files, a LAN namespace behind a
//! site router, TCP servers and requests, and UDP listeners that record what reaches them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use registry::Machine;

use crate::meshd_harness::{wait_address, wireguard_go, Host, Mesh};
use crate::{bin, sh, unique, Netns, Proc};

const SECS15: Duration = Duration::from_secs(15);

/// The UDP port [`listen`] binds and [`send_udp`] sends to.
pub const UDP_PORT: u16 = 9999;

/// Runs `wgtool` against the mesh's registry.
pub fn wgtool(mesh: &Mesh, args: &str) -> Result<String> {
    sh(&format!(
        "{} --registry {} {args}",
        bin("wgtool").display(),
        mesh.location
    ))
}

/// A WireGuard peer (laptop or site router) made with `wgtool create`, on wireguard-go.
pub struct Peer {
    pub ns: Netns,
    pub iface: String,
    pub addr: Ipv6Addr,
    /// The tunnel file's AllowedIPs, as written.
    pub allowed: Vec<String>,
    _wg: Proc,
}

/// `wgtool create` a peer, then bring it up as wg-quick would (address, a route per
/// AllowedIPs entry) on wireguard-go configured by `wg setconf`.
pub fn wg_peer(mesh: &mut Mesh, org: &str, name: &str, routes: &[&str]) -> Result<Peer> {
    let (ns, _) = mesh.underlay.host("sp")?;
    let iface = unique("sw");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    let route_args: String = routes.iter().map(|r| format!(" --route {r}")).collect();
    wgtool(mesh, &format!("create {org} iad {name} {conf}{route_args}"))?;
    peer_up(ns, &iface, &conf)
}

/// Brings the tunnel file `conf` up in `ns` on wireguard-go as `iface`, as wg-quick would
/// (address, a route per AllowedIPs entry; not its DNS line).
pub fn peer_up(ns: Netns, iface: &str, conf: &str) -> Result<Peer> {
    let iface = iface.to_string();
    let text = std::fs::read_to_string(conf)?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("tunnel file has no {key}:\n{text}"))
    };
    let addr: Ipv6Addr = field("Address = ")?
        .split('/')
        .next()
        .context("Address")?
        .parse()?;
    let allowed: Vec<String> = field("AllowedIPs = ")?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let wg = wireguard_go(&ns, &iface)?;
    ns.sh(&format!(
        "wg-quick strip {conf} > {conf}.stripped && wg setconf {iface} {conf}.stripped && \
         ip -6 addr add {addr}/128 dev {iface} && ip link set {iface} up"
    ))?;
    for net in &allowed {
        let family = if net.contains(':') { "-6" } else { "-4" };
        ns.sh(&format!("ip {family} route add {net} dev {iface}"))?;
    }
    Ok(Peer {
        ns,
        iface,
        addr,
        allowed,
        _wg: wg,
    })
}

/// A LAN namespace behind a site router: `<v4 prefix>.5` and `<v6 prefix>::5` on the LAN,
/// the router at `.1` / `::1`, forwarding, and the LAN's default routes via the router.
pub struct Lan {
    pub ns: Netns,
}

pub fn lan(router: &Peer, v4_24: &str, v6_64: Option<&str>) -> Result<Lan> {
    let ns = Netns::new("sl")?;
    let (inner, outer) = (unique("li"), unique("lo"));
    sh(&format!(
        "ip link add {inner} netns {} type veth peer name {outer} netns {}",
        ns.name(),
        router.ns.name()
    ))?;
    router.ns.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && \
         ip addr add {v4_24}.1/24 dev {outer} && ip link set {outer} up"
    ))?;
    ns.sh(&format!(
        "ip link set {inner} name eth0 && ip addr add {v4_24}.5/24 dev eth0 && \
         ip link set eth0 up && ip route add default via {v4_24}.1"
    ))?;
    if let Some(p) = v6_64 {
        router
            .ns
            .sh(&format!("ip -6 addr add {p}::1/64 dev {outer} nodad"))?;
        ns.sh(&format!(
            "ip -6 addr add {p}::5/64 dev eth0 nodad && ip -6 route add default via {p}::1"
        ))?;
    }
    Ok(Lan { ns })
}

/// A TCP server answering `text` on both families.
pub fn serve(ns: &Netns, port: u16, text: &str) -> Result<(Proc, Proc)> {
    let v4 = ns.spawn(
        "socat",
        &[
            &format!("TCP4-LISTEN:{port},reuseaddr,fork"),
            &format!("SYSTEM:echo {text}"),
        ],
    )?;
    let v6 = ns.spawn(
        "socat",
        &[
            &format!("TCP6-LISTEN:{port},ipv6only=1,reuseaddr,fork"),
            &format!("SYSTEM:echo {text}"),
        ],
    )?;
    ns.wait_for(&format!("ss -ltn | grep -c ':{port} ' | grep -q 2"), SECS15)?;
    Ok((v4, v6))
}

/// A TCP request from `ns` (from `src` when given); the answer, or "" on failure.
pub fn request(ns: &Netns, src: Option<Ipv6Addr>, dst: &str, port: u16) -> String {
    let bind = src.map(|s| format!(",bind=[{s}]")).unwrap_or_default();
    let target = if dst.contains(':') {
        format!("TCP6:[{dst}]:{port}")
    } else {
        format!("TCP4:{dst}:{port}")
    };
    ns.sh(&format!(
        "socat -T 3 - {target},connect-timeout=2{bind} </dev/null"
    ))
    .unwrap_or_default()
    .trim()
    .to_string()
}

/// Retries `request` until it answers `want` or 15 s pass.
pub fn reaches(ns: &Netns, src: Option<Ipv6Addr>, dst: &str, port: u16, want: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let got = request(ns, src, dst, port);
        if got == want {
            return Ok(());
        }
        if start.elapsed() > SECS15 {
            bail!("{dst}:{port} answered {got:?}, not {want:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The 4via6 address of `v4` behind `org`'s site peer `site`.
pub fn via_addr(mesh: &Mesh, org: &str, site: &str, v4: Ipv4Addr) -> Result<Ipv6Addr> {
    let snap = mesh.reg.snapshot()?;
    let p = snap
        .peers
        .get(&(org.to_string(), site.to_string()))
        .context("site peer")?;
    let via = p.via().context("site has no 4via6 prefix")?;
    Ok(registry::addr::via_addr(via, v4))
}

/// `org`'s `web` machine on `host`, once its address is up.
pub fn machine(mesh: &Mesh, org: &str, host: &Host) -> Result<Machine> {
    let m = mesh.machine(org, "web", host)?;
    wait_address(host, m.addr)?;
    Ok(m)
}

/// The hosts' meshd logs, for failure messages.
pub fn logs(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| format!("--- {}:\n{}", h.node, h.log()))
        .collect()
}

/// Records UDP datagrams arriving at `addr`:[`UDP_PORT`] in `ns`, into a file.
pub struct Listener {
    pub ns_name: String,
    file: PathBuf,
    _p: Proc,
}

pub fn listen(ns: &Netns, dir: &Path, addr: &str) -> Result<Listener> {
    let file = dir.join(unique("rx"));
    std::fs::write(&file, "")?;
    let (family, bind) = if addr.contains(':') {
        ("UDP6-RECV", format!("[{addr}]"))
    } else {
        ("UDP4-RECV", addr.to_string())
    };
    let p = ns.spawn(
        "socat",
        &[
            "-u",
            &format!("{family}:{UDP_PORT},bind={bind},reuseaddr"),
            &format!("OPEN:{},append", file.display()),
        ],
    )?;
    // This address's socket, not any on the port: a namespace may hold several listeners.
    ns.wait_for(&format!("ss -lun | grep -qF '{bind}:{UDP_PORT} '"), SECS15)?;
    Ok(Listener {
        ns_name: ns.name().to_string(),
        file,
        _p: p,
    })
}

impl Listener {
    /// How many of [`send_udp`]'s datagrams arrived.
    pub fn received(&self) -> Result<usize> {
        Ok(self.text()?.matches("spoof").count())
    }

    /// Everything received so far, datagrams as they came.
    pub fn text(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.file)?)
    }
}

/// The socat address sending UDP from `src` to `dst`:[`UDP_PORT`].
pub fn udp_sendto(src: &str, dst: &str) -> String {
    if dst.contains(':') {
        format!("UDP6-SENDTO:[{dst}]:{UDP_PORT},bind=[{src}]")
    } else {
        format!("UDP4-SENDTO:{dst}:{UDP_PORT},bind={src}")
    }
}

/// Three datagrams reading `spoof` from `src` to `dst`, counted by [`Listener::received`].
pub fn send_udp(ns: &Netns, src: &str, dst: &str) -> Result<()> {
    let to = udp_sendto(src, dst);
    for _ in 0..3 {
        ns.sh(&format!("echo spoof | socat -u - {to}"))?;
    }
    Ok(())
}
