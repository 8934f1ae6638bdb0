//! Enrollment tokens: making and revoking them, and what a write that comes with one may do.
//!
//! The API server wraps every write it makes for a client in [`Change::WithToken`]. Planning
//! checks the token, then that the write is within its scope and limits, then plans the write,
//! all against one snapshot, so a peer token's use is counted in the same transaction as the
//! peer it made, and nothing is written when any step refuses.

use std::borrow::Cow;

use super::{known_region, org, plan_with, Change, Context, Plan, Usage, Write};
use crate::error::{Error, Kind, Result};
use crate::model::{Record, Snapshot, Token, TokenScope};
use crate::name;

pub(super) struct TokenRequest<'a> {
    pub id: &'a str,
    pub org: &'a str,
    pub scope: TokenScope,
    pub secret_hash: &'a str,
    pub expires: Option<i64>,
    pub max_uses: Option<u32>,
    pub region: Option<&'a str>,
    pub name_prefix: Option<&'a str>,
}

pub(super) fn create(snap: &Snapshot, req: TokenRequest, ctx: &mut dyn Context) -> Result<Plan> {
    name::token_id(req.id)?;
    org(snap, req.org)?;
    if snap.tokens.contains_key(req.id) {
        return Err(Error::exists(Kind::Token, req.id));
    }
    if !is_sha256_hex(req.secret_hash) {
        // The value is not shown: it might be the secret itself, given by mistake.
        return Err(Error::invalid(
            "secret hash",
            format!("{} characters", req.secret_hash.chars().count()),
            "must be 64 lowercase hex characters, the SHA-256 of the secret",
        ));
    }
    let now = ctx.now_unix();
    if let Some(e) = req.expires {
        if e <= now {
            return Err(Error::invalid(
                "expires",
                e,
                format!("must be in the future (it is {} now)", utc(now)),
            ));
        }
    }
    if req.scope == TokenScope::Admin {
        peer_limits_absent(&req)?;
    }
    if req.max_uses == Some(0) {
        return Err(Error::invalid("max uses", 0, "must be at least 1"));
    }
    if let Some(code) = req.region {
        known_region("region", code)?;
    }
    if let Some(prefix) = req.name_prefix {
        name::name_prefix("name prefix", prefix)?;
    }
    let token = Token {
        id: req.id.into(),
        org: req.org.into(),
        scope: req.scope,
        secret_hash: req.secret_hash.into(),
        created: now,
        expires: req.expires,
        max_uses: req.max_uses,
        uses: 0,
        region: req.region.map(Into::into),
        name_prefix: req.name_prefix.map(Into::into),
        revoked: None,
    };
    let shown = shown(&token);
    Ok(Plan::one(Write::Put(Record::Token(token)), Some(shown)))
}

/// An admin token works on its whole org: a limit meant for peer tokens is a mistake to
/// point out, not to drop.
fn peer_limits_absent(req: &TokenRequest) -> Result<()> {
    const WHY: &str = "only a peer token has this limit; an admin token works on its whole org";
    if let Some(n) = req.max_uses {
        return Err(Error::invalid("max uses", n, WHY));
    }
    if let Some(code) = req.region {
        return Err(Error::invalid("region", code, WHY));
    }
    if let Some(prefix) = req.name_prefix {
        return Err(Error::invalid("name prefix", prefix, WHY));
    }
    Ok(())
}

pub(super) fn revoke(snap: &Snapshot, id: &str, ctx: &mut dyn Context) -> Result<Plan> {
    name::token_id(id)?;
    let token = snap
        .tokens
        .get(id)
        .ok_or_else(|| Error::not_found(Kind::Token, id))?;
    if let Some(at) = token.revoked {
        return Err(Error::invalid(
            "token",
            id,
            format!("was already revoked at {}", utc(at)),
        ));
    }
    let revoked = Token {
        revoked: Some(ctx.now_unix()),
        ..token.clone()
    };
    let shown = shown(&revoked);
    Ok(Plan::one(Write::Put(Record::Token(revoked)), Some(shown)))
}

/// A token as a write returns it: without its hash, since the result may travel to an API
/// client.
fn shown(token: &Token) -> Record {
    Record::Token(Token {
        secret_hash: String::new(),
        ..token.clone()
    })
}

