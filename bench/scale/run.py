"""The scale bench's steps, run by bench/scale/run.sh inside its own network namespace.

Starts a registry (a SQLite file, or an etcd server for BACKEND=etcd), fills it with
meshd's `scale_registry` example, then runs dnsd and the gateway's meshd on it and times
what the issue asks for. Prints one line per figure; details go to stderr.
"""

import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ["SIXPN_BIN"]
MACHINES = int(os.environ["MACHINES"])
PEERS = int(os.environ["PEERS"])
BACKEND = os.environ.get("BACKEND", "sqlite")
ADDS = int(os.environ.get("ADDS", "50"))
ACTIVE = min(int(os.environ.get("ACTIVE", "1000")), PEERS)
SEED = int(os.environ.get("SEED", "1"))
CREATES = int(os.environ.get("CREATES", "10"))
# Another build's wgtool, timed beside this one's `create` in the same run, for a ratio.
WGTOOL_BASE = os.environ.get("WGTOOL_BASE", "")
GW_PORT = 51999
DNS = ("127.0.0.1", 53)
MESHD_METRICS = "127.0.0.1:9391"
LIMIT = 600  # seconds any one wait may take

procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def figure(line):
    print(line, flush=True)


def start(args, out, env=None):
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    return p


def rss_mb(pid, field="VmRSS"):
    """Resident memory now (VmRSS), or at its peak (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(len(s) * p + 0.999999) - 1))]


def query(name, qtype=28, timeout=0.5):
    """One DNS question over UDP; returns (rcode, answer count) or None on timeout."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, DNS)
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    return data[3] & 0xF, struct.unpack(">H", data[6:8])[0]
        except (socket.timeout, ConnectionRefusedError):
            return None


def wait_for(what, check, limit=LIMIT, every=0.001):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r = check()
        if r:
            return r
        time.sleep(every)
    raise SystemExit(f"scale: gave up waiting for {what} after {limit} s")


