//! Enrollment tokens: what makes one, and what a write made with one may do.

use super::*;
use crate::model::{Token, TokenScope};

const NOW: i64 = 1_700_000_000;
const ADMIN: &str = "tok00000000000000a1";
const PEER: &str = "tok00000000000000b2";
const GLOBEX: &str = "tok00000000000000c3";
/// The SHA-256 of each test token's secret, as the server would give it.
const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
const WRONG: &str = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";

/// `change` with some fields of its variant replaced.
macro_rules! set {
    ($change:expr, $variant:ident { $($field:ident: $value:expr),* $(,)? }) => {{
        let mut change = $change;
        let Change::$variant { $($field,)* .. } = &mut change else {
            unreachable!()
        };
        $(*$field = $value;)*
        change
    }};
}

fn create(id: &str, org: &str, scope: TokenScope) -> Change {
    Change::CreateToken {
        id: id.into(),
        org: org.into(),
        scope,
        secret_hash: HASH.into(),
        expires: None,
        max_uses: None,
        region: None,
        name_prefix: None,
    }
}

/// A peer token of acme with these limits.
fn peer_token(uses: Option<u32>, only: Option<&str>, prefix: Option<&str>) -> Change {
    // (Named apart from the fields: `set!` binds those names.)
    set!(
        create(PEER, "acme", TokenScope::Peer),
        CreateToken {
            max_uses: uses,
            region: only.map(Into::into),
            name_prefix: prefix.map(Into::into)
        }
    )
}

fn with(id: &str, change: Change) -> Change {
    Change::WithToken {
        id: id.into(),
        secret_hash: HASH.into(),
        change: Box::new(change),
    }
}

