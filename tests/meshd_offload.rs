//! meshd's fast path (TUN segmentation offload, UDP GSO/GRO, batches) against its plain
//! path (`MESHD_OFFLOAD=off`: one packet per TUN read and write, one datagram per send):
//! the two talk to each other and to themselves, byte-exact, both ways, with bulk TCP that
//! makes the kernel hand over 64 KiB segments.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sixpn_testkit::metrics::Scrape;
use sixpn_tests::meshd_harness::{metric, wait_ping, wg_keypair, METRICS_PORT};
use sixpn_tests::{bin, sh, unique, Netns, Proc, Underlay};

const SECS10: Duration = Duration::from_secs(10);

struct Side {
    ns: Netns,
    ip: String,
    iface: String,
    meshd: Proc,
}

/// A drop-in meshd in its own namespace, with offload on or off.
fn side(underlay: &mut Underlay, prefix: &str, offload: bool) -> Result<Side> {
    let (ns, ip) = underlay.host(prefix)?;
    let iface = unique(prefix);
    let meshd = bin("meshd");
    let meshd = ns.spawn(
        "env",
        &[
            "RUST_LOG=meshd=debug",
            if offload {
                "MESHD_OFFLOAD=on"
            } else {
                "MESHD_OFFLOAD=off"
            },
            &meshd.to_string_lossy(),
            "-f",
            &iface,
            "--metrics",
            &format!("127.0.0.1:{METRICS_PORT}"),
        ],
    )?;
    ns.wait_for(&format!("wg show {iface}"), SECS10)?;
    Ok(Side {
        ns,
        ip,
        iface,
        meshd,
    })
}

/// Pairs two sides as WireGuard peers, fd00:88::1 and ::2, 10.88.0.1 and .2.
fn pair(x: &Side, y: &Side) -> Result<()> {
    let (xk, xp) = wg_keypair()?;
    let (yk, yp) = wg_keypair()?;
    for (s, key, n, peer, peer_ip, peer_n) in
        [(x, &xk, 1, &yp, &y.ip, 2), (y, &yk, 2, &xp, &x.ip, 1)]
    {
        let keyfile = std::env::temp_dir().join(unique("key"));
        std::fs::write(&keyfile, key)?;
        let r = s.ns.sh(&format!(
            "wg set {i} private-key {k} listen-port 4100{n} peer {peer} endpoint {peer_ip}:4100{peer_n} allowed-ips fd00:88::{peer_n}/128,10.88.0.{peer_n}/32 \
             && ip -6 addr add fd00:88::{n}/64 dev {i} nodad && ip addr add 10.88.0.{n}/24 dev {i} \
             && ip link set {i} up",
            i = s.iface,
            k = keyfile.display()
        ));
        let _ = std::fs::remove_file(&keyfile);
        r?;
    }
    wait_ping(&x.ns, None, "fd00:88::2".parse()?, SECS10)
        .with_context(|| format!("x:\n{}\ny:\n{}", x.meshd.log(), y.meshd.log()))
}

/// Sends `file` from `server` to `client` over TCP through the tunnel; returns its sha256
/// as received.
fn transfer(server: &Side, client: &Side, file: &str, addr: &str, port: u16) -> Result<String> {
    let _srv = server.ns.spawn(
        "socat",
        &[
            "-u",
            &format!("OPEN:{file}"),
            &format!("TCP6-LISTEN:{port},bind=[{addr}],reuseaddr"),
        ],
    )?;
    server
        .ns
        .wait_for(&format!("ss -ltn | grep -q ':{port} '"), SECS10)?;
    client.ns.sh(&format!(
        "timeout 60 socat -u TCP6:[{addr}]:{port} - | sha256sum | cut -d' ' -f1"
    ))
}