/// The token `id` if `secret_hash` is its secret's hash and it is neither revoked nor
/// expired at `now_unix`. An unknown id and a wrong secret get the same answer, so that ids
/// cannot be probed. Whether a peer token is used up is checked only when it makes a peer.
pub fn check_token<'a>(
    snap: &'a Snapshot,
    id: &str,
    secret_hash: &str,
    now_unix: i64,
) -> Result<&'a Token> {
    let unknown = || {
        // A malformed id is not repeated: it might be a pasted token, secret and all.
        Error::Unauthorized(match name::token_id(id) {
            Ok(()) => format!("unknown token {id} (or a wrong secret)"),
            Err(_) => "unknown token (or a wrong secret)".into(),
        })
    };
    let token = snap.tokens.get(id).ok_or_else(unknown)?;
    // A well-formed hash only: a token whose stored hash was emptied (as `scoped` hands
    // them out) must not match an empty one.
    if !is_sha256_hex(secret_hash)
        || !same_bytes(token.secret_hash.as_bytes(), secret_hash.as_bytes())
    {
        return Err(unknown());
    }
    if let Some(at) = token.revoked {
        return Err(Error::Unauthorized(format!(
            "token {id} was revoked at {}",
            utc(at)
        )));
    }
    if let Some(at) = token.expires.filter(|_| token.expired(now_unix)) {
        return Err(Error::Unauthorized(format!(
            "token {id} expired at {}",
            utc(at)
        )));
    }
    Ok(token)
}

/// Plans `change` as made with token `id`: the token, then the scope, then the change itself;
/// a peer token's AddPeer also counts a use in the same plan.
pub(super) fn with_token(
    snap: &Snapshot,
    usage: &dyn Usage,
    id: &str,
    secret_hash: &str,
    change: &Change,
    ctx: &mut dyn Context,
) -> Result<Plan> {
    let token = check_token(snap, id, secret_hash, ctx.now_unix())?;
    let change = match token.scope {
        TokenScope::Peer => permit_peer(snap, token, change)?,
        TokenScope::Admin => {
            permit_admin(snap, token, change)?;
            Cow::Borrowed(change)
        }
    };
    let mut planned = plan_with(snap, usage, &change, ctx)?;
    if token.scope == TokenScope::Peer && matches!(*change, Change::AddPeer { .. }) {
        let used = Token {
            uses: token.uses.saturating_add(1),
            ..token.clone()
        };
        planned.writes.push(Write::Put(Record::Token(used)));
    }
    Ok(planned)
}

/// What a peer token may do: create and remove its org's peers, within its limits. Returns
/// the change to plan: an AddPeer under a token with a region gets that region.
fn permit_peer<'c>(snap: &Snapshot, token: &Token, change: &'c Change) -> Result<Cow<'c, Change>> {
    let id = &token.id;
    match change {
        Change::AddPeer {
            org,
            name,
            region,
            gateway,
            ..
        } => {
            same_org(token, org)?;
            if let (true, Some(max)) = (token.used_up(), token.max_uses) {
                return Err(Error::Unauthorized(format!(
                    "token {id} has been used {} of {max} times",
                    token.uses
                )));
            }
            if let Some(prefix) = token.name_prefix.as_deref() {
                if !name.starts_with(prefix) {
                    return Err(Error::Forbidden(format!(
                        "token {id} only creates peers named `{prefix}…`, not `{name}`"
                    )));
                }
            }
            let Some(only) = token.region.as_deref() else {
                return Ok(Cow::Borrowed(change));
            };
            let elsewhere = |what: String| {
                Error::Forbidden(format!(
                    "token {id} only creates peers in region `{only}`; {what}"
                ))
            };
            if let Some(r) = region.as_deref().filter(|r| *r != only) {
                return Err(elsewhere(format!("this one asks for `{r}`")));
            }
            if let Some(n) = gateway.as_deref().and_then(|g| snap.nodes.get(g)) {
                if n.region != only {
                    return Err(elsewhere(format!(
                        "gateway `{}` is in `{}`",
                        n.name, n.region
                    )));
                }
            }
            let mut pinned = change.clone();
            if let Change::AddPeer { region, .. } = &mut pinned {
                *region = Some(only.to_string());
            }
            Ok(Cow::Owned(pinned))
        }
        Change::RemovePeer { org, name } => {
            same_org(token, org)?;
            // The limits that bound what a token makes bound what it may take away, so that
            // a CI token cannot remove a person's laptop.
            if let Some(prefix) = token.name_prefix.as_deref() {
                if !name.starts_with(prefix) {
                    return Err(Error::Forbidden(format!(
                        "token {id} only removes peers named `{prefix}…`, not `{name}`"
                    )));
                }
            }
            let peer = snap.peers.get(&(org.clone(), name.clone()));
            if let (Some(only), Some(p)) = (token.region.as_deref(), peer) {
                if p.region != only {
                    return Err(Error::Forbidden(format!(
                        "token {id} only removes peers in region `{only}`; `{name}` is in `{}`",
                        p.region
                    )));
                }
            }
            Ok(Cow::Borrowed(change))
        }
        Change::WithToken { .. } => Err(nested()),
        other => Err(Error::Forbidden(format!(
            "token {id} may not {}: a peer token may only create, list and remove peers",
            what(other)
        ))),
    }
}