/// Acme with an admin token and host-a (iad, gateway), host-b (ams), host-c (ams, gateway);
/// globex with a token and a machine.
fn tokens_base() -> Snapshot {
    let mut s = base();
    apply(&mut s, node("host-c", "ams", &key(90).to_string(), true)).unwrap();
    apply(
        &mut s,
        Change::CreateOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    apply(&mut s, machine("globex", "db", "iad", "host-a")).unwrap();
    apply(&mut s, create(ADMIN, "acme", TokenScope::Admin)).unwrap();
    apply(&mut s, create(GLOBEX, "globex", TokenScope::Admin)).unwrap();
    s
}

fn peer(name: &str, i: u8) -> Change {
    Change::AddPeer {
        org: "acme".into(),
        name: name.into(),
        region: Some("iad".into()),
        gateway: None,
        public_key: key(i),
        routes: vec![],
        expires: None,
    }
}

fn remove_peer(org: &str, name: &str) -> Change {
    Change::RemovePeer {
        org: org.into(),
        name: name.into(),
    }
}

/// Plans `change` at `now`; the error, which must be a user error.
fn refusal_at(s: &Snapshot, change: &Change, now: i64) -> Error {
    let mut at = Fixed { next: 1, now };
    let err = plan(s, change, &mut at).expect_err("refused");
    assert!(err.is_user_error(), "{err}");
    err
}

fn refusal(s: &Snapshot, change: &Change) -> Error {
    refusal_at(s, change, NOW)
}

fn forbidden(s: &Snapshot, change: &Change) -> String {
    match refusal(s, change) {
        Error::Forbidden(m) => m,
        other => panic!("{change:?}: expected Forbidden, got {other:?}"),
    }
}

fn unauthorized_at(s: &Snapshot, change: &Change, now: i64) -> String {
    match refusal_at(s, change, now) {
        Error::Unauthorized(m) => m,
        other => panic!("{change:?}: expected Unauthorized, got {other:?}"),
    }
}

#[test]
fn a_new_token_keeps_the_hash_and_returns_without_it() {
    let mut s = tokens_base();
    let change = set!(
        peer_token(Some(3), Some("iad"), Some("ci-")),
        CreateToken {
            expires: Some(NOW + 3600)
        }
    );
    let made = apply(&mut s, change).unwrap();
    let want = Token {
        id: PEER.into(),
        org: "acme".into(),
        scope: TokenScope::Peer,
        secret_hash: HASH.into(),
        created: NOW,
        expires: Some(NOW + 3600),
        max_uses: Some(3),
        uses: 0,
        region: Some("iad".into()),
        name_prefix: Some("ci-".into()),
        revoked: None,
    };
    assert_eq!(s.tokens[PEER], want);
    assert_eq!(
        made,
        Some(Record::Token(Token {
            secret_hash: String::new(),
            ..want
        })),
        "a result may travel to an API client: no hash in it"
    );
}

#[test]
fn every_token_rule_names_its_field() {
    let s = tokens_base();
    let admin = || create(PEER, "acme", TokenScope::Admin);
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            create("tok123", "acme", TokenScope::Peer),
            "token id",
            "token id `tok123`: must be `tok` and 16 lowercase hex",
        ),
        (
            create("TOK00000000000000b2", "acme", TokenScope::Peer),
            "token id",
            "must be `tok` and 16",
        ),
        (
            create(PEER, "nope", TokenScope::Peer),
            "",
            "org `nope` does not exist",
        ),
        (
            create(ADMIN, "acme", TokenScope::Peer),
            "",
            "token `tok00000000000000a1` already exists",
        ),
        (
            set!(
                peer_token(None, None, None),
                CreateToken {
                    secret_hash: "hunter2".into()
                }
            ),
            "secret hash",
            "secret hash `7 characters`: must be 64 lowercase hex",
        ),
        (
            set!(
                peer_token(None, None, None),
                CreateToken {
                    secret_hash: HASH.to_uppercase()
                }
            ),
            "secret hash",
            "must be 64 lowercase hex",
        ),
        (
            set!(
                peer_token(None, None, None),
                CreateToken { expires: Some(NOW) }
            ),
            "expires",
            "expires `1700000000`: must be in the future (it is 2023-11-14 22:13:20 UTC now)",
        ),
        (
            peer_token(Some(0), None, None),
            "max uses",
            "max uses `0`: must be at least 1",
        ),
        (
            peer_token(None, Some("xyz"), None),
            "region",
            "region `xyz`: unknown region",
        ),
        (
            peer_token(None, None, Some("")),
            "name prefix",
            "name prefix ``: must not be empty",
        ),
        (
            peer_token(None, None, Some("-ci")),
            "name prefix",
            "name prefix `-ci`: must not start with '-'",
        ),
        (
            peer_token(None, None, Some("Ci_")),
            "name prefix",
            "name prefix `Ci_`: use a-z, 0-9 and '-'",
        ),
        (
            peer_token(None, None, Some(&"c".repeat(41))),
            "name prefix",
            "at most 40 characters",
        ),
        (
            set!(admin(), CreateToken { max_uses: Some(3) }),
            "max uses",
            "max uses `3`: only a peer token has this limit",
        ),
        (
            set!(
                admin(),
                CreateToken {
                    region: Some("iad".into())
                }
            ),
            "region",
            "region `iad`: only a peer token has this limit",
        ),
        (
            set!(
                admin(),
                CreateToken {
                    name_prefix: Some("ci-".into())
                }
            ),
            "name prefix",
            "name prefix `ci-`: only a peer token has this limit",
        ),
    ];
    for (change, field, want) in cases {
        let err = refusal(&s, &change);
        assert!(
            err.to_string().contains(want),
            "{change:?}: got `{err}`, want `{want}`"
        );
        if let Error::Invalid { field: got, .. } = &err {
            assert_eq!(*got, field, "{err}");
        }
        assert!(!err.to_string().contains(HASH), "{err}");
    }
    // The limits a peer token may have are fine on one.
    plan(
        &s,
        &peer_token(Some(1), Some("iad"), Some("ci-")),
        &mut ctx(),
    )
    .unwrap();
}

