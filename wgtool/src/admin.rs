//! Administration of orgs, nodes, apps and machines.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use registry::{
    Change, Kind, MachineId, MachineState, MachineView, NodeSpec, Record, RecordRef, Registry,
};

use crate::cli::{AppCommand, MachineCommand, NodeCommand, OrgCommand, RegistryCommand};
use crate::{table, usage};

/// Where the commands read and write: the registry itself, or the enrollment API.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub registry: String,
    pub api: Option<String>,
    pub token: Option<String>,
    pub fingerprint: Option<String>,
}

impl Source {
    pub fn uses_api(&self) -> bool {
        self.api.is_some() || self.token.is_some()
    }
}

/// The registry, directly or through the API (when an API or a token is given).
pub fn open(src: &Source) -> Result<Arc<dyn Registry>> {
    if !src.uses_api() {
        return open_registry(&src.registry);
    }
    Ok(Arc::new(open_api(src)?))
}

/// The API client itself, for what only the API offers (live status).
pub fn open_api(src: &Source) -> Result<crate::api::client::ApiRegistry> {
    let Some(token) = &src.token else {
        return Err(usage(
            "token: the API needs one (--token or SIXPN_TOKEN, from `wgtool token create`)",
        ));
    };
    crate::api::client::ApiRegistry::new(src.api.as_deref(), token, src.fingerprint.as_deref())
}

pub fn open_registry(location: &str) -> Result<Arc<dyn Registry>> {
    Ok(registry::open(location)?)
}

pub fn org(src: &Source, cmd: OrgCommand) -> Result<()> {
    let reg = open(src)?;
    match cmd {
        OrgCommand::Create { name } => {
            if let Some(Record::Org(o)) = reg.apply(&Change::CreateOrg { name })?.record {
                println!("created org {} with network {}", o.name, o.network.prefix());
            }
        }
        OrgCommand::Remove { name } => {
            reg.apply(&Change::RemoveOrg { name: name.clone() })?;
            println!("removed org {name}");
        }
        OrgCommand::Peer { a, b } => {
            reg.apply(&Change::PeerOrgs {
                a: a.clone(),
                b: b.clone(),
            })?;
            println!("peered orgs {a} and {b}");
        }
        OrgCommand::Unpeer { a, b } => {
            reg.apply(&Change::UnpeerOrgs {
                a: a.clone(),
                b: b.clone(),
            })?;
            println!("unpeered orgs {a} and {b}");
        }
        OrgCommand::List { json } => {
            // Orgs and peerings are in the frame: no need to read every machine.
            let snap = reg.frame()?;
            if json {
                let orgs: Vec<_> = snap
                    .orgs
                    .values()
                    .map(|o| {
                        serde_json::json!({
                            "name": o.name,
                            "network": o.network.0,
                            "prefix": o.network.prefix().to_string(),
                            "dns": o.network.dns_addr().to_string(),
                            "peered_with": snap.peers_of_org(&o.name),
                        })
                    })
                    .collect();
                return table::json(&orgs);
            }
            let rows: Vec<Vec<String>> = snap
                .orgs
                .values()
                .map(|o| {
                    let peered = snap.peers_of_org(&o.name);
                    vec![
                        o.name.clone(),
                        o.network.prefix().to_string(),
                        o.network.dns_addr().to_string(),
                        if peered.is_empty() {
                            "-".into()
                        } else {
                            peered.join(",")
                        },
                    ]
                })
                .collect();
            table::print(&["NAME", "NETWORK", "DNS", "PEERED WITH"], &rows);
        }
    }
    Ok(())
}

pub fn node(src: &Source, cmd: NodeCommand) -> Result<()> {
    let reg = open(src)?;
    match cmd {
        NodeCommand::Add(a) => {
            let spec = NodeSpec {
                name: a.name,
                region: a.region,
                // Checked here, not by clap, so that a bad key is one line and exit 2 like
                // every other refused value.
                public_key: registry::PublicKey::parse("public key", &a.public_key)?,
                endpoint: a.endpoint,
                gateway: a.gateway,
            };
            if let Some(Record::Node(n)) = reg.apply(&Change::AddNode(spec))?.record {
                println!(
                    "added node {} in {} (host part {:x}:{:x})",
                    n.name,
                    n.region,
                    n.host >> 16,
                    n.host & 0xffff
                );
            }
        }
        NodeCommand::Remove { name } => {
            reg.apply(&Change::RemoveNode { name: name.clone() })?;
            println!("removed node {name}");
        }
        NodeCommand::List { json } => {
            let snap = reg.frame()?;
            if json {
                return table::json(&snap.nodes.values().collect::<Vec<_>>());
            }
            let rows: Vec<Vec<String>> = snap
                .nodes
                .values()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.region.clone(),
                        n.endpoint.to_string(),
                        if n.gateway { "yes".into() } else { "no".into() },
                        n.public_key.to_string(),
                    ]
                })
                .collect();
            table::print(
                &["NAME", "REGION", "ENDPOINT", "GATEWAY", "PUBLIC KEY"],
                &rows,
            );
        }
    }
    Ok(())
}

/// A machine id argument, checked here rather than by clap, so that a bad one is one line and
/// exit 2 like every other refused value.
fn machine_id(text: &str) -> Result<MachineId> {
    Ok(MachineId::parse("machine id", text)?)
}

