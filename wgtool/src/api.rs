//! The enrollment API: `wgtool serve` on a host that can reach the registry, and the client
//! every other `wgtool` command uses with `--api`/`--token` instead of `--registry`.
//!
//! The API is a thin layer over the registry: a client reads its org's part of a snapshot
//! (`GET /v1/snapshot`) or of the frame (`GET /v1/frame`) and sends the same `Change`s the local CLI applies (`POST
//! /v1/apply`); the server wraps each in `Change::WithToken`, so what a token may do is
//! decided by the registry's own planning, in the same transaction as the write.
//!
//! A token is one string a person pastes: `sixpn1.` and the base64url of a small JSON
//! object holding the token's id and secret, the API's URL and its certificate's SHA-256
//! fingerprint, which the client pins. The registry keeps only the secret's SHA-256.

pub mod client;
pub mod server;
pub mod tls;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const SNAPSHOT_PATH: &str = "/v1/snapshot";
/// The org's part of the registry's frame (`Registry::frame`): what `create` needs. A server
/// older than this path answers 404, and the client reads the snapshot instead.
pub const FRAME_PATH: &str = "/v1/frame";
pub const APPLY_PATH: &str = "/v1/apply";
pub const WHOAMI_PATH: &str = "/v1/whoami";
pub const STATUS_PATH: &str = "/v1/status";

const TOKEN_PREFIX: &str = "sixpn1.";
/// Bytes of randomness in a token's secret.
const SECRET_BYTES: usize = 32;

/// What a token string carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub secret: String,
    /// `https://host:port` of the API, if the token was made for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The API certificate's SHA-256, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Token {
    /// A new id and secret from the OS's generator.
    pub fn generate(api: Option<String>, fingerprint: Option<String>) -> Token {
        use rand_core::{OsRng, RngCore};
        let mut id = [0u8; 8];
        OsRng.fill_bytes(&mut id);
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret);
        Token {
            id: format!("tok{}", hex(&id)),
            secret: URL_SAFE_NO_PAD.encode(secret),
            api,
            fingerprint,
        }
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token serialises");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a token string; the error names what is wrong with it (never its secret).
    pub fn decode(s: &str) -> Result<Token, String> {
        let s = s.trim();
        let Some(body) = s.strip_prefix(TOKEN_PREFIX) else {
            return Err(format!(
                "token: must start with `{TOKEN_PREFIX}` (as `wgtool token create` prints it)"
            ));
        };
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| {
            "token: is not base64url after `sixpn1.`; was it cut or changed?".to_string()
        })?;
        let t: Token = serde_json::from_slice(&json)
            .map_err(|_| "token: does not hold a token; was it cut or changed?".to_string())?;
        if !is_token_id(&t.id) {
            return Err("token: its id is malformed; was it changed?".into());
        }
        if t.secret.is_empty() || t.secret.len() > 128 {
            return Err("token: its secret is malformed; was it changed?".into());
        }
        Ok(t)
    }

    /// The SHA-256 of the secret, as the registry keeps it.
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }

    /// `Authorization` header value: the id and the secret, never the URL.
    pub fn bearer(&self) -> String {
        format!("Bearer {}.{}", self.id, self.secret)
    }
}