#[test]
fn revoking_marks_the_token_once_and_keeps_it() {
    let mut s = tokens_base();
    let mut later = Fixed {
        next: 1,
        now: NOW + 60,
    };
    let p = plan(&s, &Change::RevokeToken { id: ADMIN.into() }, &mut later).unwrap();
    p.apply_to(&mut s);
    assert_eq!(s.tokens[ADMIN].revoked, Some(NOW + 60));
    assert!(
        matches!(&p.result, Some(Record::Token(t)) if t.secret_hash.is_empty()),
        "{:?}",
        p.result
    );
    let again = refusal(&s, &Change::RevokeToken { id: ADMIN.into() });
    assert_eq!(
        again.to_string(),
        "token `tok00000000000000a1`: was already revoked at 2023-11-14 22:14:20 UTC"
    );
    let unknown = refusal(
        &s,
        &Change::RevokeToken {
            id: "tok0000000000000000".into(),
        },
    );
    assert!(
        matches!(
            unknown,
            Error::NotFound {
                kind: Kind::Token,
                ..
            }
        ),
        "{unknown}"
    );
    assert_eq!(
        unknown.to_string(),
        "token `tok0000000000000000` does not exist"
    );
}

#[test]
fn an_unknown_token_and_a_wrong_secret_get_the_same_answer() {
    let s = tokens_base();
    let wrong = Change::WithToken {
        id: ADMIN.into(),
        secret_hash: WRONG.into(),
        change: Box::new(peer("alice", 1)),
    };
    let unknown = Change::WithToken {
        id: "tok00000000000000ff".into(),
        secret_hash: HASH.into(),
        change: Box::new(peer("alice", 1)),
    };
    let a = unauthorized_at(&s, &wrong, NOW);
    let b =
        unauthorized_at(&s, &unknown, NOW).replace("tok00000000000000ff", "tok00000000000000a1");
    assert_eq!(a, b, "the two must not be told apart");
    assert!(a.starts_with("unknown token"), "{a}");
    assert!(!a.contains(WRONG) && !a.contains(HASH), "{a}");
    assert_eq!(refusal(&s, &wrong).http_status(), 401);
    // An emptied hash (as `scoped` hands tokens out) never matches an empty one.
    let mut emptied = s.clone();
    emptied.tokens.get_mut(ADMIN).unwrap().secret_hash.clear();
    assert!(check_token(&emptied, ADMIN, "", NOW).is_err());
    // A whole token pasted as the id is not repeated.
    let pasted = "sixpn1.eyJpZCI6InRvazAwMDAwMDAwMDAwMDAwYTEifQ";
    let err = check_token(&s, pasted, HASH, NOW).unwrap_err().to_string();
    assert!(!err.contains("eyJ"), "{err}");
}

#[test]
fn expired_and_revoked_tokens_are_refused_saying_when() {
    let mut s = tokens_base();
    apply(
        &mut s,
        set!(
            create(PEER, "acme", TokenScope::Admin),
            CreateToken {
                expires: Some(1_796_040_000)
            }
        ),
    )
    .unwrap();
    let change = with(PEER, peer("alice", 1));
    plan(
        &s,
        &change,
        &mut Fixed {
            next: 1,
            now: 1_796_039_999,
        },
    )
    .unwrap();
    assert_eq!(
        unauthorized_at(&s, &change, 1_796_040_000),
        "token tok00000000000000b2 expired at 2026-11-30 12:00:00 UTC"
    );
    assert!(check_token(&s, PEER, HASH, 1_796_040_000).is_err());

    apply(&mut s, Change::RevokeToken { id: PEER.into() }).unwrap();
    assert_eq!(
        unauthorized_at(&s, &change, NOW),
        "token tok00000000000000b2 was revoked at 2023-11-14 22:13:20 UTC"
    );
}

