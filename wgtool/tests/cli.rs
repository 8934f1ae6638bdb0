//! wgtool as a user runs it: the real binary against a real registry file.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

const WGTOOL: &str = env!("CARGO_BIN_EXE_wgtool");

struct Env {
    dir: tempfile::TempDir,
    db: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = dir
            .path()
            .join("registry.db")
            .to_string_lossy()
            .into_owned();
        Env { dir, db }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(WGTOOL)
            .arg("--registry")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::null())
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wgtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn snapshot(&self) -> registry::Snapshot {
        registry::open(&self.db).unwrap().snapshot().unwrap()
    }

    /// An org, a gateway in iad and a plain node in ams.
    fn populated() -> Env {
        let env = Env::new();
        env.ok(&["org", "create", "acme"]);
        env.ok(&[
            "node",
            "add",
            "gw1",
            "--region",
            "iad",
            "--endpoint",
            "192.0.2.1:51820",
            "--public-key",
            &pubkey(),
            "--gateway",
        ]);
        env.ok(&[
            "node",
            "add",
            "h2",
            "--region",
            "ams",
            "--endpoint",
            "192.0.2.2:51820",
            "--public-key",
            &pubkey(),
        ]);
        env
    }
}

fn pubkey() -> String {
    let private = Command::new(WGTOOL).arg("genkey").output().unwrap().stdout;
    let mut child = Command::new(WGTOOL)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&private).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn bad_input_exits_2_with_one_clear_line_and_writes_nothing() {
    let env = Env::populated();
    env.ok(&[
        "machine", "add", "web", "--org", "acme", "--region", "iad", "--node", "gw1",
    ]);
    env.ok(&["create", "acme", "iad", "alice", "alice.conf"]);
    let key = pubkey();
    let cases: &[(&[&str], &str)] = &[
        (
            &["org", "create", "Acme"],
            "org name `Acme`: use a-z, 0-9 and '-'",
        ),
        (&["org", "create", "acme"], "org `acme` already exists"),
        (&["org", "create", "-x"], "unexpected argument"),
        (
            &[
                "machine", "add", "web", "--org", "nope", "--region", "iad", "--node", "gw1",
            ],
            "org `nope` does not exist",
        ),
        (
            &[
                "machine", "add", "web", "--org", "acme", "--region", "zzz", "--node", "gw1",
            ],
            "region `zzz`: unknown region",
        ),
        (
            &[
                "machine", "add", "web", "--org", "acme", "--region", "iad", "--node", "nope",
            ],
            "node `nope` does not exist",
        ),
        (
            &[
                "machine", "add", "Web", "--org", "acme", "--region", "iad", "--node", "gw1",
            ],
            "app name `Web`",
        ),
        (
            &[
                "machine", "add", "global", "--org", "acme", "--region", "iad", "--node", "gw1",
            ],
            "app name `global`: is reserved",
        ),
        (
            &[
                "node",
                "add",
                "gw1",
                "--region",
                "iad",
                "--endpoint",
                "192.0.2.9:1",
                "--public-key",
                &key,
            ],
            "node `gw1` already exists",
        ),
        (
            &[
                "node",
                "add",
                "h3",
                "--region",
                "iad",
                "--endpoint",
                "192.0.2.9:1",
                "--public-key",
                "short",
            ],
            "public key `short`",
        ),
        (
            &[
                "node",
                "add",
                "h3",
                "--region",
                "iad",
                "--endpoint",
                "nohost",
                "--public-key",
                &key,
            ],
            "invalid value 'nohost' for '--endpoint",
        ),
        (&["node", "remove", "gw1"], "node `gw1` is still in use"),
        (
            &["machine", "stop", "00000000000000"],
            "machine `00000000000000` does not exist",
        ),
        (
            &["machine", "stop", "web-1"],
            "machine id `web-1`: must be 14 lowercase hex characters",
        ),
        (
            &["machine", "move", "4D89699C030518", "--node", "h2"],
            "machine id `4D89699C030518`: must be 14 lowercase hex characters",
        ),
        (
            &["create", "acme", "iad", "alice", "other.conf"],
            "peer `alice` already exists",
        ),
        (
            &["create", "acme", "ams", "bob", "bob.conf"],
            "region `ams`: has no gateway node",
        ),
        (
            &["create", "acme", "iad", "carol", "alice.conf"],
            "file `alice.conf`: already exists",
        ),
        (
            &["create", "acme", "iad", "carol", "nodir/carol.conf"],
            "folder `nodir` does not exist",
        ),
        (
            &["create", "acme"],
            "region: missing; give it as an argument",
        ),
        (
            &["remove", "acme", "nobody"],
            "peer `nobody` does not exist",
        ),
        (&["list", "nope"], "org `nope` does not exist"),
        (
            &[
                "create",
                "acme",
                "iad",
                "site",
                "site.conf",
                "--route",
                "0.0.0.0/0",
            ],
            "route `0.0.0.0/0`: a default route",
        ),
        (
            &[
                "create",
                "acme",
                "iad",
                "site",
                "site.conf",
                "--route",
                "100.127.1.0/24",
            ],
            "route `100.127.1.0/24`: overlaps 100.127.0.0/16",
        ),
        (
            &["config", "acme", "nobody", "--format", "networkd"],
            "peer `nobody` does not exist",
        ),
    ];
    let before = env.snapshot();
    for (args, want) in cases {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "wgtool {args:?} exit status; stderr: {err}"
        );
        assert!(
            err.contains(want),
            "wgtool {args:?}: stderr `{err}` lacks `{want}`"
        );
        if !want.contains("unexpected") && !want.contains("invalid value") {
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "one line for {args:?}: {err}"
            );
            assert!(out.stdout.is_empty(), "nothing on stdout for {args:?}");
        }
        assert_eq!(
            env.snapshot(),
            before,
            "wgtool {args:?} changed the registry"
        );
    }
    assert!(!env.dir.path().join("other.conf").exists());
    assert!(!env.dir.path().join("bob.conf").exists());
    assert!(!env.dir.path().join("site.conf").exists());
}

