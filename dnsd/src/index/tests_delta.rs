//! The index kept delta by delta answers exactly like one built whole from the snapshot the
//! deltas lead to: random registries, random changes of every record kind, seeded.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use registry::{
    App, Delta, Machine, MachineState, Node, Org, OrgNetwork, Peer, Peering, Record, RecordChange,
    Revision, Snapshot,
};

use super::{Index, IndexBuilder, Options};
use crate::answer::{answer, Answer, Question, TYPE_AAAA, TYPE_TXT};

const NOW: i64 = 1_700_000_000;
const REGIONS: [&str; 6] = ["iad", "ams", "nrt", "syd", "fra", "gru"];

/// splitmix64: small, seeded, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Makes random records and deltas against a snapshot it keeps.
struct World {
    rng: Rng,
    snap: Snapshot,
    now: i64,
    /// Never reused, so addresses stay unique as the registry keeps them.
    counter: u32,
    orgs: Vec<String>,
    apps: Vec<String>,
}

fn mesh_addr(net: u32, host: u32, slot: u32, iface: u16) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfdaa,
        (net >> 16) as u16,
        net as u16,
        (host >> 16) as u16,
        host as u16,
        (slot >> 16) as u16,
        slot as u16,
        iface,
    )
}

impl World {
    fn new(seed: u64, orgs: usize, apps: usize) -> World {
        World {
            rng: Rng(seed),
            snap: Snapshot::default(),
            now: NOW,
            counter: 0,
            orgs: (0..orgs).map(|i| format!("org{i}")).collect(),
            apps: (0..apps).map(|i| format!("app{i}")).collect(),
        }
    }

    fn network_of(&self, org: &str) -> u32 {
        self.snap.orgs.get(org).map_or(99, |o| o.network.0)
    }

    fn org(&mut self) -> String {
        self.rng.pick(&self.orgs).clone()
    }

    fn machine(&mut self) -> Machine {
        self.counter += 1;
        let org = self.org();
        let node = format!("node{}", self.rng.below(5));
        let host = self.snap.nodes.get(&node).map_or(7, |n| n.host);
        Machine {
            id: registry::MachineId::from_bits(self.rng.next() >> 8),
            app: self.rng.pick(&self.apps).clone(),
            region: self.rng.pick(&REGIONS).to_string(),
            node,
            process_group: self.rng.pick(&["app", "worker"]).to_string(),
            state: if self.rng.chance(80) {
                MachineState::Started
            } else {
                MachineState::Stopped
            },
            addr: mesh_addr(self.network_of(&org), host, self.counter, 2),
            org,
        }
    }

    fn peer(&mut self) -> Peer {
        self.counter += 1;
        let org = self.org();
        let name = if self.rng.chance(15) {
            format!("interactive-{}", self.rng.below(3))
        } else {
            format!("peer{}", self.rng.below(6))
        };
        let gateway = format!("node{}", self.rng.below(5));
        let host = self.snap.nodes.get(&gateway).map_or(7, |n| n.host);
        let mut routes: Vec<IpNet> = Vec::new();
        if self.rng.chance(40) {
            routes.push(format!("10.{}.0.0/16", self.rng.below(4)).parse().unwrap());
        }
        if self.rng.chance(25) {
            routes.push(
                format!("2001:db8:{:x}::/48", self.rng.below(4))
                    .parse()
                    .unwrap(),
            );
        }
        let expires = match self.rng.below(10) {
            0..=5 => None,
            6 => Some(self.now - 1),
            _ => Some(self.now + 1 + self.rng.below(12) as i64),
        };
        Peer {
            name,
            gateway,
            region: if self.rng.chance(30) {
                String::new()
            } else {
                self.rng.pick(&REGIONS).to_string()
            },
            public_key: [7; 32].into(),
            addr: mesh_addr(self.network_of(&org), host, self.counter, 0),
            routes,
            created: NOW,
            expires,
            org,
        }
    }

