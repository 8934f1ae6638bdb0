//! Keeping an [`Index`] current: built whole from a snapshot, then changed delta by delta in
//! proportion to what each delta touched (the apps of the machines it changed, the org lists
//! those apps are in, the peers it changed).
//!
//! The builder owns the current index and the ordered state the org-wide lists are made from
//! (apps by name, peers by name, peer expiries). Parts the published index still shares are
//! copied on write ([`Arc::make_mut`]), so publishing a revision costs what the delta
//! changed, and the previous revision's unchanged parts are not duplicated.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

use ipnet::IpNet;

use registry::region::REGIONS;
use registry::{Delta, MachineId, MachineView, OrgNetwork, Peer, Record, RecordKey, Snapshot};

use super::{
    listed_peer, region_id, txt_rdata, Addrs, AppMachine, AppZone, CappedList, Entry, Index, Names,
    Options, OrgZone, RegionId, SharedMap, Site, SiteOwner, SitePrefixes, EMPTY, NO_SLOT,
};

/// Why a delta was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("a delta making revision {got} does not follow the index's revision {have}")]
    OutOfOrder { have: u64, got: u64 },
}

/// What the builder keeps of one org (whether or not its record exists: machines, apps and
/// peers may name an org the registry does not hold; they show once it does).
#[derive(Debug)]
struct OrgState {
    /// `Some` while the org's record exists.
    network: Option<OrgNetwork>,
    apps: BTreeMap<Box<str>, Arc<AppZone>>,
    /// Every peer, expired ones too.
    peers: BTreeMap<String, Peer>,
    zone: OrgZone,
    /// The last app the org lists (`_apps`, `_instances`) were made from, when they were cut
    /// there; `None` when they hold every app.
    lists_end: Option<Box<str>>,
    /// The `_instances` and `all._instances` items of each app the lists were last made
    /// from (each cut past 64 KiB), so that a write remakes only its own app's items.
    instance_items: HashMap<Box<str>, InstanceItems>,
}

#[derive(Debug)]
struct InstanceItems {
    started: String,
    all: String,
}

impl InstanceItems {
    fn of(app: &AppZone) -> Self {
        let mut started = CappedList::new(b';');
        let mut all = CappedList::new(b';');
        for m in app.machines() {
            if !all.wants_more() {
                break;
            }
            let item = |list: &mut CappedList| {
                list.push(format_args!(
                    "instance={},app={},ip={},region={}",
                    m.id, app.name, m.addr, m.region
                ));
            };
            if m.started && started.wants_more() {
                item(&mut started);
            }
            item(&mut all);
        }
        started.text.shrink_to_fit();
        all.text.shrink_to_fit();
        InstanceItems {
            started: started.text,
            all: all.text,
        }
    }
}

impl OrgState {
    fn new(name: &str) -> Self {
        let mut zone = OrgZone {
            name: name.to_string(),
            ..OrgZone::default()
        };
        let empty_list = Entry {
            txt: Some(txt_rdata("")),
            ..Entry::default()
        };
        zone.names.org.insert(Box::from(&b""[..]), EMPTY.clone());
        for list in ["_apps", "_instances", "all._instances", "_peer", "_site"] {
            zone.names
                .org
                .insert(list.as_bytes().into(), empty_list.clone());
        }
        OrgState {
            network: None,
            apps: BTreeMap::new(),
            peers: BTreeMap::new(),
            zone,
            lists_end: None,
            instance_items: HashMap::new(),
        }
    }

    fn is_unused(&self) -> bool {
        self.network.is_none() && self.apps.is_empty() && self.peers.is_empty()
    }
}

/// An app being changed by a delta: its record and its machines, sorted by id.
#[derive(Debug)]
struct AppDraft {
    listed: bool,
    machines: Vec<AppMachine>,
}

impl AppDraft {
    /// A whole build puts machines in id order: each lands at the end.
    fn put(&mut self, m: AppMachine) {
        match self.machines.binary_search_by(|x| x.id.cmp(&m.id)) {
            Ok(i) => self.machines[i] = m,
            Err(i) => self.machines.insert(i, m),
        }
    }

