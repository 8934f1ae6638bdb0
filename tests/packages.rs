//! The Debian packages from `pkg/build-deb.sh`, made from the binaries already in
//! target/debug (no compile): what each holds and declares, their units under
//! `systemd-analyze verify`, dpkg installing them into a temporary root (never this
//! machine's /usr) with their maintainer scripts (through `DPKG_ROOT`) and purging them,
//! and the installed units' `ExecStart` lines run by hand the way systemd would run them
//! (`User=`, the capabilities, `Environment=`, `RuntimeDirectory=`) in a network namespace,
//! each then serving.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sixpn_tests::tempdir::Dir;
use sixpn_tests::{bin, sh, Netns, Proc};

const SECS15: Duration = Duration::from_secs(15);

/// Package, its binary and its unit.
const PACKAGES: [(&str, &str, &str); 3] = [
    ("sixpn-meshd", "meshd", "meshd.service"),
    ("sixpn-dnsd", "dnsd", "dnsd.service"),
    ("sixpn-wgtool", "wgtool", "wgtool-serve.service"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The three .deb files, built into a folder of their own.
struct Debs {
    dir: Dir,
    files: BTreeMap<&'static str, PathBuf>,
}

fn build_debs() -> Result<Debs> {
    for (_, b, _) in PACKAGES {
        bin(b); // asserts it was built, with the message saying how
    }
    let dir = Dir::new()?;
    let out = Command::new(repo().join("pkg/build-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--out"])
        .arg(dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "pkg/build-deb.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut files = BTreeMap::new();
    for (pkg, _, _) in PACKAGES {
        let file = printed
            .lines()
            .find(|l| l.contains(&format!("/{pkg}_")))
            .with_context(|| format!("build-deb.sh printed no {pkg}:\n{printed}"))?;
        ensure!(Path::new(file).is_file(), "{file} is not there");
        files.insert(pkg, PathBuf::from(file));
    }
    Ok(Debs { dir, files })
}

/// `Field: value` lines of a control file (continuation lines left out).
fn control_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn debs_hold_stripped_binaries_units_conffiles_and_docs_and_depend_on_real_packages() -> Result<()>
{
    let debs = build_debs()?;
    for (pkg, b, unit) in PACKAGES {
        let deb = debs.files[pkg].display().to_string();
        let fields = control_fields(&sh(&format!("dpkg-deb --field {deb}"))?);
        for field in [
            "Package",
            "Version",
            "Architecture",
            "Maintainer",
            "Installed-Size",
            "Depends",
            "Section",
            "Priority",
            "Description",
        ] {
            ensure!(fields.contains_key(field), "{pkg}: no {field} field");
        }
        ensure!(
            fields["Package"] == pkg,
            "{pkg}: Package {}",
            fields["Package"]
        );
        // Cargo's version, then `+git<commit date>.<rev>` when the binary names its commit.
        let version = &fields["Version"];
        let (cargo, git) = version.split_once("+git").unwrap_or((version, ""));
        ensure!(
            cargo == env!("CARGO_PKG_VERSION"),
            "{pkg}: version {version} is not the workspace's {}",
            env!("CARGO_PKG_VERSION")
        );
        let rev = match git.split_once('.') {
            None => {
                ensure!(git.is_empty(), "{pkg}: version {version}: no .rev");
                None
            }
            Some((date, rev)) => {
                ensure!(
                    date.len() == 14 && date.bytes().all(|c| c.is_ascii_digit()),
                    "{pkg}: {version}: the commit date is not YYYYMMDDhhmmss"
                );
                ensure!(
                    rev.len() == 8 && rev.bytes().all(|c| c.is_ascii_hexdigit()),
                    "{pkg}: {version}: no git revision"
                );
                Some(rev)
            }
        };
        ensure!(
            fields["Description"].len() <= 80,
            "{pkg}: synopsis over 80 characters"
        );
        // Every dependency is a package this (Debian) machine knows and has installed: the
        // names are real, and the tests' machine is one the packages install on.
        for dep in fields["Depends"].split(',') {
            let name = dep.split_whitespace().next().context("empty Depends")?;
            sh(&format!("dpkg-query -W {name}"))
                .with_context(|| format!("{pkg} depends on {name}, which is not installed"))?;
        }

        let listing = sh(&format!("dpkg-deb --contents {deb}"))?;
        let mut paths = Vec::new();
        for line in listing.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            ensure!(cols.len() >= 6, "{pkg}: odd listing line {line}");
            let (mode, owner, path) = (cols[0], cols[1], cols[5]);
            ensure!(owner == "root/root", "{pkg}: {path} is owned by {owner}");
            let path = path.trim_start_matches('.').to_string();
            let want = if mode.starts_with('d') || path.starts_with("/usr/bin/") {
                &mode[1..] == "rwxr-xr-x"
            } else {
                &mode[1..] == "rw-r--r--"
            };
            ensure!(want, "{pkg}: {path} has mode {mode}");
            ensure!(
                !path.starts_with("/usr/local"),
                "{pkg}: {path} in /usr/local"
            );
            paths.push(path);
        }
        let has = |p: &str| paths.iter().any(|x| x == p);
        for p in [
            format!("/usr/bin/{b}"),
            format!("/lib/systemd/system/{unit}"),
            format!("/usr/share/doc/{pkg}/copyright"),
            format!("/usr/share/doc/{pkg}/changelog.gz"),
        ] {
            ensure!(has(&p), "{pkg} has no {p}");
        }

        // Unpacked: conffiles, md5sums, scripts, the unit and the binary.
        let root = Dir::new()?;
        let r = root.path().display().to_string();
        sh(&format!("dpkg-deb --raw-extract {deb} {r}"))?;
        let conffiles =
            std::fs::read_to_string(root.path().join("DEBIAN/conffiles")).unwrap_or_default();
        let under_etc: Vec<&String> = paths
            .iter()
            .filter(|p| p.starts_with("/etc/") && !p.ends_with('/'))
            .collect();
        ensure!(
            under_etc.len() == conffiles.lines().count()
                && under_etc.iter().all(|p| conffiles.lines().any(|c| c == *p)),
            "{pkg}: files under /etc {under_etc:?} are not exactly the conffiles {conffiles:?}"
        );
        if b != "wgtool" {
            ensure!(
                conffiles.trim() == format!("/etc/sixpn/{b}.toml"),
                "{pkg}: conffiles {conffiles:?}"
            );
        }
        sh(&format!("cd {r} && md5sum --check --quiet DEBIAN/md5sums"))
            .with_context(|| format!("{pkg}: md5sums"))?;
        for script in ["postinst", "prerm", "postrm"] {
            sh(&format!("sh -n {r}/DEBIAN/{script}"))?;
            let text = std::fs::read_to_string(root.path().join("DEBIAN").join(script))?;
            ensure!(
                !text.contains('@'),
                "{pkg}: {script} has an unreplaced @PLACEHOLDER@"
            );
        }
        let unit_text = std::fs::read_to_string(root.path().join("lib/systemd/system").join(unit))?;
        let service = Unit::parse(&unit_text)?;
        ensure!(
            service.exec_start[0] == format!("/usr/bin/{b}"),
            "{pkg}: {unit} runs {}",
            service.exec_start[0]
        );
        ensure!(
            service.user.as_deref() == Some("sixpn"),
            "{pkg}: {unit} does not run as sixpn"
        );
        // wgtool's package also holds the in-process tunnel's binary, which wgtool execs.
        let binaries: &[&str] = if b == "wgtool" {
            &["wgtool", "wgtool-tunnel"]
        } else {
            &[b]
        };
        for exe in binaries {
            ensure!(
                has(&format!("/usr/bin/{exe}")),
                "{pkg} has no /usr/bin/{exe}"
            );
            let sections = sh(&format!("readelf -S --wide {r}/usr/bin/{exe}"))?;
            ensure!(
                !sections.contains(".debug_info"),
                "{pkg}: /usr/bin/{exe} is not stripped"
            );
            let says = sh(&format!("{r}/usr/bin/{exe} --version"))?;
            ensure!(
                says.starts_with(&format!("{exe} {cargo}")),
                "{pkg}: /usr/bin/{exe} --version says {says}"
            );
        }
        // The version names the commit the packaged binary says it was built from.
        let says = sh(&format!("{r}/usr/bin/{b} --version"))?;
        let want = match rev {
            Some(rev) => format!("{b} {cargo} (git {rev})"),
            None => format!("{b} {cargo}"),
        };
        ensure!(
            says.trim() == want,
            "{pkg} {version} holds a binary that says {says:?}"
        );
        let page = format!("/usr/share/man/man1/{b}.1.gz");
        ensure!(has(&page), "{pkg} has no {page}");
        let text = sh(&format!("zcat {r}{page}"))?;
        ensure!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{b}.1 is no man page"
        );
        if b == "wgtool" {
            for p in [
                "/usr/share/man/man1/wgtool-create.1.gz",
                "/usr/share/man/man1/wgtool-tunnel.1.gz",
                "/usr/share/bash-completion/completions/wgtool",
                "/usr/share/zsh/vendor-completions/_wgtool",
                "/usr/share/fish/vendor_completions.d/wgtool.fish",
            ] {
                ensure!(has(p), "{pkg} has no {p}");
            }
        }
    }
    drop(debs.dir);
    Ok(())
}

#[test]
fn packaged_units_pass_systemd_analyze_verify() -> Result<()> {
    if sh("command -v systemd-analyze").is_err() {
        eprintln!(
            "SKIPPED packaged_units_pass_systemd_analyze_verify: no systemd-analyze \
             (scripts/deps test installs systemd)"
        );
        return Ok(());
    }
    let debs = build_debs()?;
    let root = Dir::new()?;
    let r = root.path().display().to_string();
    for deb in debs.files.values() {
        sh(&format!("dpkg-deb --extract {} {r}", deb.display()))?;
    }
    // verify also checks that ExecStart's program exists: the copies it reads name the
    // program where it was unpacked; every other line is the packaged one.
    let check = Dir::new()?;
    for (pkg, _, unit) in PACKAGES {
        let text = std::fs::read_to_string(root.path().join("lib/systemd/system").join(unit))?;
        let rewritten = text.replace("ExecStart=/usr/bin/", &format!("ExecStart={r}/usr/bin/"));
        ensure!(
            rewritten != text,
            "{pkg}: {unit} has no ExecStart=/usr/bin/"
        );
        let copy = check.path().join(unit);
        std::fs::write(&copy, rewritten)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on unknown keys and bad values, printing them: any line fails.
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit} ({}):\n{stderr}",
            out.status
        );
    }
    Ok(())
}

