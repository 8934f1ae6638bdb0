//! Enrollment through the API (`wgtool serve`): a laptop with no registry access joins with a
//! token, and every kind of bad token is refused with its message and nothing written.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sixpn_tests::meshd_harness::{Host, Mesh};
use sixpn_tests::site_harness::{logs, machine, peer_up, serve, wgtool};
use sixpn_tests::{bin, unique, Netns, Proc};

const SECS15: Duration = Duration::from_secs(15);

/// `wgtool serve` in `ns` on the mesh's registry; its URL and fingerprint.
struct Api {
    url: String,
    fingerprint: String,
    proc: Proc,
}

fn api(mesh: &Mesh, ns: &Netns, ip: &str) -> Result<Api> {
    api_with(mesh, ns, ip, &mesh.dir.path().join(unique("api")), false)
}

/// `wgtool serve` with its certificate in `state`; `blind`: in a private mount namespace
/// where `/var/run/wireguard` is empty, so that it sees no meshd on its host.
fn api_with(
    mesh: &Mesh,
    ns: &Netns,
    ip: &str,
    state: &std::path::Path,
    blind: bool,
) -> Result<Api> {
    let serve = format!(
        "{} --registry {} serve --listen [::]:8443 --state-dir {}",
        bin("wgtool").display(),
        mesh.location,
        state.display()
    );
    let script = if blind {
        format!(
            "mount --make-rprivate / && mount -t tmpfs tmpfs /var/run/wireguard && exec {serve}"
        )
    } else {
        format!("exec {serve}")
    };
    let wrapper = if blind { "unshare" } else { "sh" };
    let args: Vec<&str> = if blind {
        vec!["-m", "sh", "-c", &script]
    } else {
        vec!["-c", &script]
    };
    let proc = ns.spawn(wrapper, &args)?;
    let log = proc.wait_log("with certificate sha256:", SECS15)?;
    let fingerprint = log
        .split("with certificate sha256:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("fingerprint")?
        .to_string();
    let key = std::fs::metadata(state.join("api.key"))?;
    let _ = ip;
    use std::os::unix::fs::PermissionsExt;
    ensure!(
        key.permissions().mode() & 0o777 == 0o600,
        "api.key is not 0600"
    );
    Ok(Api {
        url: format!("https://{ip}:8443"),
        fingerprint,
        proc,
    })
}

/// Runs wgtool in `ns` with no registry it could use: the API or nothing.
fn wgtool_in(ns: &Netns, token: &str, args: &str) -> Result<std::process::Output> {
    ns.output(&format!(
        "SIXPN_REGISTRY=/nonexistent/registry.db SIXPN_TOKEN='{token}' {} {args}",
        bin("wgtool").display()
    ))
}

fn ok(out: std::process::Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "wgtool failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A token made by the operator on the registry (`wgtool token create`), for `api`.
fn token(mesh: &Mesh, api: &Api, args: &str) -> Result<String> {
    let out = wgtool(
        mesh,
        &format!(
            "token create {args} --server {} --server-fingerprint {}",
            api.url, api.fingerprint
        ),
    )?;
    Ok(out.trim().to_string())
}

fn gateway_and_web() -> Result<(Mesh, Host, Host, registry::Machine)> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    mesh.org("beta")?;
    let mut gw = mesh.host("gw", true)?;
    let mut b = mesh.host("b", false)?;
    mesh.start(&mut gw)?;
    mesh.start(&mut b)?;
    let web = machine(&mesh, "acme", &b)?;
    Ok((mesh, gw, b, web))
}

#[test]
fn a_laptop_without_the_registry_enrolls_with_a_token_and_fetches_web_internal() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web()?;
    let _web_srv = serve(&b.ns, 8080, "hello-from-web")?;
    let mut dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let api = api(&mesh, &gw.ns, &gw.ip)?;
    let token = token(
        &mesh,
        &api,
        "--org acme --uses 1 --region iad --name-prefix lap-",
    )?;
    ensure!(token.starts_with("sixpn1."), "token: {token}");

    // The laptop: its own namespace on the underlay, nothing but the token.
    let (lap_ns, _) = mesh.underlay.host("lp")?;
    let iface = unique("lw");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    let out = wgtool_in(
        &lap_ns,
        &token,
        &format!("create acme iad lap-alice {conf}"),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "create through the API failed: {stderr}\n{}",
        api.proc.log()
    );
    let text = std::fs::read_to_string(&conf)?;
    ensure!(
        text.contains("PrivateKey = "),
        "no private key in the file:\n{text}"
    );
    // The private key was made here: the registry holds only the public half.
    let snap = mesh.reg.snapshot()?;
    let peer = &snap.peers[&("acme".to_string(), "lap-alice".to_string())];
    ensure!(!text.contains(&format!("PrivateKey = {}", peer.public_key)));
    ensure!(
        snap.tokens.values().all(|t| t.uses == 1),
        "the use was not counted"
    );
    let dns = text
        .lines()
        .find_map(|l| l.strip_prefix("DNS = "))
        .context("DNS line")?
        .trim()
        .to_string();

    let lap = peer_up(lap_ns, &iface, &conf)?;
    lap.ns.set_resolv_conf(&format!("nameserver {dns}\n"))?;
    let got = lap
        .ns
        .wait_for("getent hosts web.internal", SECS15)
        .with_context(|| logs(&[&gw, &b]))?;
    ensure!(got.contains(&web.addr.to_string()), "web.internal: {got}");
    let page = lap
        .ns
        .wait_for(
            "curl -sS --http0.9 --max-time 3 http://web.internal:8080/",
            SECS15,
        )
        .with_context(|| logs(&[&gw, &b]))?;
    ensure!(page.trim() == "hello-from-web", "page: {page}");

    // The same list through the API as on the registry.
    let listed = ok(wgtool_in(&lap.ns, &token, "list acme")?)?;
    ensure!(listed.contains("lap-alice"), "list: {listed}");

    // Status, through the API: the gateway's meshd saw the handshake and the bytes.
    let shown = ok(wgtool_in(&lap.ns, &token, "status --json")?)?;
    let peers: serde_json::Value = serde_json::from_str(&shown)?;
    let me = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "lap-alice"))
        .with_context(|| format!("status lacks lap-alice: {shown}"))?;
    ensure!(me["gateway_seen"] == true, "status: {me}");
    ensure!(
        me["last_handshake"].as_i64().is_some(),
        "no handshake: {me}"
    );
    ensure!(
        me["rx_bytes"].as_u64() > Some(0) && me["tx_bytes"].as_u64() > Some(0),
        "bytes: {me}"
    );
    let table = ok(wgtool_in(&lap.ns, &token, "status")?)?;
    ensure!(table.contains(" s ago"), "status table: {table}");

    // Doctor passes on the working laptop, then names what broke.
    let doctor = |what: &str| -> Result<(bool, String)> {
        let out = lap
            .ns
            .output(&format!("{} doctor {conf}", bin("wgtool").display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "--- doctor ({what}):\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let (passed, text) = doctor("working")?;
    ensure!(
        passed && !text.contains('✗'),
        "doctor fails on a working laptop:\n{text}"
    );
    ensure!(
        text.matches('✓').count() == 7,
        "doctor ran other checks:\n{text}"
    );
    // And on the gateway host itself.
    let out = host_doctor(&gw.ns, &mesh.location)?;
    let host_text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && host_text.contains("node gw listens on UDP"),
        "doctor --host on the gateway:\n{host_text}"
    );
    dnsd.kill();
    let (passed, text) = doctor("dnsd stopped")?;
    ensure!(!passed, "doctor passed with dnsd stopped");
    ensure!(
        failed_checks(&text) == ["org DNS", "system resolver"],
        "with dnsd stopped:\n{text}"
    );
    let mut gw = gw;
    gw.meshd.as_mut().context("gw meshd")?.kill();
    let (passed, text) = doctor("meshd stopped")?;
    ensure!(!passed, "doctor passed with meshd stopped");
    let out = host_doctor(&gw.ns, &mesh.location)?;
    let host_text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        !out.status.success() && host_text.contains("✗ meshd's UDP port"),
        "doctor --host with the gateway's meshd stopped:\n{host_text}"
    );
    ensure!(
        failed_checks(&text).first() == Some(&"gateway endpoint"),
        "with the gateway's meshd stopped:\n{text}"
    );
    Ok(())
}

