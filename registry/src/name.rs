//! Name rules: every name the registry stores is a DNS label, because it ends up in one.

use crate::error::{Error, Result};

/// Words that the `.internal` name table gives a meaning; an app, peer or process group
/// named like this would make a name ambiguous.
pub const RESERVED: &[&str] = &[
    "vm", "vms", "global", "nearest", "of", "process", "regions", "all", "internal",
];

/// Checks a DNS label: `[a-z0-9-]{1,63}`, no leading or trailing hyphen.
pub fn label(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, value, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(Error::invalid(field, value, "at most 63 characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            value,
            format!("use a-z, 0-9 and '-' (found {c:?})"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(Error::invalid(
            field,
            value,
            "must not start or end with '-'",
        ));
    }
    Ok(())
}

/// A label that also appears as a DNS name component, so it must not be a reserved word.
pub fn dns_name(field: &'static str, value: &str) -> Result<()> {
    label(field, value)?;
    if RESERVED.contains(&value) {
        return Err(Error::invalid(
            field,
            value,
            format!(
                "is reserved for .internal names (reserved: {})",
                RESERVED.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A token id: `tok` and 16 lowercase hex characters.
pub fn token_id(value: &str) -> Result<()> {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match value.strip_prefix("tok") {
        Some(rest) if rest.len() == 16 && hex(rest) => Ok(()),
        // Someone may paste a whole token, secret and all, where its id goes: a message
        // must not repeat it.
        _ if value.len() > 32 => Err(Error::invalid(
            "token id",
            format!("{} characters", value.chars().count()),
            "must be `tok` and 16 lowercase hex characters (the id, not the whole token)",
        )),
        _ => Err(Error::invalid(
            "token id",
            value,
            "must be `tok` and 16 lowercase hex characters",
        )),
    }
}

/// The most a token's name prefix may hold, leaving room in a 63-character peer name.
pub const NAME_PREFIX_MAX: usize = 40;

/// What a peer token's names must start with: `[a-z0-9-]{1,40}`, not starting with '-'
/// (it may end with one: `ci-`).
pub fn name_prefix(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, value, "must not be empty"));
    }
    if value.len() > NAME_PREFIX_MAX {
        return Err(Error::invalid(
            field,
            value,
            format!("at most {NAME_PREFIX_MAX} characters"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            value,
            format!("use a-z, 0-9 and '-' (found {c:?})"),
        ));
    }
    if value.starts_with('-') {
        return Err(Error::invalid(field, value, "must not start with '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web", "web-1", "0", &"a".repeat(63)] {
            label("name", ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_labels_naming_the_rule() {
        let cases = [
            ("", "must not be empty"),
            ("Web_1", "use a-z, 0-9 and '-'"),
            ("-web", "must not start or end with '-'"),
            ("web-", "must not start or end with '-'"),
            ("a.b", "use a-z"),
        ];
        for (bad, rule) in cases {
            let msg = label("app name", bad).unwrap_err().to_string();
            assert!(msg.starts_with("app name `"), "{msg}");
            assert!(msg.contains(rule), "{bad:?}: {msg}");
        }
        let long = "a".repeat(64);
        assert!(label("x", &long)
            .unwrap_err()
            .to_string()
            .contains("at most 63"));
    }

    #[test]
    fn reserved_words_are_refused_for_dns_names() {
        for word in ["vm", "global", "nearest", "vms", "regions", "all"] {
            let msg = dns_name("app name", word).unwrap_err().to_string();
            assert!(msg.contains("reserved"), "{msg}");
        }
        dns_name("app name", "web").unwrap();
    }

    #[test]
    fn token_ids_are_tok_and_16_hex() {
        token_id("tok3f9a0c2b7d1e4a55").unwrap();
        for bad in [
            "tok3f9a0c2b7d1e4a5",
            "tok3f9a0c2b7d1e4a555",
            "tok3F9A0C2B7D1E4A55",
            "abc3f9a0c2b7d1e4a55",
            "3f9a0c2b7d1e4a55",
            "",
        ] {
            let msg = token_id(bad).unwrap_err().to_string();
            assert!(msg.starts_with("token id `"), "{msg}");
        }
    }

    #[test]
    fn a_whole_token_given_as_an_id_is_not_repeated() {
        let pasted = "sixpn1.eyJpZCI6InRvazNmOWEwYzJiN2QxZTRhNTUiLCJzZWNyZXQiOiJ4In0";
        let msg = token_id(pasted).unwrap_err().to_string();
        assert!(!msg.contains("eyJ"), "{msg}");
        assert!(msg.contains("not the whole token"), "{msg}");
    }

    #[test]
    fn name_prefixes_may_end_but_not_start_with_a_hyphen() {
        for ok in ["ci-", "a", "build7", &"a".repeat(40)] {
            name_prefix("name prefix", ok).unwrap();
        }
        let cases = [
            ("", "must not be empty"),
            ("-ci", "must not start with '-'"),
            ("CI-", "use a-z, 0-9 and '-'"),
            ("ci_", "use a-z, 0-9 and '-'"),
        ];
        for (bad, rule) in cases {
            let msg = name_prefix("name prefix", bad).unwrap_err().to_string();
            assert!(msg.starts_with("name prefix `"), "{msg}");
            assert!(msg.contains(rule), "{bad:?}: {msg}");
        }
        let long = "a".repeat(41);
        assert!(name_prefix("name prefix", &long)
            .unwrap_err()
            .to_string()
            .contains("at most 40"));
    }
}
