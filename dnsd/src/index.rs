//! The index: every `.internal` name of every org, with its answers prebuilt as rdata, so
//! answering a query is a hash lookup and a copy. Built whole from a registry snapshot, then
//! kept current delta by delta ([`IndexBuilder`]): each revision is a new [`Index`] that
//! shares every org, app and shard the delta did not touch with the previous one.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, OnceLock};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use registry::region::REGIONS;
use registry::{OrgNetwork, Snapshot};

mod app;
mod builder;
mod shared_map;
#[cfg(test)]
mod tests_delta;

pub use app::{AppMachine, AppZone, NearestLists};
pub use builder::{ApplyError, IndexBuilder, WholeBuild};
pub use shared_map::SharedMap;

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

/// AAAA rdata: most names hold one address (a machine's own, a peer's), kept inline; more
/// are kept on the heap. A million machines' names thus cost no allocation each.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub enum Addrs {
    #[default]
    None,
    One([u8; 16]),
    Many(Box<[[u8; 16]]>),
}

impl std::ops::Deref for Addrs {
    type Target = [[u8; 16]];

    fn deref(&self) -> &[[u8; 16]] {
        match self {
            Addrs::None => &[],
            Addrs::One(a) => std::slice::from_ref(a),
            Addrs::Many(v) => v,
        }
    }
}

impl From<Vec<[u8; 16]>> for Addrs {
    fn from(v: Vec<[u8; 16]>) -> Addrs {
        match v[..] {
            [] => Addrs::None,
            [one] => Addrs::One(one),
            _ => Addrs::Many(v.into_boxed_slice()),
        }
    }
}

/// What a `.internal` name holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// AAAA addresses, as 16-byte rdata.
    pub aaaa: Addrs,
    /// One TXT rdata: the text split into character-strings of at most 255 bytes.
    pub txt: Option<Box<[u8]>>,
    /// Peers only: unix seconds after which the name is gone.
    pub expires: Option<i64>,
}

/// A name with no records (an empty non-terminal, `nearest.of.<app>`, ...).
pub static EMPTY: Entry = Entry {
    aaaa: Addrs::None,
    txt: None,
    expires: None,
};

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
    pub network: OrgNetwork,
    pub region: Option<RegionId>,
}

/// IPv6 site prefixes → their owner, by longest prefix: one hash map per prefix length,
/// longest first, so a lookup is a few masked hash probes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

    /// Every prefix and its owner, sorted: for dumps.
    pub fn entries(&self) -> Vec<(u8, u128, SiteOwner)> {
        let mut out: Vec<_> = self
            .by_len
            .iter()
            .flat_map(|(len, map)| map.iter().map(|(net, o)| (*len, *net, *o)))
            .collect();
        out.sort_by_key(|(len, net, _)| (*len, *net));
        out
    }
}

/// One org's names, keyed by the lowercase name without the `.internal` suffix (`web`,
/// `iad.web`, `_apps`; the apex `internal.` is the empty key).
///
/// A name's last label says where it lives: the apex and names ending in an `_` label
/// (`_apps`, `<peer>._peer`, `<site>._site`, ...) are the org's own; every other name ends
/// in an app's name (app names are DNS labels: no `_`) and is that app's.
#[derive(Debug, Clone, Default)]
pub struct Names {
    org: SharedMap<Box<[u8]>, Entry>,
    apps: SharedMap<Box<[u8]>, Arc<AppZone>>,
    /// How many names the apps have, together.
    app_names: usize,
}

impl Names {
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        let (prefix, last) = match name.iter().rposition(|&b| b == b'.') {
            Some(dot) => (Some(&name[..dot]), &name[dot + 1..]),
            None => (None, name),
        };
        if last.first().is_none_or(|&b| b == b'_') {
            return self.org.get(name);
        }
        self.apps.get(last)?.get(prefix)
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.org.len() + self.app_names
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every name and its answers, in no particular order (for dumps and zone files).
    pub fn iter(&self) -> impl Iterator<Item = (Box<[u8]>, &Entry)> {
        let org = self.org.iter().map(|(k, e)| (k.clone(), e));
        let apps = self.apps.values().flat_map(|a| {
            a.entries()
                .into_iter()
                .map(|(k, e)| (k.into_bytes().into_boxed_slice(), e))
        });
        org.chain(apps)
    }
}

/// Per app: its started machines ordered by distance from each region a querier can be in.
#[derive(Debug, Clone, Default)]
pub struct Nearest {
    apps: SharedMap<Box<[u8]>, Arc<AppZone>>,
}

