//! Machines read without making their strings. A whole read of a million machines made five
//! `String`s for each (and its reader freed them again), which was most of what reading them
//! cost a reader that keeps only structures of its own, as dnsd's index does.
//! [`crate::Registry::visit_refs`] hands machines over borrowed from what the backend read;
//! [`MachineBatch`] holds many in one buffer, to pass them between threads.

#[cfg(any(feature = "etcd", test))]
use std::borrow::Cow;
use std::net::Ipv6Addr;

#[cfg(any(feature = "etcd", test))]
use serde::Deserialize;

use crate::machine_id::MachineId;
use crate::model::{Machine, MachineState, Record};

/// A [`Machine`] whose strings are borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineView<'a> {
    pub id: MachineId,
    pub org: &'a str,
    pub app: &'a str,
    pub region: &'a str,
    pub node: &'a str,
    pub process_group: &'a str,
    pub state: MachineState,
    pub addr: Ipv6Addr,
}

impl MachineView<'_> {
    pub fn started(&self) -> bool {
        self.state == MachineState::Started
    }

    /// The /112 the machine owns.
    pub fn prefix(&self) -> ipnet::Ipv6Net {
        crate::model::machine_prefix(self.addr)
    }

    pub fn to_machine(&self) -> Machine {
        Machine {
            id: self.id,
            org: self.org.into(),
            app: self.app.into(),
            region: self.region.into(),
            node: self.node.into(),
            process_group: self.process_group.into(),
            state: self.state,
            addr: self.addr,
        }
    }
}

impl<'a> From<&'a Machine> for MachineView<'a> {
    fn from(m: &'a Machine) -> Self {
        // Taken apart whole: a new field does not compile until a view has it too (and then
        // the local copy's codec, which takes a view apart whole to write it).
        let Machine {
            id,
            org,
            app,
            region,
            node,
            process_group,
            state,
            addr,
        } = m;
        MachineView {
            id: *id,
            org,
            app,
            region,
            node,
            process_group,
            state: *state,
            addr: *addr,
        }
    }
}

/// A record as [`crate::Registry::visit_refs`] hands it over: a machine borrowed, any other
/// kind whole.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordRef<'a> {
    Machine(MachineView<'a>),
    Record(Record),
}

impl RecordRef<'_> {
    pub fn kind(&self) -> crate::Kind {
        match self {
            RecordRef::Machine(_) => crate::Kind::Machine,
            RecordRef::Record(r) => r.kind(),
        }
    }

    pub fn into_record(self) -> Record {
        match self {
            RecordRef::Machine(m) => Record::Machine(m.to_machine()),
            RecordRef::Record(r) => r,
        }
    }
}

/// A stored machine's JSON, read as [`Machine`]'s derived `Deserialize` reads it (the same
/// fields; unknown ones, `kind` among them, passed over), its strings borrowed where they
/// hold no escape.
#[cfg(any(feature = "etcd", test))]
#[derive(Deserialize)]
#[serde(rename = "Machine")]
pub(crate) struct MachineJson<'a> {
    id: MachineId,
    #[serde(borrow)]
    org: Cow<'a, str>,
    #[serde(borrow)]
    app: Cow<'a, str>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    process_group: Cow<'a, str>,
    state: MachineState,
    addr: Ipv6Addr,
}

#[cfg(any(feature = "etcd", test))]
impl MachineJson<'_> {
    pub(crate) fn view(&self) -> MachineView<'_> {
        MachineView {
            id: self.id,
            org: &self.org,
            app: &self.app,
            region: &self.region,
            node: &self.node,
            process_group: &self.process_group,
            state: self.state,
            addr: self.addr,
        }
    }
}

/// Machines in one buffer: two allocations for a batch instead of five for each machine.
#[derive(Debug, Default, Clone)]
pub struct MachineBatch {
    text: String,
    rows: Vec<Row>,
}

#[derive(Debug, Clone)]
struct Row {
    id: MachineId,
    addr: Ipv6Addr,
    state: MachineState,
    /// Where in `text` each string ends: org, app, region, node, process group. The org
    /// begins where the row before ended.
    ends: [usize; 5],
}

impl MachineBatch {
    pub fn with_capacity(machines: usize) -> Self {
        MachineBatch {
            text: String::with_capacity(machines * 32),
            rows: Vec::with_capacity(machines),
        }
    }

    pub fn push(&mut self, m: &MachineView<'_>) {
        let mut ends = [0; 5];
        for (end, s) in ends
            .iter_mut()
            .zip([m.org, m.app, m.region, m.node, m.process_group])
        {
            self.text.push_str(s);
            *end = self.text.len();
        }
        self.rows.push(Row {
            id: m.id,
            addr: m.addr,
            state: m.state,
            ends,
        });
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The machines in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = MachineView<'_>> {
        let mut start = 0;
        self.rows.iter().map(move |r| {
            let [org, app, region, node, group] = r.ends;
            let s = |from: usize, to: usize| self.text.get(from..to).unwrap_or_default();
            let view = MachineView {
                id: r.id,
                org: s(start, org),
                app: s(org, app),
                region: s(app, region),
                node: s(region, node),
                process_group: s(node, group),
                state: r.state,
                addr: r.addr,
            };
            start = group;
            view
        })
    }
}

/// What [`Chunker`] hands on: machines in one buffer, or other records whole.
#[derive(Debug)]
pub enum Chunk {
    Machines(MachineBatch),
    Records(Vec<Record>),
}

