//! Reading Prometheus text: fetch a `/metrics` page, then look samples up by name and labels
//! exactly as the exporter writes them (`meshd_drops_total{reason="replay"}`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Netns;

/// One scrape of a `/metrics` page.
pub struct Scrape {
    text: String,
}

impl Scrape {
    /// `http://<addr>/metrics` fetched with curl inside `ns`.
    pub fn from_netns(ns: &Netns, addr: &str) -> Result<Scrape> {
        let text = ns.sh(&format!("curl -gs --max-time 2 http://{addr}/metrics"))?;
        Ok(Scrape { text })
    }

    /// `http://<addr>/metrics` fetched from this thread's namespace.
    pub fn from_here(addr: SocketAddr) -> Result<Scrape> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to metrics on {addr}"))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        c.read_to_string(&mut text)?;
        Ok(Scrape { text })
    }

    /// The page as served (a [`Scrape::from_here`] one with its HTTP head).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The integer value of the sample `series` (name and labels, e.g.
    /// `dnsd_queries_total{result="ok"}`); an error showing the page if there is none.
    pub fn value(&self, series: &str) -> Result<u64> {
        let series = series.trim();
        self.text
            .lines()
            .find_map(|l| {
                let (s, v) = l.rsplit_once(' ')?;
                (s.trim() == series).then(|| v.trim().parse().ok())?
            })
            .with_context(|| format!("metric {series} not in:\n{}", self.text))
    }

    /// Every sample whose series starts with `prefix` and whose value is an integer, by
    /// name and labels.
    pub fn samples(&self, prefix: &str) -> BTreeMap<String, u64> {
        self.text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }
}
