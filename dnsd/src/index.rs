//! The index: every `.internal` name of every org, computed once per registry snapshot, with
//! its answers prebuilt as rdata, so answering a query is a hash lookup and a copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use registry::region::REGIONS;
use registry::{Machine, Snapshot};

/// TTL of every `.internal` answer: short, because the registry changes.
pub const TTL: u32 = 5;

/// A region, as its position in [`registry::region::REGIONS`].
pub type RegionId = u8;

/// A fast hash for the name maps (FxHash's mix): SipHash costs more than the rest of a
/// lookup, and the keys are the registry's names, not a client's choice.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type NameMap<V> = HashMap<Box<[u8]>, V, std::hash::BuildHasherDefault<NameHasher>>;

/// What a `.internal` name holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry {
    /// AAAA addresses, as 16-byte rdata.
    pub aaaa: Vec<[u8; 16]>,
    /// One TXT rdata: the text split into character-strings of at most 255 bytes.
    pub txt: Option<Box<[u8]>>,
    /// Peers only: unix seconds after which the name is gone.
    pub expires: Option<i64>,
}

/// A site peer, for its 4via6 names `<a-b-c-d>.<site>._site`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site's 4via6 /96 (`registry::addr::via_prefix` of the peer's address).
    pub via: Ipv6Net,
    /// The site's IPv4 routes: only addresses inside them have a 4via6 name.
    pub routes: Vec<Ipv4Net>,
    /// Unix seconds after which the peer (and its names) are gone.
    pub expires: Option<i64>,
}

/// Who a source address in an IPv6 site prefix is: the org of the site peer whose route
/// holds it, and that peer's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteOwner {
    pub network: u32,
    pub region: Option<RegionId>,
}

/// IPv6 site prefixes → their owner, by longest prefix: one hash map per prefix length,
/// longest first, so a lookup is a few masked hash probes.
#[derive(Debug, Default)]
pub struct SitePrefixes {
    by_len: Vec<(u8, HashMap<u128, SiteOwner>)>,
}

impl SitePrefixes {
    fn insert(&mut self, net: Ipv6Net, owner: SiteOwner) {
        let len = net.prefix_len();
        let i = match self.by_len.iter().position(|(l, _)| *l <= len) {
            Some(i) if self.by_len[i].0 == len => i,
            Some(i) => {
                self.by_len.insert(i, (len, HashMap::new()));
                i
            }
            None => {
                self.by_len.push((len, HashMap::new()));
                self.by_len.len() - 1
            }
        };
        self.by_len[i].1.insert(u128::from(net.network()), owner);
    }

    /// The owner of the longest site prefix holding `addr`.
    pub fn owner(&self, addr: Ipv6Addr) -> Option<SiteOwner> {
        let bits = u128::from(addr);
        self.by_len.iter().find_map(|(len, map)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            map.get(&(bits & mask)).copied()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

/// One org's names, keyed by the lowercase name without the `.internal` suffix
/// (`web`, `iad.web`, `_apps`; the apex `internal.` is the empty key).
#[derive(Debug, Default)]
pub struct OrgZone {
    pub name: String,
    pub names: NameMap<Entry>,
    /// Per app: its started machines ordered by distance from each region a querier can
    /// be in (indexed by [`Index::nearest_slot`]).
    pub nearest: NameMap<Vec<Vec<[u8; 16]>>>,
    /// Site peers (peers with routes) by name, for `<a-b-c-d>.<site>._site`.
    pub sites: NameMap<Site>,
}

/// Everything dnsd answers from, at one registry revision.
#[derive(Debug)]
pub struct Index {
    pub revision: u64,
    pub zones: HashMap<u32, OrgZone>,
    /// The network of the org that answers clients outside every org network.
    pub default_org: Option<u32>,
    /// A node's host part → its region; also the region of peers behind a gateway.
    pub region_by_host: HashMap<u32, RegionId>,
    /// A peer's address → its region.
    pub region_by_peer: HashMap<Ipv6Addr, RegionId>,
    /// The region used for `nearest` when the querier's region is unknown.
    pub local_region: Option<RegionId>,
    /// The soonest peer expiry still in the future: the index must be rebuilt then.
    pub next_expiry: Option<i64>,
    /// Region id → position in each app's `nearest` list ([`NO_SLOT`] if no querier can be
    /// there). Only regions with a node, a peer or the local region get one, which keeps the
    /// rebuild after each registry change short.
    pub nearest_slot: [u8; REGIONS.len()],
    /// IPv6 site prefixes → the org whose names their hosts see.
    pub site_prefixes: SitePrefixes,
    /// Networks whose hosts see the default org (and may forward), besides loopback.
    pub allow: Vec<IpNet>,
}

/// No `nearest` list for this region.
pub const NO_SLOT: u8 = u8::MAX;

impl Default for Index {
    fn default() -> Self {
        Index {
            revision: 0,
            zones: HashMap::new(),
            default_org: None,
            region_by_host: HashMap::new(),
            region_by_peer: HashMap::new(),
            local_region: None,
            next_expiry: None,
            nearest_slot: [NO_SLOT; REGIONS.len()],
            site_prefixes: SitePrefixes::default(),
            allow: Vec::new(),
        }
    }
}

/// What the index is built with besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub default_org: Option<String>,
    pub local_region: Option<String>,
    /// Networks (besides loopback) whose hosts are trusted: they see the default org and
    /// may have names forwarded. `--allow`.
    pub allow: Vec<IpNet>,
}

/// A region's id by code.
pub fn region_id(code: &str) -> Option<RegionId> {
    REGIONS
        .iter()
        .position(|r| r.code == code)
        .and_then(|i| RegionId::try_from(i).ok())
}

/// Splits a text into TXT character-strings of at most 255 bytes each.
pub fn txt_rdata(text: &str) -> Box<[u8]> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 255 + 1);
    if bytes.is_empty() {
        out.push(0);
    }
    for chunk in bytes.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out.into_boxed_slice()
}