pub fn machine(src: &Source, cmd: MachineCommand) -> Result<()> {
    let reg = open(src)?;
    let show = |change: Change, verb: &str| -> Result<()> {
        if let Some(Record::Machine(m)) = reg.apply(&change)?.record {
            println!(
                "{verb} machine {} ({} in {} on {}, {})",
                m.id, m.app, m.region, m.node, m.addr
            );
        }
        Ok(())
    };
    match cmd {
        MachineCommand::Add(a) => {
            let change = Change::AddMachine {
                org: a.org,
                app: a.app,
                region: a.region,
                node: a.node,
                process_group: a.process_group,
            };
            if let Some(Record::Machine(m)) = reg.apply(&change)?.record {
                if a.json {
                    return table::json(&m);
                }
                println!("{} {}", m.id, m.addr);
            }
            Ok(())
        }
        MachineCommand::Stop { id } => show(
            Change::SetMachineState {
                id: machine_id(&id)?,
                state: MachineState::Stopped,
            },
            "stopped",
        ),
        MachineCommand::Start { id } => show(
            Change::SetMachineState {
                id: machine_id(&id)?,
                state: MachineState::Started,
            },
            "started",
        ),
        MachineCommand::Remove { id } => show(
            Change::RemoveMachine {
                id: machine_id(&id)?,
            },
            "removed",
        ),
        MachineCommand::Move { id, node } => show(
            Change::MoveMachine {
                id: machine_id(&id)?,
                node,
            },
            "moved",
        ),
        MachineCommand::List { org, app, json } => {
            let snap = reg.snapshot_of(&[Kind::Org, Kind::Machine])?;
            if let Some(o) = &org {
                if !snap.orgs.contains_key(o) {
                    return Err(registry::Error::not_found(registry::Kind::Org, o).into());
                }
            }
            let machines: Vec<_> = snap
                .machines
                .values()
                .filter(|m| org.as_ref().is_none_or(|o| &m.org == o))
                .filter(|m| app.as_ref().is_none_or(|a| &m.app == a))
                .collect();
            if json {
                return table::json(&machines);
            }
            let rows: Vec<Vec<String>> = machines
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        m.org.clone(),
                        m.app.clone(),
                        m.region.clone(),
                        m.node.clone(),
                        m.process_group.clone(),
                        m.state.as_str().into(),
                        m.addr.to_string(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "ID", "ORG", "APP", "REGION", "NODE", "GROUP", "STATE", "ADDRESS",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

pub fn app(src: &Source, cmd: AppCommand) -> Result<()> {
    let reg = open(src)?;
    let AppCommand::List { org, json } = cmd;
    // The apps, then each machine counted into its app as it is read: a big registry's
    // machines are never held.
    // Org → app name → (the app, machines, started); machines are read borrowed.
    type Apps = BTreeMap<String, BTreeMap<String, (registry::App, usize, usize)>>;
    fn count(apps: &mut Apps, m: MachineView<'_>) {
        if let Some((_, all, started)) = apps.get_mut(m.org).and_then(|a| a.get_mut(m.app)) {
            *all += 1;
            *started += usize::from(m.started());
        }
    }
    let mut apps = Apps::new();
    reg.visit_refs(&[Kind::App, Kind::Machine], &mut |r| match r {
        RecordRef::Record(Record::App(a)) if org.as_ref().is_none_or(|o| &a.org == o) => {
            (apps.entry(a.org.clone()).or_default()).insert(a.name.clone(), (a, 0, 0));
        }
        RecordRef::Machine(m) => count(&mut apps, m),
        RecordRef::Record(Record::Machine(m)) => count(&mut apps, (&m).into()),
        _ => {}
    })?;
    let apps: Vec<_> = apps.into_values().flat_map(BTreeMap::into_values).collect();
    if json {
        let out: Vec<_> = apps
            .iter()
            .map(|(a, all, started)| serde_json::json!({"org": a.org, "name": a.name, "machines": all, "started": started}))
            .collect();
        return table::json(&out);
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|(a, all, started)| {
            vec![
                a.org.clone(),
                a.name.clone(),
                all.to_string(),
                started.to_string(),
            ]
        })
        .collect();
    table::print(&["ORG", "APP", "MACHINES", "STARTED"], &rows);
    Ok(())
}

pub fn registry(src: &Source, cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Status { json } => {
            let reg = open(src)?;
            // Counted record by record: nothing of a big registry is held.
            let counted = [Kind::Org, Kind::Node, Kind::App, Kind::Machine, Kind::Peer];
            let mut counts = [0usize; 5];
            let revision = reg.visit_refs(&counted, &mut |r| {
                if let Some(i) = counted.iter().position(|k| *k == r.kind()) {
                    counts[i] += 1;
                }
            })?;
            let [orgs, nodes, apps, machines, peers] = counts;
            // Never the password of an etcd URL.
            let location = registry::shown(reg.location());
            let status = serde_json::json!({
                "location": location,
                "revision": revision.0,
                "orgs": orgs,
                "nodes": nodes,
                "apps": apps,
                "machines": machines,
                "peers": peers,
            });
            if json {
                return table::json(&status);
            }
            println!(
                "registry {location}: revision {}, {orgs} orgs, {nodes} nodes, {apps} apps, {machines} machines, {peers} peers",
                revision.0,
            );
            Ok(())
        }
        RegistryCommand::Copy { from, to } => crate::registry_copy::run(&from, &to),
    }
}