/// The packages installed by dpkg into a temporary root with its own dpkg database, and
/// copies of this machine's account files, so the postinst's `useradd --prefix` makes the
/// sixpn user there.
struct Installed {
    root: Dir,
}

impl Installed {
    fn new(debs: &Debs) -> Result<Installed> {
        let root = Dir::new()?;
        let r = root.path();
        std::fs::create_dir_all(r.join("var/lib/dpkg/info"))?;
        std::fs::create_dir_all(r.join("var/lib/dpkg/updates"))?;
        std::fs::write(r.join("var/lib/dpkg/status"), "")?;
        std::fs::create_dir_all(r.join("etc"))?;
        for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
            let from = Path::new("/etc").join(f);
            if from.exists() {
                std::fs::copy(&from, r.join("etc").join(f))?;
            }
        }
        let installed = Installed { root };
        installed.dpkg(&format!(
            "-i {}",
            debs.files
                .values()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ))?;
        Ok(installed)
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// dpkg on the temporary root: maintainer scripts run unchrooted with DPKG_ROOT set;
    /// the libraries and tools the packages depend on are this machine's, not in the root.
    fn dpkg(&self, args: &str) -> Result<String> {
        sh(&format!(
            "dpkg --root={} --force-script-chrootless --force-not-root --force-depends {args} 2>&1",
            self.path().display()
        ))
    }