/// The most TXT rdata one answer carries: what fits in a 64 KiB TCP message after the header,
/// the longest question, the record's head and an OPT record.
pub const TXT_MAX: usize = 65_000;

/// TXT rdata for a list joined by `sep`, cut after the last whole item that fits in `max`
/// bytes of rdata, so that the name can always be answered (over TCP). Returns the rdata and
/// whether items were left out.
pub fn txt_list_rdata(text: &str, sep: u8, max: usize) -> (Box<[u8]>, bool) {
    // rdata length for `n` text bytes: n plus one length byte per 255-byte string.
    let rdata_len = |n: usize| n + n.div_ceil(255).max(1);
    if rdata_len(text.len()) <= max {
        return (txt_rdata(text), false);
    }
    let bytes = text.as_bytes();
    let mut fit = 0;
    while fit < bytes.len() && rdata_len(fit + 1) <= max {
        fit += 1;
    }
    // `bytes[fit]` is the first byte left out: keep the items wholly before it.
    let end = bytes[..=fit.min(bytes.len() - 1)]
        .iter()
        .rposition(|&b| b == sep)
        .unwrap_or(0);
    (txt_rdata(&text[..end]), true)
}

/// Fly filters the auto-named `interactive-*` peers out of `_peer.internal`.
fn listed_peer(name: &str) -> bool {
    !name.starts_with("interactive-")
}

#[derive(Default)]
struct ZoneBuilder {
    names: HashMap<String, Entry, std::hash::BuildHasherDefault<NameHasher>>,
}

impl ZoneBuilder {
    fn aaaa(&mut self, name: String, addrs: impl IntoIterator<Item = Ipv6Addr>) {
        let e = self.names.entry(name).or_default();
        e.aaaa.extend(addrs.into_iter().map(|a| a.octets()));
    }

    /// A `,`-joined list.
    fn txt(&mut self, name: String, text: &str) {
        self.txt_sep(name, text, b',');
    }

    /// A list joined by `sep`: longer than [`TXT_MAX`], it keeps the first items that fit.
    fn txt_sep(&mut self, name: String, text: &str, sep: u8) {
        let (rdata, cut) = txt_list_rdata(text, sep, TXT_MAX);
        if cut {
            tracing::debug!(%name, bytes = text.len(), "TXT list cut to fit a 64 KiB answer");
        }
        self.names.entry(name).or_default().txt = Some(rdata);
    }

    /// Makes sure a name exists (with no records, for now).
    fn exists(&mut self, name: String) {
        self.names.entry(name).or_default();
    }

    /// Adds every ancestor of every name as an empty non-terminal (NOERROR, not NXDOMAIN).
    fn finish(mut self) -> NameMap<Entry> {
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for name in self.names.keys() {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !self.names.contains_key(parent) && !missing.contains(parent) {
                    missing.insert(parent.to_string());
                }
                rest = parent;
            }
        }
        missing.insert(String::new());
        for a in missing {
            self.names.entry(a).or_default();
        }
        self.names
            .into_iter()
            .map(|(k, v)| (k.into_bytes().into_boxed_slice(), v))
            .collect()
    }
}

fn joined<'a>(items: impl IntoIterator<Item = &'a str>, sep: &str) -> String {
    let mut s = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(item);
    }
    s
}

fn vms_text<'a>(machines: impl IntoIterator<Item = &'a Machine>) -> String {
    let parts: Vec<String> = machines
        .into_iter()
        .map(|m| format!("{} {}", m.id, m.region))
        .collect();
    parts.join(",")
}

