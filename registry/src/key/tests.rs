use super::*;

/// `wg pubkey` of the private key in RFC 7748's test vector (Alice's).
const ALICE: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

#[test]
fn base64_round_trips_through_the_32_bytes() {
    let key: PublicKey = ALICE.parse().unwrap();
    assert_eq!(key.to_string(), ALICE);
    assert_eq!(key.as_bytes()[..4], [0x85, 0x20, 0xf0, 0x09]);
    assert_eq!(PublicKey::from(key.to_bytes()), key);
    assert_eq!(<[u8; 32]>::from(key), key.to_bytes());
    assert_eq!(PublicKey::try_from(ALICE).unwrap(), key);
    assert_eq!(format!("{key:?}"), format!("PublicKey({ALICE})"));
    for bytes in [[0u8; 32], [0xff; 32], [0x5a; 32]] {
        let key = PublicKey::from_bytes(bytes);
        assert_eq!(key.to_string().len(), 44);
        assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
    }
}

#[test]
fn every_refusal_names_the_field_and_the_rule() {
    let rule = "must be 44 characters of base64 for 32 bytes, as `wg pubkey` prints";
    let cases = [
        ("", "(this is 0 bytes)"),
        ("abc", "(this is not base64)"),
        ("not base64!", "(this is not base64)"),
        // 31 and 33 bytes.
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
            "(this is 31 bytes)",
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "(this is 33 bytes)",
        ),
        // Whitespace, missing padding, URL-safe letters and stray low bits are not the
        // canonical form `wg` prints, so they are refused rather than read two ways.
        (
            " hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",
            "(this is not base64)",
        ),
        (
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n",
            "(this is not base64)",
        ),
        (
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
            "(this is not base64)",
        ),
        (
            "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=",
            "(this is not base64)",
        ),
        (
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=",
            "(this is not base64)",
        ),
    ];
    for (text, detail) in cases {
        let e = text.parse::<PublicKey>().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("public key `{text}`: {rule} {detail}"),
            "{text:?}"
        );
        assert!(e.is_user_error());
        let e = PublicKey::parse("--public-key", text).unwrap_err();
        assert!(e.to_string().starts_with("--public-key `"), "{e}");
    }
}

#[test]
fn a_long_refused_value_is_cut_in_the_message() {
    let pasted = "x".repeat(500);
    let e = pasted.parse::<PublicKey>().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("public key `{}...`: must be", "x".repeat(60))),
        "{e}"
    );
}

#[test]
fn serde_is_the_same_string_keys_were_stored_as() {
    let key: PublicKey = ALICE.parse().unwrap();
    let json = serde_json::to_string(&key).unwrap();
    assert_eq!(json, serde_json::to_string(ALICE).unwrap());
    assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);

    // In a record, byte for byte what a `String` field wrote.
    #[derive(Serialize)]
    struct Old<'a> {
        public_key: &'a str,
    }
    #[derive(Serialize, Deserialize)]
    struct New {
        public_key: PublicKey,
    }
    let old = serde_json::to_vec(&Old { public_key: ALICE }).unwrap();
    assert_eq!(serde_json::to_vec(&New { public_key: key }).unwrap(), old);
    assert_eq!(serde_json::from_slice::<New>(&old).unwrap().public_key, key);

    let e = serde_json::from_str::<New>(r#"{"public_key":"abc"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("public_key `abc`: must be 44 characters"),
        "{e}"
    );
}
