//! Planning a write from the rows it needs: a partial snapshot holding every org, node and
//! peering (few) and the records the change names, read through indexes, and a [`Usage`]
//! that counts with indexed queries and finds free slots in the runs `slots` keeps. `change::plan_with` on these plans
//! what `change::plan` plans on the whole registry (the property test in `tests.rs` checks
//! it), at a cost in the size of the change instead of the registry.

use ipnet::IpNet;

use super::read::Reader;
use crate::addr::{self, OrgNetwork};
use crate::change::{Change, Usage};
use crate::error::{Error, Result};
use crate::machine_id::MachineId;
use crate::model::{Node, Snapshot};

/// The part of the registry `change` reads when planned.
pub(super) fn snapshot_for(read: &Reader, change: &Change) -> Result<Snapshot> {
    let mut snap = read.head()?;
    read.orgs(&mut snap)?;
    read.nodes(&mut snap)?;
    read.peerings(&mut snap)?;
    add_named(read, change, &mut snap)?;
    Ok(snap)
}

/// Adds the records `change` names to `snap`.
fn add_named(read: &Reader, change: &Change, snap: &mut Snapshot) -> Result<()> {
    match change {
        Change::CreateOrg { .. }
        | Change::RemoveNode { .. }
        | Change::PeerOrgs { .. }
        | Change::UnpeerOrgs { .. } => Ok(()),
        Change::RemoveOrg { name } => {
            read.apps("WHERE org = ?1", [name], snap)?;
            read.tokens("WHERE org = ?1", [name], snap)
        }
        Change::AddNode(spec) | Change::RegisterNode(spec) => {
            read.peers("WHERE public_key = ?1", [spec.public_key.to_string()], snap)
        }
        Change::AddMachine { org, app, .. } => {
            read.apps("WHERE org = ?1 AND name = ?2", [org, app], snap)
        }
        Change::SetMachineState { id, .. }
        | Change::MoveMachine { id, .. }
        | Change::RemoveMachine { id } => read.machines("WHERE id = ?1", [id], snap),
        Change::AddPeer {
            org,
            name,
            public_key,
            routes,
            ..
        } => {
            read.peers("WHERE org = ?1 AND name = ?2", [org, name], snap)?;
            read.peers("WHERE public_key = ?1", [public_key.to_string()], snap)?;
            if routes.iter().any(|r| matches!(r, IpNet::V6(_))) {
                // The partial index `peers_routed` holds exactly these.
                read.peers("WHERE routes <> '[]'", [], snap)?;
            }
            Ok(())
        }
        Change::RemovePeer { org, name } => {
            read.peers("WHERE org = ?1 AND name = ?2", [org, name], snap)
        }
        Change::CreateToken { id, .. } | Change::RevokeToken { id } => {
            read.tokens("WHERE id = ?1", [id], snap)
        }
        Change::WithToken { id, change, .. } => {
            read.tokens("WHERE id = ?1", [id], snap)?;
            add_named(read, change, snap)
        }
    }
}

impl Usage for Reader<'_> {
    fn lowest_free_slot(&self, network: OrgNetwork, host: u32) -> Result<Option<u32>> {
        super::slots::lowest_free(self.conn, i64::from(network.0), i64::from(host)).map_err(|err| {
            Error::Storage {
                location: self.location.into(),
                message: err.to_string(),
            }
        })
    }

    fn machine_exists(&self, id: MachineId) -> Result<bool> {
        self.count("SELECT COUNT(*) FROM machines WHERE id = ?1", [id])
            .map(|n| n > 0)
    }

    fn gateway_peers(&self, gateway: &str) -> Result<usize> {
        self.count("SELECT COUNT(*) FROM peers WHERE gateway = ?1", [gateway])
    }

    fn org_members(&self, org: &str) -> Result<(usize, usize)> {
        Ok((
            self.count("SELECT COUNT(*) FROM machines WHERE org = ?1", [org])?,
            self.count("SELECT COUNT(*) FROM peers WHERE org = ?1", [org])?,
        ))
    }

    fn node_machines(&self, node: &Node) -> Result<(usize, usize)> {
        Ok((
            self.count(
                "SELECT COUNT(*) FROM machines WHERE node = ?1",
                [&node.name],
            )?,
            self.count("SELECT COUNT(*) FROM machines WHERE host = ?1", [node.host])?,
        ))
    }
}

impl Reader<'_> {
    fn count(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row(params, |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as usize)
            .map_err(|err| Error::Storage {
                location: self.location.into(),
                message: err.to_string(),
            })
    }
}

/// The columns that index a machine's or peer's address: (network, host, slot), with a
/// network of -1 (matching no /80) for an address outside the mesh prefix. The host part is
/// kept whatever the prefix, as `remove_node` counts by it alone.
pub(super) fn space_of(addr: std::net::Ipv6Addr) -> (i64, i64, i64) {
    let network = OrgNetwork::of(addr).map_or(-1, |n| i64::from(n.0));
    (
        network,
        i64::from(addr::host_of(addr)),
        i64::from(addr::slot_of(addr)),
    )
}

#[cfg(test)]
mod tests;