fn instances_text<'a>(machines: impl IntoIterator<Item = &'a Machine>) -> String {
    let parts: Vec<String> = machines
        .into_iter()
        .map(|m| {
            format!(
                "instance={},app={},ip={},region={}",
                m.id, m.app, m.addr, m.region
            )
        })
        .collect();
    parts.join(";")
}

/// Great-circle distances between every pair of regions, in km.
fn distances() -> Vec<Vec<f64>> {
    REGIONS
        .iter()
        .map(|a| REGIONS.iter().map(|b| a.distance_km(b)).collect())
        .collect()
}

impl Index {
    /// Builds the index of `snap`; `now` is unix seconds, for peer expiry.
    pub fn build(snap: &Snapshot, opts: &Options, now: i64) -> Index {
        let dist = distances();
        let mut index = Index {
            revision: snap.revision.0,
            local_region: opts.local_region.as_deref().and_then(region_id),
            nearest_slot: [NO_SLOT; REGIONS.len()],
            allow: opts.allow.clone(),
            ..Index::default()
        };
        let querier_regions: BTreeSet<RegionId> = snap
            .nodes
            .values()
            .map(|n| n.region.as_str())
            .chain(snap.peers.values().map(|p| p.region.as_str()))
            .filter_map(region_id)
            .chain(index.local_region)
            .collect();
        let querier_regions: Vec<RegionId> = querier_regions.into_iter().collect();
        for (slot, r) in querier_regions.iter().enumerate() {
            index.nearest_slot[usize::from(*r)] = slot as u8;
        }
        for node in snap.nodes.values() {
            if let Some(r) = region_id(&node.region) {
                index.region_by_host.insert(node.host, r);
            }
        }
        for org in snap.orgs.values() {
            let zone = build_zone(snap, &org.name, now, &dist, &querier_regions, &mut index);
            index.zones.insert(org.network.0, zone);
        }
        index.default_org = opts
            .default_org
            .as_deref()
            .and_then(|name| snap.orgs.get(name))
            .map(|o| o.network.0);
        index
    }

    /// How many names the index holds, over all orgs.
    pub fn names(&self) -> usize {
        self.zones.values().map(|z| z.names.len()).sum()
    }
}

