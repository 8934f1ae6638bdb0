// `SIXPN_VERSION`: the crate version and the git revision it was built from, for a
// binary's `--version` (`0.1.0 (git 1a2b3c4d)`; the version alone outside a git checkout).
// Included by the build.rs of meshd, dnsd, wgtool and inproc (wgtool-tunnel), so that a new commit rebuilds only
// them, not the registry and everything on it.

fn main() {
    use std::process::Command;
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let full = match git(&["rev-parse", "--short=8", "HEAD"]) {
        Some(rev) if !rev.is_empty() => format!("{version} (git {rev})"),
        _ => version,
    };
    println!("cargo:rustc-env=SIXPN_VERSION={full}");
    // A new commit or checkout changes HEAD or what it points at.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build/version.rs");
}