#[test]
fn unreadable_registry_is_a_clear_failure() {
    let out = Command::new(WGTOOL)
        .args(["--registry", "/nonexistent-sixpn/r.db", "org", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "wgtool: registry `/nonexistent-sixpn/r.db`: folder `/nonexistent-sixpn` does not exist\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let out = Command::new(WGTOOL)
        .arg("--registry")
        .arg(&junk)
        .args(["org", "create", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a database"));
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        vec![7u8; 8192],
        "a bad file is left as it was"
    );
}

#[test]
fn concurrent_processes_get_distinct_addresses() {
    let env = Env::populated();
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let db = env.db.clone();
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                for _ in 0..15 {
                    let (region, node) = if i % 2 == 0 {
                        ("iad", "gw1")
                    } else {
                        ("ams", "h2")
                    };
                    let out = Command::new(WGTOOL)
                        .args([
                            "--registry",
                            &db,
                            "machine",
                            "add",
                            "web",
                            "--org",
                            "acme",
                            "--region",
                            region,
                            "--node",
                            node,
                        ])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    lines.push(String::from_utf8(out.stdout).unwrap());
                }
                lines
            })
        })
        .collect();
    let mut addrs = HashSet::new();
    for w in workers {
        for line in w.join().unwrap() {
            let (_, addr) = line.trim().split_once(' ').unwrap();
            assert!(
                addrs.insert(addr.to_string()),
                "address {addr} handed out twice"
            );
        }
    }
    assert_eq!(addrs.len(), 90);
    assert_eq!(env.snapshot().machines.len(), 90);
}