    /// uid and gid of a user in the root's passwd, if it is there.
    fn account(&self, name: &str) -> Result<Option<(u32, u32)>> {
        let passwd = std::fs::read_to_string(self.path().join("etc/passwd"))?;
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                return Ok(Some((f[2].parse()?, f[3].parse()?)));
            }
        }
        Ok(None)
    }

    fn status(&self, pkg: &str) -> Result<String> {
        let out = sh(&format!(
            "dpkg-query --admindir={}/var/lib/dpkg -W -f='${{db:Status-Status}}' {pkg} 2>/dev/null || true",
            self.path().display()
        ))?;
        Ok(out.trim().to_string())
    }
}

#[test]
fn dpkg_install_makes_the_sixpn_user_and_state_and_the_last_purge_removes_them() -> Result<()> {
    let debs = build_debs()?;
    let root = Installed::new(&debs)?;
    let r = root.path();
    for (pkg, b, unit) in PACKAGES {
        ensure!(root.status(pkg)? == "installed", "{pkg} is not installed");
        ensure!(r.join("usr/bin").join(b).is_file(), "no /usr/bin/{b}");
        ensure!(
            r.join("lib/systemd/system").join(unit).is_file(),
            "no {unit}"
        );
    }
    let (uid, gid) = root
        .account("sixpn")?
        .context("the postinst made no sixpn user")?;
    ensure!(
        uid != 0 && uid < 1000,
        "sixpn is uid {uid}, not a system user"
    );
    let passwd = std::fs::read_to_string(r.join("etc/passwd"))?;
    let line = passwd.lines().find(|l| l.starts_with("sixpn:")).unwrap();
    ensure!(
        line.ends_with(":/var/lib/sixpn:/usr/sbin/nologin"),
        "sixpn's home and shell: {line}"
    );
    let state = std::fs::metadata(r.join("var/lib/sixpn"))?;
    ensure!(
        (state.uid(), state.gid(), state.mode() & 0o7777) == (uid, gid, 0o750),
        "/var/lib/sixpn is {}:{} {:o}, not sixpn:sixpn 0750",
        state.uid(),
        state.gid(),
        state.mode() & 0o7777
    );
    let db = std::fs::metadata(r.join("var/lib/sixpn/registry.db"))?;
    ensure!(
        (db.uid(), db.mode() & 0o777) == (uid, 0o640),
        "registry.db is not sixpn's, 0640"
    );

    // Again (an upgrade to the same version): no second user, nothing changed.
    std::fs::write(r.join("var/lib/sixpn/registry.db"), "")?;
    root.dpkg(&format!("-i {}", debs.files["sixpn-meshd"].display()))?;
    let again = std::fs::read_to_string(r.join("etc/passwd"))?;
    ensure!(
        again.lines().filter(|l| l.starts_with("sixpn:")).count() == 1,
        "a second install made a second sixpn user"
    );
    ensure!(
        root.account("sixpn")? == Some((uid, gid)),
        "sixpn's ids changed"
    );

    // One purged: the others still run as sixpn there, so the user and the state stay.
    root.dpkg("--purge sixpn-dnsd")?;
    ensure!(
        matches!(root.status("sixpn-dnsd")?.as_str(), "" | "not-installed"),
        "dnsd not purged"
    );
    ensure!(!r.join("etc/sixpn/dnsd.toml").exists(), "dnsd.toml left");
    ensure!(root.account("sixpn")?.is_some(), "sixpn went with dnsd");
    ensure!(
        r.join("var/lib/sixpn/registry.db").exists(),
        "the registry went with dnsd"
    );

    // The last ones purged: the user, its group and the state go.
    root.dpkg("--purge sixpn-meshd sixpn-wgtool")?;
    ensure!(
        root.account("sixpn")?.is_none(),
        "sixpn is left after the last purge"
    );
    let group = std::fs::read_to_string(r.join("etc/group"))?;
    ensure!(
        !group.lines().any(|l| l.starts_with("sixpn:")),
        "the sixpn group is left"
    );
    ensure!(!r.join("var/lib/sixpn").exists(), "/var/lib/sixpn is left");
    ensure!(!r.join("usr/bin/meshd").exists(), "meshd is left");
    Ok(())
}

