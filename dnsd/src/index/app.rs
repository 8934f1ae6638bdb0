//! One app's names (`<app>`, `global.<app>`, `<region>.<app>`, `<group>.process.<app>`,
//! `<id>.vm.<app>`, `regions.`, `vms.` and their `all.` forms) and its `nearest` lists, built
//! from its machines alone: a change to one machine rebuilds its app, nothing else.
//!
//! Names are not stored as keys: a question's part before `.<app>` is matched against the
//! forms above, which keeps an app of three machines at about a kilobyte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::sync::Arc;

use registry::MachineId;

use super::{list_rdata, region_distance, Addrs, Entry, RegionId, EMPTY, NEAREST_MAX};

/// What an app's names need of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMachine {
    /// Eight bytes, not a boxed string: an index may hold a million.
    pub id: MachineId,
    pub region: Arc<str>,
    pub region_id: Option<RegionId>,
    pub group: Arc<str>,
    pub addr: Ipv6Addr,
    pub started: bool,
}

/// The answers of a region's or group's name: a name of one machine answers what that
/// machine's `<id>.vm.` name does, and is kept once.
#[derive(Debug, Clone)]
enum Shared {
    Machine(u32),
    Own(Entry),
}

/// One machine and its `<id>.vm.<app>` name.
#[derive(Debug, Clone)]
struct MachineName {
    machine: AppMachine,
    entry: Entry,
}

/// An app's started machines nearest first, one list per region a querier can be in (see
/// [`super::Index::nearest_slot`]); lists are kept once when regions share them, and hold at
/// most [`NEAREST_MAX`] addresses, the most a `top<N>` answer takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NearestLists {
    /// The distinct lists, one after another (one allocation per app, not per list).
    addrs: Box<[[u8; 16]]>,
    /// Where each distinct list ends in `addrs`.
    ends: Box<[u16]>,
    /// Slot → distinct list; empty when every slot has list 0.
    slots: Box<[u8]>,
    /// How many slots there are.
    len: u8,
}

impl NearestLists {
    /// The list for a querier in slot `slot`.
    pub fn get(&self, slot: usize) -> Option<&[[u8; 16]]> {
        if slot >= usize::from(self.len) {
            return None;
        }
        let i = usize::from(self.slots.get(slot).copied().unwrap_or(0));
        let start = match i {
            0 => 0,
            _ => usize::from(*self.ends.get(i - 1)?),
        };
        let end = usize::from(*self.ends.get(i)?);
        self.addrs.get(start..end)
    }

