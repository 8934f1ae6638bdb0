//! The "physical" network between test hosts.

use anyhow::Result;

use crate::{next, sh, unique, Netns};

/// An underlay: a bridge in its own namespace and a veth from it into each host, with IPv4
/// addresses `10.<net>.0.<n>/24` (inside namespaces this test made, never reachable outside).
pub struct Underlay {
    pub bridge: Netns,
    net: u8,
    hosts: u8,
}

impl Underlay {
    pub fn new() -> Result<Underlay> {
        let bridge = Netns::new("ub")?;
        bridge.sh("ip link add br0 type bridge && ip link set br0 up")?;
        // Each underlay gets its own /24 so parallel tests never share addresses.
        let net = (next() % 200 + 20) as u8;
        Ok(Underlay {
            bridge,
            net,
            hosts: 0,
        })
    }

    /// Makes a host namespace on the underlay; returns it with its underlay address.
    pub fn host(&mut self, prefix: &str) -> Result<(Netns, String)> {
        let ns = Netns::new(prefix)?;
        self.hosts += 1;
        let addr = format!("10.{}.0.{}", self.net, self.hosts);
        let (inner, outer) = (unique("vi"), unique("vo"));
        sh(&format!(
            "ip link add {inner} netns {} type veth peer name {outer} netns {}",
            ns.name(),
            self.bridge.name()
        ))?;
        self.bridge.sh(&format!(
            "ip link set {outer} master br0 && ip link set {outer} up"
        ))?;
        ns.sh(&format!(
            "ip link set {inner} name eth0 && ip addr add {addr}/24 dev eth0 && ip link set eth0 up"
        ))?;
        Ok((ns, addr))
    }
}