#[test]
fn a_peer_token_counts_each_peer_in_the_same_plan_until_used_up() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(Some(2), None, None)).unwrap();
    let first = plan(&s, &with(PEER, peer("ci-1", 1)), &mut ctx_for(&s)).unwrap();
    let used: Vec<u32> = first
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::Put(Record::Token(t)) => Some(t.uses),
            _ => None,
        })
        .collect();
    assert_eq!(used, vec![1], "one use, in the peer's own plan");
    assert!(first
        .writes
        .iter()
        .any(|w| matches!(w, Write::Put(Record::Peer(p)) if p.name == "ci-1")));
    assert!(matches!(&first.result, Some(Record::Peer(_))));
    first.apply_to(&mut s);
    assert_eq!(s.tokens[PEER].uses, 1);
    assert_eq!(s.tokens[PEER].secret_hash, HASH, "the use keeps the hash");

    // A refused peer is not counted: here, its key is ci-1's.
    let bad_key = set!(peer("ci-2", 2), AddPeer { public_key: key(1) });
    assert!(matches!(
        refusal(&s, &with(PEER, bad_key)),
        Error::Invalid {
            field: "public key",
            ..
        }
    ));
    let taken = refusal(&s, &with(PEER, peer("ci-1", 3)));
    assert!(matches!(taken, Error::Exists { .. }), "{taken}");
    assert_eq!(s.tokens[PEER].uses, 1);

    // Removing a peer gives no use back, and is not counted either.
    apply(&mut s, with(PEER, remove_peer("acme", "ci-1"))).unwrap();
    assert_eq!(s.tokens[PEER].uses, 1);
    apply(&mut s, with(PEER, peer("ci-2", 2))).unwrap();
    assert_eq!(s.tokens[PEER].uses, 2);
    let err = refusal(&s, &with(PEER, peer("ci-3", 3)));
    assert_eq!(
        err.to_string(),
        "token tok00000000000000b2 has been used 2 of 2 times"
    );
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    // Used up, it may still remove and read: only making peers is limited.
    apply(&mut s, with(PEER, remove_peer("acme", "ci-2"))).unwrap();
}

#[test]
fn a_peer_token_may_not_do_admin_work() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(None, None, None)).unwrap();
    let m = added_machine(apply(&mut s, machine("acme", "web", "iad", "host-a")).unwrap());
    let cases = [
        (machine("acme", "web", "iad", "host-a"), "add machines"),
        (Change::RemoveMachine { id: m.id }, "remove machines"),
        (
            Change::SetMachineState {
                id: m.id,
                state: MachineState::Stopped,
            },
            "start or stop machines",
        ),
        (
            create("tok00000000000000d4", "acme", TokenScope::Peer),
            "create tokens",
        ),
        (Change::RevokeToken { id: PEER.into() }, "revoke tokens"),
        (
            node("host-z", "iad", &key(91).to_string(), true),
            "add nodes",
        ),
        (peer_orgs("acme", "globex"), "peer orgs"),
        (
            Change::RemoveOrg {
                name: "acme".into(),
            },
            "remove orgs",
        ),
    ];
    for (change, what) in cases {
        let msg = forbidden(&s, &with(PEER, change));
        assert_eq!(
            msg,
            format!(
                "token tok00000000000000b2 may not {what}: a peer token may only create, list \
                 and remove peers"
            )
        );
    }
    assert_eq!(
        refusal(&s, &with(PEER, peer_orgs("acme", "globex"))).http_status(),
        403
    );
}

