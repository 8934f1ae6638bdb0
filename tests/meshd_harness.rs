//! meshd end-to-end helpers: a registry, host namespaces on an underlay each running a real
//! `meshd`, machines placed through the registry, and the checks tests share.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use registry::{Change, Machine, NodeSpec, Record, Registry};
use sixpn_testkit::metrics::Scrape;

use crate::{bin, tempdir, unique, Netns, Proc, Underlay};

pub const PORT: u16 = 51820;
pub const METRICS_PORT: u16 = 9109;

/// One host: a namespace on the underlay, its meshd and what it is called.
pub struct Host {
    pub ns: Netns,
    pub ip: String,
    pub node: String,
    pub iface: String,
    pub key: String,
    pub gateway: bool,
    /// More meshd flags for `Mesh::start` (e.g. a gateway's `--websocket-listen`).
    pub extra_args: Vec<String>,
    pub meshd: Option<Proc>,
}

impl Host {
    pub fn endpoint(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }

    /// The meshd log, for failure messages.
    pub fn log(&self) -> String {
        self.meshd.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// A metric's value from this host's meshd.
    pub fn metric(&self, name_and_labels: &str) -> Result<u64> {
        metric(&self.ns, name_and_labels)
    }
}

/// A metric's value from the meshd in `ns` that serves metrics on [`METRICS_PORT`].
pub fn metric(ns: &Netns, name_and_labels: &str) -> Result<u64> {
    Scrape::from_netns(ns, &format!("127.0.0.1:{METRICS_PORT}"))?.value(name_and_labels)
}

pub struct Mesh {
    pub underlay: Underlay,
    pub dir: tempdir::Dir,
    pub location: String,
    pub reg: Arc<dyn Registry>,
}

impl Mesh {
    pub fn new() -> Result<Mesh> {
        let dir = tempdir::Dir::new()?;
        let location = dir
            .path()
            .join("registry.db")
            .to_string_lossy()
            .into_owned();
        let reg = registry::open(&location)?;
        Ok(Mesh {
            underlay: Underlay::new()?,
            dir,
            location,
            reg,
        })
    }

    pub fn apply(&self, change: Change) -> Result<Option<Record>> {
        Ok(self.reg.apply(&change)?.record)
    }

    pub fn org(&self, name: &str) -> Result<()> {
        self.apply(Change::CreateOrg { name: name.into() })?;
        Ok(())
    }

    /// Makes a host namespace; `start` runs its meshd.
    pub fn host(&mut self, node: &str, gateway: bool) -> Result<Host> {
        let (ns, ip) = self.underlay.host("mh")?;
        let key = self
            .dir
            .path()
            .join(format!("{node}.key"))
            .to_string_lossy()
            .into_owned();
        Ok(Host {
            ns,
            ip,
            node: node.into(),
            iface: unique("mx"),
            key,
            gateway,
            extra_args: Vec::new(),
            meshd: None,
        })
    }

