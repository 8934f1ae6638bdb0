use super::*;

fn peer(org: &str, name: &str, slot: u32, routes: &[&str]) -> Peer {
    Peer {
        org: org.into(),
        name: name.into(),
        gateway: "host-a".into(),
        region: "iad".into(),
        public_key: PublicKey::from_bytes([0; 32]),
        addr: OrgNetwork(7).slot_addr(0x0a7b_0003, slot),
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        created: 0,
        expires: None,
    }
}

fn with_peers(peers: Vec<Peer>) -> Snapshot {
    let mut s = Snapshot::default();
    for p in peers {
        s.put(Record::Peer(p));
    }
    s
}

#[test]
fn a_peering_is_stored_sorted_whichever_order_it_comes_in() {
    let mut s = Snapshot::default();
    let backwards = Peering {
        a: "globex".into(),
        b: "acme".into(),
    };
    assert_eq!(
        Record::Peering(backwards.clone()).key(),
        RecordKey::Peering {
            a: "acme".into(),
            b: "globex".into()
        }
    );
    assert_eq!(
        RecordKey::peering("globex", "acme"),
        RecordKey::peering("acme", "globex")
    );
    s.put(Record::Peering(backwards));
    assert_eq!(
        s.peerings.iter().cloned().collect::<Vec<_>>(),
        vec![("acme".to_string(), "globex".to_string())]
    );
    assert!(s.peered("acme", "globex") && s.peered("globex", "acme"));
    s.delete(&RecordKey::Peering {
        a: "globex".into(),
        b: "acme".into(),
    });
    assert!(s.peerings.is_empty());
    assert!(!s.peered("acme", "globex"));
}

#[test]
fn no_org_is_peered_with_itself() {
    let mut s = Snapshot::default();
    s.peerings.insert(("acme".into(), "acme".into()));
    assert!(!s.peered("acme", "acme"));
}

#[test]
fn peers_of_org_names_the_other_side_of_each_peering() {
    let mut s = Snapshot::default();
    for (a, b) in [("b", "z"), ("a", "b"), ("b", "c"), ("x", "y")] {
        s.put(Record::Peering(Peering::new(a, b)));
    }
    assert_eq!(s.peers_of_org("b"), vec!["a", "c", "z"]);
    assert_eq!(s.peers_of_org("y"), vec!["x"]);
    assert!(s.peers_of_org("q").is_empty());
}

#[test]
fn records_rebuild_the_snapshot_peerings_included() {
    let mut s = with_peers(vec![peer("acme", "site", 1, &["10.0.0.0/24"])]);
    s.put(Record::Org(Org {
        name: "acme".into(),
        network: OrgNetwork(7),
    }));
    s.put(Record::Peering(Peering::new("globex", "acme")));
    let records: Vec<Record> = s.records().collect();
    assert_eq!(
        records.last(),
        Some(&Record::Peering(Peering::new("acme", "globex")))
    );
    let mut again = Snapshot::default();
    for r in records {
        again.put(r);
    }
    assert_eq!(again, s);
}

#[test]
fn a_snapshot_written_before_peerings_reads_with_none() {
    let mut s = Snapshot::default();
    s.put(Record::Peering(Peering::new("acme", "globex")));
    let mut json = serde_json::to_value(&s).unwrap();
    assert!(json["peerings"].is_array());
    json.as_object_mut().unwrap().remove("peerings");
    let old: Snapshot = serde_json::from_value(json).unwrap();
    assert!(old.peerings.is_empty());
    let round: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(round, s);
}

#[test]
fn via_is_the_96_of_a_peer_with_ipv4_routes_only() {
    let site = peer("acme", "site", 7, &["192.168.1.0/24", "2001:db8::/48"]);
    assert_eq!(site.via().unwrap().to_string(), "fdaa:0:7:b1a:3:7::/96");
    assert_eq!(site.via(), crate::addr::via_prefix(site.addr));
    assert_eq!(peer("acme", "v6", 7, &["2001:db8::/48"]).via(), None);
    assert_eq!(peer("acme", "laptop", 7, &[]).via(), None);
    assert_eq!(
        peer("acme", "high", 0x1_0000, &["192.168.1.0/24"]).via(),
        None
    );
}