/// `wgtool doctor --host` in `ns`.
fn host_doctor(ns: &Netns, location: &str) -> Result<std::process::Output> {
    ns.output(&format!(
        "{} --registry {location} doctor --host",
        bin("wgtool").display()
    ))
}

/// The checks a doctor report marks ✗, by the start of their line.
fn failed_checks(report: &str) -> Vec<&'static str> {
    const CHECKS: [&str; 7] = [
        "interface",
        "its address",
        "route",
        "latest handshake",
        "gateway endpoint",
        "org DNS",
        "system resolver",
    ];
    report
        .lines()
        .filter_map(|l| l.strip_prefix("✗ "))
        .filter_map(|l| CHECKS.iter().find(|c| l.starts_with(**c)).copied())
        .collect()
}

#[test]
fn an_expired_peer_is_refused_at_its_gateway_pruned_and_its_address_reused() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web()?;
    let api = api(&mesh, &gw.ns, &gw.ip)?;
    let token = token(&mesh, &api, "--org acme")?;
    let (lap_ns, _) = mesh.underlay.host("lp")?;
    let iface = unique("lw");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    ok(wgtool_in(
        &lap_ns,
        &token,
        &format!("create acme iad brief {conf} --expires-in 8s"),
    )?)?;
    let made = std::time::Instant::now();
    let lap = peer_up(lap_ns, &iface, &conf)?;
    let addr = lap.addr;
    let ping = format!("ping -6 -c1 -W1 -I {addr} {}", web.addr);
    lap.ns
        .wait_for(&ping, Duration::from_secs(6))
        .with_context(|| logs(&[&gw, &b]))?;
    ensure!(
        made.elapsed() < Duration::from_secs(8),
        "too slow to test before expiry"
    );
    // After the expiry, the gateway drops the peer within its 5 s re-check.
    let dropped = lap
        .ns
        .wait_for(&format!("! {ping}"), Duration::from_secs(25));
    dropped.with_context(|| logs(&[&gw, &b]))?;
    ensure!(
        made.elapsed() >= Duration::from_secs(8),
        "dropped before it expired"
    );
    let shown = gw.ns.sh(&format!("wg show {} peers | wc -l", gw.iface))?;
    ensure!(
        shown.trim() == "1",
        "the gateway still lists the expired peer ({shown} peers)"
    );

    // Prune: a dry run removes nothing, then the real one.
    let dry = ok(wgtool_in(&lap.ns, &token, "prune --expired --dry-run")?)?;
    ensure!(dry.contains("would remove peer brief"), "dry run: {dry}");
    ensure!(mesh.reg.snapshot()?.peers.len() == 1);
    let pruned = ok(wgtool_in(&lap.ns, &token, "prune --expired")?)?;
    ensure!(
        pruned.contains("removed peer brief of org acme (expired"),
        "prune: {pruned}"
    );
    ensure!(mesh.reg.snapshot()?.peers.is_empty());
    // The next peer gets the address back.
    let next = ok(wgtool_in(
        &lap.ns,
        &token,
        "create acme iad next --format json",
    )?)?;
    let next: serde_json::Value = serde_json::from_str(&next)?;
    ensure!(
        next.to_string().contains(&addr.to_string()),
        "the next peer did not get {addr}: {next}"
    );
    Ok(())
}