#[test]
fn create_writes_a_private_tunnel_file_matching_the_registry() {
    let env = Env::populated();
    env.ok(&["create", "acme", "iad", "alice", "alice.conf"]);
    let path = env.dir.path().join("alice.conf");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let snap = env.snapshot();
    let peer = &snap.peers[&("acme".to_string(), "alice".to_string())];
    let gw = &snap.nodes["gw1"];
    let private = text
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap();
    let mut child = Command::new(WGTOOL)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let derived = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        derived.trim(),
        peer.public_key.to_string(),
        "only the public key is registered"
    );
    let want = format!(
        "[Interface]\nPrivateKey = {private}\nAddress = {}/128\nDNS = fdaa:0:1::3\n\n[Peer]\nPublicKey = {}\nAllowedIPs = fdaa:0:1::/48\nEndpoint = 192.0.2.1:51820\nPersistentKeepalive = 15\n",
        peer.addr, gw.public_key
    );
    assert_eq!(text, want);
    // `-` prints to stdout instead.
    let out = env.ok(&["create", "acme", "iad", "bob", "-"]);
    assert!(out.starts_with("[Interface]\nPrivateKey = "));
    let list = env.ok(&["list", "acme", "--json"]);
    let peers: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 2);
    env.ok(&["remove", "acme", "bob"]);
    assert_eq!(env.snapshot().peers.len(), 1);
}

#[test]
fn genkey_and_pubkey_agree_with_wg() {
    let private =
        String::from_utf8(Command::new(WGTOOL).arg("genkey").output().unwrap().stdout).unwrap();
    let ours = {
        let mut c = Command::new(WGTOOL)
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        c.wait_with_output().unwrap().stdout
    };
    let theirs = {
        let mut c = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("`wg` (wireguard-tools) is needed: scripts/test installs it");
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        c.wait_with_output().unwrap().stdout
    };
    assert_eq!(ours, theirs);
    let out = Command::new(WGTOOL)
        .arg("pubkey")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn app_list_counts_each_apps_machines_and_started_ones() {
    let env = Env::populated();
    let add = |app: &str| {
        let line = env.ok(&[
            "machine", "add", app, "--org", "acme", "--region", "iad", "--node", "gw1",
        ]);
        line.split_whitespace().next().unwrap().to_string()
    };
    let web = [add("web"), add("web"), add("web")];
    add("api");
    env.ok(&["machine", "stop", &web[1]]);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["app", "list", "--json"])).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"org": "acme", "name": "api", "machines": 1, "started": 1},
            {"org": "acme", "name": "web", "machines": 3, "started": 2},
        ])
    );
    let other: serde_json::Value =
        serde_json::from_str(&env.ok(&["app", "list", "--org", "nobody", "--json"])).unwrap();
    assert_eq!(other, serde_json::json!([]));
}

#[test]
fn machines_stop_start_move_and_free_their_address() {
    let env = Env::populated();
    let line = env.ok(&[
        "machine", "add", "web", "--org", "acme", "--region", "iad", "--node", "gw1",
    ]);
    let (id, addr) = line.trim().split_once(' ').unwrap();
    let key: registry::MachineId = id.parse().unwrap();
    env.ok(&["machine", "stop", id]);
    assert_eq!(
        env.snapshot().machines[&key].state,
        registry::MachineState::Stopped
    );
    env.ok(&["machine", "start", id]);
    env.ok(&["machine", "move", id, "--node", "h2"]);
    let m = &env.snapshot().machines[&key];
    assert_eq!(
        (m.node.as_str(), m.region.as_str(), m.addr.to_string()),
        ("h2", "ams", addr.to_string())
    );
    env.ok(&["machine", "remove", id]);
    let again = env.ok(&[
        "machine", "add", "api", "--org", "acme", "--region", "iad", "--node", "gw1",
    ]);
    assert!(
        again.trim().ends_with(addr),
        "the freed address is reused: {again}"
    );
}