pub fn secret_hash(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn is_token_id(id: &str) -> bool {
    id.len() == 19
        && id.starts_with("tok")
        && id[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Splits `Bearer <id>.<secret>`.
pub fn parse_bearer(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix("Bearer ")?;
    let (id, secret) = rest.split_once('.')?;
    (is_token_id(id) && !secret.is_empty()).then_some((id, secret))
}

pub use inproc::pin::hex;

/// A registry error as the API sends it: enough to make the same error on the client, so
/// that a command prints the same message and exits with the same status either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub error: String,
    /// `invalid`, `not_found`, `exists`, `in_use`, `exhausted`, `conflict`,
    /// `unauthorized`, `forbidden`, `storage`, `corrupt`, `bad_request`.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl WireError {
    pub fn bad_request(field: &str, rule: impl Into<String>) -> WireError {
        let rule = rule.into();
        WireError {
            error: format!("{field}: {rule}"),
            code: "bad_request".into(),
            field: Some(field.into()),
            value: None,
            rule: Some(rule),
            kind: None,
            name: None,
        }
    }

    pub fn from_registry(e: &registry::Error) -> WireError {
        use registry::Error as E;
        let mut w = WireError {
            error: e.to_string(),
            code: String::new(),
            field: None,
            value: None,
            rule: None,
            kind: None,
            name: None,
        };
        w.code = match e {
            E::Invalid { field, value, rule } => {
                w.field = Some(field.to_string());
                w.value = Some(value.clone());
                w.rule = Some(rule.clone());
                "invalid"
            }
            E::NotFound { kind, name } => {
                w.kind = Some(kind.to_string());
                w.name = Some(name.clone());
                "not_found"
            }
            E::Exists { kind, name } => {
                w.kind = Some(kind.to_string());
                w.name = Some(name.clone());
                "exists"
            }
            E::InUse { kind, name, why } => {
                w.kind = Some(kind.to_string());
                w.name = Some(name.clone());
                w.rule = Some(why.clone());
                "in_use"
            }
            E::Exhausted { what, space } => {
                w.field = Some(what.to_string());
                w.value = Some(space.clone());
                "exhausted"
            }
            E::Conflict => "conflict",
            E::Unauthorized(_) => "unauthorized",
            E::Forbidden(_) => "forbidden",
            // Where the registry lives is the server's business, not the client's.
            E::Storage { .. } => {
                w.error = "the registry is unavailable; try again later".into();
                "storage"
            }
            E::Corrupt { .. } => {
                w.error = "the registry holds a bad record; tell its operator".into();
                "corrupt"
            }
            _ => "storage",
        }
        .into();
        w
    }

    /// The registry error again, on the client. Kinds and fields are the registry's own
    /// names, so they map back; anything unknown keeps its message.
    pub fn into_registry(self, location: &str) -> registry::Error {
        use registry::Error as E;
        let kind = self.kind.as_deref().and_then(kind_from_str);
        match (self.code.as_str(), kind) {
            ("invalid", _) | ("bad_request", _) => E::Invalid {
                field: leak(self.field.unwrap_or_else(|| "request".into())),
                value: self.value.unwrap_or_default(),
                rule: self.rule.unwrap_or(self.error),
            },
            ("not_found", Some(kind)) => E::NotFound {
                kind,
                name: self.name.unwrap_or_default(),
            },
            ("exists", Some(kind)) => E::Exists {
                kind,
                name: self.name.unwrap_or_default(),
            },
            ("in_use", Some(kind)) => E::InUse {
                kind,
                name: self.name.unwrap_or_default(),
                why: self.rule.unwrap_or_default(),
            },
            ("exhausted", _) => E::Exhausted {
                what: leak(self.field.unwrap_or_else(|| "addresses".into())),
                space: self.value.unwrap_or_default(),
            },
            // A kind this client does not know: same message, still a user error.
            ("in_use", None) | ("not_found", None) | ("exists", None) => E::Forbidden(self.error),
            ("conflict", _) => E::Conflict,
            ("unauthorized", _) => E::Unauthorized(self.error),
            ("forbidden", _) => E::Forbidden(self.error),
            _ => E::Storage {
                location: location.into(),
                message: self.error,
            },
        }
    }
}

/// Field names are `&'static str` in the registry's errors; a CLI makes at most one.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn kind_from_str(s: &str) -> Option<registry::Kind> {
    use registry::Kind;
    Some(match s {
        "org" => Kind::Org,
        "node" => Kind::Node,
        "app" => Kind::App,
        "machine" => Kind::Machine,
        "peer" => Kind::Peer,
        "peering" => Kind::Peering,
        "region" => Kind::Region,
        "token" => Kind::Token,
        _ => return None,
    })
}

/// `GET /v1/snapshot`: the org's part of the registry, as records (a snapshot's maps have
/// tuple keys, which JSON cannot hold).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub revision: u64,
    pub next_network: u32,
    pub records: Vec<registry::Record>,
}

impl SnapshotBody {
    pub fn new(snap: &registry::Snapshot) -> SnapshotBody {
        SnapshotBody {
            revision: snap.revision.0,
            next_network: snap.next_network,
            records: snap.records().collect(),
        }
    }

    pub fn into_snapshot(self) -> registry::Snapshot {
        let mut snap = registry::Snapshot {
            revision: registry::Revision(self.revision),
            next_network: self.next_network,
            ..registry::Snapshot::default()
        };
        for r in self.records {
            snap.put(r);
        }
        snap
    }
}

/// `POST /v1/apply`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppliedBody {
    pub revision: u64,
    pub record: Option<registry::Record>,
}

/// `GET /v1/whoami`: the token the request came with.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub id: String,
    pub org: String,
    pub scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_a_changed_one_is_refused() {
        let t = Token::generate(Some("https://[fdaa::1]:8443".into()), Some("ab".repeat(32)));
        let s = t.encode();
        assert!(s.starts_with("sixpn1."));
        assert_eq!(Token::decode(&s).unwrap(), t);
        assert_eq!(Token::decode(&format!("  {s}\n")).unwrap(), t);
        assert!(Token::decode(&s[..s.len() - 5])
            .unwrap_err()
            .starts_with("token:"));
        assert!(Token::decode("tok123").unwrap_err().contains("sixpn1."));
        let mut bad = t.clone();
        bad.id = "tokXYZ".into();
        assert!(Token::decode(&bad.encode()).unwrap_err().contains("id"));
    }

    #[test]
    fn the_bearer_header_carries_id_and_secret_only() {
        let t = Token::generate(Some("https://h:1".into()), None);
        let b = t.bearer();
        assert!(!b.contains("https"));
        assert_eq!(parse_bearer(&b), Some((t.id.as_str(), t.secret.as_str())));
        assert_eq!(parse_bearer("Bearer nope"), None);
        assert_eq!(parse_bearer("Basic abc"), None);
    }

    #[test]
    fn the_secret_hash_is_sha256_hex() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn registry_errors_cross_the_wire_unchanged() {
        let errors = [
            registry::Error::invalid("name", "Bad", "must be a DNS label"),
            registry::Error::not_found(registry::Kind::Peer, "alice"),
            registry::Error::exists(registry::Kind::Peer, "alice"),
            registry::Error::Unauthorized("unknown token".into()),
            registry::Error::Forbidden("token tok… is for org `acme`, not `globex`".into()),
        ];
        for e in errors {
            let w: WireError = serde_json::from_str(
                &serde_json::to_string(&WireError::from_registry(&e)).unwrap(),
            )
            .unwrap();
            let back = w.into_registry("https://x");
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.is_user_error(), e.is_user_error());
            assert_eq!(back.http_status(), e.http_status());
        }
    }
}