#[test]
fn a_token_works_only_on_its_own_org() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(None, None, None)).unwrap();
    let globex_peer = set!(
        peer("alice", 1),
        AddPeer {
            org: "globex".into()
        }
    );
    let want = "token tok00000000000000b2 is for org `acme`, not `globex`";
    assert_eq!(forbidden(&s, &with(PEER, globex_peer.clone())), want);
    assert_eq!(forbidden(&s, &with(PEER, remove_peer("globex", "x"))), want);
    let want = "token tok00000000000000a1 is for org `acme`, not `globex`";
    for change in [
        globex_peer,
        machine("globex", "web", "iad", "host-a"),
        remove_peer("globex", "x"),
        create("tok00000000000000d4", "globex", TokenScope::Admin),
    ] {
        assert_eq!(forbidden(&s, &with(ADMIN, change)), want);
    }
    // Another org's records named by id read as unknown: ids cannot be probed.
    let theirs = s.machines.values().find(|m| m.org == "globex").unwrap().id;
    for change in [
        Change::RemoveMachine { id: theirs },
        Change::MoveMachine {
            id: theirs,
            node: "host-a".into(),
        },
        Change::SetMachineState {
            id: theirs,
            state: MachineState::Stopped,
        },
    ] {
        let err = refusal(&s, &with(ADMIN, change));
        assert_eq!(
            err.to_string(),
            format!("machine `{theirs}` does not exist")
        );
    }
    let err = refusal(&s, &with(ADMIN, Change::RevokeToken { id: GLOBEX.into() }));
    assert_eq!(
        err.to_string(),
        "token `tok00000000000000c3` does not exist"
    );
    // None of that wrote anything: globex's token is as it was.
    assert_eq!(s.tokens[GLOBEX].revoked, None);
}

#[test]
fn a_region_token_pins_new_peers_to_its_region() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(None, Some("iad"), None)).unwrap();
    let anywhere = set!(peer("alice", 1), AddPeer { region: None });
    let p = added_peer(apply(&mut s, with(PEER, anywhere)).unwrap());
    assert_eq!((p.region.as_str(), p.gateway.as_str()), ("iad", "host-a"));

    let ams = set!(
        peer("bob", 2),
        AddPeer {
            region: Some("ams".into())
        }
    );
    assert_eq!(
        forbidden(&s, &with(PEER, ams)),
        "token tok00000000000000b2 only creates peers in region `iad`; this one asks for `ams`"
    );
    let via_ams = set!(
        peer("bob", 2),
        AddPeer {
            region: None,
            gateway: Some("host-c".into())
        }
    );
    assert_eq!(
        forbidden(&s, &with(PEER, via_ams)),
        "token tok00000000000000b2 only creates peers in region `iad`; gateway `host-c` is in `ams`"
    );
    // Asking for its own region through a gateway elsewhere is no way round it.
    let both = set!(
        peer("bob", 2),
        AddPeer {
            region: Some("iad".into()),
            gateway: Some("host-c".into())
        }
    );
    assert!(forbidden(&s, &with(PEER, both)).contains("gateway `host-c` is in `ams`"));
    let named = set!(
        peer("bob", 2),
        AddPeer {
            region: None,
            gateway: Some("host-a".into())
        }
    );
    apply(&mut s, with(PEER, named)).unwrap();

    // A peer outside its region is not its to remove; one inside is.
    let admin_made = set!(
        peer("carol", 3),
        AddPeer {
            region: Some("ams".into())
        }
    );
    apply(&mut s, with(ADMIN, admin_made)).unwrap();
    assert_eq!(
        forbidden(&s, &with(PEER, remove_peer("acme", "carol"))),
        "token tok00000000000000b2 only removes peers in region `iad`; `carol` is in `ams`"
    );
    apply(&mut s, with(PEER, remove_peer("acme", "alice"))).unwrap();
}

#[test]
fn a_name_prefix_token_makes_and_removes_only_its_names() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(None, None, Some("ci-"))).unwrap();
    assert_eq!(
        forbidden(&s, &with(PEER, peer("alice", 1))),
        "token tok00000000000000b2 only creates peers named `ci-…`, not `alice`"
    );
    apply(&mut s, with(PEER, peer("ci-7", 2))).unwrap();
    apply(&mut s, peer("alice", 1)).unwrap();
    assert_eq!(
        forbidden(&s, &with(PEER, remove_peer("acme", "alice"))),
        "token tok00000000000000b2 only removes peers named `ci-…`, not `alice`"
    );
    apply(&mut s, with(PEER, remove_peer("acme", "ci-7"))).unwrap();
    assert!(s.peers.contains_key(&("acme".into(), "alice".into())));
}