#[test]
fn bad_tokens_are_refused_with_their_reason_and_nothing_is_written() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    mesh.org("beta")?;
    let mut gw = mesh.host("gw", true)?;
    mesh.start(&mut gw)?;
    let api = api(&mesh, &gw.ns, "127.0.0.1")?;
    let ns = &gw.ns;

    let expiring = token(&mesh, &api, "--org acme --expires-in 1s")?;
    let once = token(&mesh, &api, "--org acme --uses 1")?;
    let revoked = token(&mesh, &api, "--org acme")?;
    let peer = token(&mesh, &api, "--org acme --region iad --name-prefix ci-")?;
    let admin = token(&mesh, &api, "--org acme --scope admin")?;
    let listed = wgtool(&mesh, "token list --json")?;
    let ids: Vec<String> = serde_json_ids(&listed);
    ensure!(ids.len() == 5, "token list: {listed}");
    ensure!(
        !listed.contains("secret"),
        "token list shows secrets: {listed}"
    );
    let revoked_id = ids
        .iter()
        .find(|id| decode_id(&revoked) == **id)
        .cloned()
        .context("revoked id")?;
    wgtool(&mesh, &format!("token revoke {revoked_id}"))?;
    ok(wgtool_in(ns, &once, "create acme iad one --format json")?)?;
    std::thread::sleep(Duration::from_millis(1100));

    let before = mesh.reg.snapshot()?;
    let tampered = {
        let mut t = peer.clone();
        let last = t.pop().context("empty token")?;
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "expired",
            expiring.clone(),
            "create acme iad x1".into(),
            "expired",
        ),
        (
            "used up",
            once.clone(),
            "create acme iad x2".into(),
            "used 1 of 1",
        ),
        (
            "revoked",
            revoked.clone(),
            "create acme iad x3".into(),
            "revoked",
        ),
        (
            "wrong org",
            peer.clone(),
            "create beta iad ci-x4".into(),
            "not `beta`",
        ),
        (
            "admin work",
            peer.clone(),
            "machine add web --org acme --region iad --node gw".into(),
            "peer token",
        ),
        (
            "name prefix",
            peer.clone(),
            "create acme iad x5".into(),
            "ci-",
        ),
        (
            "admin, other org",
            admin.clone(),
            "machine add web --org beta --region iad --node gw".into(),
            "not `beta`",
        ),
        (
            "admin, nodes",
            admin.clone(),
            "node remove gw".into(),
            "node",
        ),
        ("tampered", tampered, "list acme".into(), "token"),
        (
            "wrong fingerprint",
            peer.clone(),
            format!("--api-fingerprint {} list acme", "00".repeat(32)),
            "fingerprint",
        ),
    ];
    for (what, tok, args, want) in cases {
        let out = wgtool_in(ns, &tok, &args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{what}: accepted: {stderr}");
        ensure!(
            stderr.contains(want),
            "{what}: message lacks `{want}`: {stderr}"
        );
        ensure!(!stderr.contains(&tok), "{what}: the token was printed");
    }
    let after = mesh.reg.snapshot()?;
    ensure!(after == before, "a refused request changed the registry");
    // The admin token does its org's work.
    ok(wgtool_in(
        ns,
        &admin,
        "machine add api --org acme --region iad --node gw",
    )?)?;
    // Through the API it sees its org's machines and not another org's (the API reads the
    // org's part of the registry).
    wgtool(&mesh, "machine add db --org beta --region iad --node gw")?;
    let listed = ok(wgtool_in(ns, &admin, "machine list --json")?)?;
    ensure!(
        listed.contains("\"api\"") && !listed.contains("beta") && !listed.contains("\"db\""),
        "an acme token lists: {listed}"
    );
    // It sees its org's tokens; a peer token does not.
    let seen = ok(wgtool_in(ns, &admin, "token list --json")?)?;
    ensure!(serde_json_ids(&seen).len() == 5, "admin token list: {seen}");
    let seen = ok(wgtool_in(ns, &peer, "token list --json")?)?;
    ensure!(
        serde_json_ids(&seen).is_empty(),
        "a peer token lists tokens: {seen}"
    );
    Ok(())
}

