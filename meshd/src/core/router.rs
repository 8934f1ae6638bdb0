//! Longest-prefix match over allowed IPs: one hash map per prefix length, probed from the
//! longest length present down, so a lookup is a handful of hash probes and never allocates.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// One address family: prefix lengths, longest first, each with its masked prefixes.
#[derive(Debug)]
struct Family<T> {
    bits: u8,
    /// Sorted by length, descending.
    lengths: Vec<(u8, HashMap<u128, T>)>,
}

impl<T: Copy + PartialEq> Family<T> {
    fn new(bits: u8) -> Self {
        Family {
            bits,
            lengths: Vec::new(),
        }
    }

    fn mask(&self, addr: u128, len: u8) -> u128 {
        if len == 0 {
            return 0;
        }
        let host_bits = u32::from(self.bits - len);
        (addr >> host_bits) << host_bits
    }

    fn insert(&mut self, addr: u128, len: u8, value: T) -> Option<T> {
        let key = self.mask(addr, len);
        let pos = match self.lengths.iter().position(|(l, _)| *l <= len) {
            Some(p) if self.lengths[p].0 == len => p,
            Some(p) => {
                self.lengths.insert(p, (len, HashMap::new()));
                p
            }
            None => {
                self.lengths.push((len, HashMap::new()));
                self.lengths.len() - 1
            }
        };
        self.lengths[pos].1.insert(key, value)
    }

    fn remove(&mut self, addr: u128, len: u8) -> Option<T> {
        let key = self.mask(addr, len);
        let pos = self.lengths.iter().position(|(l, _)| *l == len)?;
        let old = self.lengths[pos].1.remove(&key);
        if self.lengths[pos].1.is_empty() {
            self.lengths.remove(pos);
        }
        old
    }

    fn get_exact(&self, addr: u128, len: u8) -> Option<T> {
        let key = self.mask(addr, len);
        let (_, map) = self.lengths.iter().find(|(l, _)| *l == len)?;
        map.get(&key).copied()
    }

    fn lookup(&self, addr: u128) -> Option<T> {
        self.lengths
            .iter()
            .find_map(|(len, map)| map.get(&self.mask(addr, *len)).copied())
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, map) in &mut self.lengths {
            map.retain(|_, v| keep(v));
        }
        self.lengths.retain(|(_, m)| !m.is_empty());
    }
}

/// A routing table from prefixes to targets; the longest matching prefix wins.
#[derive(Debug)]
pub struct Router<T> {
    v4: Family<T>,
    v6: Family<T>,
}

impl<T: Copy + PartialEq> Default for Router<T> {
    fn default() -> Self {
        Router {
            v4: Family::new(32),
            v6: Family::new(128),
        }
    }
}

fn split(net: &IpNet) -> (bool, u128, u8) {
    match net {
        IpNet::V4(n) => (false, u128::from(u32::from(n.addr())), n.prefix_len()),
        IpNet::V6(n) => (true, u128::from(n.addr()), n.prefix_len()),
    }
}

impl<T: Copy + PartialEq> Router<T> {
    /// Routes `net` to `value`; returns the target it had before, if any.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match split(&net) {
            (true, a, l) => self.v6.insert(a, l, value),
            (false, a, l) => self.v4.insert(a, l, value),
        }
    }

    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        match split(&net) {
            (true, a, l) => self.v6.remove(a, l),
            (false, a, l) => self.v4.remove(a, l),
        }
    }

    /// The target of exactly this prefix (not a lookup).
    pub fn get(&self, net: IpNet) -> Option<T> {
        match split(&net) {
            (true, a, l) => self.v6.get_exact(a, l),
            (false, a, l) => self.v4.get_exact(a, l),
        }
    }

    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
            IpAddr::V4(a) => self.v4.lookup(u128::from(u32::from(a))),
        }
    }

    /// Drops every route whose target fails `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(&mut keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = Router::default();
        r.insert(net("fdaa::/16"), 1);
        r.insert(net("fdaa:0:18:a7b:7d::/80"), 2);
        r.insert(net("fdaa:0:18:a7b:7d:f066:b83b:0/112"), 3);
        assert_eq!(r.lookup(ip("fdaa:0:18:a7b:7d:f066:b83b:2")), Some(3));
        assert_eq!(r.lookup(ip("fdaa:0:18:a7b:7d:1:1:2")), Some(2));
        assert_eq!(r.lookup(ip("fdaa:0:19::2")), Some(1));
        assert_eq!(r.lookup(ip("fd00::1")), None);
        r.remove(net("fdaa:0:18:a7b:7d:f066:b83b::/112"));
        assert_eq!(r.lookup(ip("fdaa:0:18:a7b:7d:f066:b83b:2")), Some(2));
    }

    #[test]
    fn prefixes_are_masked_and_families_kept_apart() {
        let mut r = Router::default();
        r.insert(net("10.1.2.3/24"), 7);
        r.insert(net("0.0.0.0/0"), 8);
        assert_eq!(r.lookup(ip("10.1.2.200")), Some(7));
        assert_eq!(r.lookup(ip("192.168.1.1")), Some(8));
        assert_eq!(r.lookup(ip("::1")), None);
        assert_eq!(r.get(net("10.1.2.0/24")), Some(7));
        r.retain(|v| *v != 7);
        assert_eq!(r.lookup(ip("10.1.2.200")), Some(8));
    }

    #[test]
    fn host_routes_and_default_route_in_v6() {
        let mut r = Router::default();
        r.insert(net("::/0"), 1);
        r.insert(net("fdaa::5/128"), 2);
        assert_eq!(r.lookup(ip("fdaa::5")), Some(2));
        assert_eq!(r.lookup(ip("fdaa::6")), Some(1));
    }
}
