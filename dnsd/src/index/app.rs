//! One app's names (`<app>`, `global.<app>`, `<region>.<app>`, `<group>.process.<app>`,
//! `<id>.vm.<app>`, `regions.`, `vms.` and their `all.` forms) and its `nearest` lists, built
//! from its machines alone: a change to one machine rebuilds its app, nothing else.
//!
//! Names are not stored as keys: a question's part before `.<app>` is matched against the
//! forms above, which keeps an app of three machines at about a kilobyte.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::{list_rdata, region_distance, Entry, RegionId, EMPTY, NEAREST_MAX};

/// What an app's names need of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMachine {
    pub id: Box<str>,
    pub region: Arc<str>,
    pub region_id: Option<RegionId>,
    pub group: Arc<str>,
    pub addr: Ipv6Addr,
    pub started: bool,
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
    lists: Box<[Box<[[u8; 16]]>]>,
    /// Slot → position in `lists`.
    slots: Box<[u8]>,
}

impl NearestLists {
    /// The list for a querier in slot `slot`.
    pub fn get(&self, slot: usize) -> Option<&[[u8; 16]]> {
        let i = *self.slots.get(slot)?;
        self.lists.get(usize::from(i)).map(|l| &l[..])
    }

    /// The list for slot 0 (a querier of unknown region).
    pub fn first(&self) -> Option<&[[u8; 16]]> {
        self.get(0)
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
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
        let mut lists: Vec<Box<[[u8; 16]]>> = Vec::new();
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
            let i = match lists.iter().position(|l| l[..] == list[..]) {
                Some(i) => i,
                None => {
                    lists.push(list[..].into());
                    lists.len() - 1
                }
            };
            // At most one list per querier region, and there are fewer regions than 255.
            slots.push(u8::try_from(i).unwrap_or(u8::MAX));
        }
        NearestLists {
            lists: lists.into_boxed_slice(),
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
    regions: Box<[(Arc<str>, Entry)]>,
    /// `<group>.process.<app>`, by group.
    groups: Box<[(Arc<str>, Entry)]>,
    /// `regions.`, `all.regions.`, `vms.`, `all.vms.<app>`.
    txt: Box<[Entry; 4]>,
    pub nearest: NearestLists,
}

fn txt_entry(text: &str) -> Entry {
    Entry {
        txt: Some(list_rdata(text, b',')),
        ..Entry::default()
    }
}

fn aaaa_entry(mut addrs: Vec<[u8; 16]>) -> Entry {
    addrs.shrink_to_fit();
    Entry {
        aaaa: addrs,
        ..Entry::default()
    }
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
        let mut regions: BTreeMap<&Arc<str>, Vec<[u8; 16]>> = BTreeMap::new();
        let mut groups: BTreeMap<&Arc<str>, Vec<[u8; 16]>> = BTreeMap::new();
        for m in &machines {
            let r = regions.entry(&m.region).or_default();
            let g = groups.entry(&m.group).or_default();
            if m.started {
                r.push(m.addr.octets());
                g.push(m.addr.octets());
            }
        }
        let region_list = |started_only: bool| {
            let set: std::collections::BTreeSet<&str> = machines
                .iter()
                .filter(|m| m.started || !started_only)
                .map(|m| &*m.region)
                .collect();
            super::joined(set, ",")
        };
        let vms = |started_only: bool| {
            let mut s = String::new();
            for m in machines.iter().filter(|m| m.started || !started_only) {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(&m.id);
                s.push(' ');
                s.push_str(&m.region);
            }
            s
        };
        let txt = Box::new([
            txt_entry(&region_list(true)),
            txt_entry(&region_list(false)),
            txt_entry(&vms(true)),
            txt_entry(&vms(false)),
        ]);
        let nearest = NearestLists::build(&machines, querier_regions);
        let to_entries = |map: BTreeMap<&Arc<str>, Vec<[u8; 16]>>| {
            map.into_iter()
                .map(|(k, v)| (k.clone(), aaaa_entry(v)))
                .collect::<Box<[_]>>()
        };
        let regions = to_entries(regions);
        let groups = to_entries(groups);
        let machines = machines
            .into_iter()
            .map(|m| MachineName {
                entry: aaaa_entry(if m.started {
                    vec![m.addr.octets()]
                } else {
                    Vec::new()
                }),
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
            b"regions" => return Some(&self.txt[0]),
            b"all.regions" => return Some(&self.txt[1]),
            b"vms" => return Some(&self.txt[2]),
            b"all.vms" => return Some(&self.txt[3]),
            b"vm" | b"process" => return has_machines.then_some(&EMPTY),
            _ => {}
        }
        if let Some(id) = prefix.strip_suffix(b".vm") {
            let i = self
                .machines
                .binary_search_by(|m| m.machine.id.as_bytes().cmp(id))
                .ok()?;
            return Some(&self.machines[i].entry);
        }
        if let Some(group) = prefix.strip_suffix(b".process") {
            return find(&self.groups, group);
        }
        find(&self.regions, prefix)
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
            (format!("regions.{app}"), &self.txt[0]),
            (format!("all.regions.{app}"), &self.txt[1]),
            (format!("vms.{app}"), &self.txt[2]),
            (format!("all.vms.{app}"), &self.txt[3]),
        ];
        if !self.machines.is_empty() {
            out.push((format!("vm.{app}"), &EMPTY));
            out.push((format!("process.{app}"), &EMPTY));
        }
        for (r, e) in self.regions.iter() {
            out.push((format!("{r}.{app}"), e));
        }
        for (g, e) in self.groups.iter() {
            out.push((format!("{g}.process.{app}"), e));
        }
        for m in self.machines.iter() {
            out.push((format!("{}.vm.{app}", m.machine.id), &m.entry));
        }
        out
    }
}

fn find<'a>(list: &'a [(Arc<str>, Entry)], key: &[u8]) -> Option<&'a Entry> {
    let i = list.binary_search_by(|(k, _)| k.as_bytes().cmp(key)).ok()?;
    Some(&list[i].1)
}