#[test]
fn an_admin_token_does_the_clis_work_for_its_org() {
    let mut s = tokens_base();
    let m =
        added_machine(apply(&mut s, with(ADMIN, machine("acme", "web", "iad", "host-a"))).unwrap());
    apply(
        &mut s,
        with(
            ADMIN,
            Change::SetMachineState {
                id: m.id,
                state: MachineState::Stopped,
            },
        ),
    )
    .unwrap();
    apply(
        &mut s,
        with(
            ADMIN,
            Change::MoveMachine {
                id: m.id,
                node: "host-b".into(),
            },
        ),
    )
    .unwrap();
    assert_eq!(s.machines[&m.id].node, "host-b");
    apply(&mut s, with(ADMIN, Change::RemoveMachine { id: m.id })).unwrap();
    let p = plan(&s, &with(ADMIN, peer("alice", 1)), &mut ctx_for(&s)).unwrap();
    assert!(
        !p.writes
            .iter()
            .any(|w| matches!(w, Write::Put(Record::Token(_)))),
        "an admin token counts no uses"
    );
    p.apply_to(&mut s);
    apply(&mut s, with(ADMIN, remove_peer("acme", "alice"))).unwrap();
    apply(&mut s, with(ADMIN, peer_token(Some(5), Some("iad"), None))).unwrap();
    apply(&mut s, with(ADMIN, Change::RevokeToken { id: PEER.into() })).unwrap();
    assert!(s.tokens[PEER].revoked.is_some());

    let Change::AddNode(spec) = node("host-a", "iad", KEY_A, true) else {
        unreachable!()
    };
    let refused = [
        (
            node("host-z", "iad", &key(91).to_string(), true),
            "add nodes",
        ),
        (Change::RegisterNode(spec), "register nodes"),
        (
            Change::RemoveNode {
                name: "host-b".into(),
            },
            "remove nodes",
        ),
        (peer_orgs("acme", "globex"), "peer orgs"),
        (unpeer_orgs("acme", "globex"), "unpeer orgs"),
        (Change::CreateOrg { name: "new".into() }, "create orgs"),
        (
            Change::RemoveOrg {
                name: "acme".into(),
            },
            "remove orgs",
        ),
    ];
    for (change, what) in refused {
        assert_eq!(
            forbidden(&s, &with(ADMIN, change)),
            format!(
                "token tok00000000000000a1 may not {what}: an admin token works only on its \
                 org's machines, peers and tokens"
            )
        );
    }
}

#[test]
fn a_token_inside_a_token_is_invalid() {
    let s = tokens_base();
    let nested = with(ADMIN, with(ADMIN, peer("alice", 1)));
    let err = refusal(&s, &nested);
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "change",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.http_status(), 400);
}

#[test]
fn removing_an_org_removes_its_tokens_in_the_same_write() {
    let mut s = tokens_base();
    apply(&mut s, peer_token(None, None, None)).unwrap();
    let globex_machine = s.machines.values().find(|m| m.org == "globex").unwrap().id;
    apply(&mut s, Change::RemoveMachine { id: globex_machine }).unwrap();
    let p = plan(
        &s,
        &Change::RemoveOrg {
            name: "globex".into(),
        },
        &mut ctx(),
    )
    .unwrap();
    assert!(p
        .writes
        .contains(&Write::Delete(RecordKey::Token { id: GLOBEX.into() })));
    p.apply_to(&mut s);
    assert!(!s.tokens.contains_key(GLOBEX));
    assert_eq!(s.tokens.len(), 2, "acme's stay");
    // A later org of the same name is not reachable with the old token.
    apply(
        &mut s,
        Change::CreateOrg {
            name: "globex".into(),
        },
    )
    .unwrap();
    let err = refusal(&s, &with(GLOBEX, machine("globex", "web", "iad", "host-a")));
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
}

#[test]
fn times_in_messages_are_utc_dates() {
    use crate::change::token::utc;
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    assert_eq!(utc(NOW), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
    assert_eq!(utc(1_796_040_000), "2026-11-30 12:00:00 UTC");
}