#[test]
fn site_prefixes_v6_are_the_orgs_live_ipv6_routes() {
    let mut expired = peer("acme", "old", 3, &["2001:db8:3::/48"]);
    expired.expires = Some(100);
    let mut later = peer("acme", "later", 4, &["2001:db8:4::/48"]);
    later.expires = Some(101);
    let s = with_peers(vec![
        peer("acme", "b", 1, &["2001:db8:2::/48", "10.0.0.0/8"]),
        peer("acme", "a", 2, &["2001:db8:1::/48"]),
        peer("globex", "c", 5, &["2001:db8:5::/48"]),
        expired,
        later,
    ]);
    let got: Vec<String> = s
        .site_prefixes_v6("acme", 100)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        got,
        ["2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:4::/48"]
    );
    assert!(s.site_prefixes_v6("initech", 100).is_empty());
}

#[test]
fn site_routes_and_site_peer_of_find_who_owns_a_site_address() {
    let s = with_peers(vec![
        peer("acme", "ams", 1, &["2001:db8:1::/48", "192.168.1.0/24"]),
        peer("globex", "nrt", 2, &["2001:db8:2::/48", "192.168.1.0/24"]),
        peer("acme", "laptop", 3, &[]),
    ]);
    let routes: Vec<(String, &str)> = s
        .site_routes()
        .map(|(r, p)| (r.to_string(), p.name.as_str()))
        .collect();
    assert_eq!(routes.len(), 4);
    assert!(routes.contains(&("192.168.1.0/24".into(), "ams")));
    assert!(routes.contains(&("192.168.1.0/24".into(), "nrt")));
    let owner = s.site_peer_of("2001:db8:2::9".parse().unwrap()).unwrap();
    assert_eq!((owner.org.as_str(), owner.name.as_str()), ("globex", "nrt"));
    assert_eq!(
        s.site_peer_of("2001:db8:1:ffff::1".parse().unwrap())
            .map(|p| p.org.as_str()),
        Some("acme")
    );
    assert!(s.site_peer_of("2001:db8:3::1".parse().unwrap()).is_none());
    // A mesh address is nobody's site.
    assert!(s
        .site_peer_of(s.peers[&("acme".to_string(), "ams".to_string())].addr)
        .is_none());
}

fn token(id: &str, org: &str) -> Token {
    Token {
        id: id.into(),
        org: org.into(),
        scope: TokenScope::Peer,
        secret_hash: "ab".repeat(32),
        created: 1,
        expires: None,
        max_uses: Some(2),
        uses: 0,
        region: None,
        name_prefix: None,
        revoked: None,
    }
}

#[test]
fn token_scopes_read_and_print_as_their_names() {
    for scope in [TokenScope::Peer, TokenScope::Admin] {
        assert_eq!(scope.as_str().parse::<TokenScope>().unwrap(), scope);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            format!("\"{}\"", scope.as_str())
        );
    }
    let err = "root".parse::<TokenScope>().unwrap_err().to_string();
    assert_eq!(err, "token scope `root`: use `peer` or `admin`");
}

#[test]
fn tokens_are_records_like_the_others() {
    let mut s = Snapshot::default();
    let t = token("tok00000000000000a1", "acme");
    s.put(Record::Token(t.clone()));
    assert_eq!(
        Record::Token(t.clone()).key(),
        RecordKey::Token { id: t.id.clone() }
    );
    assert_eq!(s.records().last(), Some(Record::Token(t.clone())));
    let mut again = Snapshot::default();
    for r in s.records() {
        again.put(r);
    }
    assert_eq!(again, s);
    assert!(!t.used_up() && !t.expired(1));
    s.delete(&RecordKey::Token { id: t.id });
    assert!(s.tokens.is_empty());
}

#[test]
fn a_snapshot_written_before_tokens_reads_with_none() {
    let mut s = Snapshot::default();
    s.put(Record::Token(token("tok00000000000000a1", "acme")));
    let mut json = serde_json::to_value(&s).unwrap();
    json.as_object_mut().unwrap().remove("tokens");
    let old: Snapshot = serde_json::from_value(json).unwrap();
    assert!(old.tokens.is_empty());
    let round: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(round, s);
}

#[test]
fn a_tokens_limits_and_expiry() {
    let mut t = token("tok00000000000000a1", "acme");
    t.uses = 2;
    assert!(t.used_up());
    t.max_uses = None;
    assert!(!t.used_up(), "no limit, never used up");
    t.expires = Some(100);
    assert!(!t.expired(99) && t.expired(100));
    assert_eq!(Token::make_id(0x3f9a_0c2b_7d1e_4a55), "tok3f9a0c2b7d1e4a55");
    assert_eq!(Token::make_id(1), "tok0000000000000001");
}