#[test]
fn registry_copy_moves_everything_and_refuses_a_non_empty_target() {
    let env = Env::populated();
    let out = env.ok(&[
        "machine", "add", "web", "--org", "acme", "--region", "iad", "--node", "gw1",
    ]);
    env.ok(&["create", "acme", "iad", "alice", "alice.conf"]);
    let target = env.dir.path().join("copy.db");
    let target = target.to_str().unwrap();
    let said = env.ok(&["registry", "copy", &env.db, target]);
    assert!(said.starts_with("copied "), "{said}");

    let from = env.snapshot();
    let to = registry::open(target).unwrap().snapshot().unwrap();
    assert_eq!(
        from, to,
        "the copy holds the same records at the same revision"
    );
    let id: registry::MachineId = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(to.machines.contains_key(&id), "{out}");

    // Its status counts what the snapshot holds, at the same revision.
    let status = Command::new(WGTOOL)
        .args(["--registry", target, "registry", "status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (
            &status["revision"],
            &status["orgs"],
            &status["nodes"],
            &status["apps"],
            &status["machines"],
            &status["peers"]
        ),
        (
            &serde_json::json!(to.revision.0),
            &serde_json::json!(to.orgs.len()),
            &serde_json::json!(to.nodes.len()),
            &serde_json::json!(to.apps.len()),
            &serde_json::json!(to.machines.len()),
            &serde_json::json!(to.peers.len())
        ),
        "{status}"
    );

    // A second copy into the now non-empty target is refused, and changes nothing.
    let again = env.run(&["registry", "copy", &env.db, target]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("must be empty"), "{err}");
    assert_eq!(registry::open(target).unwrap().snapshot().unwrap(), to);
}

#[test]
fn orgs_peer_unpeer_and_list_their_peerings() {
    let env = Env::populated();
    env.ok(&["org", "create", "globex"]);
    env.ok(&["org", "create", "initech"]);
    assert_eq!(
        env.ok(&["org", "peer", "globex", "acme"]),
        "peered orgs globex and acme\n"
    );
    env.ok(&["org", "peer", "acme", "initech"]);
    assert!(env.snapshot().peered("acme", "globex"));
    let table = env.ok(&["org", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("PEERED WITH"), "{table}");
    assert!(
        lines[1].starts_with("acme ") && lines[1].ends_with(" globex,initech"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("globex ") && lines[2].ends_with(" acme"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["org", "list", "--json"])).unwrap();
    assert_eq!(
        json[0]["peered_with"],
        serde_json::json!(["globex", "initech"])
    );
    assert_eq!(json[1]["peered_with"], serde_json::json!(["acme"]));

    let before = env.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (
            &["org", "peer", "acme", "acme"],
            "org `acme`: cannot peer with itself",
        ),
        (
            &["org", "peer", "acme", "nope"],
            "org `nope` does not exist",
        ),
        (
            &["org", "peer", "acme", "globex"],
            "peering `acme <-> globex` already exists",
        ),
        (
            &["org", "unpeer", "globex", "initech"],
            "peering `globex <-> initech` does not exist",
        ),
        (
            &["org", "unpeer", "acme", "nope"],
            "org `nope` does not exist",
        ),
    ];
    for (args, want) in cases {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "wgtool {args:?}: {err}");
        assert!(
            err.contains(want),
            "wgtool {args:?}: `{err}` lacks `{want}`"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
        assert_eq!(
            env.snapshot(),
            before,
            "wgtool {args:?} changed the registry"
        );
    }

    env.ok(&["org", "unpeer", "acme", "globex"]);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["org", "list", "--json"])).unwrap();
    assert_eq!(json[0]["peered_with"], serde_json::json!(["initech"]));
    assert_eq!(json[1]["peered_with"], serde_json::json!([]));
    assert!(env
        .ok(&["org", "list"])
        .lines()
        .nth(2)
        .unwrap()
        .ends_with(" -"));
}