def metric(name):
    try:
        with urllib.request.urlopen(f"http://{MESHD_METRICS}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


def main():
    tmp = tempfile.mkdtemp(prefix="sixpn-scale.")
    log(f"scale: {MACHINES} machines, {PEERS} peers, {BACKEND}; files in {tmp}")
    try:
        run(tmp)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    if BACKEND == "sqlite":
        reg = os.path.join(tmp, "registry.db")
    elif BACKEND == "etcd":
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        start(
            [etcd, "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", "http://127.0.0.1:23790",
             "--advertise-client-urls", "http://127.0.0.1:23790",
             "--listen-peer-urls", "http://127.0.0.1:23800",
             "--max-request-bytes", str(1 << 30), "--quota-backend-bytes", str(8 << 30)],
            open(os.path.join(tmp, "etcd.log"), "w"),
        )
        reg = "etcd://127.0.0.1:23790/scale"
        wait_for("etcd", lambda: _port_open(23790), limit=30, every=0.1)
    else:
        raise SystemExit(f"scale: BACKEND `{BACKEND}` must be sqlite or etcd")

    key = os.path.join(tmp, "gw.key")
    out = subprocess.run(
        [f"{BIN}/examples/scale_registry", reg, str(MACHINES), str(PEERS), str(SEED), key,
         f"127.0.0.1:{GW_PORT}"],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"scale: scale_registry failed: {out.stderr.strip()}")
    for line in out.stdout.splitlines():
        if line.startswith("build_s"):
            figure(line)
        else:
            log(line)

    # The floor under dnsd's start: the registry handing every record to a client that only
    # counts them (`wgtool registry status`, borrowed reads, nothing kept).
    t0 = time.monotonic()
    out = subprocess.run([f"{BIN}/wgtool", "--registry", reg, "registry", "status"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"scale: wgtool registry status failed: {out.stderr.strip()}")
    figure(f"registry_read_s {time.monotonic() - t0:.2f} (wgtool registry status: every record"
           " read and counted)")

    # dnsd: from start to the first answer of a name of the registry.
    # It keeps a local copy of the registry, which its restart below starts from.
    copy = os.path.join(tmp, "dnsd.copy")
    dnsd_args = [f"{BIN}/dnsd", "--registry", reg, "--listen", "127.0.0.1:53",
                 "--default-org", "org0", "--upstream", "127.0.0.1:9", "--registry-copy", copy]
    t0 = time.monotonic()
    dnsd = start(dnsd_args, open(os.path.join(tmp, "dnsd.log"), "w"))
    wait_for("dnsd's first answer",
             lambda: (query("app0.internal", timeout=0.05) or (None, 0))[1] > 0)
    figure(f"dnsd_start_s {time.monotonic() - t0:.2f}")
    figure(f"dnsd_rss_mb start {rss_mb(dnsd.pid):.0f}")

    # The gateway's meshd, holding every peer. It keeps a local copy of what it reads too,
    # which its restart below starts from.
    env = dict(os.environ, RUST_LOG="info,meshd::daemon=debug")
    meshd_log = os.path.join(tmp, "meshd.log")
    meshd_copy = os.path.join(tmp, "meshd.copy")
    meshd_args = [f"{BIN}/meshd", "--log-format", "json", "--registry", reg,
                  "--node", "gw-bench", "--region", "iad",
                  "--endpoint", f"127.0.0.1:{GW_PORT}", "--listen-port", str(GW_PORT),
                  "--gateway", "--key", key, "--interface", f"scl{os.getpid() % 100000}",
                  "--metrics", MESHD_METRICS, "--registry-copy", meshd_copy]
    t0 = time.monotonic()
    meshd = start(meshd_args, open(meshd_log, "w"), env=env)
    wait_for("meshd to register every peer",
             lambda: metric("meshd_peers_registered") == PEERS, every=0.05)
    figure(f"gateway_start_s {time.monotonic() - t0:.2f} (until it holds {PEERS} registered peers;"
           f" peak RSS {rss_mb(meshd.pid, 'VmHWM'):.0f} MB)")
    time.sleep(1)
    figure(f"gateway_rss_mb registered={PEERS} active=0 {rss_mb(meshd.pid):.0f}")

    # Changes: half the machines on the gateway's host (its addresses change), half elsewhere.
    log_from = os.path.getsize(meshd_log)
    wgtool_ms, answer_ms, whole_ms = [], [], []
    # scale_registry names node n `<region>-<n>`, iad being every eighth.
    iad = [f"iad-{n}" for n in range(0, max(MACHINES // 2000, 8), 8)]
    for k in range(ADDS):
        node, region = ("gw-bench", "iad") if k % 2 == 0 else (iad[k % len(iad)], "iad")
        app = f"bench{k}"
        t0 = time.monotonic()
        r = subprocess.run([f"{BIN}/wgtool", "--registry", reg, "machine", "add", "--org", "org0",
                            "--region", region, "--node", node, "--json", app],
                           capture_output=True, text=True, check=False)
        t1 = time.monotonic()
        if r.returncode != 0:
            raise SystemExit(f"scale: wgtool machine add failed: {r.stderr.strip()}")
        mid = json.loads(r.stdout)["id"]
        name = f"{mid}.vm.{app}.internal"
        wait_for(f"dnsd to answer {name}",
                 lambda: (query(name, timeout=0.05) or (None, 0))[1] > 0, limit=30)
        t2 = time.monotonic()
        wgtool_ms.append((t1 - t0) * 1000)
        answer_ms.append((t2 - t1) * 1000)
        whole_ms.append((t2 - t0) * 1000)
    time.sleep(1)
    applied, kernel = [], []
    with open(meshd_log) as f:
        f.seek(log_from)
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            fields = ev.get("fields", ev)
            if fields.get("message") == "applied registry" and "took_us" in fields:
                applied.append(fields["took_us"] / 1000)
                if fields.get("kernel_us", 0) > 0:
                    kernel.append(fields["kernel_us"] / 1000)
    # The write commits inside wgtool, before it exits: from its exit is a lower bound, from
    # its start an upper one.
    figure(f"add_to_answer_ms p50/p99 {pct(answer_ms, 0.5):.1f}/{pct(answer_ms, 0.99):.1f}"
           f" (from wgtool's exit; from its start {pct(whole_ms, 0.5):.1f}/{pct(whole_ms, 0.99):.1f})")
    figure(f"wgtool_add_ms p50/p99 {pct(wgtool_ms, 0.5):.1f}/{pct(wgtool_ms, 0.99):.1f}")
    figure(f"meshd_apply_ms p50/p99 {pct(applied, 0.5):.2f}/{pct(applied, 0.99):.2f}"
           f" (n={len(applied)})")
    figure(f"meshd_kernel_ms p50/p99 {pct(kernel, 0.5):.2f}/{pct(kernel, 0.99):.2f}"
           f" (n={len(kernel)}: interface addresses through `ip`)")
    figure(f"dnsd_rss_mb after_{ADDS}_changes {rss_mb(dnsd.pid):.0f}")

    # dnsd restarted: from its local copy (the base it wrote at start, the changes above in
    # its journal), until it answers the last machine added.
    wait_for("dnsd's local copy", lambda: os.path.exists(copy))
    dnsd.terminate()
    dnsd.wait()
    last = name if ADDS > 0 else "app0.internal"
    t0 = time.monotonic()
    dnsd = start(dnsd_args, open(os.path.join(tmp, "dnsd-restart.log"), "w"))
    wait_for("dnsd's first answer after a restart",
             lambda: (query(last, timeout=0.05) or (None, 0))[1] > 0)
    figure(f"dnsd_restart_s {time.monotonic() - t0:.2f} (from its local copy,"
           f" {os.path.getsize(copy) / 1e6:.0f} MB)")
    figure(f"dnsd_rss_mb restart {rss_mb(dnsd.pid):.0f}")

    # The gateway restarted: from its local copy, until it holds every peer again and has
    # the revision it had (the changes above come from the copy's journal).
    revision = metric("meshd_registry_revision")
    wait_for("meshd's local copy", lambda: os.path.exists(meshd_copy))
    meshd.terminate()
    meshd.wait()
    log_restart = os.path.join(tmp, "meshd-restart.log")
    t0 = time.monotonic()
    meshd = start(meshd_args, open(log_restart, "w"), env=env)
    wait_for("meshd to hold every peer after a restart",
             lambda: metric("meshd_peers_registered") == PEERS
             and metric("meshd_registry_revision") >= revision, every=0.05)
    figure(f"gateway_restart_s {time.monotonic() - t0:.2f} (from its local copy,"
           f" {os.path.getsize(meshd_copy) / 1e6:.0f} MB; peak RSS"
           f" {rss_mb(meshd.pid, 'VmHWM'):.0f} MB)")

    # Joining: `wgtool create` writes a laptop at the gateway and renders its tunnel file,
    # alternating with WGTOOL_BASE if given.
    tools = [("wgtool", f"{BIN}/wgtool")] + ([("base", WGTOOL_BASE)] if WGTOOL_BASE else [])
    create_ms = {label: [] for label, _ in tools}
    for k in range(CREATES):
        for label, tool in tools:
            t0 = time.monotonic()
            r = subprocess.run([tool, "--registry", reg, "create", "org0", "iad",
                                f"join-{label}-{k}", os.path.join(tmp, f"join-{label}-{k}.conf")],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise SystemExit(f"scale: {tool} create failed: {r.stderr.strip()}")
            create_ms[label].append((time.monotonic() - t0) * 1000)
    for label, ms in create_ms.items():
        note = f" (WGTOOL_BASE {WGTOOL_BASE})" if label == "base" else ""
        figure(f"wgtool_create_ms p50/p99 {pct(ms, 0.5):.1f}/{pct(ms, 0.99):.1f}{note}")

    # Laptops handshaking with the gateway for the first time.
    if ACTIVE > 0:
        r = subprocess.run([f"{BIN}/examples/scale_handshake", f"127.0.0.1:{GW_PORT}", str(SEED),
                            "0", str(ACTIVE), "90"], capture_output=True, text=True, check=False)
        for line in r.stdout.splitlines():
            if line.startswith("first_handshake_ms"):
                figure(line)
            else:
                log(line)
        if r.returncode != 0:
            raise SystemExit(f"scale: scale_handshake failed: {r.stderr.strip()}")
        active = metric("meshd_peers_active")
        figure(f"gateway_rss_mb registered={PEERS} active={active:.0f} {rss_mb(meshd.pid):.0f}")


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
