use super::*;

fn args(list: &[&str]) -> RunArgs {
    let mut v = vec!["meshd"];
    v.extend_from_slice(list);
    Cli::try_parse_from(v).unwrap().run
}

#[test]
fn the_example_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/meshd.toml");
    match args(&["--config", path]).resolve().unwrap() {
        Mode::Mesh(m) => {
            assert_eq!(m.node, "iad-1");
            assert_eq!(m.listen_port, 51820);
            assert!(!m.gateway);
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn interface_alone_is_drop_in() {
    match args(&["wg7"]).resolve().unwrap() {
        Mode::DropIn(d) => {
            assert_eq!(d.interface, "wg7");
            assert!(!d.foreground);
        }
        m => panic!("{m:?}"),
    }
    match args(&["-f", "wg7"]).resolve().unwrap() {
        Mode::DropIn(d) => assert!(d.foreground),
        m => panic!("{m:?}"),
    }
}

#[test]
fn mesh_needs_node_region_endpoint_and_checks_them() {
    let base = ["--registry", "/tmp/r.db", "--node", "a1", "--region", "iad"];
    let e = args(&base).resolve().unwrap_err().to_string();
    assert!(e.starts_with("endpoint:"), "{e}");
    let mut bad = base.to_vec();
    bad.extend(["--endpoint", "nonsense"]);
    assert!(args(&bad)
        .resolve()
        .unwrap_err()
        .to_string()
        .starts_with("endpoint:"));
    let mut bad = base.to_vec();
    bad[3] = "Bad_Name";
    bad.extend(["--endpoint", "10.0.0.1:51820"]);
    assert!(args(&bad)
        .resolve()
        .unwrap_err()
        .to_string()
        .starts_with("node:"));
    let mut ok = base.to_vec();
    ok.extend(["--endpoint", "10.0.0.1:51999"]);
    match args(&ok).resolve().unwrap() {
        Mode::Mesh(m) => {
            assert_eq!(m.listen_port, 51999);
            assert_eq!(m.interface, "sixpn0");
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn debug_hides_the_registry_password() {
    let mode = args(&[
        "--registry",
        "etcd://user:s3cret@127.0.0.1:2379/x",
        "--node",
        "a1",
        "--region",
        "iad",
        "--endpoint",
        "10.0.0.1:51820",
    ])
    .resolve()
    .unwrap();
    let shown = format!("{mode:?}");
    assert!(
        shown.contains("etcd://user:***@127.0.0.1:2379/x"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn unknown_file_fields_are_refused() {
    let e = toml::from_str::<FileConfig>("nodee = \"x\"").unwrap_err();
    assert!(e.message().contains("nodee"), "{}", e.message());
    let f: FileConfig = toml::from_str("node = \"a\"\ngateway = true").unwrap();
    assert_eq!(f.gateway, Some(true));
}

#[test]
fn idle_evict_takes_units_and_refuses_the_rest() {
    assert_eq!(
        duration("idle_evict", "180s").unwrap(),
        Duration::from_secs(180)
    );
    assert_eq!(
        duration("idle_evict", "3m").unwrap(),
        Duration::from_secs(180)
    );
    assert_eq!(
        duration("idle_evict", "500ms").unwrap(),
        Duration::from_millis(500)
    );
    for bad in [
        "",
        "s",
        "10",
        "10x",
        "-1s",
        "0s",
        "50ms",
        "99999999999999999999h",
    ] {
        let e = duration("idle_evict", bad).unwrap_err().to_string();
        assert!(e.starts_with("idle_evict:"), "{bad}: {e}");
    }
    let base = [
        "--registry",
        "/tmp/r.db",
        "--node",
        "a1",
        "--region",
        "iad",
        "--endpoint",
        "10.0.0.1:51820",
        "--gateway",
    ];
    match args(&base).resolve().unwrap() {
        Mode::Mesh(m) => assert_eq!(m.idle_evict, DEFAULT_IDLE_EVICT),
        m => panic!("{m:?}"),
    }
    let mut v = base.to_vec();
    v.extend(["--idle-evict", "2s"]);
    match args(&v).resolve().unwrap() {
        Mode::Mesh(m) => assert_eq!(m.idle_evict, Duration::from_secs(2)),
        m => panic!("{m:?}"),
    }
}

#[test]
fn long_interface_names_are_refused() {
    assert!(check_interface("sixpn0").is_ok());
    assert!(check_interface("waytoolonginterface").is_err());
    assert!(check_interface("a/b").is_err());
}

#[test]
fn a_registry_copy_needs_a_directory_that_exists() {
    let base = [
        "--registry",
        "/tmp/r.db",
        "--node",
        "a1",
        "--region",
        "iad",
        "--endpoint",
        "10.0.0.1:51820",
    ];
    let with = |copy: &str| {
        let mut v = base.to_vec();
        v.extend(["--registry-copy", copy]);
        args(&v).resolve()
    };
    let e = with("/nonexistent-sixpn-dir/meshd.copy")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("registry_copy:") && e.contains("does not exist"),
        "{e}"
    );
    let e = with("/tmp").unwrap_err().to_string();
    assert!(
        e.starts_with("registry_copy:") && e.contains("directory"),
        "{e}"
    );
    match with("/tmp/meshd.copy").unwrap() {
        Mode::Mesh(m) => assert_eq!(m.registry_copy, Some(PathBuf::from("/tmp/meshd.copy"))),
        m => panic!("{m:?}"),
    }
}