fn build_zone(
    snap: &Snapshot,
    org: &str,
    now: i64,
    dist: &[Vec<f64>],
    querier_regions: &[RegionId],
    index: &mut Index,
) -> OrgZone {
    let mut z = ZoneBuilder::default();
    let apps: Vec<&str> = snap
        .apps
        .values()
        .filter(|a| a.org == org)
        .map(|a| a.name.as_str())
        .collect();
    z.txt("_apps".into(), &joined(apps.iter().copied(), ","));

    let mut by_app: BTreeMap<&str, Vec<&Machine>> = apps.iter().map(|a| (*a, vec![])).collect();
    for m in snap.machines.values().filter(|m| m.org == org) {
        by_app.entry(m.app.as_str()).or_default().push(m);
    }
    let mut nearest = NameMap::default();
    for (app, machines) in &by_app {
        let started: Vec<&Machine> = machines.iter().copied().filter(|m| m.started()).collect();
        let addrs = |ms: &[&Machine]| ms.iter().map(|m| m.addr).collect::<Vec<_>>();
        z.aaaa(app.to_string(), addrs(&started));
        z.aaaa(format!("global.{app}"), addrs(&started));
        z.exists(format!("nearest.of.{app}"));
        for m in machines {
            z.exists(format!("{}.{app}", m.region));
            z.exists(format!("{}.process.{app}", m.process_group));
            z.exists(format!("{}.vm.{app}", m.id));
        }
        for m in &started {
            z.aaaa(format!("{}.{app}", m.region), [m.addr]);
            z.aaaa(format!("{}.process.{app}", m.process_group), [m.addr]);
            z.aaaa(format!("{}.vm.{app}", m.id), [m.addr]);
        }
        let regions = |ms: &[&Machine]| {
            let set: BTreeSet<&str> = ms.iter().map(|m| m.region.as_str()).collect();
            joined(set, ",")
        };
        z.txt(format!("regions.{app}"), &regions(&started));
        z.txt(format!("all.regions.{app}"), &regions(machines));
        z.txt(format!("vms.{app}"), &vms_text(started.iter().copied()));
        z.txt(
            format!("all.vms.{app}"),
            &vms_text(machines.iter().copied()),
        );

        let located: Vec<(Option<RegionId>, &Machine)> =
            started.iter().map(|m| (region_id(&m.region), *m)).collect();
        let per_region: Vec<Vec<[u8; 16]>> = querier_regions
            .iter()
            .map(|&from| {
                let mut ms: Vec<(f64, &Machine)> = located
                    .iter()
                    .map(|(to, m)| {
                        let d = to.map_or(f64::MAX, |to| dist[usize::from(from)][usize::from(to)]);
                        (d, *m)
                    })
                    .collect();
                ms.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
                ms.iter().map(|(_, m)| m.addr.octets()).collect()
            })
            .collect();
        nearest.insert(app.as_bytes().into(), per_region);
    }
    let all: Vec<&Machine> = by_app.values().flatten().copied().collect();
    z.txt_sep(
        "_instances".into(),
        &instances_text(all.iter().copied().filter(|m| m.started())),
        b';',
    );
    z.txt_sep(
        "all._instances".into(),
        &instances_text(all.iter().copied()),
        b';',
    );

    let mut peer_names = Vec::new();
    let mut site_names = Vec::new();
    let mut sites = NameMap::default();
    let network = snap.orgs.get(org).map(|o| o.network.0);
    for p in snap.peers.values().filter(|p| p.org == org) {
        if p.expired(now) {
            continue;
        }
        if let Some(e) = p.expires {
            index.next_expiry = Some(index.next_expiry.map_or(e, |n| n.min(e)));
        }
        let region = region_id(&p.region).or_else(|| {
            snap.nodes
                .get(&p.gateway)
                .and_then(|g| region_id(&g.region))
        });
        if let Some(r) = region {
            index.region_by_peer.insert(p.addr, r);
        }
        let name = format!("{}._peer", p.name);
        z.aaaa(name.clone(), [p.addr]);
        if let Some(e) = z.names.get_mut(&name) {
            e.expires = p.expires;
        }
        if listed_peer(&p.name) {
            peer_names.push(p.name.as_str());
        }
        if p.routes.is_empty() {
            continue;
        }
        site_names.push(p.name.as_str());
        z.exists(format!("{}._site", p.name));
        for r in &p.routes {
            if let (IpNet::V6(net), Some(network)) = (r, network) {
                let owner = SiteOwner { network, region };
                index.site_prefixes.insert(net.trunc(), owner);
            }
        }
        if let Some(via) = registry::addr::via_prefix(p.addr) {
            let routes: Vec<Ipv4Net> = p
                .routes
                .iter()
                .filter_map(|r| match r {
                    IpNet::V4(n) => Some(n.trunc()),
                    IpNet::V6(_) => None,
                })
                .collect();
            let site = Site {
                via,
                routes,
                expires: p.expires,
            };
            sites.insert(p.name.as_bytes().into(), site);
        }
    }
    z.txt("_peer".into(), &joined(peer_names, ","));
    z.txt("_site".into(), &joined(site_names, ","));

    OrgZone {
        name: org.to_string(),
        names: z.finish(),
        nearest,
        sites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_lists_over_64k_keep_the_whole_items_that_fit() {
        let items: Vec<String> = (0..1500)
            .map(|i| format!("instance={i:014x},app=web,ip=fdaa:0:1:a7b:1:{i:x}::2,region=iad"))
            .collect();
        let text = items.join(";");
        assert!(text.len() > 70_000);
        let (rdata, cut) = txt_list_rdata(&text, b';', TXT_MAX);
        assert!(cut);
        assert!(
            rdata.len() <= TXT_MAX && rdata.len() > TXT_MAX - 300,
            "{}",
            rdata.len()
        );
        // Back to text: a prefix of the list, ending at an item boundary.
        let mut back = Vec::new();
        let mut at = 0;
        while at < rdata.len() {
            let n = usize::from(rdata[at]);
            back.extend_from_slice(&rdata[at + 1..at + 1 + n]);
            at += 1 + n;
        }
        let back = String::from_utf8(back).unwrap();
        let kept: Vec<&str> = back.split(';').collect();
        assert_eq!(
            kept[..],
            items[..kept.len()]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()[..]
        );
        assert!(kept.len() > 800 && kept.len() < 1500, "{}", kept.len());
        // Short lists are whole.
        assert_eq!(
            txt_list_rdata("a,b", b',', TXT_MAX),
            (txt_rdata("a,b"), false)
        );
    }

    #[test]
    fn txt_over_255_bytes_splits_into_strings() {
        let text = "a".repeat(300);
        let rdata = txt_rdata(&text);
        assert_eq!(rdata[0], 255);
        assert_eq!(rdata[256], 45);
        assert_eq!(rdata.len(), 302);
        assert_eq!(&*txt_rdata(""), &[0u8][..]);
        assert_eq!(&*txt_rdata("ab"), b"\x02ab");
    }

    #[test]
    fn empty_non_terminals_exist() {
        let mut z = ZoneBuilder::default();
        z.aaaa("x.vm.web".into(), []);
        let names = z.finish();
        for k in ["x.vm.web", "vm.web", "web", ""] {
            assert!(names.contains_key(k.as_bytes()), "{k}");
        }
    }
}
