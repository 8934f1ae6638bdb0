use super::*;
use crate::random_changes::Rng;

const ID: &str = "4d89699c030518";

#[test]
fn hex_round_trips_through_the_56_bits() {
    let id: MachineId = ID.parse().unwrap();
    assert_eq!(id.to_bits(), 0x004d_8969_9c03_0518);
    assert_eq!(id.to_string(), ID);
    assert_eq!(MachineId::try_from(ID).unwrap(), id);
    assert_eq!(MachineId::from_ascii(ID.as_bytes()), Some(id));
    assert_eq!(format!("{id:?}"), format!("MachineId({ID})"));
    assert_eq!(MachineId::from_bits(1).to_string(), "00000000000001");
    assert_eq!(MachineId::from_bits(u64::MAX).to_string(), "ffffffffffffff");
    assert_eq!(
        MachineId::from_bits(u64::MAX).to_bits(),
        0x00ff_ffff_ffff_ffff
    );
    // Padded as the string was, in tables.
    assert_eq!(format!("[{id:<16}]"), format!("[{ID}  ]"));
}

#[test]
fn from_bits_makes_what_the_old_generator_formatted() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..10_000 {
        let bits = rng.next();
        let old = format!("{:014x}", bits & 0x00ff_ffff_ffff_ffff);
        let id = MachineId::from_bits(bits);
        assert_eq!(id.to_string(), old);
        assert_eq!(old.parse::<MachineId>().unwrap(), id);
    }
}

#[test]
fn numeric_order_is_the_order_of_the_text() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // Small and shared prefixes too, where a wrong width or digit order would show.
    let mut ids: Vec<MachineId> = (0..5_000)
        .map(|i| match i % 4 {
            0 => MachineId::from_bits(rng.next() % 4096),
            1 => MachineId::from_bits(rng.next() | 0x00ff_ff00_0000_0000),
            _ => MachineId::from_bits(rng.next()),
        })
        .collect();
    let mut texts: Vec<String> = ids.iter().map(MachineId::to_string).collect();
    ids.sort_unstable();
    texts.sort_unstable();
    let sorted: Vec<String> = ids.iter().map(MachineId::to_string).collect();
    assert_eq!(sorted, texts);
}

#[test]
fn every_refusal_names_the_field_and_the_rule() {
    for bad in [
        "",
        "xyz",
        "4d89699c03051",
        "4d89699c030518a",
        "4D89699C030518",
        "zz89699c030518",
        " 4d89699c03051",
        "4d89699c03051\n",
        "+d89699c030518",
        "4d89699c03051é",
    ] {
        let e = bad.parse::<MachineId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("machine id `{bad}`: must be 14 lowercase hex characters"),
            "{bad:?}"
        );
        assert!(e.is_user_error());
        assert_eq!(MachineId::from_ascii(bad.as_bytes()), None, "{bad:?}");
        let e = MachineId::parse("id", bad).unwrap_err();
        assert!(e.to_string().starts_with("id `"), "{e}");
    }
}

#[test]
fn serde_is_the_same_string_ids_were_stored_as() {
    let id: MachineId = ID.parse().unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{ID}\""));
    assert_eq!(serde_json::from_str::<MachineId>(&json).unwrap(), id);

    // In a record and as a map's key, byte for byte what a `String` wrote.
    #[derive(Serialize)]
    struct Old<'a> {
        id: &'a str,
        by_id: std::collections::BTreeMap<&'a str, u8>,
    }
    #[derive(Serialize, Deserialize)]
    struct New {
        id: MachineId,
        by_id: std::collections::BTreeMap<MachineId, u8>,
    }
    let old = serde_json::to_vec(&Old {
        id: ID,
        by_id: [(ID, 1)].into(),
    })
    .unwrap();
    let new = New {
        id,
        by_id: [(id, 1)].into(),
    };
    assert_eq!(serde_json::to_vec(&new).unwrap(), old);
    let back = serde_json::from_slice::<New>(&old).unwrap();
    assert_eq!((back.id, back.by_id), (id, new.by_id));

    for bad in [
        r#"{"id":"xyz","by_id":{}}"#,
        r#"{"id":"4d89699c030518","by_id":{"XYZ":1}}"#,
    ] {
        let e = serde_json::from_str::<New>(bad).err().unwrap().to_string();
        assert!(
            e.contains("machine id `") && e.contains("`: must be 14 lowercase hex characters"),
            "{e}"
        );
    }
    let e = serde_json::from_str::<New>(r#"{"id":7,"by_id":{}}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected a machine id"), "{e}");
}

#[test]
fn sqlite_keeps_the_text_and_refuses_a_bad_one() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE m (id TEXT NOT NULL)")
        .unwrap();
    let id: MachineId = ID.parse().unwrap();
    conn.execute("INSERT INTO m VALUES (?1)", [id]).unwrap();
    let text: String = conn
        .query_row("SELECT id FROM m", [], |r| r.get(0))
        .unwrap();
    assert_eq!(text, ID);
    let typed: MachineId = conn
        .query_row("SELECT id FROM m", [], |r| r.get(0))
        .unwrap();
    assert_eq!(typed, id);
    let found: i64 = conn
        .query_row("SELECT COUNT(*) FROM m WHERE id = ?1", [ID], |r| r.get(0))
        .unwrap();
    assert_eq!(found, 1);

    conn.execute("UPDATE m SET id = 'xyz'", []).unwrap();
    let e = conn
        .query_row("SELECT id FROM m", [], |r| r.get::<_, MachineId>(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("machine id `xyz`: must be 14 lowercase hex characters"),
        "{e}"
    );
}
