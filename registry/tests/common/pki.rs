//! A throwaway PKI made with the `openssl` command (apt package openssl): a CA, a server
//! certificate for 127.0.0.1 and a client certificate it signed, and a second CA with a
//! client certificate of its own (`stranger`). EC P-256 keys, valid for a day, in a temp dir
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn generate() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        pki.self_signed_ca("ca", "sixpn test CA");
        pki.self_signed_ca("other-ca", "a CA etcd does not know");
        pki.signed(
            "ca",
            "server",
            "etcd",
            // etcd 3.4 also presents its server certificate as a client (grpc-gateway).
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        pki.signed("ca", "client", "sixpn", "extendedKeyUsage=clientAuth\n");
        pki.signed(
            "other-ca",
            "stranger",
            "sixpn",
            "extendedKeyUsage=clientAuth\n",
        );
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A path as a URL query value; the temp dir's names need no escaping.
    pub fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// `?cacert=..&cert=..&key=..` for the client certificate and the right CA.
    pub fn client_query(&self) -> String {
        format!(
            "?cacert={}&cert={}&key={}",
            self.arg("ca.pem"),
            self.arg("client.pem"),
            self.arg("client.key")
        )
    }

    fn self_signed_ca(&self, name: &str, subject: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={subject}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// A key and a certificate signed by `ca`, with the extensions given.
    fn signed(&self, ca: &str, name: &str, common_name: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n{extensions}"
            ),
        )
        .expect("writing an extensions file");
        openssl(
            self.dir.path(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={common_name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running `openssl` (apt package openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