    fn remove(&mut self, id: MachineId) {
        if let Ok(i) = self.machines.binary_search_by_key(&id, |x| x.id) {
            self.machines.remove(i);
        }
    }
}

type FastHash = std::hash::BuildHasherDefault<super::NameHasher>;
/// Org → app → the app as the changes leave it.
type Drafts = HashMap<String, HashMap<String, AppDraft, FastHash>, FastHash>;

/// What a batch of changes touched, so that `finish` remakes only that.
#[derive(Debug, Default)]
struct Dirty {
    apps: Drafts,
    /// Orgs whose `_apps`/`_instances` lists need making again.
    app_lists: BTreeSet<String>,
    /// Orgs whose `_peer`/`_site` lists need making again.
    peer_lists: BTreeSet<String>,
    /// Orgs whose zone changed in any way.
    zones: BTreeSet<String>,
    nodes: bool,
    orgs: bool,
    site_prefixes: bool,
}

/// A whole build fed record by record, in any order (as [`registry::Registry::visit`]
/// reads them), so that a reader need not hold a snapshot beside the index it builds.
pub struct WholeBuild {
    b: IndexBuilder,
    dirty: Dirty,
}

impl WholeBuild {
    pub fn new(opts: Options, now: i64) -> Self {
        WholeBuild {
            b: IndexBuilder::new(opts, now),
            dirty: Dirty {
                nodes: true,
                orgs: true,
                ..Dirty::default()
            },
        }
    }

    pub fn put(&mut self, record: &Record) {
        self.b.put(record, &mut self.dirty);
    }

    /// A machine borrowed from a read ([`registry::Registry::visit_refs`]).
    pub fn put_machine(&mut self, m: MachineView<'_>) {
        self.b.put_machine(m, &mut self.dirty);
    }

    pub fn put_peer(&mut self, p: &Peer) {
        self.b.put_peer(p, &mut self.dirty);
    }

    /// The index of everything put, at `revision`.
    pub fn finish(self, revision: u64) -> IndexBuilder {
        let WholeBuild { mut b, dirty } = self;
        b.finish(dirty);
        b.index.revision = revision;
        b
    }
}

/// The index and what keeping it current needs.
pub struct IndexBuilder {
    opts: Options,
    /// The time peer expiry was last judged at.
    now: i64,
    index: Index,
    orgs: BTreeMap<String, OrgState>,
    /// Node name → (host part, region).
    nodes: BTreeMap<String, (u32, Option<RegionId>)>,
    /// Per region: how many nodes and peers (expired too) say they are there.
    region_uses: [u32; REGIONS.len()],
    querier_regions: Vec<RegionId>,
    /// Unexpired peers with an expiry: (when, org, name).
    expiry: BTreeSet<(i64, String, String)>,
    /// Unexpired peers with IPv6 routes: (org, name).
    v6_sites: BTreeSet<(String, String)>,
    /// Network → the org whose zone answers it (the last by name, as a whole build does).
    owners: HashMap<OrgNetwork, String>,
    interned: HashSet<Arc<str>, FastHash>,
}

impl IndexBuilder {
    /// An empty index at revision 0.
    pub fn new(opts: Options, now: i64) -> Self {
        let mut index = Index {
            local_region: opts.local_region.as_deref().and_then(region_id),
            allow: opts.allow.clone(),
            ..Index::default()
        };
        let querier_regions: Vec<RegionId> = index.local_region.into_iter().collect();
        for (slot, r) in querier_regions.iter().enumerate() {
            index.nearest_slot[usize::from(*r)] = slot as u8;
        }
        IndexBuilder {
            opts,
            now,
            index,
            orgs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            region_uses: [0; REGIONS.len()],
            querier_regions,
            expiry: BTreeSet::new(),
            v6_sites: BTreeSet::new(),
            owners: HashMap::new(),
            interned: HashSet::default(),
        }
    }

    /// The index of `snap`, built whole; `now` is unix seconds, for peer expiry.
    pub fn from_snapshot(snap: &Snapshot, opts: Options, now: i64) -> Self {
        let mut b = WholeBuild::new(opts, now);
        let records = (snap.orgs.values().cloned().map(Record::Org))
            .chain(snap.nodes.values().cloned().map(Record::Node))
            .chain(snap.apps.values().cloned().map(Record::App));
        for r in records {
            b.put(&r);
        }
        for m in snap.machines.values() {
            b.put_machine(m.into());
        }
        for p in snap.peers.values() {
            b.put_peer(p);
        }
        b.finish(snap.revision.0)
    }

