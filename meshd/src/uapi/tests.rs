use super::*;
use crate::core::Options;

fn core() -> Core {
    Core::new(None, Options::default(), 1)
}

/// A request with no names to resolve, answered now.
fn handle(core: &mut Core, request: &str) -> (String, Effects) {
    handle_request(
        core,
        request,
        &Resolved::default(),
        Instant::now(),
        SystemTime::now(),
    )
}

#[test]
fn set_then_get_round_trips() {
    let mut c = core();
    let peer = hex(&[5u8; 32]);
    let req = format!(
        "set=1\nprivate_key={}\nlisten_port=5555\npublic_key={peer}\nendpoint=10.0.0.2:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=fdaa::/16\n\
             allowed_ip=10.9.0.0/24\n",
        hex(&[1u8; 32])
    );
    let (resp, fx) = handle(&mut c, &req);
    assert_eq!(resp, "errno=0\n\n");
    assert_eq!(fx.listen_port, Some(5555));
    c.listen_port = 5555;
    let (got, _) = handle(&mut c, "get=1\n");
    assert!(got.contains(&format!("public_key={peer}\n")), "{got}");
    assert!(got.contains("endpoint=10.0.0.2:51820\n"));
    assert!(got.contains("persistent_keepalive_interval=25\n"));
    assert!(got.contains("allowed_ip=fdaa::/16\nallowed_ip=10.9.0.0/24\n"));
    assert!(got.ends_with("errno=0\n\n"));
    assert!(got.starts_with(&format!(
        "private_key={}\nlisten_port=5555\n",
        hex(&[1u8; 32])
    )));
}

#[test]
fn modifying_and_removing_peers() {
    let mut c = core();
    let a = hex(&[5u8; 32]);
    let b = hex(&[6u8; 32]);
    handle(
            &mut c,
            &format!("set=1\npublic_key={a}\nallowed_ip=fdaa::1/128\npublic_key={b}\nallowed_ip=fdaa::2/128\n"),
        );
    assert_eq!(c.peers().len(), 2);
    let index = c.peer(&[5u8; 32]).unwrap().index;
    // Modify a in place: new endpoint, allowed IPs replaced.
    handle(
            &mut c,
            &format!("set=1\npublic_key={a}\nupdate_only=true\nendpoint=10.0.0.9:1\nreplace_allowed_ips=true\nallowed_ip=fdaa::9/128\n"),
        );
    let p = c.peer(&[5u8; 32]).unwrap();
    assert_eq!(p.index, index, "same peer, same session");
    assert_eq!(p.allowed_ips, vec!["fdaa::9/128".parse::<IpNet>().unwrap()]);
    // update_only for an unknown peer makes nothing.
    let z = hex(&[9u8; 32]);
    handle(
        &mut c,
        &format!("set=1\npublic_key={z}\nupdate_only=true\nendpoint=10.0.0.9:1\n"),
    );
    assert!(c.peer(&[9u8; 32]).is_none());
    handle(&mut c, &format!("set=1\npublic_key={b}\nremove=true\n"));
    assert_eq!(c.peers().len(), 1);
    // A prefix moves with its last owner.
    handle(
        &mut c,
        &format!("set=1\npublic_key={b}\nallowed_ip=fdaa::9/128\n"),
    );
    assert!(c.peer(&[5u8; 32]).unwrap().allowed_ips.is_empty());
    handle(&mut c, "set=1\nreplace_peers=true\n");
    assert!(c.peers().is_empty());
}

#[test]
fn endpoint_names_are_applied_only_as_resolved_beforehand() {
    let mut c = core();
    let a = hex(&[5u8; 32]);
    // `localhost` would resolve; the handler must not try: unresolved is EINVAL.
    let req = format!("set=1\npublic_key={a}\nendpoint=localhost:51820\n");
    assert_eq!(handle(&mut c, &req).0, "errno=22\n\n");
    let addr: SocketAddr = "10.0.0.7:51820".parse().unwrap();
    let resolved = Resolved(HashMap::from([("localhost:51820".to_string(), addr)]));
    let (resp, _) = handle_request(&mut c, &req, &resolved, Instant::now(), SystemTime::now());
    assert_eq!(resp, "errno=0\n\n");
    assert_eq!(c.peer(&[5u8; 32]).unwrap().endpoint, Some(addr.into()));
}

#[test]
fn names_in_a_set_are_resolved_and_addresses_left_alone() {
    let a = hex(&[5u8; 32]);
    let r = resolve_names(&format!(
        "set=1\npublic_key={a}\nendpoint=localhost:51820\nendpoint=10.0.0.1:1\n"
    ));
    let local = r.get("localhost:51820").expect("localhost resolves");
    assert!(local.ip().is_loopback() && local.port() == 51820, "{local}");
    assert_eq!(r.0.len(), 1, "{r:?}");
    // Only a `set` carries endpoints.
    assert_eq!(
        resolve_names("get=1\nendpoint=localhost:1\n"),
        Resolved::default()
    );
}

#[test]
fn bad_requests_get_an_errno() {
    let mut c = core();
    assert_eq!(handle(&mut c, "hello\n").0, "errno=71\n\n");
    assert_eq!(handle(&mut c, "set=1\nprivate_key=zz\n").0, "errno=22\n\n");
    assert_eq!(handle(&mut c, "set=1\nbogus=1\n").0, "errno=22\n\n");
    assert_eq!(handle(&mut c, "set=1\nnoequals\n").0, "errno=71\n\n");
    let a = hex(&[5u8; 32]);
    assert_eq!(
        handle(
            &mut c,
            &format!("set=1\npublic_key={a}\nallowed_ip=fdaa::/999\n")
        )
        .0,
        "errno=22\n\n"
    );
}