    /// The list for slot 0 (a querier of unknown region).
    pub fn first(&self) -> Option<&[[u8; 16]]> {
        self.get(0)
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn build(machines: &[AppMachine], querier_regions: &[RegionId]) -> NearestLists {
        // Within a region the order is by id, so the first NEAREST_MAX of each region by id
        // are the only candidates any querier's list can hold.
        let mut candidates: Vec<&AppMachine> = Vec::new();
        let mut per_region: BTreeMap<Option<RegionId>, usize> = BTreeMap::new();
        for m in machines.iter().filter(|m| m.started) {
            let n = per_region.entry(m.region_id).or_default();
            if *n < NEAREST_MAX {
                *n += 1;
                candidates.push(m);
            }
        }
        let mut addrs: Vec<[u8; 16]> = Vec::new();
        let mut ends: Vec<u16> = Vec::new();
        let mut slots = Vec::with_capacity(querier_regions.len());
        let mut ranked: Vec<(f64, &AppMachine)> = Vec::with_capacity(candidates.len());
        let mut list: Vec<[u8; 16]> = Vec::with_capacity(NEAREST_MAX);
        for &from in querier_regions {
            ranked.clear();
            ranked.extend(candidates.iter().map(|m| {
                let d = m.region_id.map_or(f64::MAX, |to| region_distance(from, to));
                (d, *m)
            }));
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
            list.clear();
            list.extend(
                ranked
                    .iter()
                    .take(NEAREST_MAX)
                    .map(|(_, m)| m.addr.octets()),
            );
            let mut start = 0;
            let mut found = None;
            for (i, &end) in ends.iter().enumerate() {
                if addrs[start..usize::from(end)] == list[..] {
                    found = Some(i);
                    break;
                }
                start = usize::from(end);
            }
            let i = found.unwrap_or_else(|| {
                addrs.extend_from_slice(&list);
                // At most 23 lists of at most 64 addresses: far below u16::MAX.
                ends.push(u16::try_from(addrs.len()).unwrap_or(u16::MAX));
                ends.len() - 1
            });
            // At most one list per querier region, and there are fewer regions than 255.
            slots.push(u8::try_from(i).unwrap_or(u8::MAX));
        }
        if slots.iter().all(|&s| s == 0) {
            slots.clear();
        }
        NearestLists {
            addrs: addrs.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            len: u8::try_from(querier_regions.len()).unwrap_or(u8::MAX),
            slots: slots.into_boxed_slice(),
        }
    }
}

/// One app: its machines (by id) and the answers of its names.
#[derive(Debug, Clone)]
pub struct AppZone {
    pub name: Box<str>,
    /// The app's record exists (it is in `_apps`); an app may also exist only through
    /// machines that name it.
    pub listed: bool,
    machines: Box<[MachineName]>,
    /// `<app>` and `global.<app>`: every started machine.
    all: Entry,
    /// `<region>.<app>`, by region.
    regions: Box<[(Arc<str>, Shared)]>,
    /// `<group>.process.<app>`, by group.
    groups: Box<[(Arc<str>, Shared)]>,
    /// The distinct texts of `regions.`, `all.regions.`, `vms.`, `all.vms.<app>` (with no
    /// stopped machine, the `all.` forms are the same text, kept once).
    txt: Box<[Entry]>,
    /// `regions.`, `all.regions.`, `vms.`, `all.vms.` → position in `txt`.
    txt_of: [u8; 4],
    pub nearest: NearestLists,
}

fn txt_entry(text: &str) -> Entry {
    Entry {
        txt: Some(list_rdata(text, b',')),
        ..Entry::default()
    }
}

fn aaaa_entry(addrs: Vec<[u8; 16]>) -> Entry {
    Entry {
        aaaa: addrs.into(),
        ..Entry::default()
    }
}

/// The names of `<name>.<app>` forms (regions, groups) sorted, each with its machines' answer:
/// a name of one machine shares that machine's, a name of more holds their started addresses
/// in id order. (Sorting positions costs an app of a few machines no map and no list per
/// name: a whole build makes hundreds of thousands of apps.)
fn by_name(
    machines: &[AppMachine],
    name: impl Fn(&AppMachine) -> &Arc<str>,
) -> Box<[(Arc<str>, Shared)]> {
    let mut order: Vec<usize> = (0..machines.len()).collect();
    // Stable: positions stay in id order within a name.
    order.sort_by(|&a, &b| name(&machines[a]).cmp(name(&machines[b])));
    let mut out = Vec::new();
    for run in order.chunk_by(|&a, &b| name(&machines[a]) == name(&machines[b])) {
        let shared = match run {
            &[one] => Shared::Machine(u32::try_from(one).unwrap_or(u32::MAX)),
            _ => Shared::Own(aaaa_entry(
                run.iter()
                    .map(|&i| &machines[i])
                    .filter(|m| m.started)
                    .map(|m| m.addr.octets())
                    .collect(),
            )),
        };
        out.push((name(&machines[run[0]]).clone(), shared));
    }
    out.into_boxed_slice()
}

impl AppZone {
    /// The app `name` with `machines` (sorted by id, ids unique).
    pub fn build(
        name: &str,
        listed: bool,
        machines: Vec<AppMachine>,
        querier_regions: &[RegionId],
    ) -> AppZone {
        let started = || machines.iter().filter(|m| m.started);
        let all = aaaa_entry(started().map(|m| m.addr.octets()).collect());
        let regions = by_name(&machines, |m| &m.region);
        let groups = by_name(&machines, |m| &m.group);
        // The region names, sorted; with `started_only`, those with a started machine (a
        // region's own answer holds only started addresses).
        let region_list = |started_only: bool| {
            let has_started = |s: &Shared| match s {
                Shared::Machine(i) => machines.get(*i as usize).is_some_and(|m| m.started),
                Shared::Own(e) => !e.aaaa.is_empty(),
            };
            let names = regions
                .iter()
                .filter(|(_, s)| !started_only || has_started(s))
                .map(|(r, _)| &**r);
            super::joined(names, ",")
        };
        let vms = |started_only: bool| {
            let mut s = String::new();
            for m in machines.iter().filter(|m| m.started || !started_only) {
                if !s.is_empty() {
                    s.push(',');
                }
                // Writing to a `String` cannot fail.
                let _ = write!(s, "{}", m.id);
                s.push(' ');
                s.push_str(&m.region);
            }
            s
        };
        let texts = [region_list(true), region_list(false), vms(true), vms(false)];
        let mut txt: Vec<Entry> = Vec::with_capacity(4);
        let mut txt_of = [0u8; 4];
        for (i, text) in texts.iter().enumerate() {
            // The `all.` form follows its started-only form: the same text or a new one.
            if i % 2 == 1 && *text == texts[i - 1] {
                txt_of[i] = txt_of[i - 1];
                continue;
            }
            txt_of[i] = txt.len() as u8;
            txt.push(txt_entry(text));
        }
        let txt = txt.into_boxed_slice();
        let nearest = NearestLists::build(&machines, querier_regions);
        let machines = machines
            .into_iter()
            .map(|m| MachineName {
                entry: Entry {
                    aaaa: match m.started {
                        true => Addrs::One(m.addr.octets()),
                        false => Addrs::None,
                    },
                    ..Entry::default()
                },
                machine: m,
            })
            .collect();
        AppZone {
            name: name.into(),
            listed,
            machines,
            all,
            regions,
            groups,
            txt,
            txt_of,
            nearest,
        }
    }