    /// One random record change (its `before` is what the snapshot holds now).
    fn change(&mut self) -> Option<RecordChange> {
        let after: Option<Record>;
        let key;
        match self.rng.below(100) {
            0..=4 => {
                let name = self.org();
                let network = 1 + self.rng.below(self.orgs.len() + 1) as u32;
                let r = Record::Org(Org {
                    name,
                    network: OrgNetwork(network),
                });
                key = r.key();
                after = Some(r);
            }
            5..=7 => {
                let name = self.org();
                key = registry::RecordKey::Org { name };
                after = None;
            }
            8..=12 => {
                let i = self.rng.below(5);
                let r = Record::Node(Node {
                    name: format!("node{i}"),
                    region: self.rng.pick(&REGIONS).to_string(),
                    public_key: [7; 32].into(),
                    endpoint: "192.0.2.1:51820".parse().unwrap(),
                    gateway: self.rng.chance(50),
                    host: if self.rng.chance(10) { 1 } else { i as u32 + 1 },
                });
                key = r.key();
                after = Some(r);
            }
            13..=14 => {
                key = registry::RecordKey::Node {
                    name: format!("node{}", self.rng.below(5)),
                };
                after = None;
            }
            15..=21 => {
                let r = Record::App(App {
                    org: self.org(),
                    name: self.rng.pick(&self.apps).clone(),
                });
                key = r.key();
                after = Some(r);
            }
            22..=25 => {
                key = registry::RecordKey::App {
                    org: self.org(),
                    name: self.rng.pick(&self.apps).clone(),
                };
                after = None;
            }
            26..=45 => {
                let m = self.machine();
                key = Record::Machine(m.clone()).key();
                after = Some(Record::Machine(m));
            }
            46..=65 => {
                // An existing machine: stopped/started, moved to another region or node,
                // another process group, now and then another app.
                let ids: Vec<registry::MachineId> = self.snap.machines.keys().copied().collect();
                if ids.is_empty() {
                    return None;
                }
                let id = *self.rng.pick(&ids);
                let mut m = self.snap.machines.get(&id)?.clone();
                match self.rng.below(5) {
                    0 => {
                        m.state = match m.state {
                            MachineState::Started => MachineState::Stopped,
                            MachineState::Stopped => MachineState::Started,
                        }
                    }
                    1 => m.region = self.rng.pick(&REGIONS).to_string(),
                    2 => m.node = format!("node{}", self.rng.below(5)),
                    3 => m.process_group = self.rng.pick(&["app", "worker", "db"]).to_string(),
                    _ => m.app = self.rng.pick(&self.apps).clone(),
                }
                key = Record::Machine(m.clone()).key();
                after = Some(Record::Machine(m));
            }
            66..=75 => {
                let ids: Vec<registry::MachineId> = self.snap.machines.keys().copied().collect();
                if ids.is_empty() {
                    return None;
                }
                key = registry::RecordKey::Machine {
                    id: *self.rng.pick(&ids),
                };
                after = None;
            }
            76..=88 => {
                let p = self.peer();
                key = Record::Peer(p.clone()).key();
                after = Some(Record::Peer(p));
            }
            89..=94 => {
                let peers: Vec<&(String, String)> = self.snap.peers.keys().collect();
                if peers.is_empty() {
                    return None;
                }
                let (org, name) = (*self.rng.pick(&peers)).clone();
                key = registry::RecordKey::Peer { org, name };
                after = None;
            }
            _ => {
                let p = Peering::new(self.org(), self.org());
                let r = Record::Peering(p);
                key = r.key();
                after = if self.rng.chance(60) { Some(r) } else { None };
            }
        }
        let before = self.snap.get(&key);
        RecordChange::new(key, before, after)
    }

    /// A delta of up to four changes, applied to the snapshot.
    fn delta(&mut self) -> Delta {
        let mut changes: Vec<RecordChange> = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            let Some(c) = self.change() else { continue };
            // One change per key, as a registry write makes them.
            if changes.iter().any(|x| x.key == c.key) {
                continue;
            }
            // Later changes of the same delta see the earlier ones.
            match &c.after {
                Some(r) => self.snap.put(r.clone()),
                None => self.snap.delete(&c.key),
            }
            changes.push(c);
        }
        // Undo, so that the delta applies to the snapshot as the registry's readers do.
        for c in changes.iter().rev() {
            match &c.before {
                Some(r) => self.snap.put(r.clone()),
                None => self.snap.delete(&c.key),
            }
        }
        let delta = Delta {
            revision: Revision(self.snap.revision.0 + 1),
            next_network: self.snap.next_network,
            changes,
        };
        assert!(self.snap.apply_delta(&delta));
        delta
    }
}