/// A unit's [Service] lines that say how to start it.
#[derive(Debug, Default)]
struct Unit {
    exec_start: Vec<String>,
    user: Option<String>,
    group: Option<String>,
    ambient: Vec<String>,
    bounding: Option<Vec<String>>,
    environment: Vec<String>,
    no_new_privileges: bool,
    runtime_directory: Option<String>,
}

impl Unit {
    fn parse(text: &str) -> Result<Unit> {
        let mut unit = Unit::default();
        let mut section = "";
        let joined = text.replace("\\\n", " ");
        for line in joined.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            let (key, value) = line.split_once('=').context("a line without =")?;
            let words = || value.split_whitespace().map(str::to_string).collect();
            match key {
                "ExecStart" => {
                    // What this parser does not do ("-/bin/x", quotes) must not pass unseen.
                    ensure!(
                        !value.contains(['"', '\'']) && !value.starts_with(['-', '@', '+', '!']),
                        "ExecStart {value:?}: quoting and prefixes are not handled here"
                    );
                    unit.exec_start = words();
                }
                "User" => unit.user = Some(value.to_string()),
                "Group" => unit.group = Some(value.to_string()),
                "AmbientCapabilities" => unit.ambient = words(),
                "CapabilityBoundingSet" => unit.bounding = Some(words()),
                "Environment" => unit.environment.extend(words()),
                "NoNewPrivileges" => unit.no_new_privileges = value == "yes",
                "RuntimeDirectory" => unit.runtime_directory = Some(value.to_string()),
                _ => {}
            }
        }
        ensure!(!unit.exec_start.is_empty(), "no ExecStart");
        Ok(unit)
    }

    /// A shell command that starts the unit in `ns` as systemd would, with every absolute
    /// path under `root`: a private mount namespace with a fresh `RuntimeDirectory=` owned by
    /// the user, then `setpriv` to the user (`ids`) with exactly the unit's capabilities,
    /// and a clean environment with the unit's `Environment=`.
    fn command(&self, root: &Path, ids: (u32, u32)) -> Result<Vec<String>> {
        let (uid, gid) = ids;
        let caps = |names: &[String]| -> String {
            let mut s = String::from("-all");
            for n in names {
                s.push_str(",+");
                s.push_str(&n.trim_start_matches("CAP_").to_lowercase());
            }
            s
        };
        let mut script = String::from("set -e\n");
        if let Some(dir) = &self.runtime_directory {
            script.push_str(&format!(
                "mkdir -p /run/{dir}\nmount -t tmpfs -o mode=0700,uid={uid},gid={gid} tmpfs /run/{dir}\n"
            ));
        }
        ensure!(self.user.is_some(), "the unit has no User=");
        script.push_str(&format!(
            "exec setpriv --reuid={uid} --regid={gid} --clear-groups --inh-caps={a} \
             --ambient-caps={a} --bounding-set={b}{nnp} -- env -i \
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            a = caps(&self.ambient),
            b = caps(self.bounding.as_deref().unwrap_or(&[])),
            nnp = if self.no_new_privileges {
                " --no-new-privs"
            } else {
                ""
            },
        ));
        for env in &self.environment {
            script.push(' ');
            script.push_str(env);
        }
        for arg in &self.exec_start {
            script.push(' ');
            if arg.starts_with('/') {
                script.push_str(&format!("{}{arg}", root.display()));
            } else {
                script.push_str(arg);
            }
        }
        Ok(vec!["-m".into(), "sh".into(), "-c".into(), script])
    }
}

