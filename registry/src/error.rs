use std::fmt;

/// Every way a registry call can fail. `Invalid`, `NotFound`, `Exists` and `InUse` are the
/// caller's fault (a CLI exits 2 on them); the rest are the storage's.
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
        )
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
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
