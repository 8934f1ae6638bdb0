//! etcd as it runs where people care who talks to it: behind TLS with client certificates
//! (a CA, server and client certificates made by `openssl` for each test), and with
//! authentication on, the registry's user holding a role on its prefix and nothing more.

mod common;

use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use common::pki::Pki;
use common::{machine, setup, Etcd};
use registry::{Error, Record, Revision};

/// How long a refused connection may take to say so.
const REFUSAL: Duration = Duration::from_secs(10);

/// Writes through `writer`, reads back through another handle, and checks that handle's
/// `wait_newer` sees a write made after it started waiting.
fn reads_writes_and_follows(url: &str) {
    let writer = registry::open(url).unwrap();
    setup(&*writer);
    let applied = writer.apply(&machine("web")).unwrap();
    let Some(Record::Machine(web)) = applied.record else {
        panic!("no machine in {applied:?}")
    };
    assert_eq!(applied.revision, Revision(3));

    let reader = registry::open(url).unwrap();
    let snap = reader.snapshot().unwrap();
    assert_eq!(snap.revision, Revision(3));
    assert!(snap.orgs.contains_key("acme"), "{snap:?}");
    assert!(snap.nodes.contains_key("host-a"), "{snap:?}");
    assert_eq!(snap.machines.get(&web.id).map(|m| m.addr), Some(web.addr));

    assert_eq!(
        reader
            .wait_newer(snap.revision, Duration::from_millis(300))
            .unwrap(),
        None,
        "nothing newer yet"
    );
    writer.apply(&machine("db")).unwrap();
    assert_eq!(
        reader
            .wait_newer(snap.revision, Duration::from_secs(10))
            .unwrap(),
        Some(Revision(4))
    );
}