    /// The current index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub fn revision(&self) -> u64 {
        self.index.revision
    }

    /// Applies the delta making the next revision; `now` is unix seconds (peers that expired
    /// by then go too). A delta that does not follow the current revision changes nothing.
    pub fn apply(&mut self, delta: &Delta, now: i64) -> Result<(), ApplyError> {
        let have = self.index.revision;
        if delta.revision.0 != have.wrapping_add(1) {
            return Err(ApplyError::OutOfOrder {
                have,
                got: delta.revision.0,
            });
        }
        let mut dirty = Dirty::default();
        self.expire(now, &mut dirty);
        for c in &delta.changes {
            self.remove(&c.key, c.before.as_ref(), &mut dirty);
            if let Some(r) = &c.after {
                self.put(r, &mut dirty);
            }
        }
        self.finish(dirty);
        self.index.revision = delta.revision.0;
        Ok(())
    }

    /// Takes out the peers that expired by `now`. Returns whether the index changed.
    pub fn advance(&mut self, now: i64) -> bool {
        let mut dirty = Dirty::default();
        self.expire(now, &mut dirty);
        if dirty.zones.is_empty() && !dirty.site_prefixes {
            return false;
        }
        self.finish(dirty);
        true
    }

    fn expire(&mut self, now: i64, dirty: &mut Dirty) {
        self.now = self.now.max(now);
        while let Some((when, org, name)) = self.expiry.first().cloned() {
            if when > self.now {
                break;
            }
            self.expiry.remove(&(when, org.clone(), name.clone()));
            let peer = self
                .orgs
                .get(&org)
                .and_then(|s| s.peers.get(&name))
                .cloned();
            if let Some(p) = peer {
                self.peer_off(&p, dirty);
            }
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }

    fn org_state(&mut self, org: &str) -> &mut OrgState {
        if !self.orgs.contains_key(org) {
            self.orgs.insert(org.to_string(), OrgState::new(org));
        }
        self.orgs.get_mut(org).expect("the org was just put in")
    }

    fn draft<'d>(&self, org: &str, app: &str, dirty: &'d mut Dirty) -> &'d mut AppDraft {
        // Look up before making keys: a whole build passes here once per machine.
        if !dirty.apps.get(org).is_some_and(|a| a.contains_key(app)) {
            let draft = match self.orgs.get(org).and_then(|s| s.apps.get(app)) {
                Some(a) => AppDraft {
                    listed: a.listed,
                    machines: a.machines().cloned().collect(),
                },
                None => AppDraft {
                    listed: false,
                    machines: Vec::new(),
                },
            };
            if !dirty.apps.contains_key(org) {
                dirty.apps.insert(org.to_string(), HashMap::default());
            }
            if let Some(apps) = dirty.apps.get_mut(org) {
                apps.insert(app.to_string(), draft);
            }
        }
        dirty
            .apps
            .get_mut(org)
            .and_then(|a| a.get_mut(app))
            .expect("the draft was just made")
    }

    /// Takes out what is stored under `key` (`before`: the record the delta says was there,
    /// which is how a machine's app is found).
    fn remove(&mut self, key: &RecordKey, before: Option<&Record>, dirty: &mut Dirty) {
        match key {
            RecordKey::Org { name } => {
                if let Some(s) = self.orgs.get_mut(name) {
                    s.network = None;
                }
                dirty.orgs = true;
            }
            RecordKey::Node { name } => {
                if let Some((_, r)) = self.nodes.remove(name) {
                    self.unuse_region(r);
                }
                dirty.nodes = true;
            }
            RecordKey::App { org, name } => self.draft(org, name, dirty).listed = false,
            RecordKey::Machine { id } => {
                if let Some(Record::Machine(m)) = before {
                    self.draft(&m.org, &m.app, dirty).remove(*id);
                }
            }
            RecordKey::Peer { org, name } => {
                let old = self.orgs.get_mut(org).and_then(|s| s.peers.remove(name));
                if let Some(p) = old {
                    self.peer_off(&p, dirty);
                    self.unuse_region(region_id(&p.region));
                }
            }
            RecordKey::Peering { .. } | RecordKey::Token { .. } => {}
        }
    }

    fn put(&mut self, record: &Record, dirty: &mut Dirty) {
        match record {
            Record::Org(o) => {
                self.org_state(&o.name).network = Some(o.network);
                dirty.orgs = true;
            }
            Record::Node(n) => {
                let r = region_id(&n.region);
                if let Some((_, old)) = self.nodes.insert(n.name.clone(), (n.host, r)) {
                    self.unuse_region(old);
                }
                self.use_region(r);
                dirty.nodes = true;
            }
            Record::App(a) => self.draft(&a.org, &a.name, dirty).listed = true,
            Record::Machine(m) => self.put_machine(m.into(), dirty),
            Record::Peer(p) => self.put_peer(p, dirty),
            Record::Peering(_) | Record::Token(_) => {}
        }
    }

    fn put_machine(&mut self, m: MachineView<'_>, dirty: &mut Dirty) {
        let machine = AppMachine {
            id: m.id,
            region: self.intern(m.region),
            region_id: region_id(m.region),
            group: self.intern(m.process_group),
            addr: m.addr,
            started: m.started(),
        };
        self.draft(m.org, m.app, dirty).put(machine);
    }

    fn put_peer(&mut self, p: &Peer, dirty: &mut Dirty) {
        let old = self
            .org_state(&p.org)
            .peers
            .insert(p.name.clone(), p.clone());
        if let Some(old) = old {
            self.peer_off(&old, dirty);
            self.unuse_region(region_id(&old.region));
        }
        self.use_region(region_id(&p.region));
        self.peer_on(p, dirty);
    }

    fn use_region(&mut self, r: Option<RegionId>) {
        if let Some(n) = r.and_then(|r| self.region_uses.get_mut(usize::from(r))) {
            *n += 1;
        }
    }

    fn unuse_region(&mut self, r: Option<RegionId>) {
        if let Some(n) = r.and_then(|r| self.region_uses.get_mut(usize::from(r))) {
            *n = n.saturating_sub(1);
        }
    }

    /// A peer's region: its own, else its gateway's.
    fn peer_region(&self, p: &Peer) -> Option<RegionId> {
        region_id(&p.region).or_else(|| self.nodes.get(&p.gateway).and_then(|n| n.1))
    }

    /// Puts in the names and lookups of an unexpired peer.
    fn peer_on(&mut self, p: &Peer, dirty: &mut Dirty) {
        if p.expired(self.now) {
            return;
        }
        let region = self.peer_region(p);
        let global_later = dirty.orgs || dirty.nodes;
        let Some(state) = self.orgs.get_mut(&p.org) else {
            return;
        };
        let names = &mut state.zone.names.org;
        names.insert(
            format!("{}._peer", p.name).into_bytes().into(),
            Entry {
                aaaa: Addrs::One(p.addr.octets()),
                txt: None,
                expires: p.expires,
            },
        );
        if !p.routes.is_empty() {
            names.insert(
                format!("{}._site", p.name).into_bytes().into(),
                EMPTY.clone(),
            );
            if let Some(via) = registry::addr::via_prefix(p.addr) {
                let routes = p
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
                state.zone.sites.insert(p.name.as_bytes().into(), site);
            }
        }
        if let (Some(r), Some(_), false) = (region, state.network, global_later) {
            self.index.region_by_peer.insert(p.addr, r);
        }
        if let Some(e) = p.expires {
            self.expiry.insert((e, p.org.clone(), p.name.clone()));
        }
        if p.routes.iter().any(|r| matches!(r, IpNet::V6(_))) {
            self.v6_sites.insert((p.org.clone(), p.name.clone()));
            dirty.site_prefixes = true;
        }
        dirty.peer_lists.insert(p.org.clone());
        dirty.zones.insert(p.org.clone());
    }

    /// Takes out everything [`Self::peer_on`] put in for `p`.
    fn peer_off(&mut self, p: &Peer, dirty: &mut Dirty) {
        if let Some(state) = self.orgs.get_mut(&p.org) {
            let names = &mut state.zone.names.org;
            names.remove(format!("{}._peer", p.name).as_bytes());
            names.remove(format!("{}._site", p.name).as_bytes());
            state.zone.sites.remove(p.name.as_bytes());
        }
        if let Some(e) = p.expires {
            self.expiry.remove(&(e, p.org.clone(), p.name.clone()));
        }
        if self.v6_sites.remove(&(p.org.clone(), p.name.clone())) {
            dirty.site_prefixes = true;
        }
        self.index.region_by_peer.remove(&p.addr);
        dirty.peer_lists.insert(p.org.clone());
        dirty.zones.insert(p.org.clone());
    }

    /// Remakes what `dirty` says changed and publishes the changed zones into the index.
    fn finish(&mut self, mut dirty: Dirty) {
        if self.update_querier_regions() {
            // Before the changed apps are made (with the new regions already).
            self.remake_all_nearest();
            dirty.zones.extend(self.orgs.keys().cloned());
        }
        let apps = build_apps(std::mem::take(&mut dirty.apps), &self.querier_regions);
        for (org, zones) in apps {
            let s = self.org_state(&org);
            // The org lists hold only their first 64 KiB: an app past where they were cut
            // cannot change them.
            let lists_change = s
                .lists_end
                .as_deref()
                .is_none_or(|end| zones.iter().any(|(app, _)| app.as_str() <= end));
            for (app, zone) in zones {
                self.finish_app(&org, &app, zone);
            }
            // Once per org: sharing the map earlier would copy a shard on every insert.
            let s = self.org_state(&org);
            s.zone.nearest.apps = s.zone.names.apps.clone();
            if lists_change {
                dirty.app_lists.insert(org.clone());
            }
            dirty.zones.insert(org);
        }
        for org in &dirty.app_lists {
            if let Some(s) = self.orgs.get_mut(org) {
                remake_app_lists(s);
            }
        }
        for org in &dirty.peer_lists {
            let now = self.now;
            if let Some(s) = self.orgs.get_mut(org) {
                remake_peer_lists(s, now);
            }
        }
        if dirty.nodes {
            let mut by_host = HashMap::new();
            for (host, region) in self.nodes.values() {
                if let Some(r) = region {
                    by_host.insert(*host, *r);
                }
            }
            self.index.region_by_host = Arc::new(by_host);
        }
        if dirty.nodes || dirty.orgs {
            self.remake_region_by_peer();
        }
        if dirty.site_prefixes || dirty.nodes || dirty.orgs {
            self.remake_site_prefixes();
        }
        // Forget orgs that hold nothing any more.
        for org in &dirty.zones {
            if self.orgs.get(org).is_some_and(OrgState::is_unused) {
                self.orgs.remove(org);
            }
        }
        if dirty.orgs {
            self.owners.clear();
            for (name, s) in &self.orgs {
                if let Some(n) = s.network {
                    self.owners.insert(n, name.clone());
                }
            }
            self.index.zones = self
                .owners
                .iter()
                .filter_map(|(n, name)| {
                    let s = self.orgs.get(name)?;
                    Some((*n, Arc::new(s.zone.clone())))
                })
                .collect();
            self.index.default_org = self
                .opts
                .default_org
                .as_deref()
                .and_then(|name| self.orgs.get(name)?.network);
        } else {
            for org in &dirty.zones {
                let Some(s) = self.orgs.get(org) else {
                    continue;
                };
                let Some(n) = s.network else {
                    continue;
                };
                if self.owners.get(&n) == Some(org) {
                    self.index.zones.insert(n, Arc::new(s.zone.clone()));
                }
            }
        }
        self.index.next_expiry = self
            .expiry
            .iter()
            .find(|(_, org, _)| self.orgs.get(org).is_some_and(|s| s.network.is_some()))
            .map(|(when, _, _)| *when);
    }

    /// Puts in the app as a delta left it (`None`: gone).
    fn finish_app(&mut self, org: &str, app: &str, zone: Option<Arc<AppZone>>) {
        let s = self.org_state(org);
        s.instance_items.remove(app);
        if let Some(old) = s.apps.remove(app) {
            s.zone.names.app_names -= old.names();
        }
        let Some(zone) = zone else {
            s.zone.names.apps.remove(app.as_bytes());
            return;
        };
        s.zone.names.app_names += zone.names();
        s.zone
            .names
            .apps
            .insert(app.as_bytes().into(), zone.clone());
        s.apps.insert(app.into(), zone);
    }

    /// Works out the regions a querier can be in; returns whether they changed.
    fn update_querier_regions(&mut self) -> bool {
        let regions: Vec<RegionId> = (0..REGIONS.len())
            .filter(|&r| self.region_uses[r] > 0)
            .filter_map(|r| RegionId::try_from(r).ok())
            .chain(self.index.local_region)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if regions == self.querier_regions {
            return false;
        }
        self.index.nearest_slot = [NO_SLOT; REGIONS.len()];
        for (slot, r) in regions.iter().enumerate() {
            self.index.nearest_slot[usize::from(*r)] = slot as u8;
        }
        self.querier_regions = regions;
        true
    }

    /// Every app's `nearest` lists again, for new querier regions (a node or peer in a new
    /// region, or the last one of a region gone): the one change that costs every app.
    fn remake_all_nearest(&mut self) {
        let regions = self.querier_regions.clone();
        for s in self.orgs.values_mut() {
            let mut remade: Vec<(Box<[u8]>, Arc<AppZone>)> = Vec::with_capacity(s.apps.len());
            for (name, app) in s.apps.iter_mut() {
                *app = Arc::new(app.with_querier_regions(&regions));
                remade.push((name.as_bytes().into(), app.clone()));
            }
            s.zone.names.apps = SharedMap::from_entries(remade);
            s.zone.nearest.apps = s.zone.names.apps.clone();
        }
    }

    fn remake_region_by_peer(&mut self) {
        let mut entries: Vec<(Ipv6Addr, RegionId)> = Vec::new();
        for s in self.orgs.values().filter(|s| s.network.is_some()) {
            for p in s.peers.values().filter(|p| !p.expired(self.now)) {
                if let Some(r) = self.peer_region(p) {
                    entries.push((p.addr, r));
                }
            }
        }
        self.index.region_by_peer = SharedMap::from_entries(entries);
    }

    fn remake_site_prefixes(&mut self) {
        let mut prefixes = SitePrefixes::default();
        for (org, name) in &self.v6_sites {
            let Some(s) = self.orgs.get(org) else {
                continue;
            };
            let (Some(network), Some(p)) = (s.network, s.peers.get(name)) else {
                continue;
            };
            let owner = SiteOwner {
                network,
                region: self.peer_region(p),
            };
            for r in &p.routes {
                if let IpNet::V6(net) = r {
                    prefixes.insert(net.trunc(), owner);
                }
            }
        }
        self.index.site_prefixes = Arc::new(prefixes);
    }

    /// How many orgs, apps and machines the builder holds (for logs).
    pub fn counts(&self) -> (usize, usize, usize) {
        let apps = self.orgs.values().map(|s| s.apps.len()).sum();
        let machines = self
            .orgs
            .values()
            .flat_map(|s| s.apps.values())
            .map(|a| a.machines().count())
            .sum();
        (self.orgs.len(), apps, machines)
    }
}