/// The ids in `wgtool token list --json`.
fn serde_json_ids(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The id inside a token string (its JSON is base64url after `sixpn1.`).
fn decode_id(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_start_matches("sixpn1."))
        .ok()
        .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok())
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn wg_quick_takes_the_tunnel_file_unchanged_dns_line_included() -> Result<()> {
    let (mut mesh, gw, b, web) = gateway_and_web()?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let api = api(&mesh, &gw.ns, &gw.ip)?;
    let token = token(&mesh, &api, "--org acme")?;
    let (lap_ns, _) = mesh.underlay.host("lp")?;
    let iface = unique("lq");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    ok(wgtool_in(
        &lap_ns,
        &token,
        &format!("create acme iad carol {conf}"),
    )?)?;
    let text = std::fs::read_to_string(&conf)?;
    let dns = text
        .lines()
        .find_map(|l| l.strip_prefix("DNS = "))
        .context("DNS line")?
        .trim()
        .to_string();
    let machine_resolv = std::fs::read_to_string("/etc/resolv.conf")?;

    // Everything in one private mount namespace inside the laptop's network namespace:
    // resolvconf's state and /etc/resolv.conf are this test's own, whatever wg-quick does.
    let private = mesh.dir.path().join(format!("{iface}.resolv"));
    std::fs::write(&private, "nameserver 127.0.0.9\n")?;
    let script = format!(
        "set -e
         mount --make-rprivate /
         mkdir -p /run/resolvconf && mount -t tmpfs tmpfs /run/resolvconf
         mount --bind {private} /etc/resolv.conf
         WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go wg-quick up {conf} 2>&1
         echo \"--- resolv.conf up\"; cat /etc/resolv.conf
         ok=
         for i in $(seq 75); do
           if getent hosts web.internal; then ok=1; break; fi
           sleep 0.2
         done
         wg-quick down {conf} 2>&1
         echo \"--- resolv.conf down\"; cat /etc/resolv.conf
         [ -n \"$ok\" ]",
        private = private.display()
    );
    let out = lap_ns.output(&format!("unshare -m sh -c '{script}'"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    let (up, down) = text
        .split_once("--- resolv.conf down")
        .context("the script stopped early")
        .with_context(|| format!("{text}{}", String::from_utf8_lossy(&out.stderr)))?;
    ensure!(
        out.status.success(),
        "web.internal did not resolve through wg-quick's DNS line:\n{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&[&gw, &b])
    );
    let up_resolv = up.split("--- resolv.conf up").nth(1).unwrap_or_default();
    ensure!(
        up_resolv.contains(&format!("nameserver {dns}")),
        "resolv.conf while up lacks the org DNS:\n{up_resolv}"
    );
    ensure!(up.contains(&web.addr.to_string()), "getent: {up}");
    ensure!(
        !down.contains(&dns),
        "wg-quick down left the org DNS:\n{down}"
    );
    ensure!(
        std::fs::read_to_string("/etc/resolv.conf")? == machine_resolv,
        "the machine's /etc/resolv.conf changed"
    );
    Ok(())
}

#[test]
fn status_of_a_peer_on_another_gateway_comes_from_that_gateways_api_server() -> Result<()> {
    let mut mesh = Mesh::new()?;
    mesh.org("acme")?;
    let mut gw1 = mesh.host("gw1", true)?;
    let mut gw2 = mesh.host("gw2", true)?;
    mesh.start(&mut gw1)?;
    mesh.start(&mut gw2)?;
    // One certificate for both servers (the same state directory), as the README says.
    let state = mesh.dir.path().join(unique("api"));
    let api1 = api_with(&mesh, &gw1.ns, &gw1.ip, &state, true)?;
    let _api2 = api_with(&mesh, &gw2.ns, &gw2.ip, &state, false)?;
    let token = token(&mesh, &api1, "--org acme")?;
    let (lap_ns, _) = mesh.underlay.host("lp")?;
    let iface = unique("lw");
    let conf = mesh.dir.path().join(format!("{iface}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    ok(wgtool_in(
        &lap_ns,
        &token,
        &format!("create acme iad dave {conf} --gateway gw2"),
    )?)?;
    let lap = peer_up(lap_ns, &iface, &conf)?;
    // PersistentKeepalive starts a handshake at once; wait for gw2 to have it.
    let start = std::time::Instant::now();
    loop {
        let shown = ok(wgtool_in(&lap.ns, &token, "status acme dave --json")?)?;
        let v: serde_json::Value = serde_json::from_str(&shown)?;
        let p = &v[0];
        if p["gateway_seen"] == true && p["last_handshake"].as_i64().is_some() {
            ensure!(p["gateway"] == "gw2", "{p}");
            break;
        }
        ensure!(
            start.elapsed() < SECS15,
            "gw1's API never reported dave's handshake on gw2: {shown}\n{}\n{}",
            api1.proc.log(),
            logs(&[&gw1, &gw2])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// `wgtool ARGS` in `ns` as uid 65534, with only a token (no registry it could use) and
/// `state` as its state directory: (exit code, stdout, stderr).
fn wgtool_as_nobody(
    ns: &Netns,
    token: &str,
    state: &std::path::Path,
    args: &str,
) -> Result<(i32, String, String)> {
    let out = ns.output(&format!(
        "SIXPN_REGISTRY=/nonexistent/registry.db SIXPN_TOKEN='{token}' SIXPN_STATE_DIR={} \
         setpriv --reuid=65534 --regid=65534 --clear-groups {} {args}",
        state.display(),
        bin("wgtool").display()
    ))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn without_a_tunnel_file_a_peer_is_made_once_kept_in_the_state_dir_and_reused() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (mut mesh, gw, _b, web) = gateway_and_web()?;
    let _dnsd = gw.ns.spawn(
        &bin("dnsd").to_string_lossy(),
        &["--registry", &mesh.location, "--listen", "[::]:53"],
    )?;
    let api = api(&mesh, &gw.ns, &gw.ip)?;
    // One use only: a second peer could not be made with it.
    let token = token(
        &mesh,
        &api,
        "--org acme --uses 1 --region iad --name-prefix interactive-",
    )?;
    let (lap, _) = mesh.underlay.host("lp")?;
    let home = std::env::temp_dir().join(unique("kept"));
    std::fs::create_dir_all(&home)?;
    std::os::unix::fs::chown(&home, Some(65534), Some(65534))?;
    let state = home.join("state");
    let interactive = || -> Result<Vec<String>> {
        Ok(mesh
            .reg
            .snapshot()?
            .peers
            .keys()
            .filter(|(org, name)| org == "acme" && name.starts_with("interactive-"))
            .map(|(_, name)| name.clone())
            .collect())
    };

    // No --config, no --region, nothing kept yet: told what to give, nothing made.
    let (code, out, err) =
        wgtool_as_nobody(&lap, &token, &state, "dig --org acme AAAA web.internal")?;
    ensure!(
        code == 2 && err.lines().count() == 1 && err.contains("--region"),
        "first run without --region: {code} {out}{err}"
    );
    let (code, _, err) = wgtool_as_nobody(&lap, &token, &state, "dig AAAA web.internal")?;
    ensure!(
        code == 2 && err.contains("--config FILE or --org ORG"),
        "neither --config nor --org: {code} {err}"
    );
    ensure!(
        interactive()?.is_empty(),
        "a peer was made: {:?}",
        interactive()?
    );

    // First run: the peer is made here, registered through the API and kept.
    let start = Instant::now();
    let short = loop {
        let (code, out, err) = wgtool_as_nobody(
            &lap,
            &token,
            &state,
            "dig --org acme --region iad AAAA web.internal --short",
        )?;
        if code == 0 && !out.trim().is_empty() {
            break out;
        }
        // dnsd may still be starting; the peer is kept from the first attempt on.
        ensure!(
            start.elapsed() < SECS15,
            "dig with a kept peer failed ({code}): {out}{err}\n{}",
            api.proc.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(short.trim() == web.addr.to_string(), "dig: {short}");
    let made = interactive()?;
    ensure!(made.len() == 1, "interactive peers: {made:?}");
    let file = state.join("peers/acme.conf");
    let meta = std::fs::metadata(&file).with_context(|| format!("{}", file.display()))?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600 && meta.uid() == 65534,
        "{} is mode {:o}, uid {}",
        file.display(),
        meta.permissions().mode() & 0o777,
        meta.uid()
    );
    let dir = std::fs::metadata(state.join("peers"))?;
    ensure!(
        dir.permissions().mode() & 0o777 == 0o700,
        "peers/ is not 0700"
    );
    let text = std::fs::read_to_string(&file)?;
    let snap = mesh.reg.snapshot()?;
    let peer = &snap.peers[&("acme".to_string(), made[0].clone())];
    ensure!(
        text.contains(&format!("Address = {}/128", peer.addr)),
        "the kept file is not that peer's:\n{text}"
    );

    // Second run (and another command): the same file, no new peer (the token's one use
    // is spent, so making one would fail).
    let (code, out, err) = wgtool_as_nobody(
        &lap,
        &token,
        &state,
        "ping --org acme web.internal -c 2 -i 0.2",
    )?;
    ensure!(code == 0, "ping with the kept peer: {code} {out}{err}");
    ensure!(sixpn_tests::ping_summary(&out)? == (2, 2), "ping: {out}");
    ensure!(interactive()? == made, "peers now: {:?}", interactive()?);
    ensure!(
        std::fs::read_to_string(&file)? == text,
        "the kept file changed"
    );
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