/// The error of the first read through `url`, which must fail soon and as a storage error.
fn first_read_fails(url: &str) -> String {
    let reg = registry::open(url).unwrap();
    let started = Instant::now();
    let err = reg.snapshot().unwrap_err();
    assert!(started.elapsed() < REFUSAL, "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert!(!err.is_user_error(), "{err}");
    err.to_string()
}

#[cfg(feature = "tls")]
#[test]
fn tls_with_the_ca_and_a_client_certificate_reads_writes_and_follows() {
    let pki = Pki::generate();
    let etcd = Etcd::single_tls(&pki);
    let url = etcd.url();
    assert!(url.contains("?cacert="), "{url}");
    reads_writes_and_follows(&url);
    // The files are not part of where the registry is.
    assert!(!registry::open(&url).unwrap().location().contains('?'));
}

#[cfg(feature = "tls")]
#[test]
fn tls_etcd_refuses_plain_text_an_unknown_ca_and_a_missing_or_unknown_client_certificate() {
    let pki = Pki::generate();
    let etcd = Etcd::single_tls(&pki);
    let port = etcd.client_port(0);
    let at = |query: String| format!("etcd://127.0.0.1:{port}/p{query}");
    let client = format!(
        "cert={}&key={}",
        pki.arg("client.pem"),
        pki.arg("client.key")
    );

    let plain = first_read_fails(&at(String::new()));
    eprintln!("plain: {plain}");
    assert!(plain.contains("no etcd member answered"), "{plain}");
    assert!(
        plain.contains("may serve TLS only: give ?cacert="),
        "{plain}"
    );

    let no_ca = first_read_fails(&at(format!("?{client}")));
    eprintln!("no cacert: {no_ca}");
    assert!(no_ca.contains("UnknownIssuer"), "{no_ca}");
    // Without cacert the system's CAs were asked, and they do not know the test CA.
    assert!(no_ca.contains("the system's trusted CAs ("), "{no_ca}");
    assert!(no_ca.contains("give ?cacert=PATH"), "{no_ca}");

    let wrong_ca = first_read_fails(&at(format!("?cacert={}&{client}", pki.arg("other-ca.pem"))));
    eprintln!("wrong cacert: {wrong_ca}");
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    assert!(wrong_ca.contains("`cacert` must hold the CA"), "{wrong_ca}");

    let no_client_cert = first_read_fails(&at(format!("?cacert={}", pki.arg("ca.pem"))));
    eprintln!("no client cert: {no_client_cert}");
    assert!(
        no_client_cert.contains("may want a client certificate"),
        "{no_client_cert}"
    );

    let stranger = first_read_fails(&at(format!(
        "?cacert={}&cert={}&key={}",
        pki.arg("ca.pem"),
        pki.arg("stranger.pem"),
        pki.arg("stranger.key")
    )));
    eprintln!("client cert from another CA: {stranger}");
    assert!(
        stranger.contains("may not trust the client certificate"),
        "{stranger}"
    );

    // And the right files still get in, so the refusals above were about the files.
    let good = registry::open(&at(pki.client_query())).unwrap();
    assert_eq!(good.snapshot().unwrap().revision, Revision(0));
}

#[cfg(feature = "tls")]
#[test]
fn missing_or_unreadable_tls_files_are_named_with_their_path() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.pem").display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    let (ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client.key"),
    );
    let cases = [
        ("cacert", format!("cacert={missing}"), &missing),
        (
            "cert",
            format!("cacert={ca}&cert={missing}&key={key}"),
            &missing,
        ),
        (
            "key",
            format!("cacert={ca}&cert={cert}&key={missing}"),
            &missing,
        ),
        ("cacert", format!("cacert={garbage}"), &garbage),
        (
            "cert",
            format!("cacert={ca}&cert={garbage}&key={key}"),
            &garbage,
        ),
        // A certificate where the key should be.
        ("key", format!("cacert={ca}&cert={cert}&key={cert}"), &cert),
    ];
    for (field, query, path) in cases {
        // Port 1: nothing listens, and nothing may be tried before the files are read.
        let url = format!("etcd://127.0.0.1:1/p?{query}");
        let err = registry::open(&url).err().expect(&url);
        eprintln!("{err}");
        match &err {
            Error::Invalid {
                field: f, value, ..
            } => {
                assert_eq!(*f, field, "{url}: {err}");
                assert_eq!(value, path, "{url}: {err}");
            }
            other => panic!("{url}: expected an invalid-file error, got {other}"),
        }
        assert!(
            err.to_string().starts_with(&format!("{field} `{path}`: ")),
            "{err}"
        );
    }
}