    pub fn start(&self, host: &mut Host) -> Result<()> {
        self.spawn(host)?;
        // Up when its UAPI answers and its node record is in the registry.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = uapi_answers(host) && self.reg.snapshot()?.nodes.contains_key(&host.node);
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("meshd on {} did not come up:\n{}", host.node, host.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the host's meshd while the registry may be down: up when its UAPI answers.
    pub fn start_without_registry(&self, host: &mut Host) -> Result<()> {
        self.spawn(host)?;
        host.ns
            .wait_for(
                &format!("wg show {} public-key", host.iface),
                Duration::from_secs(10),
            )
            .map(|_| ())
            .with_context(|| format!("meshd on {} did not come up:\n{}", host.node, host.log()))
    }

    fn spawn(&self, host: &mut Host) -> Result<()> {
        let meshd = bin("meshd");
        let endpoint = host.endpoint();
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        let mut args = vec![
            "--registry",
            &self.location,
            "--node",
            &host.node,
            "--region",
            "iad",
            "--endpoint",
            &endpoint,
            "--key",
            &host.key,
            "--interface",
            &host.iface,
            "--metrics",
            &metrics,
        ];
        if host.gateway {
            args.push("--gateway");
        }
        args.extend(host.extra_args.iter().map(String::as_str));
        host.meshd = Some(host.ns.spawn(&meshd.to_string_lossy(), &args)?);
        Ok(())
    }

    pub fn machine(&self, org: &str, app: &str, host: &Host) -> Result<Machine> {
        match self.apply(Change::AddMachine {
            org: org.into(),
            app: app.into(),
            region: "iad".into(),
            node: host.node.clone(),
            process_group: None,
        })? {
            Some(Record::Machine(m)) => Ok(m),
            other => bail!("expected a machine, got {other:?}"),
        }
    }

    /// `acme`'s `web` on `a` and `db` on `b`, once both addresses are up and web reaches db.
    pub fn web_and_db(&self, a: &Host, b: &Host) -> Result<(Machine, Machine)> {
        let web = self.machine("acme", "web", a)?;
        let db = self.machine("acme", "db", b)?;
        wait_address(a, web.addr)?;
        wait_address(b, db.addr)?;
        wait_ping(&a.ns, Some(web.addr), db.addr, Duration::from_secs(10))
            .with_context(|| format!("a:\n{}\nb:\n{}", a.log(), b.log()))?;
        Ok((web, db))
    }

    /// Registers a node that is not a meshd (wireguard-go, or a fake).
    pub fn foreign_node(&self, name: &str, public_key: &str, endpoint: &str) -> Result<()> {
        self.apply(Change::AddNode(NodeSpec {
            name: name.into(),
            region: "iad".into(),
            public_key: public_key.parse()?,
            endpoint: endpoint.parse()?,
            gateway: false,
        }))?;
        Ok(())
    }
}

fn uapi_answers(host: &Host) -> bool {
    host.ns
        .sh(&format!("wg show {} public-key", host.iface))
        .is_ok()
}

/// Waits until `addr` is on the host's interface (meshd put it there from the registry).
pub fn wait_address(host: &Host, addr: Ipv6Addr) -> Result<()> {
    host.ns
        .wait_for(
            &format!("ip -6 addr show dev {} | grep -q ' {addr}/'", host.iface),
            Duration::from_secs(10),
        )
        .map(|_| ())
        .with_context(|| format!("{addr} never appeared on {}:\n{}", host.node, host.log()))
}

/// Pings until one answer comes back or `timeout` passes.
pub fn wait_ping(
    ns: &Netns,
    from: Option<Ipv6Addr>,
    to: Ipv6Addr,
    timeout: Duration,
) -> Result<()> {
    let src = from.map(|a| format!("-I {a} ")).unwrap_or_default();
    ns.wait_for(&format!("ping -6 -c 1 -W 1 {src}{to}"), timeout)
        .map(|_| ())
}

/// A wireguard-go interface in `ns`, configured with `wg` (the stock tools).
pub fn wireguard_go(ns: &Netns, iface: &str) -> Result<Proc> {
    let p = ns.spawn("wireguard-go", &["-f", iface])?;
    ns.wait_for(&format!("wg show {iface}"), Duration::from_secs(10))?;
    Ok(p)
}

/// A fresh WireGuard key pair (private, public), base64.
pub fn wg_keypair() -> Result<(String, String)> {
    let private = crate::sh("wg genkey")?.trim().to_string();
    let public = crate::sh(&format!("echo {private} | wg pubkey"))?
        .trim()
        .to_string();
    Ok((private, public))
}

/// A meshd key file's public key.
pub fn meshd_pubkey(key_file: &str) -> Result<String> {
    Ok(crate::sh(&format!(
        "{} pubkey --key {key_file}",
        bin("meshd").display()
    ))?
    .trim()
    .to_string())
}
