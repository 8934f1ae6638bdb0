//! Every field, for scripts and configuration management.

use registry::PublicKey;
use serde::Serialize;

use super::{TunnelFile, INTERFACE};

#[derive(Serialize)]
struct Json<'a> {
    org: &'a str,
    name: &'a str,
    interface: &'a str,
    /// `null` when printed again from the registry.
    private_key: Option<&'a str>,
    public_key: &'a PublicKey,
    address: String,
    dns: String,
    peer: JsonPeer<'a>,
    /// What the tunnel's routes cover: the same as the peer's allowed IPs.
    routes: &'a [ipnet::IpNet],
    org_prefix: String,
    site: Option<JsonSite<'a>>,
}

#[derive(Serialize)]
struct JsonPeer<'a> {
    gateway: &'a str,
    public_key: &'a PublicKey,
    endpoint: String,
    allowed_ips: &'a [ipnet::IpNet],
    persistent_keepalive: u16,
}

#[derive(Serialize)]
struct JsonSite<'a> {
    routes: &'a [ipnet::IpNet],
    via: Option<String>,
    /// Each IPv4 route and the 4via6 prefix the org reaches it at.
    via_routes: Vec<serde_json::Value>,
    notes: Vec<String>,
}

pub fn render(t: &TunnelFile) -> String {
    let site = t.is_site().then(|| JsonSite {
        routes: &t.site_routes,
        via: t.via.map(|v| v.to_string()),
        via_routes: t
            .site_routes
            .iter()
            .filter_map(|r| match (r, t.via) {
                (ipnet::IpNet::V4(v4), Some(via)) => Some(serde_json::json!({
                    "route": r.to_string(),
                    "via": registry::addr::via_route(via, *v4).to_string(),
                })),
                _ => None,
            })
            .collect(),
        notes: t.site_notes(),
    });
    let j = Json {
        org: &t.org,
        name: &t.name,
        interface: INTERFACE,
        private_key: t.private_key.as_deref(),
        public_key: &t.public_key,
        address: t.address.to_string(),
        dns: t.dns.to_string(),
        peer: JsonPeer {
            gateway: &t.gateway,
            public_key: &t.gateway_public_key,
            endpoint: t.endpoint.to_string(),
            allowed_ips: &t.allowed_ips,
            persistent_keepalive: t.keepalive,
        },
        routes: &t.allowed_ips,
        org_prefix: t.org_prefix.to_string(),
        site,
    };
    let mut s = serde_json::to_string_pretty(&j).unwrap_or_default();
    s.push('\n');
    s
}