fn options(rng: &mut Rng) -> Options {
    Options {
        default_org: rng.chance(70).then(|| "org0".to_string()),
        local_region: rng.chance(50).then(|| "ams".to_string()),
        allow: vec!["192.0.2.0/24".parse().unwrap()],
    }
}

fn assert_same(kept: &Index, built: &Index, context: &str) {
    let (k, b) = (kept.dump(), built.dump());
    if k == b {
        return;
    }
    let only_kept: Vec<&String> = k.iter().filter(|l| !b.contains(l)).take(8).collect();
    let only_built: Vec<&String> = b.iter().filter(|l| !k.contains(l)).take(8).collect();
    panic!("{context}: the kept index differs from a whole build\nkept only: {only_kept:#?}\nbuilt only: {only_built:#?}");
}

fn run(seed: u64, deltas: usize, orgs: usize, apps: usize, start: usize) {
    let mut w = World::new(seed, orgs, apps);
    let opts = options(&mut w.rng);
    for _ in 0..start {
        w.delta();
    }
    let mut kept = IndexBuilder::from_snapshot(&w.snap, opts.clone(), w.now);
    for i in 0..deltas {
        // Time passes: peers with an expiry go at it, with or without a write.
        w.now += w.rng.below(3) as i64;
        let before = kept.index().clone();
        let before_dump = before.dump();
        if w.rng.chance(10) {
            kept.advance(w.now);
        } else {
            let d = w.delta();
            kept.apply(&d, w.now).unwrap();
        }
        let built = Index::build(&w.snap, &opts, w.now);
        assert_same(kept.index(), &built, &format!("seed {seed}, step {i}"));
        // The revision queries may still hold did not change under them.
        assert_eq!(
            before.dump(),
            before_dump,
            "seed {seed}, step {i}: old revision changed"
        );
    }
}

#[test]
fn random_deltas_keep_the_index_equal_to_a_whole_build() {
    for seed in 1..=6 {
        run(seed, 300, 3, 6, 20);
    }
}

#[test]
fn random_deltas_on_an_org_past_the_txt_limits_keep_the_cut_lists_right() {
    // ~1,500 machines in one org: `_instances` and `all._instances` are cut at 64 KiB, so
    // changes before, at and after the cut all count.
    let mut w = World::new(42, 1, 400);
    let opts = options(&mut w.rng);
    w.snap.put(Record::Org(Org {
        name: "org0".into(),
        network: OrgNetwork(1),
    }));
    for _ in 0..1500 {
        let m = w.machine();
        w.snap.put(Record::Machine(m));
    }
    for _ in 0..50 {
        w.delta();
    }
    let kept = IndexBuilder::from_snapshot(&w.snap, opts.clone(), w.now);
    let cut = |name: &[u8]| {
        let zone = kept.index().zones.values().next().unwrap();
        let txt = zone.names.get(name).unwrap().txt.as_ref().unwrap();
        assert!(txt.len() > 60_000, "{} bytes", txt.len());
    };
    cut(b"_instances");
    cut(b"all._instances");
    let mut kept = kept;
    for i in 0..60 {
        let d = w.delta();
        kept.apply(&d, w.now).unwrap();
        let built = Index::build(&w.snap, &opts, w.now);
        assert_same(kept.index(), &built, &format!("step {i}"));
    }
}

#[test]
fn a_delta_out_of_order_changes_nothing() {
    let mut w = World::new(3, 2, 3);
    let opts = options(&mut w.rng);
    let mut kept = IndexBuilder::from_snapshot(&w.snap, opts, w.now);
    let d1 = w.delta();
    let d2 = w.delta();
    let dump = kept.index().dump();
    assert_eq!(
        kept.apply(&d2, w.now),
        Err(super::ApplyError::OutOfOrder { have: 0, got: 2 })
    );
    assert_eq!(kept.index().dump(), dump);
    kept.apply(&d1, w.now).unwrap();
    kept.apply(&d2, w.now).unwrap();
    assert!(kept.apply(&d2, w.now).is_err(), "the same delta twice");
}

// The corner cases a client sees, asked as a client would.

fn put(snap: &Snapshot, r: Record) -> RecordChange {
    RecordChange {
        key: r.key(),
        before: snap.get(&r.key()),
        after: Some(r),
    }
}

fn del(snap: &Snapshot, r: &Record) -> RecordChange {
    RecordChange {
        key: r.key(),
        before: snap.get(&r.key()),
        after: None,
    }
}