/// Acme peered with globex; initech apart. Each has an app, a machine, a laptop, a site and
/// a token; one node.
fn three_orgs() -> Snapshot {
    let mut s = Snapshot {
        revision: Revision(9),
        next_network: 4,
        ..Snapshot::default()
    };
    for (i, org) in ["acme", "globex", "initech"].into_iter().enumerate() {
        s.put(Record::Org(Org {
            name: org.into(),
            network: OrgNetwork(i as u32 + 1),
        }));
        s.put(Record::App(App {
            org: org.into(),
            name: "web".into(),
        }));
        s.put(Record::Machine(Machine {
            id: crate::MachineId::from_bits(i as u64),
            org: org.into(),
            app: "web".into(),
            region: "iad".into(),
            node: "host-a".into(),
            process_group: "app".into(),
            state: MachineState::Started,
            addr: OrgNetwork(i as u32 + 1).slot_addr(1, 1),
        }));
        s.put(Record::Peer(peer(org, "laptop", 2, &[])));
        s.put(Record::Peer(peer(
            org,
            "site",
            3,
            &[&format!("2001:db8:{i}::/48")],
        )));
        s.put(Record::Token(token(&format!("tok{i:016x}"), org)));
    }
    s.put(Record::Node(Node {
        name: "host-a".into(),
        region: "iad".into(),
        public_key: PublicKey::from_bytes([7; 32]),
        endpoint: "192.0.2.1:51820".parse().unwrap(),
        gateway: true,
        host: 1,
    }));
    s.put(Record::Peering(Peering::new("globex", "acme")));
    s.put(Record::Peering(Peering::new("globex", "initech")));
    s
}