#[test]
fn offload_and_plain_paths_carry_bulk_tcp_byte_exact_both_ways() -> Result<()> {
    let mut underlay = Underlay::new()?;
    let fast = side(&mut underlay, "mof", true)?;
    let plain = side(&mut underlay, "mop", false)?;
    pair(&fast, &plain)?;

    // The fast side really runs with offload, and the plain side really without.
    let log = fast.meshd.log();
    ensure!(
        log.contains("tcp=true"),
        "no TUN offload on the fast side:\n{log}"
    );
    let log = plain.meshd.log();
    ensure!(
        !log.contains("TUN offload"),
        "offload on the plain side:\n{log}"
    );
    // The kernel may hand the fast side no more segments per read than it keeps room for.
    let link = fast.ns.sh(&format!("ip -d link show {}", fast.iface))?;
    ensure!(link.contains("gso_max_segs 64 "), "{link}");

    let dir = sixpn_tests::tempdir::Dir::new()?;
    let file = dir.path().join("blob").to_string_lossy().into_owned();
    sh(&format!(
        "head -c 40000000 /dev/urandom > {file}.tmp && mv {file}.tmp {file}"
    ))?;
    let want = sh(&format!("sha256sum < {file} | cut -d' ' -f1"))?;
    // fast → plain: the fast side reads 64 KiB segments and sends GSO runs; the plain side
    // takes them datagram by datagram.
    let got = transfer(&fast, &plain, &file, "fd00:88::1", 9100)?;
    ensure!(got == want, "40 MB fast→plain arrived damaged");
    // plain → fast: datagrams one by one in, GRO-coalesced writes into the fast side's TUN.
    let got = transfer(&plain, &fast, &file, "fd00:88::2", 9101)?;
    ensure!(got == want, "40 MB plain→fast arrived damaged");
    fast.ns.sh("ping -6 -c 3 -i 0.2 -W 2 fd00:88::2")?;

    // Nothing was dropped for a reason that would mean a framing or batching bug.
    for s in [&fast, &plain] {
        let scrape = Scrape::from_netns(&s.ns, "127.0.0.1:9109")?;
        let text = scrape.text();
        for reason in [
            "malformed",
            "decrypt",
            "replay",
            "source_not_allowed",
            "send_failed",
            "tun_write_failed",
            "tun_read_failed",
        ] {
            let line = format!("meshd_drops_total{{reason=\"{reason}\"}} 0");
            ensure!(text.lines().any(|l| l == line), "want `{line}` in:\n{text}");
        }
        let rx = text
            .lines()
            .find_map(|l| l.strip_prefix("meshd_tun_packets_total{direction=\"rx\"} "))
            .context("no TUN counter")?;
        ensure!(
            rx.parse::<u64>()? > 20_000,
            "{rx} packets read from the TUN"
        );
    }
    Ok(())
}

#[test]
fn fragmented_udp_arrives_whole_and_in_order() -> Result<()> {
    let mut underlay = Underlay::new()?;
    let fast = side(&mut underlay, "mff", true)?;
    let plain = side(&mut underlay, "mfp", false)?;
    pair(&fast, &plain)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/meshd_offload_fragments.py");
    let count = 3000;
    // Both ways: the fast side reads many fragments per wake-up and sends them in GSO
    // runs; the plain side reads and sends them one by one. IPv4 fragments that arrive
    // together are joined before the TUN, IPv6 ones never.
    for (from, to, addr) in [
        (&fast, &plain, "fd00:88::2"),
        (&plain, &fast, "fd00:88::1"),
        (&fast, &plain, "10.88.0.2"),
        (&plain, &fast, "10.88.0.1"),
    ] {
        let joined_before = fragments_joined(to)?;
        let reassembled_before = kernel_counter(to, "IpReasmOKs")?;
        let receiver = to.ns.spawn(
            "python3",
            &[script, "recv", addr, "9200", &count.to_string()],
        )?;
        receiver.wait_log("listening", SECS10)?;
        from.ns
            .sh(&format!("python3 {script} send {addr} 9200 {count}"))?;
        let report = receiver.wait_log("got ", SECS10)?;
        ensure!(
            report.contains(&format!("got {count} late 0 bad 0")),
            "{} → {addr}: {report}",
            from.iface
        );
        // Every datagram was put together once: by meshd or by the kernel.
        let joined = fragments_joined(to)? - joined_before;
        let kernel = kernel_counter(to, "IpReasmOKs")? - reassembled_before;
        if addr.contains(':') {
            ensure!(joined == 0, "{joined} IPv6 fragments joined to {addr}");
        } else {
            ensure!(
                joined + kernel == count && joined > 0,
                "to {addr}: meshd joined {joined}, the kernel reassembled {kernel} of {count}"
            );
        }
    }
    // The IPv6 datagrams did cross as fragments.
    let kernel = kernel_counter(&plain, "Ip6ReasmOKs")?;
    ensure!(kernel >= count, "{kernel} IPv6 datagrams reassembled");
    Ok(())
}

/// A kernel counter of the side's namespace (`nstat` names), since it was made.
fn kernel_counter(side: &Side, counter: &str) -> Result<u64> {
    let stats = side.ns.sh(&format!("nstat -az {counter}"))?;
    stats
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(counter)).then(|| words.next()?.parse().ok())?
        })
        .with_context(|| format!("no {counter} in:\n{stats}"))
}

/// meshd's count of IPv4 fragments joined before the TUN.
fn fragments_joined(side: &Side) -> Result<u64> {
    metric(&side.ns, "meshd_tun_fragments_joined_total ")
}
