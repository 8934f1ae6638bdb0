//! meshd's errors: each names the thing and the rule.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that breaks a rule (CLI flag or config file field).
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("key file {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("config file {}: {message}", path.display())]
    ConfigFile { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