type BuiltApps = Vec<(String, Vec<(String, Option<Arc<AppZone>>)>)>;

/// Makes the apps of `drafts` (`None` for an app left with neither record nor machines); a
/// whole build (hundreds of thousands of apps) uses two threads.
fn build_apps(drafts: Drafts, regions: &[RegionId]) -> BuiltApps {
    let build = |app: &str, d: AppDraft| {
        if !d.listed && d.machines.is_empty() {
            return None;
        }
        Some(Arc::new(AppZone::build(app, d.listed, d.machines, regions)))
    };
    let total: usize = drafts.values().map(HashMap::len).sum();
    if total < 10_000 {
        return drafts
            .into_iter()
            .map(|(org, apps)| {
                let zones = apps.into_iter().map(|(a, d)| {
                    let z = build(&a, d);
                    (a, z)
                });
                (org, zones.collect())
            })
            .collect();
    }
    let mut jobs: Vec<(usize, String, Option<AppDraft>)> = Vec::with_capacity(total);
    let orgs: Vec<String> = drafts.keys().cloned().collect();
    for (i, (_, apps)) in drafts.into_iter().enumerate() {
        jobs.extend(apps.into_iter().map(|(a, d)| (i, a, Some(d))));
    }
    let half = jobs.len() / 2;
    let (first, second) = jobs.split_at_mut(half);
    let run = |part: &mut [(usize, String, Option<AppDraft>)]| -> Vec<Option<Arc<AppZone>>> {
        part.iter_mut()
            .map(|(_, a, d)| d.take().and_then(|d| build(a, d)))
            .collect()
    };
    let second = std::sync::Mutex::new(second);
    let run_second = || {
        let mut part = second.lock().unwrap_or_else(|p| p.into_inner());
        run(&mut part)
    };
    let (zones_first, zones_second) = std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("index-build".into())
            .spawn_scoped(scope, run_second);
        let mine = run(first);
        let theirs = match other {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(e) => {
                // The OS refused a thread: the same work on this one.
                tracing::debug!(error = %e, "building the index on one thread");
                run_second()
            }
        };
        (mine, theirs)
    });
    let mut out: BuiltApps = orgs.into_iter().map(|o| (o, Vec::new())).collect();
    for ((i, app, _), zone) in jobs
        .into_iter()
        .zip(zones_first.into_iter().chain(zones_second))
    {
        if let Some((_, apps)) = out.get_mut(i) {
            apps.push((app, zone));
        }
    }
    out
}

