//! The org boundary as a matrix: three orgs on the same two meshd hosts (one a gateway), each
//! with a machine on both hosts, a laptop and a site router whose LAN has its own IPv6 /64
//! and the same IPv4 10.20.0.0/24 as the others. Every endpoint sends one UDP datagram to
//! every other (the LAN host also to each site's 4via6 address; see `skipped` for the pairs
//! left out), all at once; a listener at each destination records what arrives. Same org:
//! delivered. Different orgs: not delivered, though laptops and site routers here send and
//! accept everything through their tunnels, and each such datagram is counted by meshd as
//! an org_mismatch drop.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use registry::Machine;
use sixpn_tests::meshd_harness::{wait_ping, Host, Mesh};
use sixpn_tests::site_harness::{
    lan, listen, logs, machine, udp_sendto, via_addr, wg_peer, Lan, Listener, Peer,
};
use sixpn_tests::Netns;

const SECS15: Duration = Duration::from_secs(15);
const ORGS: [&str; 3] = ["acme", "beta", "gamma"];
const ORG_MISMATCH: &str = "meshd_drops_total{reason=\"org_mismatch\"}";
/// The LAN host in every site: the same IPv4 address behind each org's site router.
const LAN_HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);

/// An endpoint of an org. The LAN host is one endpoint reached two ways: by its IPv6
/// address and, for IPv4, by its org's 4via6 address; it sends from its IPv6 address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The org's machine on the gateway host.
    Machine1,
    /// The org's machine on the other host.
    Machine2,
    Laptop,
    LanV6,
    LanVia4,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Machine1 => "m1",
            Kind::Machine2 => "m2",
            Kind::Laptop => "lap",
            Kind::LanV6 => "lan6",
            Kind::LanVia4 => "lan4",
        }
    }
}

/// Why a pair is not probed, if it is not.
fn skipped(src: (usize, Kind), dst: (usize, Kind)) -> Option<&'static str> {
    match (src.1, dst.1) {
        // Machines on one host share its kernel: a packet between them, of one org or two,
        // is delivered locally and never reaches meshd, so the boundary cannot apply there.
        (Kind::Machine1, Kind::Machine1) | (Kind::Machine2, Kind::Machine2) => Some("same host"),
        // An endpoint to itself proves nothing about the mesh. (The LAN host to its own
        // site's 4via6 address does: that goes through the gateway and back, translated.)
        (Kind::Laptop, Kind::Laptop) | (Kind::LanV6, Kind::LanV6) if src.0 == dst.0 => {
            Some("itself")
        }
        _ => None,
    }
}

/// One org's endpoints.
struct OrgEnds {
    m1: Machine,
    m2: Machine,
    laptop: Peer,
    site: Peer,
    lan: Lan,
    lan_v6: Ipv6Addr,
    via: Ipv6Addr,
}

/// Whether a tag's two ends are of one org.
fn same_org(tag: &str) -> bool {
    let org = |end: &str| end.split('.').next().unwrap_or("").to_string();
    let (src, dst) = tag.split_once('>').unwrap_or((tag, ""));
    org(src) == org(dst)
}

/// A probe's tag, as the datagram carries it: `acme.m1>beta.lan4`.
fn tag(src: (usize, Kind), dst: (usize, Kind)) -> String {
    format!(
        "{}.{}>{}.{}",
        ORGS[src.0],
        src.1.label(),
        ORGS[dst.0],
        dst.1.label()
    )
}

/// Lets every IPv6 destination into the tunnel and every source out of it, as a peer's owner
/// may: the boundary is meshd's to keep, not the peer's AllowedIPs'.
fn open_up(peer: &Peer) -> Result<()> {
    let v4: Vec<&str> = peer
        .allowed
        .iter()
        .filter(|a| !a.contains(':'))
        .map(String::as_str)
        .collect();
    let allowed = std::iter::once("::/0")
        .chain(v4)
        .collect::<Vec<_>>()
        .join(",");
    peer.ns.sh(&format!(
        "wg set {i} peer $(wg show {i} peers) allowed-ips {allowed} && \
         ip -6 route replace default dev {i}",
        i = peer.iface
    ))?;
    Ok(())
}

/// The probes that reached the listener they were sent to, and lines for any that reached
/// another (a 4via6 address translated into the wrong org's LAN, say), wrong whatever cell.
fn received(
    listeners: &[((usize, Kind), String, Listener)],
) -> Result<(BTreeSet<String>, Vec<String>)> {
    let mut delivered = BTreeSet::new();
    let mut wrong = Vec::new();
    for (dst, _, l) in listeners {
        let here = format!(">{}.{}", ORGS[dst.0], dst.1.label());
        for line in l.text()?.lines() {
            if line.ends_with(&here) {
                delivered.insert(line.to_string());
            } else {
                wrong.push(format!("  {line}: arrived at {}", &here[1..]));
            }
        }
    }
    Ok((delivered, wrong))
}

