//! The base's records in binary: a kind byte and the record's fields in order (strings as a
//! 32-bit length and UTF-8, addresses as their bytes, integers little-endian). Reading a
//! million machines this way takes a fraction of what JSON took (5.7 s for a start from a
//! JSON copy at 1M machines, slower than reading SQLite), and writing them costs the start
//! little. Every struct is taken apart whole, so a new field does not compile until it is
//! written here too (and [`super::VERSION`] goes up). A public key is kept as its base64 text
//! and a machine id as its 14 hex characters, as before either had a type of its own, so
//! copies written then still read; reading parses them, as a stored row is parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::{
    App, MachineId, MachineState, MachineView, Node, Org, OrgNetwork, Peer, Peering, PublicKey,
    Record, RecordRef,
};

const ORG: u8 = b'o';
const NODE: u8 = b'n';
const APP: u8 = b'a';
const MACHINE: u8 = b'm';
const PEER: u8 = b'p';
const PEERING: u8 = b'g';

/// Appends machine `m` to `out`, as [`encode`] appends it whole.
pub(super) fn encode_machine(m: &MachineView<'_>, out: &mut Vec<u8>) {
    machine(m, &mut W(out));
}

fn machine(m: &MachineView<'_>, w: &mut W<'_>) {
    // Taken apart whole, as `Machine` is below (a view must have each of its fields).
    let MachineView {
        id,
        org,
        app,
        region,
        node,
        process_group,
        state,
        addr,
    } = *m;
    w.u8(MACHINE);
    w.id(id);
    for s in [org, app, region, node, process_group] {
        w.str(s);
    }
    w.u8(match state {
        MachineState::Started => 1,
        MachineState::Stopped => 0,
    });
    w.0.extend_from_slice(&addr.octets());
}

/// Appends `r` to `out`; `false` (nothing written) for a token, which a copy never holds.
pub(super) fn encode(r: &Record, out: &mut Vec<u8>) -> bool {
    let mut w = W(out);
    match r {
        Record::Org(Org { name, network }) => {
            w.u8(ORG);
            w.str(name);
            w.u32(network.0);
        }
        Record::Node(Node {
            name,
            region,
            public_key,
            endpoint,
            gateway,
            host,
        }) => {
            w.u8(NODE);
            w.str(name);
            w.str(region);
            w.key(public_key);
            w.sock(endpoint);
            w.u8(u8::from(*gateway));
            w.u32(*host);
        }
        Record::App(App { org, name }) => {
            w.u8(APP);
            w.str(org);
            w.str(name);
        }
        Record::Machine(m) => machine(&MachineView::from(m), &mut w),
        Record::Peer(Peer {
            org,
            name,
            gateway,
            region,
            public_key,
            addr,
            routes,
            created,
            expires,
        }) => {
            w.u8(PEER);
            w.str(org);
            w.str(name);
            w.str(gateway);
            w.str(region);
            w.key(public_key);
            w.0.extend_from_slice(&addr.octets());
            w.u32(routes.len() as u32);
            for r in routes {
                w.net(r);
            }
            w.u64(*created as u64);
            match expires {
                Some(e) => {
                    w.u8(1);
                    w.u64(*e as u64);
                }
                None => w.u8(0),
            }
        }
        Record::Peering(Peering { a, b }) => {
            w.u8(PEERING);
            w.str(a);
            w.str(b);
        }
        Record::Token(_) => return false,
    }
    true
}