#[test]
fn a_registry_password_is_printed_nowhere() {
    let url = "etcd://user:s3cret@127.0.0.1:1/x";
    let help = Command::new(WGTOOL)
        .arg("--help")
        .env("SIXPN_REGISTRY", url)
        .output()
        .unwrap();
    let status = Command::new(WGTOOL)
        .args(["--registry", url, "registry", "status", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!status.status.success(), "nothing listens on port 1");
    for out in [help, status] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}

/// Reads a code printed by `--qr` (half blocks, light modules drawn, ANSI colours) back to
/// its text, as a phone's camera would.
fn decode_qr(printed: &str) -> String {
    let mut grid: Vec<Vec<bool>> = Vec::new();
    for line in printed.lines() {
        let line = line.replace("\x1b[97;40m", "").replace("\x1b[0m", "");
        let (mut upper, mut lower) = (Vec::new(), Vec::new());
        for c in line.chars() {
            let (u, l) = match c {
                '█' => (false, false),
                '▀' => (false, true),
                '▄' => (true, false),
                ' ' => (true, true),
                other => panic!("unexpected character {other:?} in the QR output"),
            };
            upper.push(u);
            lower.push(l);
        }
        grid.push(upper);
        grid.push(lower);
    }
    let scale = 4;
    let (w, h) = (grid[0].len() * scale, grid.len() * scale);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        if grid[y / scale][x / scale] {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one code in the output");
    grids[0].decode().unwrap().1
}

#[test]
fn create_qr_prints_a_code_of_the_tunnel_file_and_writes_a_file_only_when_named() {
    let env = Env::populated();
    let printed = env.ok(&["create", "acme", "iad", "phone", "phone.conf", "--qr"]);
    let file = std::fs::read_to_string(env.dir.path().join("phone.conf")).unwrap();
    assert_eq!(decode_qr(&printed), file);

    let before: Vec<_> = std::fs::read_dir(env.dir.path()).unwrap().collect();
    let printed = env.ok(&["create", "acme", "iad", "tablet", "--qr"]);
    let text = decode_qr(&printed);
    assert!(
        !printed.contains("PrivateKey"),
        "the file's text was printed too"
    );
    let after: Vec<_> = std::fs::read_dir(env.dir.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "--qr without a file wrote one");
    let peer = &env.snapshot().peers[&("acme".to_string(), "tablet".to_string())];
    assert!(
        text.contains(&format!("Address = {}/128", peer.addr)),
        "{text}"
    );
    assert!(text.contains("PrivateKey = "), "{text}");

    let out = env.run(&["create", "acme", "iad", "x", "--qr", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("qr"));
}

#[test]
fn version_completions_and_man_pages() {
    let env = Env::new();
    let version = env.ok(&["--version"]);
    assert!(version.starts_with("wgtool 0."), "{version}");
    // Built from a git checkout (as here and in CI): the revision is in it.
    assert!(version.contains("(git "), "{version}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = env.ok(&["completions", shell]);
        assert!(
            script.contains("wgtool") && script.contains("machine"),
            "{shell}: {script}"
        );
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));

    let man = env.dir.path().join("man");
    std::fs::create_dir(&man).unwrap();
    env.ok(&["man", man.to_str().unwrap()]);
    for page in [
        "wgtool.1",
        "wgtool-create.1",
        "wgtool-machine-add.1",
        "wgtool-token-create.1",
        "wgtool-tunnel.1",
    ] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let create = std::fs::read_to_string(man.join("wgtool-create.1")).unwrap();
    assert!(create.contains("expires"), "{create}");
    let tunnel = std::fs::read_to_string(man.join("wgtool-tunnel.1")).unwrap();
    assert!(tunnel.contains("wsproxy"), "{tunnel}");
    let out = env.run(&["man", "/nonexistent/man"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("man directory") && err.contains("existing folder"),
        "{err}"
    );
}