    /// The same app with its `nearest` lists made for other querier regions.
    pub fn with_querier_regions(&self, querier_regions: &[RegionId]) -> AppZone {
        let machines: Vec<AppMachine> = self.machines().cloned().collect();
        AppZone {
            nearest: NearestLists::build(&machines, querier_regions),
            ..self.clone()
        }
    }

    /// Its machines, by id.
    pub fn machines(&self) -> impl Iterator<Item = &AppMachine> {
        self.machines.iter().map(|m| &m.machine)
    }

    pub fn has_machines(&self) -> bool {
        !self.machines.is_empty()
    }

    /// The answers of `<prefix>.<app>` (`None`: `<app>` itself).
    pub fn get(&self, prefix: Option<&[u8]>) -> Option<&Entry> {
        let Some(prefix) = prefix else {
            return Some(&self.all);
        };
        let has_machines = !self.machines.is_empty();
        match prefix {
            b"global" => return Some(&self.all),
            b"nearest.of" | b"of" => return Some(&EMPTY),
            b"regions" => return self.txt_entry(0),
            b"all.regions" => return self.txt_entry(1),
            b"vms" => return self.txt_entry(2),
            b"all.vms" => return self.txt_entry(3),
            b"vm" | b"process" => return has_machines.then_some(&EMPTY),
            _ => {}
        }
        if let Some(label) = prefix.strip_suffix(b".vm") {
            // A label that is not an id names no machine (the name arrives lowercased, and
            // ids are lowercase, as when they were compared as text).
            let id = MachineId::from_ascii(label)?;
            let i = self
                .machines
                .binary_search_by_key(&id, |m| m.machine.id)
                .ok()?;
            return Some(&self.machines[i].entry);
        }
        if let Some(group) = prefix.strip_suffix(b".process") {
            return self.find(&self.groups, group);
        }
        self.find(&self.regions, prefix)
    }

    fn txt_entry(&self, which: usize) -> Option<&Entry> {
        self.txt.get(usize::from(*self.txt_of.get(which)?))
    }

    fn shared<'a>(&'a self, s: &'a Shared) -> Option<&'a Entry> {
        match s {
            Shared::Machine(i) => self.machines.get(*i as usize).map(|m| &m.entry),
            Shared::Own(e) => Some(e),
        }
    }

    fn find<'a>(&'a self, list: &'a [(Arc<str>, Shared)], key: &[u8]) -> Option<&'a Entry> {
        let i = list.binary_search_by(|(k, _)| k.as_bytes().cmp(key)).ok()?;
        self.shared(&list[i].1)
    }

    /// How many names the app has.
    pub fn names(&self) -> usize {
        // <app>, global., nearest.of., of. and the four lists; vm. and process. with machines.
        let ents = if self.machines.is_empty() { 0 } else { 2 };
        8 + ents + self.regions.len() + self.groups.len() + self.machines.len()
    }

    /// Every name of the app (without `.internal`) and its answers, for dumps and zone files.
    pub fn entries(&self) -> Vec<(String, &Entry)> {
        let app = &self.name;
        let mut out = vec![
            (app.to_string(), &self.all),
            (format!("global.{app}"), &self.all),
            (format!("nearest.of.{app}"), &EMPTY),
            (format!("of.{app}"), &EMPTY),
        ];
        for (i, form) in ["regions", "all.regions", "vms", "all.vms"]
            .iter()
            .enumerate()
        {
            if let Some(e) = self.txt_entry(i) {
                out.push((format!("{form}.{app}"), e));
            }
        }
        if !self.machines.is_empty() {
            out.push((format!("vm.{app}"), &EMPTY));
            out.push((format!("process.{app}"), &EMPTY));
        }
        for (r, e) in self.regions.iter() {
            if let Some(e) = self.shared(e) {
                out.push((format!("{r}.{app}"), e));
            }
        }
        for (g, e) in self.groups.iter() {
            if let Some(e) = self.shared(e) {
                out.push((format!("{g}.process.{app}"), e));
            }
        }
        for m in self.machines.iter() {
            out.push((format!("{}.vm.{app}", m.machine.id), &m.entry));
        }
        out
    }
}
