//! Following the registry: each change into the model of this node's desired state, then
//! into the core, the interface's addresses and the kernel routes.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use registry::{Change, NodeSpec};

use super::registry_start::Started;
use super::Shell;
use crate::{sync, tun};

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Follows the registry change by change: each revision's delta goes into the model of this
/// node's desired state, and what it touched into the core, the interface's addresses and
/// the kernel routes, in the size of the change. The model as read at start, or a whole
/// snapshot (after falling behind the change log, or from a backend without one), is
/// applied whole. Each update also goes to the local copy's keeper, if any.
pub(super) fn sync_loop(
    shell: Arc<Shell>,
    started: Started,
    reg: Arc<dyn registry::Registry>,
    spec: NodeSpec,
    mut registered: bool,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the registry");
            return;
        }
    };
    let Started {
        changes,
        mut model,
        keeper,
    } = started;
    let registry::Changes {
        first, mut updates, ..
    } = changes;
    let mut revision = first.revision;
    drop(first);
    release_freed_memory();
    // After a reset the core is brought to the whole desired state (which also drops
    // peers the model never knew); after a delta, only what it touched.
    let mut whole = true;
    // Time spent applying updates to the model since the core was last brought along.
    let mut model_time = Duration::ZERO;
    let mut logged = revision;
    let mut addresses: BTreeSet<Ipv6Addr> = BTreeSet::new();
    let mut routes: BTreeSet<sync::KernelRoute> = BTreeSet::new();
    rt.block_on(async {
        loop {
            if !registered {
                match reg.apply(&Change::RegisterNode(spec.clone())) {
                    Ok(_) => {
                        registered = true;
                        tracing::info!("registered");
                    }
                    Err(e) => tracing::debug!(error = %e, "registering"),
                }
            }
            let started = Instant::now();
            model.tick(unix_now());
            let dirty = model.take_dirty();
            model_time += started.elapsed();
            if whole || !dirty.is_empty() {
                let started = Instant::now();
                let applied = if whole {
                    let want = model.desired();
                    shell.with_io(|core, io| sync::apply(core, &want, Instant::now(), io))
                } else {
                    shell.with_io(|core, io| {
                        sync::model::apply_dirty(core, &model, &dirty, Instant::now(), io)
                    })
                };
                // The model's and the core's work; the kernel's (addresses, routes: `ip`
                // commands) is timed on its own.
                let took_us = (model_time + started.elapsed()).as_micros() as u64;
                let started = Instant::now();
                if whole || dirty.addresses {
                    sync_addresses(&shell, &mut addresses, &model.addresses());
                }
                if whole || dirty.routes {
                    sync_routes(&shell, &mut routes, &model.routes());
                }
                let kernel_us = started.elapsed().as_micros() as u64;
                if whole || applied != sync::Applied::default() {
                    tracing::info!(
                        revision = revision.0,
                        whole,
                        added = applied.added,
                        removed = applied.removed,
                        updated = applied.updated,
                        addresses = addresses.len(),
                        site_routes = routes.len(),
                        took_us,
                        kernel_us,
                        "applied registry"
                    );
                } else {
                    tracing::debug!(
                        revision = revision.0,
                        took_us,
                        kernel_us,
                        "applied registry"
                    );
                }
                whole = false;
            } else if revision != logged {
                // A change that touched nothing here: the model's work only.
                let took_us = model_time.as_micros() as u64;
                tracing::debug!(
                    revision = revision.0,
                    took_us,
                    kernel_us = 0,
                    "applied registry"
                );
            }
            shell.revision.store(revision.0, Ordering::Relaxed);
            model_time = Duration::ZERO;
            logged = revision;
            // Wait for the next revision, or until the next peer expires (an expired
            // laptop's tunnel is cut within a second), or 5 s.
            let wait = until_unix(
                model.next_expiry(),
                SystemTime::now(),
                Duration::from_secs(5),
            );
            let mut next = match tokio::time::timeout(wait, updates.recv()).await {
                Ok(Some(u)) => Some(u),
                Ok(None) => return,
                Err(_) => None,
            };
            // Take every update already queued before touching the core again.
            let started = Instant::now();
            while let Some(u) = next {
                revision = u.revision();
                match u {
                    registry::Update::Reset(snap) => {
                        if let Some(k) = &keeper {
                            k.snapshot(snap.clone());
                        }
                        model.reset(&snap, unix_now());
                        drop(snap);
                        release_freed_memory();
                        whole = true;
                    }
                    registry::Update::Delta(d) => {
                        model.apply(&d);
                        if let Some(k) = &keeper {
                            k.delta(d);
                        }
                    }
                }
                next = updates.try_recv().ok();
            }
            if let Some(k) = &keeper {
                k.flush();
            }
            model_time += started.elapsed();
            if shell.stopping.load(Ordering::Relaxed) {
                return;
            }
        }
    });
}

/// Hands memory freed after reading a whole snapshot back to the system: the model keeps a
/// small part of what the snapshot held, and glibc's allocator otherwise keeps the rest in the
/// process (a gateway of 10,000 peers in a registry of 100,000 machines stayed at 108 MB).
pub(super) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live data.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long from `now` until Unix second `next` (a peer's expiry), a little over so that it
/// has passed by then; at most `limit`, and `limit` when there is none.
fn until_unix(next: Option<i64>, now: SystemTime, limit: Duration) -> Duration {
    next.and_then(|e| u64::try_from(e).ok())
        .and_then(|e| {
            (UNIX_EPOCH + Duration::from_secs(e))
                .duration_since(now)
                .ok()
        })
        .map_or(limit, |d| (d + Duration::from_millis(20)).min(limit))
}

/// Brings the interface's addresses to `want`.
fn sync_addresses(shell: &Shell, have: &mut BTreeSet<Ipv6Addr>, want: &BTreeSet<Ipv6Addr>) {
    let (add, del) = sync::address_diff(have, want);
    for a in add {
        match tun::add_address(&shell.interface, a) {
            Ok(()) => {
                have.insert(a);
            }
            Err(e) => tracing::warn!(error = %e, "adding an address"),
        }
    }
    for a in del {
        if let Err(e) = tun::remove_address(&shell.interface, a) {
            tracing::warn!(error = %e, "removing an address");
        }
        have.remove(&a);
    }
}

/// Brings the kernel's site routes into the interface to `want`. Removals first: a route
/// whose preferred source changed is removed, then added again with the new one.
fn sync_routes(
    shell: &Shell,
    have: &mut BTreeSet<sync::KernelRoute>,
    want: &BTreeSet<sync::KernelRoute>,
) {
    let (add, del) = sync::route_diff(have, want);
    for r in del {
        if let Err(e) = tun::remove_route(&shell.interface, r.0) {
            tracing::warn!(error = %e, route = %r.0, "removing a site route");
        }
        have.remove(&r);
    }
    for r in add {
        match tun::add_route(&shell.interface, r.0, r.1) {
            Ok(()) => {
                have.insert(r);
            }
            Err(e) => tracing::warn!(error = %e, route = %r.0, "adding a site route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_wakes_when_the_next_peer_expires() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000_500);
        let limit = Duration::from_secs(5);
        assert_eq!(until_unix(None, now, limit), limit, "none ahead");
        assert_eq!(
            until_unix(Some(1_000_000), now, limit),
            limit,
            "already past"
        );
        assert_eq!(
            until_unix(Some(1_000_001), now, limit),
            Duration::from_millis(520)
        );
        assert_eq!(until_unix(Some(i64::MAX), now, limit), limit);
        assert_eq!(until_unix(Some(-5), now, limit), limit);
    }
}