fn set_list(names: &mut Names, name: &str, rdata: Box<[u8]>) {
    let entry = Entry {
        txt: Some(rdata),
        ..Entry::default()
    };
    if names.org.get(name.as_bytes()) != Some(&entry) {
        names.org.insert(name.as_bytes().into(), entry);
    }
}

/// `_apps`, `_instances` and `all._instances`: made only as far as a TXT answer holds.
fn remake_app_lists(s: &mut OrgState) {
    let mut apps = CappedList::new(b',');
    let mut apps_end: Option<&str> = None;
    for a in s.apps.values().filter(|a| a.listed) {
        if !apps.wants_more() {
            break;
        }
        apps.push_str(&a.name);
        apps_end = Some(&a.name);
    }
    if apps.wants_more() {
        apps_end = None;
    }
    let mut started = CappedList::new(b';');
    let mut all = CappedList::new(b';');
    let mut instances_end: Option<&str> = None;
    let mut items = HashMap::new();
    for a in s.apps.values() {
        if !started.wants_more() && !all.wants_more() {
            instances_end = Some(&a.name);
            break;
        }
        let app_items = s
            .instance_items
            .remove(&a.name)
            .unwrap_or_else(|| InstanceItems::of(a));
        // Whole apps at a time: text past the cut does not change where the cut falls.
        if started.wants_more() && !app_items.started.is_empty() {
            started.push_str(&app_items.started);
        }
        if all.wants_more() && !app_items.all.is_empty() {
            all.push_str(&app_items.all);
        }
        items.insert(a.name.clone(), app_items);
    }
    let end = match (apps_end, instances_end) {
        (Some(a), Some(i)) => Some(Box::from(a.max(i))),
        _ => None,
    };
    set_list(&mut s.zone.names, "_apps", apps.rdata());
    set_list(&mut s.zone.names, "_instances", started.rdata());
    set_list(&mut s.zone.names, "all._instances", all.rdata());
    s.lists_end = end;
    s.instance_items = items;
}

/// `_peer` (unexpired peers but `interactive-*`) and `_site` (unexpired peers with routes).
fn remake_peer_lists(s: &mut OrgState, now: i64) {
    let mut peers = CappedList::new(b',');
    let mut sites = CappedList::new(b',');
    for p in s.peers.values().filter(|p| !p.expired(now)) {
        if !peers.wants_more() && !sites.wants_more() {
            break;
        }
        if listed_peer(&p.name) && peers.wants_more() {
            peers.push(format_args!("{}", p.name));
        }
        if !p.routes.is_empty() && sites.wants_more() {
            sites.push(format_args!("{}", p.name));
        }
    }
    set_list(&mut s.zone.names, "_peer", peers.rdata());
    set_list(&mut s.zone.names, "_site", sites.rdata());
}