/// What an admin token may do: what the local CLI does, for its own org only.
fn permit_admin(snap: &Snapshot, token: &Token, change: &Change) -> Result<()> {
    match change {
        Change::AddMachine { org, .. }
        | Change::AddPeer { org, .. }
        | Change::RemovePeer { org, .. }
        | Change::CreateToken { org, .. } => same_org(token, org),
        // Records named by id: another org's look like unknown ones, so that ids cannot be
        // probed for which org holds them.
        Change::SetMachineState { id, .. }
        | Change::MoveMachine { id, .. }
        | Change::RemoveMachine { id } => match snap.machines.get(id) {
            Some(m) if m.org != token.org => Err(Error::not_found(Kind::Machine, id.to_string())),
            _ => Ok(()),
        },
        Change::RevokeToken { id } => match snap.tokens.get(id) {
            Some(t) if t.org != token.org => Err(Error::not_found(Kind::Token, id)),
            _ => Ok(()),
        },
        Change::WithToken { .. } => Err(nested()),
        Change::CreateOrg { .. }
        | Change::RemoveOrg { .. }
        | Change::AddNode(_)
        | Change::RegisterNode(_)
        | Change::RemoveNode { .. }
        | Change::PeerOrgs { .. }
        | Change::UnpeerOrgs { .. } => Err(Error::Forbidden(format!(
            "token {} may not {}: an admin token works only on its org's machines, peers and \
             tokens",
            token.id,
            what(change)
        ))),
    }
}

fn same_org(token: &Token, org: &str) -> Result<()> {
    if token.org == org {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "token {} is for org `{}`, not `{org}`",
        token.id, token.org
    )))
}

fn nested() -> Error {
    Error::invalid(
        "change",
        "WithToken",
        "a write made with a token cannot hold another token",
    )
}

/// A change in words, for refusals.
fn what(change: &Change) -> &'static str {
    match change {
        Change::CreateOrg { .. } => "create orgs",
        Change::RemoveOrg { .. } => "remove orgs",
        Change::AddNode(_) => "add nodes",
        Change::RegisterNode(_) => "register nodes",
        Change::RemoveNode { .. } => "remove nodes",
        Change::AddMachine { .. } => "add machines",
        Change::SetMachineState { .. } => "start or stop machines",
        Change::MoveMachine { .. } => "move machines",
        Change::RemoveMachine { .. } => "remove machines",
        Change::AddPeer { .. } => "create peers",
        Change::RemovePeer { .. } => "remove peers",
        Change::PeerOrgs { .. } => "peer orgs",
        Change::UnpeerOrgs { .. } => "unpeer orgs",
        Change::CreateToken { .. } => "create tokens",
        Change::RevokeToken { .. } => "revoke tokens",
        Change::WithToken { .. } => "nest tokens",
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Equality that takes as long wherever the first difference is, so that a hash cannot be
/// found byte by byte from response times. Lengths are public (a SHA-256 is 64 characters).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Unix seconds as `2026-11-30 12:00:00 UTC`, for messages.
pub(crate) fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