#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_a_tls_url_is_refused_at_open() {
    let err = registry::open("etcd://u:secret@127.0.0.1:1/p?cacert=/etc/ca.pem")
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(err.is_user_error(), "{text}");
    assert!(text.contains("built without its `tls` feature"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

/// Turns authentication on: a root user (etcd wants one first) and a user `sixpn` whose
/// only role may read and write the keys under `prefix`.
fn enable_auth(etcd: &Etcd, prefix: &str, password: &str) {
    use etcd_client::{Client, Permission};
    let endpoint = format!("http://127.0.0.1:{}", etcd.client_port(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        c.user_add("root", "root-password", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("sixpn").await.unwrap();
        let keys = Permission::read_write(format!("{prefix}/")).with_prefix();
        c.role_grant_permission("sixpn", keys).await.unwrap();
        c.user_add("sixpn", password, None).await.unwrap();
        c.user_grant_role("sixpn", "sixpn").await.unwrap();
        c.auth_enable().await.unwrap();
    });
}

#[test]
fn a_user_with_a_role_on_the_prefix_reads_writes_and_follows() {
    let etcd = Etcd::single();
    let port = etcd.client_port(0);
    let prefix = common::unique_prefix();
    // Characters a URL must escape, to show the password arrives as it was set.
    enable_auth(&etcd, &prefix, "p@ss:w/rd");
    let url = format!("etcd://sixpn:p%40ss%3Aw%2Frd@127.0.0.1:{port}{prefix}");
    reads_writes_and_follows(&url);
    assert_eq!(
        registry::open(&url).unwrap().location(),
        format!("etcd://sixpn@127.0.0.1:{port}{prefix}")
    );
}

#[test]
fn a_wrong_password_no_credentials_or_another_prefix_are_refused_clearly() {
    let etcd = Etcd::single();
    let port = etcd.client_port(0);
    let prefix = common::unique_prefix();
    enable_auth(&etcd, &prefix, "right-password");

    let wrong = format!("etcd://sixpn:Wr0ngPassw0rd@127.0.0.1:{port}{prefix}");
    let reg = registry::open(&wrong).unwrap();
    assert!(
        !reg.location().contains("Wr0ngPassw0rd"),
        "{}",
        reg.location()
    );
    let text = first_read_fails(&wrong);
    eprintln!("wrong password: {text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("Wr0ngPassw0rd"), "{text}");
    let err = reg.apply(&machine("web")).unwrap_err();
    assert!(!err.to_string().contains("Wr0ngPassw0rd"), "{err}");

    let anonymous = first_read_fails(&format!("etcd://127.0.0.1:{port}{prefix}"));
    eprintln!("no credentials: {anonymous}");
    assert!(
        anonymous.contains("etcd has authentication on"),
        "{anonymous}"
    );

    let elsewhere = first_read_fails(&format!(
        "etcd://sixpn:right-password@127.0.0.1:{port}/elsewhere"
    ));
    eprintln!("outside the role: {elsewhere}");
    assert!(elsewhere.contains("permission denied"), "{elsewhere}");
    assert!(
        elsewhere.contains(
            "etcd user `sixpn` needs a role that may read and write the keys under `/elsewhere/`"
        ),
        "{elsewhere}"
    );

    let right = registry::open(&format!(
        "etcd://sixpn:right-password@127.0.0.1:{port}{prefix}"
    ))
    .unwrap();
    assert_eq!(right.snapshot().unwrap().revision, Revision(0));
}

#[test]
fn an_expired_auth_token_is_renewed_without_the_caller_seeing_it() {
    // Simple tokens that live 2 s instead of etcd's default 300.
    let etcd = Etcd::single_with(&["--auth-token", "simple", "--auth-token-ttl", "2"]);
    let port = etcd.client_port(0);
    let prefix = common::unique_prefix();
    enable_auth(&etcd, &prefix, "pw");
    let url = format!("etcd://sixpn:pw@127.0.0.1:{port}{prefix}");
    let writer = registry::open(&url).unwrap();
    setup(&*writer);
    let reader = registry::open(&url).unwrap();
    let seen = reader.snapshot().unwrap().revision;
    assert_eq!(seen, Revision(2));
    // The control, beside it: a client that logs in once and never renews.
    let control = {
        let prefix = prefix.clone();
        std::thread::spawn(move || stale_token_is_refused(port, &prefix))
    };

    // Both handles' tokens expire; every kind of call still goes through, the writer's
    // transactions, the reader's snapshot and its watch.
    std::thread::sleep(Duration::from_secs(5));
    writer.apply(&machine("web")).unwrap();
    assert_eq!(
        reader.wait_newer(seen, Duration::from_secs(10)).unwrap(),
        Some(Revision(3))
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(reader.snapshot().unwrap().revision, Revision(3));
    writer.apply(&machine("db")).unwrap();
    assert_eq!(writer.snapshot().unwrap().revision, Revision(4));
    // The control was refused after the same wait, so the tokens above really expired.
    assert!(
        control.join().unwrap(),
        "etcd's tokens did not expire: nothing above was tested"
    );
}

/// Whether a client that logs in once and never renews is refused 5 s later.
fn stale_token_is_refused(port: u16, prefix: &str) -> bool {
    use etcd_client::{Client, ConnectOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = ConnectOptions::new().with_user("sixpn", "pw");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut c = Client::connect([endpoint], Some(options)).await.unwrap();
        c.get(format!("{prefix}/"), None).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        match c.get(format!("{prefix}/"), None).await {
            Ok(_) => false,
            Err(e) => {
                eprintln!("stale token: {e}");
                e.to_string().contains("invalid auth token")
            }
        }
    })
}