struct Live {
    snap: Snapshot,
    kept: IndexBuilder,
    now: i64,
}

impl Live {
    fn new() -> Live {
        let snap = Snapshot::default();
        let kept = IndexBuilder::from_snapshot(&snap, Options::default(), NOW);
        Live {
            snap,
            kept,
            now: NOW,
        }
    }

    fn write(&mut self, changes: impl FnOnce(&Snapshot) -> Vec<RecordChange>) {
        let delta = Delta {
            revision: Revision(self.snap.revision.0 + 1),
            next_network: self.snap.next_network,
            changes: changes(&self.snap),
        };
        assert!(self.snap.apply_delta(&delta));
        self.kept.apply(&delta, self.now).unwrap();
        let built = Index::build(&self.snap, &Options::default(), self.now);
        assert_same(self.kept.index(), &built, "corner case");
    }

    fn ask(&self, name: &str, qtype: u16) -> String {
        let q = Question {
            name: name.as_bytes(),
            qtype,
            qclass: 1,
        };
        let src = IpAddr::V6(mesh_addr(1, 1, 1, 2));
        match answer(self.kept.index(), &q, src, self.now) {
            Answer::Aaaa { addrs, .. } => {
                let set: BTreeSet<Ipv6Addr> = addrs.iter().map(|a| Ipv6Addr::from(*a)).collect();
                format!("{set:?}")
            }
            Answer::Txt(t) => String::from_utf8_lossy(&t[1..]).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

fn machine(id: &str, app: &str, region: &str, n: u32, state: MachineState) -> Record {
    Record::Machine(Machine {
        id: id.parse().unwrap(),
        org: "acme".into(),
        app: app.into(),
        region: region.into(),
        node: "n1".into(),
        process_group: "app".into(),
        state,
        addr: mesh_addr(1, 1, n, 2),
    })
}

#[test]
fn what_clients_see_follows_each_delta() {
    let mut live = Live::new();
    let acme = Record::Org(Org {
        name: "acme".into(),
        network: OrgNetwork(1),
    });
    let web = Record::App(App {
        org: "acme".into(),
        name: "web".into(),
    });
    let m1 = machine("00000000000001", "web", "iad", 1, MachineState::Started);
    live.write(|s| {
        vec![
            put(s, acme.clone()),
            put(s, web.clone()),
            put(s, m1.clone()),
        ]
    });
    assert_eq!(live.ask("web.internal", TYPE_AAAA), "{fdaa:0:1:0:1:0:1:2}");
    assert_eq!(live.ask("_apps.internal", TYPE_TXT), "web");

    // A stopped machine leaves the AAAA answers but stays in the `all.` lists.
    let m1_stopped = machine("00000000000001", "web", "iad", 1, MachineState::Stopped);
    live.write(|s| vec![put(s, m1_stopped.clone())]);
    assert_eq!(live.ask("web.internal", TYPE_AAAA), "NoData");
    assert_eq!(live.ask("vms.web.internal", TYPE_TXT), "");
    assert_eq!(
        live.ask("all.vms.web.internal", TYPE_TXT),
        "00000000000001 iad"
    );

    // Moved to another region: the old region's name goes, the new one's comes.
    let m1_ams = machine("00000000000001", "web", "ams", 1, MachineState::Started);
    live.write(|s| vec![put(s, m1_ams.clone())]);
    assert_eq!(live.ask("iad.web.internal", TYPE_AAAA), "NxDomain");
    assert_eq!(
        live.ask("ams.web.internal", TYPE_AAAA),
        "{fdaa:0:1:0:1:0:1:2}"
    );

    // The last machine of an app without a record: every name of the app goes.
    let m2 = machine("00000000000002", "api", "iad", 2, MachineState::Started);
    live.write(|s| vec![put(s, m2.clone())]);
    assert_eq!(live.ask("api.internal", TYPE_AAAA), "{fdaa:0:1:0:1:0:2:2}");
    live.write(|s| vec![del(s, &m2)]);
    assert_eq!(live.ask("api.internal", TYPE_AAAA), "NxDomain");
    assert_eq!(live.ask("vms.api.internal", TYPE_TXT), "NxDomain");
    // With its record the app stays, empty.
    live.write(|s| vec![del(s, &m1_ams)]);
    assert_eq!(live.ask("web.internal", TYPE_AAAA), "NoData");
    assert_eq!(
        live.ask("00000000000001.vm.web.internal", TYPE_AAAA),
        "NxDomain"
    );

    // A site peer with an expiry: in `_site` until it expires, then gone.
    let site = Record::Peer(Peer {
        org: "acme".into(),
        name: "site-ams".into(),
        gateway: "n1".into(),
        region: "ams".into(),
        public_key: [7; 32].into(),
        addr: mesh_addr(1, 1, 9, 0),
        routes: vec!["10.1.0.0/16".parse().unwrap()],
        created: NOW,
        expires: Some(NOW + 10),
    });
    live.write(|s| vec![put(s, site.clone())]);
    assert_eq!(live.ask("_site.internal", TYPE_TXT), "site-ams");
    assert_eq!(live.ask("_peer.internal", TYPE_TXT), "site-ams");
    assert_ne!(
        live.ask("10-1-2-3.site-ams._site.internal", TYPE_AAAA),
        "NxDomain"
    );
    assert_eq!(live.kept.index().next_expiry, Some(NOW + 10));
    live.now = NOW + 10;
    assert!(live.kept.advance(live.now));
    assert_eq!(live.ask("_site.internal", TYPE_TXT), "");
    assert_eq!(live.ask("site-ams._peer.internal", TYPE_AAAA), "NxDomain");
    assert_eq!(live.kept.index().next_expiry, None);

    // Peerings change no name.
    let peering = Record::Peering(Peering::new("acme", "other"));
    live.write(|s| vec![put(s, peering.clone())]);

    // The org goes: its queriers are refused.
    live.write(|s| vec![del(s, &acme)]);
    assert_eq!(live.ask("_apps.internal", TYPE_TXT), "Refused(UnknownOrg)");
    // And comes back with its apps.
    live.write(|s| vec![put(s, acme.clone())]);
    assert_eq!(live.ask("_apps.internal", TYPE_TXT), "web");
}

#[test]
fn a_whole_build_on_two_threads_equals_one_made_delta_by_delta() {
    // Past 10,000 apps a whole build makes apps on two threads; small deltas on one.
    let mut w = World::new(9, 3, 12_000);
    let opts = options(&mut w.rng);
    let mut kept = IndexBuilder::from_snapshot(&w.snap, opts.clone(), w.now);
    let orgs: Vec<Record> = (0..3)
        .map(|i| {
            Record::Org(Org {
                name: format!("org{i}"),
                network: OrgNetwork(i + 1),
            })
        })
        .collect();
    let mut records = orgs;
    for _ in 0..12_500 {
        records.push(Record::Machine(w.machine()));
    }
    for chunk in records.chunks(2_000) {
        let mut changes = Vec::new();
        for r in chunk {
            if changes.iter().any(|c: &RecordChange| c.key == r.key()) {
                continue;
            }
            changes.push(put(&w.snap, r.clone()));
        }
        let delta = Delta {
            revision: Revision(w.snap.revision.0 + 1),
            next_network: w.snap.next_network,
            changes,
        };
        assert!(w.snap.apply_delta(&delta));
        kept.apply(&delta, w.now).unwrap();
    }
    let apps: usize = kept.index().zones.values().map(|z| z.apps().count()).sum();
    assert!(apps > 10_000, "{apps} apps");
    let built = Index::build(&w.snap, &opts, w.now);
    assert_same(kept.index(), &built, "two threads");
}

#[test]
fn a_whole_build_fed_records_in_any_order_equals_one_from_the_snapshot() {
    for seed in 1..=4 {
        let mut w = World::new(seed, 3, 8);
        let opts = options(&mut w.rng);
        for _ in 0..60 {
            w.delta();
        }
        let mut records: Vec<Record> = w.snap.records().collect();
        // Fisher–Yates: machines before their apps and orgs, peers before their orgs.
        for i in (1..records.len()).rev() {
            records.swap(i, w.rng.below(i + 1));
        }
        let mut build = super::WholeBuild::new(opts.clone(), w.now);
        for r in &records {
            build.put(r);
        }
        let fed = build.finish(w.snap.revision.0);
        let built = IndexBuilder::from_snapshot(&w.snap, opts, w.now);
        assert_eq!(fed.revision(), w.snap.revision.0);
        assert_same(fed.index(), built.index(), &format!("seed {seed}"));
    }
}
