//! `wgtool token create|list|revoke`: enrollment tokens for the API.

use anyhow::Result;
use registry::{Change, Record};

use crate::admin::{open, Source};
use crate::api::{self, tls};
use crate::cli::{TokenCommand, TokenCreateArgs};
use crate::{table, usage};

pub fn run(src: &Source, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create(a) => create(src, a),
        TokenCommand::List { org, json } => list(src, org, json),
        TokenCommand::Revoke { id } => {
            open(src)?.apply(&Change::RevokeToken { id: id.clone() })?;
            println!("revoked token {id}");
            Ok(())
        }
    }
}

fn create(src: &Source, a: TokenCreateArgs) -> Result<()> {
    // What the token points its holder at: the server named, else the API this command
    // itself goes through.
    let (server, fingerprint) = match (&a.server, src.uses_api()) {
        (Some(url), _) => {
            let fp = match &a.server_fingerprint {
                Some(f) => tls::parse_fingerprint(f).map_err(usage)?,
                None => {
                    let fp = api::client::learn_fingerprint(url)?;
                    eprintln!("pinned the certificate {url} shows: sha256:{fp}");
                    fp
                }
            };
            (Some(url.clone()), Some(fp))
        }
        (None, true) => {
            let through = src
                .token
                .as_deref()
                .and_then(|t| api::Token::decode(t).ok());
            let url = src
                .api
                .clone()
                .or_else(|| through.as_ref().and_then(|t| t.api.clone()));
            let fp = match &src.fingerprint {
                Some(f) => Some(tls::parse_fingerprint(f).map_err(usage)?),
                None => through.and_then(|t| t.fingerprint),
            };
            (url, fp)
        }
        (None, false) => {
            if a.server_fingerprint.is_some() {
                return Err(usage("server-fingerprint: needs --server"));
            }
            (None, None)
        }
    };
    let token = api::Token::generate(server.clone(), fingerprint);
    let expires = a
        .expires_in
        .map(|d| crate::peer::now_unix() + d.as_secs() as i64);
    let applied = open(src)?.apply(&Change::CreateToken {
        id: token.id.clone(),
        org: a.org.clone(),
        scope: a.scope,
        secret_hash: token.secret_hash(),
        expires,
        max_uses: a.uses,
        region: a.region.clone(),
        name_prefix: a.name_prefix.clone(),
    })?;
    let Some(Record::Token(t)) = applied.record else {
        anyhow::bail!("the registry did not return the new token");
    };
    // The secret goes to stdout once, alone on its line; the rest to stderr.
    println!("{}", token.encode());
    let mut limits = vec![format!(
        "{} token {} for org {}",
        t.scope.as_str(),
        t.id,
        t.org
    )];
    if let Some(e) = t.expires {
        limits.push(format!("expires {}", table::time(e)));
    }
    if let Some(n) = t.max_uses {
        limits.push(format!("{n} use(s)"));
    }
    if let Some(r) = &t.region {
        limits.push(format!("region {r}"));
    }
    if let Some(p) = &t.name_prefix {
        limits.push(format!("names {p}*"));
    }
    match &server {
        Some(url) => limits.push(format!("for {url}")),
        None => limits.push(
            "names no API (use it with --api and --api-fingerprint, or make it with --server)"
                .into(),
        ),
    }
    eprintln!("{}; it is shown only this once", limits.join(", "));
    Ok(())
}

fn list(src: &Source, org: Option<String>, json: bool) -> Result<()> {
    // Orgs and tokens are in the frame: no need to read every machine.
    let snap = open(src)?.frame()?;
    if let Some(o) = &org {
        if !snap.orgs.contains_key(o) {
            return Err(registry::Error::not_found(registry::Kind::Org, o).into());
        }
    }
    let now = crate::peer::now_unix();
    let tokens: Vec<_> = snap
        .tokens
        .values()
        .filter(|t| org.as_ref().is_none_or(|o| &t.org == o))
        .collect();
    if json {
        let shown: Vec<serde_json::Value> = tokens
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "org": t.org,
                    "scope": t.scope,
                    "created": t.created,
                    "expires": t.expires,
                    "uses": t.uses,
                    "max_uses": t.max_uses,
                    "region": t.region,
                    "name_prefix": t.name_prefix,
                    "revoked": t.revoked,
                    "state": state(t, now),
                })
            })
            .collect();
        return table::json(&shown);
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.org.clone(),
                t.scope.as_str().into(),
                table::time(t.created),
                t.expires.map(table::time).unwrap_or_else(|| "never".into()),
                match t.max_uses {
                    Some(m) => format!("{}/{m}", t.uses),
                    None => t.uses.to_string(),
                },
                t.region.clone().unwrap_or_else(|| "any".into()),
                t.name_prefix
                    .clone()
                    .map(|p| format!("{p}*"))
                    .unwrap_or_else(|| "any".into()),
                state(t, now).into(),
            ]
        })
        .collect();
    table::print(
        &[
            "ID", "ORG", "SCOPE", "CREATED", "EXPIRES", "USES", "REGION", "NAMES", "STATE",
        ],
        &rows,
    );
    Ok(())
}

fn state(t: &registry::Token, now: i64) -> &'static str {
    if t.revoked.is_some() {
        "revoked"
    } else if t.expires.is_some_and(|e| e <= now) {
        "expired"
    } else if t.max_uses.is_some_and(|m| t.uses >= m) {
        "used up"
    } else {
        "active"
    }
}