/// Sends every probe of one source, one datagram each; returns the tags whose send failed.
fn send_all(ns: &Netns, src: &str, probes: &[(String, String)]) -> Result<Vec<String>> {
    let script: String = probes
        .iter()
        .map(|(tag, dst)| {
            format!(
                "echo '{tag}' | socat -u - {} 2>/dev/null || echo '{tag}'\n",
                udp_sendto(src, dst)
            )
        })
        .collect();
    let out = ns.sh(&script)?;
    Ok(out.lines().map(str::to_string).collect())
}

#[test]
fn every_endpoint_reaches_its_own_org_and_nothing_of_another() -> Result<()> {
    let began = Instant::now();
    let mut mesh = Mesh::new()?;
    for org in ORGS {
        mesh.org(org)?;
    }
    let mut gw = mesh.host("gw", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;

    let mut orgs = Vec::new();
    for (n, org) in ORGS.into_iter().enumerate() {
        let v6 = format!("2001:db8:{}:0", n + 1);
        let m1 = machine(&mesh, org, &gw)?;
        let m2 = machine(&mesh, org, &b)?;
        let site = wg_peer(
            &mut mesh,
            org,
            "site",
            &["10.20.0.0/24", &format!("2001:db8:{}::/64", n + 1)],
        )?;
        let lan = lan(&site, "10.20.0", Some(&v6))?;
        let laptop = wg_peer(&mut mesh, org, "laptop", &[])?;
        let own_site = format!("2001:db8:{}::/64", n + 1);
        ensure!(
            laptop.allowed.contains(&own_site),
            "{org}'s laptop file lacks its site {own_site}: {:?}",
            laptop.allowed
        );
        open_up(&site)?;
        open_up(&laptop)?;
        orgs.push(OrgEnds {
            via: via_addr(&mesh, org, "site", LAN_HOST_V4)?,
            lan_v6: format!("{v6}::5").parse()?,
            m1,
            m2,
            laptop,
            site,
            lan,
        });
    }

    // Handshakes and bindings before the probes, so that each probe's one datagram is not
    // lost to a tunnel still coming up: peers speak first (as with PersistentKeepalive),
    // and each path class is walked once inside each org.
    let hosts = [&gw, &b];
    for o in &orgs {
        for (ns, from) in [
            (&o.site.ns, o.site.addr),
            (&o.laptop.ns, o.laptop.addr),
            (&o.lan.ns, o.lan_v6),
            (&gw.ns, o.m1.addr),
        ] {
            wait_ping(ns, Some(from), o.m2.addr, SECS15).with_context(|| logs(&hosts))?;
        }
        wait_ping(&b.ns, Some(o.m2.addr), o.via, SECS15).with_context(|| logs(&hosts))?;
        wait_ping(&b.ns, Some(o.m2.addr), o.laptop.addr, SECS15).with_context(|| logs(&hosts))?;
    }

    let dir = mesh.dir.path().to_path_buf();
    let mut listeners: Vec<((usize, Kind), String, Listener)> = Vec::new();
    for (n, o) in orgs.iter().enumerate() {
        let at = |kind: Kind, ns: &Netns, dst: String, bind: String| -> Result<_> {
            Ok(((n, kind), dst, listen(ns, &dir, &bind)?))
        };
        let (m1, m2, lap) = (o.m1.addr.to_string(), o.m2.addr.to_string(), o.laptop.addr);
        listeners.push(at(Kind::Machine1, &gw.ns, m1.clone(), m1)?);
        listeners.push(at(Kind::Machine2, &b.ns, m2.clone(), m2)?);
        listeners.push(at(
            Kind::Laptop,
            &o.laptop.ns,
            lap.to_string(),
            lap.to_string(),
        )?);
        let v6 = o.lan_v6.to_string();
        listeners.push(at(Kind::LanV6, &o.lan.ns, v6.clone(), v6)?);
        listeners.push(at(
            Kind::LanVia4,
            &o.lan.ns,
            o.via.to_string(),
            LAN_HOST_V4.to_string(),
        )?);
    }

    let org_mismatches =
        || -> Result<u64> { Ok(gw.metric(ORG_MISMATCH)? + b.metric(ORG_MISMATCH)?) };
    let mismatches_before = org_mismatches()?;

    // Every source sends its probes at once with the others.
    let mut sources: Vec<((usize, Kind), &Netns, Ipv6Addr)> = Vec::new();
    for (n, o) in orgs.iter().enumerate() {
        sources.push(((n, Kind::Machine1), &gw.ns, o.m1.addr));
        sources.push(((n, Kind::Machine2), &b.ns, o.m2.addr));
        sources.push(((n, Kind::Laptop), &o.laptop.ns, o.laptop.addr));
        sources.push(((n, Kind::LanV6), &o.lan.ns, o.lan_v6));
    }
    let mut probed = BTreeSet::new();
    let unsent: Vec<String> = std::thread::scope(|s| -> Result<Vec<String>> {
        let mut running = Vec::new();
        for &(src, ns, addr) in &sources {
            let probes: Vec<(String, String)> = listeners
                .iter()
                .filter(|(dst, _, _)| skipped(src, *dst).is_none())
                .map(|(dst, to, _)| (tag(src, *dst), to.clone()))
                .collect();
            probed.extend(probes.iter().map(|(t, _)| t.clone()));
            running.push(s.spawn(move || send_all(ns, &addr.to_string(), &probes)));
        }
        let mut unsent = Vec::new();
        for r in running {
            unsent.extend(r.join().expect("a sender panicked")?);
        }
        Ok(unsent)
    })?;
    // Wait for the datagrams that must arrive (a loaded machine may hold them in a queue for
    // a while), then as long again, at least 500 ms, for any that must not.
    let arrived = Instant::now();
    let within: BTreeSet<&String> = probed.iter().filter(|t| same_org(t)).collect();
    loop {
        let (delivered, _) = received(&listeners)?;
        if within.iter().all(|t| delivered.contains(*t)) || arrived.elapsed() > SECS15 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(arrived.elapsed().max(Duration::from_millis(500)));
    let (delivered, mut wrong) = received(&listeners)?;

    // Each cross-org datagram is dropped once, by the first meshd it enters, for crossing
    // orgs: not lost some other way on the road.
    let across = probed.iter().filter(|t| !same_org(t)).count() as u64;
    let dropped = org_mismatches()? - mismatches_before;
    if dropped != across {
        wrong.push(format!(
            "  meshd counted {dropped} org_mismatch drops for {across} cross-org probes"
        ));
    }

    // The matrix: rows are sources, columns destinations. `+` delivered within an org,
    // `.` kept apart across orgs, ` ` not probed; `L` leaked across orgs, `M` missing.
    let mut matrix = format!("{:10}", "from\\to");
    for (dst, _, _) in &listeners {
        let label = format!("{}.{}", &ORGS[dst.0][..1], dst.1.label());
        write!(matrix, " {label:>7}")?;
    }
    matrix.push('\n');
    for &(src, _, addr) in &sources {
        write!(
            matrix,
            "{:10}",
            format!("{}.{}", ORGS[src.0], src.1.label())
        )?;
        for (dst, to, _) in &listeners {
            let t = tag(src, *dst);
            let cell = match (probed.contains(&t), delivered.contains(&t), src.0 == dst.0) {
                (false, _, _) => ' ',
                (true, true, true) => '+',
                (true, false, false) => '.',
                (true, got, _) => {
                    let why = if got {
                        "delivered across orgs"
                    } else if unsent.contains(&t) {
                        "not delivered (the send itself failed)"
                    } else {
                        "not delivered within the org"
                    };
                    wrong.push(format!("  {t}: {addr} -> {to}: {why}"));
                    if got {
                        'L'
                    } else {
                        'M'
                    }
                }
            };
            write!(matrix, " {cell:>7}")?;
        }
        matrix.push('\n');
    }
    let drops = |h: &Host| -> String {
        ["org_mismatch", "source_no_org", "destination_no_org"]
            .iter()
            .map(|why| {
                let n = h.metric(&format!("meshd_drops_total{{reason=\"{why}\"}}"));
                format!("{why}={}", n.map(|n| n.to_string()).unwrap_or("?".into()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "{} cells probed, {} delivered, {} sends refused by the sender's kernel; {:?} in all",
        probed.len(),
        delivered.len(),
        unsent.len(),
        began.elapsed()
    );
    ensure!(
        wrong.is_empty(),
        "{} wrong of {} cells probed:\n{matrix}{}\ndrops: gw {}; b {}",
        wrong.len(),
        probed.len(),
        wrong.join("\n"),
        drops(&gw),
        drops(&b)
    );
    Ok(())
}
