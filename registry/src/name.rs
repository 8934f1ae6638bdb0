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

/// A machine id: 14 lowercase hex characters, like Fly's.
pub fn machine_id(value: &str) -> Result<()> {
    if value.len() != 14
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(
            "machine id",
            value,
            "must be 14 lowercase hex characters",
        ));
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
    fn machine_ids_are_14_hex() {
        machine_id("4d89699c030518").unwrap();
        for bad in [
            "4d89699c03051",
            "4d89699c030518a",
            "4D89699C030518",
            "zz89699c030518",
        ] {
            assert!(machine_id(bad).is_err(), "{bad}");
        }
    }
}
