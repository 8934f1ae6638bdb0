use std::fmt;

/// Every way a registry call can fail. `Invalid`, `NotFound`, `Exists`, `InUse`,
/// `Exhausted`, `Unauthorized` and `Forbidden` are the caller's fault (a CLI exits 2 on them);
/// the rest are the storage's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value broke a rule: names the field and the rule.
    #[error("{field} `{value}`: {rule}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: String,
    },
    #[error("{kind} `{name}` does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} `{name}` already exists")]
    Exists { kind: Kind, name: String },
    /// A record cannot go while others still refer to it.
    #[error("{kind} `{name}` is still in use: {why}")]
    InUse {
        kind: Kind,
        name: String,
        why: String,
    },
    #[error("no free {what} left in {space}")]
    Exhausted { what: &'static str, space: String },
    /// Another writer changed the registry first; the write may be retried.
    #[error("the registry changed during the write; try again")]
    Conflict,
    /// The token a write or read came with does not let anything in: unknown, a wrong
    /// secret, expired, revoked or used up. Names the token's id and the rule, never its
    /// secret or hash.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token, but the request is outside its scope or limits.
    #[error("{0}")]
    Forbidden(String),
    #[error("registry `{location}`: {message}")]
    Storage { location: String, message: String },
    #[error("registry `{location}` holds a bad record: {message}")]
    Corrupt { location: String, message: String },
}

impl Error {
    pub fn invalid(field: &'static str, value: impl fmt::Display, rule: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    pub fn not_found(kind: Kind, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn exists(kind: Kind, name: impl Into<String>) -> Self {
        Error::Exists {
            kind,
            name: name.into(),
        }
    }

    /// True when the caller's input is at fault (usage error), false for storage failures.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. }
                | Error::NotFound { .. }
                | Error::Exists { .. }
                | Error::InUse { .. }
                | Error::Exhausted { .. }
                | Error::Unauthorized(_)
                | Error::Forbidden(_)
        )
    }

    /// The HTTP status an API answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Invalid { .. } => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound { .. } => 404,
            Error::Exists { .. }
            | Error::InUse { .. }
            | Error::Exhausted { .. }
            | Error::Conflict => 409,
            Error::Corrupt { .. } => 500,
            Error::Storage { .. } => 503,
        }
    }
}

/// The registry's nouns, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Org,
    Node,
    App,
    Machine,
    Peer,
    /// An org-to-org peering; its name is `a <-> b`.
    Peering,
    Region,
    /// An enrollment token; its name is its id.
    Token,
}

impl Kind {
    /// The kinds of record, in the order a whole read ([`crate::Registry::visit`]) gives them.
    pub const RECORDS: [Kind; 7] = [
        Kind::Org,
        Kind::Node,
        Kind::App,
        Kind::Machine,
        Kind::Peer,
        Kind::Peering,
        Kind::Token,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Org => "org",
            Kind::Node => "node",
            Kind::App => "app",
            Kind::Machine => "machine",
            Kind::Peer => "peer",
            Kind::Peering => "peering",
            Kind::Region => "region",
            Kind::Token => "token",
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_http_status_and_token_refusals_are_the_callers() {
        let cases = [
            (Error::invalid("f", "v", "r"), 400, true),
            (Error::not_found(Kind::Token, "t"), 404, true),
            (Error::exists(Kind::Token, "t"), 409, true),
            (
                Error::InUse {
                    kind: Kind::Org,
                    name: "o".into(),
                    why: "w".into(),
                },
                409,
                true,
            ),
            (
                Error::Exhausted {
                    what: "address",
                    space: "s".into(),
                },
                409,
                true,
            ),
            (Error::Conflict, 409, false),
            (
                Error::Unauthorized("token tok1 was revoked".into()),
                401,
                true,
            ),
            (
                Error::Forbidden("token tok1 is for org `a`".into()),
                403,
                true,
            ),
            (
                Error::Storage {
                    location: "l".into(),
                    message: "m".into(),
                },
                503,
                false,
            ),
            (
                Error::Corrupt {
                    location: "l".into(),
                    message: "m".into(),
                },
                500,
                false,
            ),
        ];
        for (e, status, user) in cases {
            assert_eq!(e.http_status(), status, "{e:?}");
            assert_eq!(e.is_user_error(), user, "{e:?}");
        }
        assert_eq!(
            Error::Forbidden("a peer token may only create, list and remove peers".into())
                .to_string(),
            "a peer token may only create, list and remove peers"
        );
        assert_eq!(Kind::Token.to_string(), "token");
    }
}
