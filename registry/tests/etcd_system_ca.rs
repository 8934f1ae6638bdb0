//! TLS to etcd without `cacert`: the members' certificates are checked against the
//! system's trusted CAs, as etcdctl does. Here the system bundle is `SSL_CERT_FILE`, set to
//! the test CA; this file holds one test, so the variable reaches no other test.

mod common;

#[cfg(feature = "tls")]
#[test]
fn without_cacert_the_system_bundle_decides_whom_to_trust() {
    use common::pki::Pki;
    use common::{setup, Etcd};
    use registry::{Error, Revision};

    let pki = Pki::generate();
    std::env::set_var("SSL_CERT_FILE", pki.ca());
    let etcd = Etcd::single_tls(&pki);
    let port = etcd.client_port(0);
    let client = format!(
        "cert={}&key={}",
        pki.arg("client.pem"),
        pki.arg("client.key")
    );

    // A client certificate and no cacert is TLS, checked against the system bundle.
    let reg = registry::open(&format!("etcd://127.0.0.1:{port}/p?{client}")).unwrap();
    setup(&*reg);
    assert_eq!(reg.snapshot().unwrap().revision, Revision(2));
    // etcds:// says TLS without any file; this member also wants the client certificate.
    let reg = registry::open(&format!("etcds://127.0.0.1:{port}/p?{client}")).unwrap();
    assert_eq!(reg.snapshot().unwrap().revision, Revision(2));
    assert_eq!(reg.location(), format!("etcds://127.0.0.1:{port}/p"));

    // A system bundle without the members' CA: refused, and the message says which
    // bundle was asked and what to give instead.
    std::env::set_var("SSL_CERT_FILE", pki.other_ca());
    let reg = registry::open(&format!("etcds://127.0.0.1:{port}/p?{client}")).unwrap();
    let err = reg.snapshot().unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains(&format!(
            "the system's trusted CAs ({}) do not include",
            pki.other_ca().display()
        )),
        "{text}"
    );
    assert!(text.contains("give ?cacert=PATH"), "{text}");

    // A bundle that is not there is named as such before any connection.
    std::env::set_var("SSL_CERT_FILE", "/nonexistent/ca.pem");
    let err = registry::open(&format!("etcds://127.0.0.1:{port}/p"))
        .err()
        .expect("a missing bundle is refused");
    assert!(
        err.to_string().contains("system CA bundle") && err.to_string().contains("cannot read"),
        "{err}"
    );
}