/// Starts an installed unit's ExecStart in `ns`.
fn start_unit(ns: &Netns, root: &Installed, unit: &str) -> Result<(Unit, Proc)> {
    let text = std::fs::read_to_string(root.path().join("lib/systemd/system").join(unit))?;
    let parsed = Unit::parse(&text)?;
    let ids = root.account("sixpn")?.context("no sixpn user")?;
    ensure!(
        parsed.user.as_deref() == Some("sixpn") && parsed.group.as_deref() == Some("sixpn"),
        "{unit} does not run as sixpn:sixpn"
    );
    let args = parsed.command(root.path(), ids)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = ns.spawn("unshare", &args)?;
    Ok((parsed, proc))
}

/// The process's real, effective, saved and filesystem uid, and its effective and bounding
/// capability sets, from /proc.
fn credentials(pid: u32) -> Result<(Vec<u32>, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<&str> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let uids = field("Uid:")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()?;
    let eff = u64::from_str_radix(field("CapEff:")?, 16)?;
    let bnd = u64::from_str_radix(field("CapBnd:")?, 16)?;
    Ok((uids, eff, bnd))
}

const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;

/// Checks that `proc` runs as `uid` with exactly `caps` effective and bounding.
fn runs_as(proc: &Proc, what: &str, uid: u32, caps: u64) -> Result<()> {
    let (uids, eff, bnd) = credentials(proc.pid())?;
    ensure!(
        uids.iter().all(|u| *u == uid),
        "{what} runs as uids {uids:?}, not sixpn ({uid})"
    );
    ensure!(
        eff == caps && bnd == caps,
        "{what}: capabilities effective {eff:#x}, bounding {bnd:#x}, want {caps:#x}"
    );
    Ok(())
}

