//! Bad command lines and config files: one line on stderr naming the field and rule, exit 2.

use std::process::Command;

fn dnsd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsd"))
        .args(args)
        .output()
        .expect("run dnsd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr.trim_end()
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_field() {
    let (code, err) = dnsd(&["--region", "xyz", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(
        one_line(&err).starts_with("dnsd: region `xyz`: not a known region"),
        "{err}"
    );
    let (code, err) = dnsd(&["--listen", "nope"]);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("--listen"), "{err}");
    let (code, err) = dnsd(&["--default-org", "Bad_Org"]);
    assert_eq!(code, Some(2));
    assert!(
        one_line(&err).starts_with("dnsd: default_org `Bad_Org`: use a-z"),
        "{err}"
    );
    let (code, err) = dnsd(&["--upstream", "x.y"]);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("--upstream"), "{err}");
    let (code, err) = dnsd(&["--allow", "0.0.0.0/0", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    let line = one_line(&err);
    assert!(
        line.contains("--allow") && line.contains("open resolver"),
        "{err}"
    );
    let (code, err) = dnsd(&["--registry", "ftp://x", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("unknown scheme `ftp`"), "{err}");
}

#[test]
fn config_file_with_unknown_field_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dnsd.toml");
    std::fs::write(
        &path,
        "listen = [\"127.0.0.1:0\"]\nupstream = [\"1.1.1.1\"]\n",
    )
    .unwrap();
    let (code, err) = dnsd(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    let line = one_line(&err);
    assert!(
        line.contains("dnsd.toml") && line.contains("unknown field `upstream`"),
        "{err}"
    );
    let (code, err) = dnsd(&["--config", "/nonexistent/dnsd.toml"]);
    assert_eq!(code, Some(2));
    assert!(one_line(&err).contains("/nonexistent/dnsd.toml"), "{err}");
}

#[test]
fn help_comes_from_doc_comments() {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--default-org"), "{text}");
    assert!(
        text.contains("forwards every other name upstream"),
        "{text}"
    );
}