impl Nearest {
    /// The lists of `app`, indexed by [`Index::nearest_slot`].
    pub fn get(&self, app: &[u8]) -> Option<&NearestLists> {
        self.apps.get(app).map(|a| &a.nearest)
    }
}

/// One org's names.
#[derive(Debug, Clone, Default)]
pub struct OrgZone {
    pub name: String,
    pub names: Names,
    pub nearest: Nearest,
    /// Site peers (peers with routes) by name, for `<a-b-c-d>.<site>._site`.
    pub sites: SharedMap<Box<[u8]>, Site>,
}

impl OrgZone {
    /// The org's apps.
    pub fn apps(&self) -> impl Iterator<Item = &AppZone> {
        self.names.apps.values().map(|a| &**a)
    }
}

/// Everything dnsd answers from, at one registry revision. Cloning one is cheap: its big
/// parts are shared.
#[derive(Debug, Clone)]
pub struct Index {
    pub revision: u64,
    pub zones: HashMap<OrgNetwork, Arc<OrgZone>>,
    /// The network of the org that answers clients outside every org network.
    pub default_org: Option<OrgNetwork>,
    /// A node's host part → its region; also the region of peers behind a gateway.
    pub region_by_host: Arc<HashMap<u32, RegionId>>,
    /// A peer's address → its region.
    pub region_by_peer: SharedMap<Ipv6Addr, RegionId>,
    /// The region used for `nearest` when the querier's region is unknown.
    pub local_region: Option<RegionId>,
    /// The soonest peer expiry still in the future: the index must be updated then.
    pub next_expiry: Option<i64>,
    /// Region id → position in each app's `nearest` list ([`NO_SLOT`] if no querier can be
    /// there). Only regions with a node, a peer or the local region get one.
    pub nearest_slot: [u8; REGIONS.len()],
    /// IPv6 site prefixes → the org whose names their hosts see.
    pub site_prefixes: Arc<SitePrefixes>,
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
            region_by_host: Arc::default(),
            region_by_peer: SharedMap::default(),
            local_region: None,
            next_expiry: None,
            nearest_slot: [NO_SLOT; REGIONS.len()],
            site_prefixes: Arc::default(),
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
    // Codes are a few bytes: compared as one integer each instead of a memcmp per region
    // (a whole build asks once per machine).
    static PACKED: OnceLock<Vec<u64>> = OnceLock::new();
    let packed = PACKED.get_or_init(|| REGIONS.iter().map(|r| pack_code(r.code)).collect());
    let want = pack_code(code);
    if want == u64::MAX {
        return None;
    }
    packed
        .iter()
        .position(|&p| p == want)
        .and_then(|i| RegionId::try_from(i).ok())
}

/// Up to 7 bytes and the length in one integer; `u64::MAX` for a longer code (no region's).
fn pack_code(code: &str) -> u64 {
    let b = code.as_bytes();
    if b.len() > 7 {
        return u64::MAX;
    }
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    a[7] = b.len() as u8;
    u64::from_le_bytes(a)
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
    // The most text bytes that fit (rdata_len grows with n): a binary search, as a list cut
    // is remade on writes to a big org.
    let (mut fit, mut hi) = (0, bytes.len());
    while fit < hi {
        let mid = fit + (hi - fit).div_ceil(2);
        if rdata_len(mid) <= max {
            fit = mid;
        } else {
            hi = mid - 1;
        }
    }
    // `bytes[fit]` is the first byte left out: keep the items wholly before it.
    let end = bytes[..=fit.min(bytes.len() - 1)]
        .iter()
        .rposition(|&b| b == sep)
        .unwrap_or(0);
    (txt_rdata(&text[..end]), true)
}

/// The most addresses a `nearest` list keeps: the most a `top<N>` answer takes.
pub const NEAREST_MAX: usize = 64;