#[test]
fn scoped_keeps_what_an_orgs_token_may_read_and_nothing_else() {
    let s = three_orgs();
    let acme = s.scoped("acme");
    assert_eq!((acme.revision, acme.next_network), (Revision(9), 4));
    assert_eq!(acme.nodes, s.nodes, "every node");
    let names = |it: Vec<&String>| it.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(names(acme.orgs.keys().collect()), ["acme", "globex"]);
    assert_eq!(
        acme.peerings.iter().cloned().collect::<Vec<_>>(),
        vec![("acme".to_string(), "globex".to_string())],
        "not globex's peering with initech"
    );
    assert!(acme.apps.values().all(|a| a.org == "acme") && acme.apps.len() == 1);
    assert!(acme.machines.values().all(|m| m.org == "acme") && acme.machines.len() == 1);
    let peers: Vec<(&str, &str)> = acme
        .peers
        .keys()
        .map(|(o, n)| (o.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        peers,
        [("acme", "laptop"), ("acme", "site"), ("globex", "site")],
        "its own peers and the peered org's sites only"
    );
    assert_eq!(names(acme.tokens.keys().collect()), ["tok0000000000000000"]);
    assert!(acme.tokens.values().all(|t| t.secret_hash.is_empty()));
    assert_eq!(
        acme.tokens["tok0000000000000000"],
        Token {
            secret_hash: String::new(),
            ..s.tokens["tok0000000000000000"].clone()
        }
    );
    assert!(
        !s.tokens["tok0000000000000000"].secret_hash.is_empty(),
        "the original keeps it"
    );

    // Globex sees both of its peers' sites; an unknown org sees only the nodes.
    let globex = s.scoped("globex");
    assert_eq!(
        names(globex.orgs.keys().collect()),
        ["acme", "globex", "initech"]
    );
    assert_eq!(globex.peers.len(), 4);
    let nobody = s.scoped("nope");
    assert_eq!(nobody.nodes, s.nodes);
    assert!(nobody.records().all(|r| matches!(r, Record::Node(_))));
}

/// `Record::from_json` reads what serde writes straight as the kind's struct, and anything
/// else serde's way: the same records either way, and the same refusals.
#[test]
fn records_read_from_json_as_serde_reads_them() {
    let s = three_orgs();
    let mut kinds = std::collections::BTreeSet::new();
    for record in s.records() {
        kinds.insert(format!("{:?}", record.kind()));
        let json = serde_json::to_vec(&record).unwrap();
        assert!(
            json.starts_with(br#"{"kind":""#),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(Record::from_json(&json).unwrap(), record);
        // The tag last, as a hand-written value may have it: serde's way, same record.
        let text = String::from_utf8(json).unwrap();
        let (tag, rest) = text[1..].split_once(',').unwrap();
        let tag_last = format!("{{{},{tag}}}", rest.strip_suffix('}').unwrap());
        assert!(tag_last.ends_with(&format!(",{tag}}}")), "{tag_last}");
        let tag_last = tag_last.into_bytes();
        assert_eq!(Record::from_json(&tag_last).unwrap(), record);
    }
    assert_eq!(kinds.len(), Kind::RECORDS.len(), "{kinds:?}");

    let org = br#"{"kind":"org","name":"acme","network":1}"#;
    let refused = [
        // A machine's tag on an org's fields.
        br#"{"kind":"machine","name":"acme","network":1}"#.to_vec(),
        br#"{"kind":"nothing","name":"acme","network":1}"#.to_vec(),
        br#"{"kind":"org","name":"acme","network":1,"kind":"machine"}"#.to_vec(),
        br#"{"kind":"org","name":"acme","network":1,"kind":"org"}"#.to_vec(),
        br#"{"kind":"org","name":"acme","network":1,"k\u0069nd":"org"}"#.to_vec(),
        br#"{"kind":"org""#.to_vec(),
        br#"{"kind":"org","name":"acme","network":1"#.to_vec(),
        br#"{"kind":"#.to_vec(),
        b"".to_vec(),
    ];
    assert!(Record::from_json(org).is_ok());
    // An escape after the tag is read serde's way, and means the same.
    let escaped = br#"{"kind":"org","name":"\u0061cme","network":1}"#;
    assert_eq!(
        Record::from_json(escaped).unwrap(),
        Record::from_json(org).unwrap()
    );
    for value in refused {
        let fast = Record::from_json(&value).map_err(|e| e.to_string());
        let serde = serde_json::from_slice::<Record>(&value).map_err(|e| e.to_string());
        assert!(fast.is_err(), "{}", String::from_utf8_lossy(&value));
        assert!(serde.is_err(), "{}", String::from_utf8_lossy(&value));
    }
}

/// A machine read borrowed is the machine `from_json` reads, and a value it refuses is refused
/// in the same words; values `from_json` reads serde's way are not read borrowed.
#[test]
fn machines_read_borrowed_as_from_json_reads_them() {
    let s = three_orgs();
    let mut read = 0;
    for record in s.records() {
        let json = serde_json::to_vec(&record).unwrap();
        match (&record, Record::machine_json(&json)) {
            (Record::Machine(m), Some(borrowed)) => {
                assert_eq!(&borrowed.unwrap().view().to_machine(), m);
                read += 1;
            }
            (Record::Machine(_), None) => panic!("{}", String::from_utf8_lossy(&json)),
            (_, got) => assert!(got.is_none(), "{}", String::from_utf8_lossy(&json)),
        }
    }
    assert!(read > 0);

    let good = r#"{"kind":"machine","id":"0123456789abcd","org":"acme","app":"web","region":"iad","node":"host-a","process_group":"app","state":"started","addr":"fdaa:0:1::2"}"#;
    let refused = [
        good.replace("0123456789abcd", "nope"),
        good.replace("started", "sleeping"),
        good.replace("fdaa:0:1::2", "fdaa::zz"),
        good.replace(r#""org":"acme","#, ""),
        good.replace(r#""acme""#, "7"),
        good.replace(r#""node":"host-a","#, r#""node":"host-a","node":"host-b","#),
        good[..good.len() - 1].to_string(),
    ];
    assert!(Record::machine_json(good.as_bytes()).unwrap().is_ok());
    for value in &refused {
        let borrowed = Record::machine_json(value.as_bytes())
            .expect("a machine's tag first")
            .map(|m| m.view().to_machine());
        let whole = Record::from_json(value.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(
            borrowed.map(Record::Machine).map_err(|e| e.to_string()),
            whole.clone(),
            "{value}"
        );
        assert!(whole.is_err(), "{value}");
    }
    // serde's way: the tag later, or an escape.
    let tag_last = good
        .replace(r#""kind":"machine","#, "")
        .replace('}', r#","kind":"machine"}"#);
    let escaped = good.replace("acme", r"\u0061cme");
    for value in [tag_last, escaped] {
        assert!(Record::machine_json(value.as_bytes()).is_none(), "{value}");
        assert!(Record::from_json(value.as_bytes()).is_ok(), "{value}");
    }
}