/// [`decode`] into `each`, a machine borrowed from `buf`.
pub(super) fn decode_ref(buf: &[u8], each: &mut dyn FnMut(RecordRef<'_>)) -> Result<(), String> {
    let mut r = R(buf);
    if buf.first() != Some(&MACHINE) {
        each(RecordRef::Record(decode(buf)?));
        return Ok(());
    }
    r.u8()?;
    let m = r.machine()?;
    r.end()?;
    each(RecordRef::Machine(m));
    Ok(())
}

/// The record in `buf` (all of it).
pub(super) fn decode(buf: &[u8]) -> Result<Record, String> {
    let mut r = R(buf);
    let record = match r.u8()? {
        ORG => Record::Org(Org {
            name: r.string()?,
            network: OrgNetwork(r.u32()?),
        }),
        NODE => Record::Node(Node {
            name: r.string()?,
            region: r.string()?,
            public_key: r.key()?,
            endpoint: r.sock()?,
            gateway: r.bool()?,
            host: r.u32()?,
        }),
        APP => Record::App(App {
            org: r.string()?,
            name: r.string()?,
        }),
        MACHINE => Record::Machine(r.machine()?.to_machine()),
        PEER => Record::Peer(Peer {
            org: r.string()?,
            name: r.string()?,
            gateway: r.string()?,
            region: r.string()?,
            public_key: r.key()?,
            addr: r.ip6()?,
            routes: {
                let n = r.u32()? as usize;
                // Each route takes at least 6 bytes: no allocation beyond what is there.
                let mut routes = Vec::with_capacity(n.min(r.0.len() / 6));
                for _ in 0..n {
                    routes.push(r.net()?);
                }
                routes
            },
            created: r.u64()? as i64,
            expires: if r.bool()? {
                Some(r.u64()? as i64)
            } else {
                None
            },
        }),
        PEERING => Record::Peering(Peering {
            a: r.string()?,
            b: r.string()?,
        }),
        other => return Err(format!("unknown record kind {other:#04x}")),
    };
    r.end()?;
    Ok(record)
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, k: &PublicKey) {
        self.str(&k.to_string());
    }

    fn id(&mut self, id: MachineId) {
        let text = id.to_ascii();
        self.u32(text.len() as u32);
        self.0.extend_from_slice(&text);
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }

    fn net(&mut self, n: &IpNet) {
        self.ip(n.addr());
        self.u8(n.prefix_len());
    }

    fn sock(&mut self, s: &SocketAddr) {
        self.ip(s.ip());
        self.0.extend_from_slice(&s.port().to_le_bytes());
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the record is cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{b} is not a flag")),
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn end(&self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the record")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.str().map(String::from)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a name is not UTF-8".to_string())
    }

    /// A machine's fields, after its kind byte.
    fn machine(&mut self) -> Result<MachineView<'a>, String> {
        Ok(MachineView {
            id: self.id()?,
            org: self.str()?,
            app: self.str()?,
            region: self.str()?,
            node: self.str()?,
            process_group: self.str()?,
            state: if self.bool()? {
                MachineState::Started
            } else {
                MachineState::Stopped
            },
            addr: self.ip6()?,
        })
    }

    fn key(&mut self) -> Result<PublicKey, String> {
        let n = self.u32()? as usize;
        let text = std::str::from_utf8(self.take(n)?).map_err(|_| "a public key is not UTF-8")?;
        text.parse().map_err(|e: crate::Error| e.to_string())
    }

    fn id(&mut self) -> Result<MachineId, String> {
        let n = self.u32()? as usize;
        let text = std::str::from_utf8(self.take(n)?).map_err(|_| "a machine id is not UTF-8")?;
        text.parse().map_err(|e: crate::Error| e.to_string())
    }

    fn ip6(&mut self) -> Result<Ipv6Addr, String> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(Ipv6Addr::from(a))
    }

    fn ip(&mut self) -> Result<IpAddr, String> {
        match self.u8()? {
            4 => {
                let b = self.take(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            6 => Ok(IpAddr::V6(self.ip6()?)),
            f => Err(format!("address family {f}")),
        }
    }

    fn net(&mut self) -> Result<IpNet, String> {
        let ip = self.ip()?;
        let len = self.u8()?;
        IpNet::new(ip, len).map_err(|_| format!("prefix length {len} for {ip}"))
    }

    fn sock(&mut self) -> Result<SocketAddr, String> {
        let ip = self.ip()?;
        let b = self.take(2)?;
        Ok(SocketAddr::new(ip, u16::from_le_bytes([b[0], b[1]])))
    }
}