/// Fly filters the auto-named `interactive-*` peers out of `_peer.internal`.
fn listed_peer(name: &str) -> bool {
    !name.starts_with("interactive-")
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

/// TXT rdata for a whole list joined by `sep`, cut to [`TXT_MAX`] (see [`txt_list_rdata`]).
fn list_rdata(text: &str, sep: u8) -> Box<[u8]> {
    let (rdata, cut) = txt_list_rdata(text, sep, TXT_MAX);
    if cut {
        tracing::debug!(bytes = text.len(), "TXT list cut to fit a 64 KiB answer");
    }
    rdata
}

/// A list of items joined by `sep`, made only as far as [`TXT_MAX`] can hold: an org's
/// `_instances` or `_apps` list costs the same whatever the org's size.
struct CappedList {
    text: String,
    sep: u8,
}

impl CappedList {
    fn new(sep: u8) -> Self {
        CappedList {
            text: String::with_capacity(1024),
            sep,
        }
    }

    /// Whether more items could still change the rdata: past `TXT_MAX + 1` bytes of text,
    /// the cut falls at the same place however long the list goes on.
    fn wants_more(&self) -> bool {
        self.text.len() <= TXT_MAX + 1
    }

    /// Adds an item, or several already joined by the separator.
    fn push_str(&mut self, items: &str) {
        if !self.text.is_empty() {
            self.text.push(char::from(self.sep));
        }
        self.text.push_str(items);
    }

    fn push(&mut self, item: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        if !self.text.is_empty() {
            self.text.push(char::from(self.sep));
        }
        let _ = self.text.write_fmt(item);
    }

    fn rdata(&self) -> Box<[u8]> {
        list_rdata(&self.text, self.sep)
    }
}

/// The great-circle distance between two regions, in km.
fn region_distance(from: RegionId, to: RegionId) -> f64 {
    static DISTANCES: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let d = DISTANCES.get_or_init(|| {
        REGIONS
            .iter()
            .map(|a| REGIONS.iter().map(|b| a.distance_km(b)).collect())
            .collect()
    });
    d.get(usize::from(from))
        .and_then(|row| row.get(usize::from(to)))
        .copied()
        .unwrap_or(f64::MAX)
}

impl Index {
    /// Builds the index of `snap`; `now` is unix seconds, for peer expiry.
    pub fn build(snap: &Snapshot, opts: &Options, now: i64) -> Index {
        IndexBuilder::from_snapshot(snap, opts.clone(), now)
            .index()
            .clone()
    }

    /// How many names the index holds, over all orgs.
    pub fn names(&self) -> usize {
        self.zones.values().map(|z| z.names.len()).sum()
    }

    /// Everything the index answers, one sorted line per fact: two indexes that answer
    /// every question alike have the same dump.
    pub fn dump(&self) -> Vec<String> {
        let mut out = vec![
            format!("revision {}", self.revision),
            format!("default_org {:?}", self.default_org),
            format!("local_region {:?}", self.local_region),
            format!("next_expiry {:?}", self.next_expiry),
            format!("nearest_slot {:?}", self.nearest_slot),
            format!("site_prefixes {:?}", self.site_prefixes.entries()),
            format!("allow {:?}", self.allow),
        ];
        let mut hosts: Vec<_> = self.region_by_host.iter().collect();
        hosts.sort();
        out.push(format!("region_by_host {hosts:?}"));
        let mut peers: Vec<_> = self.region_by_peer.iter().collect();
        peers.sort();
        out.push(format!("region_by_peer {peers:?}"));
        let slots = self.nearest_slot.iter().filter(|&&s| s != NO_SLOT).count();
        for (OrgNetwork(net), zone) in &self.zones {
            out.push(format!(
                "{net} org {} names {}",
                zone.name,
                zone.names.len()
            ));
            for (name, e) in zone.names.iter() {
                let name = String::from_utf8_lossy(&name).into_owned();
                let addrs: Vec<Ipv6Addr> = e.aaaa.iter().map(|a| Ipv6Addr::from(*a)).collect();
                out.push(format!(
                    "{net} name {name:?} aaaa {addrs:?} txt {:?} expires {:?}",
                    e.txt.as_deref().map(String::from_utf8_lossy),
                    e.expires
                ));
            }
            for app in zone.apps() {
                let Some(lists) = zone.nearest.get(app.name.as_bytes()) else {
                    out.push(format!("{net} nearest {} missing", app.name));
                    continue;
                };
                let per_slot: Vec<Option<Vec<Ipv6Addr>>> = (0..slots.max(lists.len()))
                    .map(|s| {
                        lists
                            .get(s)
                            .map(|l| l.iter().map(|a| Ipv6Addr::from(*a)).collect())
                    })
                    .collect();
                out.push(format!("{net} nearest {} {per_slot:?}", app.name));
            }
            for (name, site) in zone.sites.iter() {
                out.push(format!(
                    "{net} site {} {site:?}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        out.sort();
        out
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
}

#[cfg(test)]
mod region_id_tests {
    use super::*;

    #[test]
    fn every_region_code_and_nothing_else_has_an_id() {
        for (i, r) in REGIONS.iter().enumerate() {
            assert_eq!(region_id(r.code), Some(i as RegionId), "{}", r.code);
        }
        for code in [
            "",
            "ia",
            "iadx",
            "IAD",
            "iad ",
            "i\0d",
            "a-very-long-region",
        ] {
            assert_eq!(region_id(code), None, "{code:?}");
        }
    }
}
