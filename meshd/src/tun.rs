//! The TUN side: the device (with or without segmentation offload), the batch of packets
//! written to it, and the `ip` commands that give it addresses and routes.
//!
//! Packets for the TUN are kept with room for a virtio-net header in front, so that tun-rs
//! can coalesce TCP and UDP segments of one flow into one GRO write when the device has
//! `IFF_VNET_HDR` offload, and writes them one by one when it has not. IPv4 fragments that
//! arrived together are joined first (`reassembly`).

use std::process::Command;

use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::error::{Error, Result};
use crate::reassembly;

pub const MTU: u16 = 1420;

/// Most segments the kernel may put in one offloaded TCP/UDP packet it hands us, so that one
/// read always fits the room the reader keeps (a 64 KiB segment at a small MSS would
/// otherwise split into more packets than there are buffers, and be lost whole).
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Packets gathered for the TUN before they are written even though the lock is held.
pub const TUN_BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Whether to use segmentation offload (TUN `IFF_VNET_HDR`, UDP GSO). On unless the
/// environment says `MESHD_OFFLOAD=off` (or `0`): for kernels that misbehave with it, and
/// for measuring what it is worth.
pub fn offload_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("MESHD_OFFLOAD").as_deref(),
            Ok("off" | "0" | "false" | "no")
        )
    })
}

/// Opens (creates) the TUN interface, with TCP/UDP segmentation offload (`IFF_VNET_HDR`:
/// the kernel hands over and takes 64 KiB segments) where the kernel has it, and without
/// where it has not (or `MESHD_OFFLOAD=off`).
pub fn open(name: &str) -> Result<SyncDevice> {
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .mtu(MTU)
            // Down, as wireguard-go leaves it: whoever brings it up (wg-quick, or
            // `configure_mesh` after turning off link-local addresses) decides what the
            // kernel sends on it first.
            .enable(false)
            .offload(offload)
            .build_sync()
    };
    if !offload_enabled() {
        return build(false).map_err(|e| Error::io(format!("creating TUN interface {name}"), e));
    }
    match build(true) {
        Ok(dev) => {
            tracing::debug!(tcp = dev.tcp_gso(), udp = dev.udp_gso(), "TUN offload");
            let segs = MAX_GSO_SEGMENTS.to_string();
            if let Err(e) = ip(&["link", "set", "dev", name, "gso_max_segs", &segs]) {
                // The kernel may then hand over a segment too large for one read; it is
                // counted as a failed TUN read rather than going unnoticed.
                tracing::warn!(error = %e, "cannot limit GSO segments");
            }
            Ok(dev)
        }
        Err(e) => {
            tracing::info!(error = %e, "TUN offload unavailable; going on without");
            build(false).map_err(|e| Error::io(format!("creating TUN interface {name}"), e))
        }
    }
}

/// Packets for the TUN, each behind `VIRTIO_NET_HDR_LEN` bytes of room.
#[derive(Default)]
pub struct TunBatch {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: GROTable,
    /// Fragments joined into the datagram before them since the last look.
    joined: u64,
}

impl TunBatch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            // Room for coalescing a whole 64 KiB GRO packet into the first of a flow.
            self.bufs
                .push(Vec::with_capacity(VIRTIO_NET_HDR_LEN + 65_535));
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
    }

    /// Fragments joined to the one before them since the last call, and resets it.
    pub fn take_joined(&mut self) -> u64 {
        std::mem::take(&mut self.joined)
    }

    /// Writes everything; returns whether the device took it all.
    pub fn flush(&mut self, tun: &SyncDevice) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let packets = std::mem::take(&mut self.len);
        let n = reassembly::join_fragments(&mut self.bufs, packets, VIRTIO_NET_HDR_LEN);
        self.joined += (packets - n) as u64;
        tun.send_multiple(&mut self.gro, &mut self.bufs[..n], VIRTIO_NET_HDR_LEN)
            .map(|_| ())
    }
}

/// Runs `ip <args>`; slow path only (start-up and registry changes).
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("running ip", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::io(
        format!("ip {}", args.join(" ")),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}

/// Brings a mesh interface up: no link-local address (nothing to route it to), MTU, up,
/// and the mesh prefix routed into it.
pub fn configure_mesh(name: &str) -> Result<()> {
    let _ = ip(&["link", "set", "dev", name, "addrgenmode", "none"]);
    // No router solicitations or MLD reports: the kernel would send them from `::` into the
    // mesh, where an address of no org is dropped and counted as hostile.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{name}/router_solicitations"),
        "0",
    );
    let _ = ip(&["link", "set", "dev", name, "multicast", "off"]);
    ip(&["link", "set", "dev", name, "mtu", &MTU.to_string(), "up"])?;
    ip(&["-6", "route", "replace", "fdaa::/16", "dev", name])
}

pub fn add_address(name: &str, addr: std::net::Ipv6Addr) -> Result<()> {
    ip(&[
        "-6",
        "addr",
        "replace",
        &format!("{addr}/128"),
        "dev",
        name,
        "nodad",
    ])
}

/// Routes an IPv6 site prefix into the interface, preferring source `src` if given.
pub fn add_route(name: &str, net: ipnet::Ipv6Net, src: Option<std::net::Ipv6Addr>) -> Result<()> {
    let (net, src) = (net.to_string(), src.map(|s| s.to_string()));
    let mut args = vec!["-6", "route", "replace", &net, "dev", name];
    if let Some(s) = &src {
        args.extend(["src", s]);
    }
    ip(&args)
}

pub fn remove_route(name: &str, net: ipnet::Ipv6Net) -> Result<()> {
    ip(&["-6", "route", "del", &net.to_string(), "dev", name])
}

pub fn remove_address(name: &str, addr: std::net::Ipv6Addr) -> Result<()> {
    ip(&["-6", "addr", "del", &format!("{addr}/128"), "dev", name])
}