/// Gathers a whole read ([`crate::Registry::visit_refs`]) into [`Chunk`]s of up to `size`
/// records, in the order read: a change between machines and other kinds ends a chunk, so
/// that what is handed on (to a builder thread, to the local copy's keeper) keeps the read's
/// order.
#[derive(Debug)]
pub struct Chunker {
    machines: MachineBatch,
    records: Vec<Record>,
    size: usize,
}

impl Chunker {
    pub fn new(size: usize) -> Self {
        Chunker {
            machines: MachineBatch::default(),
            records: Vec::new(),
            size: size.max(1),
        }
    }

    /// Takes `r`, handing on to `out` whatever it completes; `true` when a full chunk went.
    pub fn put(&mut self, r: RecordRef<'_>, out: &mut dyn FnMut(Chunk)) -> bool {
        match r {
            RecordRef::Machine(m) => {
                if !self.records.is_empty() {
                    self.flush(out);
                }
                if self.machines.is_empty() {
                    self.machines = MachineBatch::with_capacity(self.size);
                }
                self.machines.push(&m);
            }
            RecordRef::Record(r) => {
                if !self.machines.is_empty() {
                    self.flush(out);
                }
                if self.records.is_empty() {
                    self.records = Vec::with_capacity(self.size);
                }
                self.records.push(r);
            }
        }
        let full = self.machines.len() == self.size || self.records.len() == self.size;
        if full {
            self.flush(out);
        }
        full
    }

    /// Hands on what is gathered.
    pub fn flush(&mut self, out: &mut dyn FnMut(Chunk)) {
        if !self.machines.is_empty() {
            out(Chunk::Machines(std::mem::take(&mut self.machines)));
        }
        if !self.records.is_empty() {
            out(Chunk::Records(std::mem::take(&mut self.records)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(n: u64, org: &str, app: &str) -> Machine {
        Machine {
            id: MachineId::from_bits(n),
            org: org.into(),
            app: app.into(),
            region: "iad".into(),
            node: format!("iad-{n}"),
            process_group: if n.is_multiple_of(2) { "app" } else { "" }.into(),
            state: if n.is_multiple_of(3) {
                MachineState::Stopped
            } else {
                MachineState::Started
            },
            addr: Ipv6Addr::new(0xfdaa, 0, 7, 0, 0, 0, 0, n as u16),
        }
    }

    #[test]
    fn a_batch_gives_back_the_machines_pushed_in_order() {
        let machines: Vec<Machine> = (0..50)
            .map(|n| machine(n, &format!("org{}", n % 4), "é-ü"))
            .chain([machine(99, "", "")])
            .collect();
        let mut batch = MachineBatch::with_capacity(2);
        for m in &machines {
            batch.push(&MachineView::from(m));
        }
        assert_eq!(batch.len(), machines.len());
        let back: Vec<Machine> = batch.iter().map(|v| v.to_machine()).collect();
        assert_eq!(back, machines);
        assert!(MachineBatch::default().is_empty());
        assert_eq!(MachineBatch::default().iter().count(), 0);
    }

    /// Chunks of at most the size, in the order read, a change of kind ending a chunk,
    /// nothing lost at a chunk's end or the read's.
    #[test]
    fn a_read_is_handed_on_in_chunks_in_the_order_read() {
        let org = |n: u32| {
            Record::Org(crate::Org {
                name: format!("org{n}"),
                network: crate::OrgNetwork(n),
            })
        };
        let machines: Vec<Machine> = (1..=7).map(|n| machine(n, "acme", "web")).collect();
        let mut chunks = Vec::new();
        let mut out = |c: Chunk| {
            chunks.push(match c {
                Chunk::Machines(b) => (b.iter().map(|m| m.id).collect(), Vec::new()),
                Chunk::Records(r) => (Vec::new(), r),
            })
        };
        let mut chunker = Chunker::new(3);
        let mut full = 0;
        for r in [org(1), org(2), org(3), org(4)] {
            full += usize::from(chunker.put(RecordRef::Record(r), &mut out));
        }
        for m in &machines {
            full += usize::from(chunker.put(RecordRef::Machine(m.into()), &mut out));
        }
        // A machine read whole goes with the records.
        let whole = Record::Machine(machine(8, "acme", "web"));
        chunker.put(RecordRef::Record(whole.clone()), &mut out);
        chunker.flush(&mut out);
        chunker.flush(&mut out);
        let ids = |r: std::ops::RangeInclusive<u64>| r.map(MachineId::from_bits).collect();
        assert_eq!(
            chunks,
            vec![
                (Vec::new(), vec![org(1), org(2), org(3)]),
                (Vec::new(), vec![org(4)]),
                (ids(1..=3), Vec::new()),
                (ids(4..=6), Vec::new()),
                (ids(7..=7), Vec::new()),
                (Vec::new(), vec![whole]),
            ]
        );
        assert_eq!(full, 3);
    }

    #[test]
    fn a_record_ref_becomes_the_record_it_shows() {
        let m = machine(7, "acme", "web");
        assert_eq!(
            RecordRef::Machine(MachineView::from(&m)).kind(),
            crate::Kind::Machine
        );
        let app = Record::App(crate::App {
            org: "acme".into(),
            name: "web".into(),
        });
        assert_eq!(RecordRef::Record(app).kind(), crate::Kind::App);
        assert_eq!(
            RecordRef::Machine(MachineView::from(&m)).into_record(),
            Record::Machine(m.clone())
        );
        assert_eq!(
            RecordRef::Record(Record::Machine(m.clone())).into_record(),
            Record::Machine(m)
        );
    }
}
