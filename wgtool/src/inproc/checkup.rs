//! `wgtool doctor --inproc FILE`: the way from this machine into the org network, checked
//! through the in-process tunnel alone (no interface, no root): the handshake over the
//! chosen transport, the gateway's echo, the org's DNS, and one app's name. Each check
//! depends on the one before; after a failure the rest are reported as not run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use ipnet::Ipv6Net;

use inproc::config::TunnelConfig;
use inproc::dns::{QType, RData};
use inproc::tunnel::UserspaceTunnel;

use crate::cli::TransportArgs;
use crate::usage;

/// What a check found, or why it failed and how to fix that.
pub type Check = std::result::Result<String, (String, String)>;

const ECHO_LIMIT: Duration = Duration::from_secs(3);

fn fail(why: impl Into<String>, fix: impl Into<String>) -> Check {
    Err((why.into(), fix.into()))
}

/// The checks in order, each with its name; a bad tunnel file is a usage error instead.
pub fn checks(config: &Path, reach: &TransportArgs) -> Result<Vec<(String, Check)>> {
    let cfg = TunnelConfig::load(config).map_err(|e| usage(e.to_string()))?;
    let mut done: Vec<(String, Check)> = vec![(
        "tunnel file".into(),
        Ok(format!("address {}, gateway {}", cfg.address, cfg.endpoint)),
    )];
    let mut later = vec![
        "gateway answers ICMPv6 echo through the tunnel".to_string(),
        format!(
            "org DNS [{}]:53 answers _apps.internal through the tunnel",
            cfg.dns
        ),
        "an app's name resolves through the tunnel".to_string(),
    ];
    inproc::shutdown::install();
    let mut t = UserspaceTunnel::open(&cfg, inproc::reach(&cfg, &reach.into())?)?;
    let start = Instant::now();
    let up = t.wait_up(inproc::dig::HANDSHAKE_LIMIT);
    done.push((
        "handshake through the in-process tunnel".into(),
        match &up {
            Ok(()) => Ok(format!(
                "over {} in {:.1} s",
                t.transport(),
                start.elapsed().as_secs_f64()
            )),
            Err(e) => fail(
                format!("{e:#}"),
                "the gateway does not know this key (removed or expired? wgtool status), or the network drops UDP to it (try --transport websocket) and WebSockets too",
            ),
        },
    ));
    if up.is_err() {
        for what in later.drain(..) {
            done.push((what, fail("not run", "fix the check above first")));
        }
        return Ok(done);
    }

    let mut later = later.into_iter();
    let dns = t.dns;
    let echo = inproc::ping::echo_once(&mut t, dns, ECHO_LIMIT);
    done.push((
        later.next().unwrap_or_default(),
        match &echo {
            Ok(rtt) => Ok(format!("[{}] in {:.1} ms", t.dns, rtt.as_secs_f64() * 1e3)),
            Err(e) => fail(
                format!("{e:#}"),
                "the handshake works but nothing comes back: the gateway's meshd does not hold the org's address fdaa:<net>::3 (check its log), or this peer was moved to another org",
            ),
        },
    ));

    let apps = inproc::resolve::ask(&mut t, "_apps.internal", QType::Txt);
    let names: Vec<String> = match &apps {
        Ok(r) => r
            .answers
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::Txt(strings) => Some(strings.concat()),
                _ => None,
            })
            .flat_map(|s| {
                String::from_utf8_lossy(&s)
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    done.push((
        later.next().unwrap_or_default(),
        match &apps {
            Ok(_) => Ok(format!("{} app(s)", names.len())),
            Err(e) => fail(
                format!("{e:#}"),
                "dnsd on the gateway must run and listen on the org's DNS address (fdaa:<net>::3)",
            ),
        },
    ));
    let what = later.next().unwrap_or_default();
    let Some(app) = names.first() else {
        done.push((
            what,
            fail(
                "no app name to try (the org DNS gave none)",
                "fix the DNS check first; an org with no apps has no names",
            ),
        ));
        return Ok(done);
    };
    let name = format!("{app}.internal");
    let net48 = Ipv6Net::new(cfg.address, 48)
        .map(|n| n.trunc())
        .unwrap_or_default();
    let found = inproc::resolve::address(&mut t, &name);
    done.push((
        what,
        match found {
            Ok(a) if net48.contains(&a) => Ok(format!("{name} → {a}")),
            Ok(a) => fail(
                format!("{name} → {a}, outside the org's {net48}"),
                "the org DNS answered with another org's address: report this",
            ),
            Err(e) => fail(
                format!("{e:#}"),
                "the app has no started machine (wgtool machine list), or dnsd lags the registry",
            ),
        },
    ));
    Ok(done)
}