/// Polls `check` until it passes; fails when it has not within 15 s or `proc` exited.
fn wait_until(
    what: &str,
    proc: &mut Proc,
    mut check: impl FnMut() -> Result<String>,
) -> Result<String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(out) => return Ok(out),
            Err(e) if start.elapsed() > SECS15 || !proc.running() => {
                bail!("{what}: {e:#}\nits log:\n{}", proc.log())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn installed_units_started_by_their_exec_start_serve_as_the_sixpn_user() -> Result<()> {
    let debs = build_debs()?;
    let root = Installed::new(&debs)?;
    let r = root.path().to_path_buf();
    let (uid, _) = root.account("sixpn")?.context("no sixpn user")?;
    let ns = Netns::new("pk")?;
    // meshd's endpoint: an address of this namespace's own (no dummy module everywhere).
    ns.sh("ip addr add 192.0.2.1/32 dev lo")?;
    // dnsd forwards other names to resolv.conf's servers: one that goes nowhere.
    ns.set_resolv_conf("nameserver 192.0.2.53\n")?;

    // What an operator does after installing: this host's settings in the conffiles
    // (here also the root's paths), then the registry's org, with wgtool as root.
    let state = format!("{}/var/lib/sixpn", r.display());
    let edit = |file: &str, extra: &str| -> Result<()> {
        let path = r.join("etc/sixpn").join(file);
        let text = std::fs::read_to_string(&path)?.replace("/var/lib/sixpn", &state);
        std::fs::write(&path, format!("{text}{extra}"))?;
        Ok(())
    };
    edit(
        "meshd.toml",
        "node = \"h1\"\nregion = \"iad\"\nendpoint = \"192.0.2.1:51820\"\n",
    )?;
    edit("dnsd.toml", "default_org = \"acme\"\n")?;
    let wgtool = format!(
        "{}/usr/bin/wgtool --registry {state}/registry.db",
        r.display()
    );
    sh(&format!("{wgtool} org create acme"))?;

    // meshd: as sixpn with CAP_NET_ADMIN alone it makes its interface, registers its node
    // (a registry write) and answers on its UAPI socket in its RuntimeDirectory.
    let (_, mut meshd) = start_unit(&ns, &root, "meshd.service")?;
    let pid = meshd.pid();
    let uapi = wait_until("meshd's UAPI socket", &mut meshd, || {
        sh(&format!(
            "nsenter -t {pid} -m -n sh -c \"printf 'get=1\\n\\n' | socat -t2 - UNIX-CONNECT:/run/wireguard/sixpn0.sock\""
        ))
        .and_then(|out| {
            ensure!(out.contains("errno=0"), "no errno=0 in {out:?}");
            Ok(out)
        })
    })?;
    ensure!(
        uapi.contains("listen_port=51820") && uapi.contains("private_key="),
        "meshd's UAPI said:\n{uapi}"
    );
    runs_as(&meshd, "meshd", uid, CAP_NET_ADMIN)?;
    let sock = sh(&format!(
        "nsenter -t {} -m stat -c '%u %a' /run/wireguard/sixpn0.sock",
        meshd.pid()
    ))?;
    ensure!(sock.trim() == format!("{uid} 600"), "UAPI socket: {sock}");
    ns.sh("ip link show sixpn0 | grep -q ',UP'")
        .with_context(|| format!("sixpn0 is not up:\n{}", meshd.log()))?;
    let key = std::fs::metadata(r.join("var/lib/sixpn/meshd.key"))?;
    ensure!(
        key.uid() == uid && key.permissions().mode() & 0o777 == 0o600,
        "meshd.key is not sixpn's, 0600"
    );
    wait_until("meshd's node in the registry", &mut meshd, || {
        let nodes = sh(&format!("{wgtool} node list"))?;
        ensure!(nodes.contains("h1"), "no h1 in\n{nodes}");
        Ok(nodes)
    })?;
    let machine = sh(&format!(
        "{wgtool} machine add web --org acme --region iad --node h1"
    ))?;
    let addr = machine
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("machine add printed {machine:?}"))?
        .to_string();

    // dnsd: as sixpn with CAP_NET_BIND_SERVICE alone it binds port 53 and answers.
    let (_, mut dnsd) = start_unit(&ns, &root, "dnsd.service")?;
    let answer = wait_until("dnsd's answer", &mut dnsd, || {
        let out = ns.sh("dig +short +time=1 +tries=1 @::1 web.internal AAAA")?;
        ensure!(out.trim() == addr, "dig said {out:?}, want {addr}");
        Ok(out)
    })?;
    ensure!(answer.trim() == addr);
    runs_as(&dnsd, "dnsd", uid, CAP_NET_BIND_SERVICE)?;

    // wgtool serve: as sixpn with no capability it makes its certificate and serves.
    let (_, mut serve) = start_unit(&ns, &root, "wgtool-serve.service")?;
    serve.wait_log("with certificate sha256:", SECS15)?;
    let health = wait_until("wgtool serve's /healthz", &mut serve, || {
        ns.sh("curl -sk --max-time 2 https://[::1]:8443/healthz")
    })?;
    ensure!(health.contains("\"ok\":true"), "/healthz said {health}");
    runs_as(&serve, "wgtool serve", uid, 0)?;
    let api_key = std::fs::metadata(r.join("var/lib/sixpn/api/api.key"))?;
    ensure!(
        api_key.uid() == uid && api_key.permissions().mode() & 0o777 == 0o600,
        "api.key is not sixpn's, 0600"
    );

    // Root ran wgtool against the live registry: nothing in /var/lib/sixpn is left that
    // the daemons (sixpn) could not write.
    for entry in std::fs::read_dir(r.join("var/lib/sixpn"))? {
        let entry = entry?;
        ensure!(
            entry.metadata()?.uid() == uid,
            "{} is not owned by sixpn after root's wgtool",
            entry.path().display()
        );
    }
    for (proc, what) in [
        (&mut meshd, "meshd"),
        (&mut dnsd, "dnsd"),
        (&mut serve, "wgtool serve"),
    ] {
        ensure!(proc.running(), "{what} exited:\n{}", proc.log());
    }
    Ok(())
}
