#!/usr/bin/env bash
# dnsd at full dnsperf rate while an attacker sends slow-upstream and TCP floods.
#
# dnsd serves bench/dns's 1,000-app `.internal` zone (`dnsd/examples/bench_zone.rs`) on
# loopback, pinned to one core, forwarding every other name to a "slow upstream" on loopback
# that reads each query and never answers (UDP and TCP). dnsperf asks `.internal` names only,
# at full rate, from the other core (`-c 10 -q 200`, as bench/dns/run.sh). Rounds alternate a
# baseline dnsperf run with the same run while an attacker, on the client core too, started
# 1 s before dnsperf and stopped after it:
#   (a) sends `<random>.example.com A` from loopback at ATTACK_QPS: loopback gets the default
#       org, so every one is forwarded to the slow upstream, and the forward cap is hit;
#   (b) opens IDLE_TCP idle TCP connections to dnsd (TCP_OPEN a second, so all within the
#       first second) and holds them; any that dnsd closes (past its TCP cap, or idle too
#       long) are opened again, at most TCP_REOPEN a second.
# The order flips each round. Each round prints both qps and their ratio, and for the attack
# run: dnsd's descriptors (entries of /proc/PID/fd, as `ls /proc/PID/fd | wc -l`, sampled
# every 0.2 s: max) and VmRSS max, what the attacker sent and got back, and what dnsd's
# metrics counted (forwards refused at the cap, TCP connections closed at the cap, SERVFAIL).
# At the end: the median and total ratios, "met"/"not met" against 0.90 (on the median).
# dnsd runs with its default caps (max_forwards 1024, max_tcp_connections 1024, upstream
# timeout 2 s, TCP idle timeout 10 s).
#
#   bench/reliability/dns_attack.sh                        # 8 s per run, 3 rounds
#   DURATION=10 ROUNDS=5 ATTACK_QPS=5000 bench/reliability/dns_attack.sh
#
# Variables:
#   DURATION    seconds per dnsperf run (8)
#   ROUNDS      baseline + attack pairs (3)
#   ATTACK_QPS  forwarded-name queries a second from the attacker (2000)
#   IDLE_TCP    idle TCP connections the attacker holds (1500)
#   TCP_OPEN    TCP connections a second the attacker opens until it has IDLE_TCP (3000)
#   TCP_REOPEN  most TCP connections a second the attacker re-opens after dnsd closed them (200)
#   APPS        apps in the zone (1000)
#   SERVER_CPU  dnsd's core (0); CLIENT_CPU dnsperf's, the attacker's, the slow upstream's
#               and the sampler's core (1)
#   NICE        nice value for every process of the bench (0); e.g. -15 puts dnsd, dnsperf and
#               the attacker ahead of other work on a shared machine (needs root)
#   SIXPN_BIN   skip the build, use dnsd and examples/bench_zone from that directory
#   OUT         where results go (a new /tmp/sixpn-dns-attack.XXXX); kept afterwards
#   LIMIT       seconds after which the script gives up (ROUNDS × (2 × DURATION + 40) + 120)
#
# Needs dnsperf, python3, curl, taskset (apt: dnsperf python3 curl util-linux). Loopback only;
# root is not needed. Takes about ROUNDS × (2 × DURATION + 7) s plus the build.
# Target (RELIABILITY.md): with the attack, `.internal` qps at least 90% of the baseline's,
# descriptors and RSS bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
ATTACK_QPS=${ATTACK_QPS:-2000}
IDLE_TCP=${IDLE_TCP:-1500}
TCP_OPEN=${TCP_OPEN:-3000}
TCP_REOPEN=${TCP_REOPEN:-200}
APPS=${APPS:-1000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NICE=${NICE:-0}
LIMIT=${LIMIT:-$(( ROUNDS * (2 * DURATION + 40) + 120 ))}
for tool in dnsperf python3 curl taskset; do
  command -v "$tool" >/dev/null || { echo "dns_attack: missing $tool (apt-get install -y dnsperf python3 curl util-linux)" >&2; exit 2; }
done

if [ -z "${SIXPN_BIN:-}" ]; then
  cargo build --release -q -p dnsd --bin dnsd --example bench_zone
  SIXPN_BIN=$PWD/target/release
fi
DNSD_BIN=$SIXPN_BIN/dnsd
ZONE_BIN=$SIXPN_BIN/examples/bench_zone

OUT=${OUT:-$(mktemp -d /tmp/sixpn-dns-attack.XXXX)}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Children first (the watchdog's sleep), by parent id; then each process started here.
  for p in "${PIDS[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # The big inputs go; logs and per-round results stay.
  rm -f "$OUT/registry.db" "$OUT/registry.db-wal" "$OUT/registry.db-shm" "$OUT/queries.txt" "$OUT/internal.zone"
  if (( rc != 0 )); then
    echo "dns_attack: failed (exit $rc); logs in $OUT" >&2
    tail -n 5 "$OUT"/*.log 2>/dev/null >&2 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Bounded in time: past LIMIT seconds the script stops itself (and cleans up).
# (Killing its sleep, as the clean-up does, ends the watchdog quietly.)
( sleep "$LIMIT" & wait $! || exit 0; echo "dns_attack: gave up after ${LIMIT}s" >&2; kill -TERM $$ 2>/dev/null ) &
PIDS+=("$!")

echo "== load before: $(uptime)"
"$ZONE_BIN" "$OUT/registry.db" "$OUT" "$APPS" 2>"$OUT/bench_zone.log"
# The dnsperf query file must hold `.internal` names only.
awk '$1 !~ /\.internal$/ { bad++ } END { if (bad || NR == 0) { print "dns_attack: queries.txt has " bad+0 " names outside .internal (of " NR ")"; exit 1 } }' "$OUT/queries.txt"

# Helpers: the slow upstream, the attacker and the sampler (python3, standard library only).
cat > "$OUT/tools.py" <<'PY'
import json, os, random, resource, selectors, signal, socket, string, sys, time

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

def upstream(portfile, statsfile, max_seconds):
    """Reads every query, over UDP and TCP, and never answers."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", port))
    t.listen(1024)
    u.setblocking(False); t.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(u, selectors.EVENT_READ, "udp")
    sel.register(t, selectors.EVENT_READ, "listen")
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(portfile + ".tmp", portfile)
    stats = {"udp_queries": 0, "tcp_accepted": 0, "tcp_bytes": 0}
    end = time.monotonic() + max_seconds
    last = 0.0
    while not stop and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            if key.data == "udp":
                while True:
                    try:
                        u.recv(4096)
                        stats["udp_queries"] += 1
                    except BlockingIOError:
                        break
            elif key.data == "listen":
                try:
                    c, _ = t.accept()
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
                    stats["tcp_accepted"] += 1
                except BlockingIOError:
                    pass
            else:
                try:
                    d = key.fileobj.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    sel.unregister(key.fileobj); key.fileobj.close()
                stats["tcp_bytes"] += len(d)
        now = time.monotonic()
        if now - last > 0.5:
            last = now
            with open(statsfile + ".tmp", "w") as f:
                json.dump(stats, f)
            os.rename(statsfile + ".tmp", statsfile)
    with open(statsfile, "w") as f:
        json.dump(stats, f)

def query(qid, name, qtype=1):
    p = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        p += bytes([len(label)]) + label.encode()
    return p + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"

def attack(port, qps, idle_tcp, open_rate, reopen_rate, max_seconds, outfile):
    """(a) random names under example.com at `qps`; (b) `idle_tcp` idle TCP connections held."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = idle_tcp + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    dst = ("127.0.0.1", port)
    sel = selectors.DefaultSelector()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    u.connect(dst)
    u.setblocking(False)
    sel.register(u, selectors.EVENT_READ, "udp")
    s = {"sent": 0, "send_errors": 0, "answers": 0, "rcodes": {},
         "tcp_established": 0, "tcp_closed_by_dnsd": 0, "tcp_connect_failed": 0,
         "tcp_reopened": 0, "tcp_open_max": 0, "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    open_now = 0
    pending = 0          # connections still to (re)open
    def connect():
        nonlocal open_now
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        err = c.connect_ex(dst)
        if err not in (0, 115):  # EINPROGRESS
            c.close(); s["tcp_connect_failed"] += 1
            return False
        sel.register(c, selectors.EVENT_WRITE, "connecting")
        return True
    first = 0            # of the idle_tcp first opened, paced at open_rate
    letters = string.ascii_lowercase + string.digits
    start = time.monotonic()
    end = start + max_seconds
    tokens = 0.0
    last = start
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        # (a) keep the UDP flood on schedule.
        due = int((now - start) * qps) - s["sent"]
        for _ in range(max(0, min(due, 1000))):
            name = "".join(random.choices(letters, k=12)) + ".example.com"
            try:
                u.send(query(random.getrandbits(16), name))
            except OSError:
                s["send_errors"] += 1
            s["sent"] += 1
        # (b) open idle_tcp connections at open_rate (a burst would overflow dnsd's accept
        # queue, and the kernel would hold the rest back for SYN-ACK retransmits)...
        while first < idle_tcp and first < (now - start) * open_rate:
            first += 1
            if not connect():
                pending += 1
        # ... and re-open what dnsd closed, at most reopen_rate a second.
        tokens = min(reopen_rate, tokens + (now - last) * reopen_rate)
        last = now
        while pending and tokens >= 1:
            tokens -= 1
            if connect():
                pending -= 1
                s["tcp_reopened"] += 1
            else:
                break
        for key, ev in sel.select(0.001):
            if key.data == "udp":
                while True:
                    try:
                        d = u.recv(4096)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    if len(d) >= 4:
                        s["answers"] += 1
                        rc = str(d[3] & 0xF)
                        s["rcodes"][rc] = s["rcodes"].get(rc, 0) + 1
            elif key.data == "connecting":
                c = key.fileobj
                err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sel.unregister(c)
                if err:
                    c.close(); s["tcp_connect_failed"] += 1; pending += 1
                else:
                    s["tcp_established"] += 1
                    open_now += 1
                    s["tcp_open_max"] = max(s["tcp_open_max"], open_now)
                    sel.register(c, selectors.EVENT_READ, "open")
            else:
                c = key.fileobj
                try:
                    d = c.recv(4096)
                except OSError:
                    d = b""
                if not d:
                    sel.unregister(c); c.close()
                    open_now -= 1
                    s["tcp_closed_by_dnsd"] += 1
                    pending += 1
    s["seconds"] = round(time.monotonic() - start, 3)
    s["sent_per_s"] = round(s["sent"] / s["seconds"], 1)
    s["tcp_open_at_stop"] = open_now
    with open(outfile, "w") as f:
        json.dump(s, f)

def sample(pid, outfile, max_seconds):
    """Descriptors (entries of /proc/PID/fd) and VmRSS of pid every 0.2 s: max and last."""
    fds_max = rss_max = 0
    fds = rss = 0
    end = time.monotonic() + max_seconds
    while not stop and time.monotonic() < end:
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
        except OSError:
            break
        fds_max, rss_max = max(fds_max, fds), max(rss_max, rss)
        time.sleep(0.2)
    with open(outfile, "w") as f:
        json.dump({"fds_max": fds_max, "rss_max_kb": rss_max, "fds_last": fds, "rss_last_kb": rss}, f)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "upstream":
        upstream(args[0], args[1], float(args[2]))
    elif cmd == "attack":
        attack(int(args[0]), float(args[1]), int(args[2]), float(args[3]), float(args[4]), float(args[5]), args[6])
    elif cmd == "sample":
        sample(int(args[0]), args[1], float(args[2]))
PY

fds() { local a=(/proc/"$1"/fd/*); echo "${#a[@]}"; }  # as `ls /proc/PID/fd | wc -l`
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The slow upstream (on the client core: the upstream is elsewhere, not on dnsd's core).
taskset -c "$CLIENT_CPU" nice -n "$NICE" python3 "$OUT/tools.py" upstream "$OUT/upstream.port" "$OUT/upstream.json" "$LIMIT" \
  >"$OUT/upstream.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -s "$OUT/upstream.port" ] && break; sleep 0.05; done
SLOW=$(cat "$OUT/upstream.port")

PORT=$(free_port)
MPORT=$(free_port)
RUST_LOG=warn taskset -c "$SERVER_CPU" nice -n "$NICE" "$DNSD_BIN" --registry "$OUT/registry.db" --listen "127.0.0.1:$PORT" \
  --default-org bench --upstream "127.0.0.1:$SLOW" --udp-workers 1 --metrics "127.0.0.1:$MPORT" \
  >"$OUT/dnsd.log" 2>&1 &
DNSD=$!; PIDS+=("$DNSD")

up=0
for _ in $(seq 100); do
  if python3 - "$PORT" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04app1\x08internal\x00\x00\x1c\x00\x01", ("127.0.0.1", int(sys.argv[1])))
d = s.recv(512)
sys.exit(0 if d[3] & 0xF == 0 and d[7] > 0 else 1)
PY
  then up=1; break; fi
  sleep 0.1
done
(( up )) || { echo "dns_attack: dnsd did not answer app1.internal on port $PORT" >&2; exit 1; }
echo "== dnsd (pid $DNSD) on 127.0.0.1:$PORT, CPU $SERVER_CPU; slow upstream 127.0.0.1:$SLOW; dnsperf and attacker on CPU $CLIENT_CPU; nice $NICE"
echo "   idle: $(fds "$DNSD") descriptors, RSS $(awk '/^VmRSS/ {print $2}' /proc/"$DNSD"/status) KiB"

metrics() { curl -s --max-time 3 "http://127.0.0.1:$MPORT/metrics" || true; }
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }  # user+system
dnsperf_run() { # $1: output file, $2: seconds
  timeout $(( $2 + 30 )) taskset -c "$CLIENT_CPU" nice -n "$NICE" dnsperf -s 127.0.0.1 -p "$PORT" -d "$OUT/queries.txt" \
    -l "$2" -c 10 -q 200 >"$1" 2>&1 || true
}

# Warm up (as bench/dns/run.sh).
dnsperf_run "$OUT/warmup.txt" 2

one_run() { # $1: base|attack, $2: round
  local kind=$1 round=$2 apid=
  local tag=$kind-$round
  metrics > "$OUT/metrics-$tag-before.txt"
  cat /proc/loadavg > "$OUT/load-$tag.txt"
  taskset -c "$CLIENT_CPU" nice -n "$NICE" python3 "$OUT/tools.py" sample "$DNSD" "$OUT/sample-$tag.json" $(( DURATION + 10 )) &
  local spid=$!; PIDS+=("$spid")
  if [ "$kind" = attack ]; then
    taskset -c "$CLIENT_CPU" nice -n "$NICE" python3 "$OUT/tools.py" attack "$PORT" "$ATTACK_QPS" "$IDLE_TCP" "$TCP_OPEN" "$TCP_REOPEN" \
      $(( DURATION + 10 )) "$OUT/attacker-$round.json" >"$OUT/attacker-$round.log" 2>&1 &
    apid=$!; PIDS+=("$apid")
    sleep 1
  fi
  # CPU time of dnsd and the attacker, and each core's busy time, over the dnsperf run.
  local t0 a0=0 a1=0; t0=$(ticks "$DNSD"); [ -n "$apid" ] && a0=$(ticks "$apid")
  grep -E '^cpu[0-9]+ ' /proc/stat > "$OUT/stat-$tag.txt"
  dnsperf_run "$OUT/dnsperf-$tag.txt" "$DURATION"
  grep -E '^cpu[0-9]+ ' /proc/stat >> "$OUT/stat-$tag.txt"
  [ -n "$apid" ] && a1=$(ticks "$apid")
  echo "$(( $(ticks "$DNSD") - t0 )) $(( a1 - a0 ))" > "$OUT/ticks-$tag.txt"
  # The gauges while the attack is still on.
  metrics > "$OUT/metrics-$tag-during.txt"
  if [ -n "$apid" ]; then
    kill -TERM "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
  fi
  kill -TERM "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  metrics > "$OUT/metrics-$tag-after.txt"
  cat /proc/loadavg >> "$OUT/load-$tag.txt"
  python3 - "$OUT" "$tag" "$(getconf CLK_TCK)" "$DURATION" <<'PY'
import json, re, sys
out, tag, hz, dur = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
txt = open(f"{out}/dnsperf-{tag}.txt").read()
g = lambda pat: (re.search(pat, txt) or [None, "-"])[1]
sm = json.load(open(f"{out}/sample-{tag}.json"))
ticks, aticks = map(int, open(f"{out}/ticks-{tag}.txt").read().split())
st = [l.split() for l in open(f"{out}/stat-{tag}.txt")]
half = len(st) // 2
def busy(a, b):  # share of the core's time not idle (idle + iowait) between two samples
    d = [int(y) - int(x) for x, y in zip(a[1:], b[1:])]
    return 100 * (1 - (d[3] + d[4]) / max(1, sum(d[:8])))
cores = ", ".join(f"{st[i][0]} {busy(st[i], st[i + half]):.0f}%" for i in range(half))
m_done = re.search(r"Queries completed:\s+(\d+)", txt)
us = ticks / hz * 1e6 / int(m_done.group(1)) if m_done and int(m_done.group(1)) else 0
load = open(f"{out}/load-{tag}.txt").read().split()
qps = g(r"Queries per second:\s+([\d.]+)")
lost = g(r"Queries lost:\s+(\d+)")
lat = g(r"Average Latency \(s\):\s+([\d.]+)")
codes = g(r"(Response codes:.*)")
print(f"  {tag:<9} {qps:>11} qps, lost {lost}, avg {lat} s; dnsd CPU {ticks / hz / dur * 100:.0f}% of a core "
      f"({us:.2f} µs/answer); fds max {sm['fds_max']}, RSS max {sm['rss_max_kb']} KiB; load {load[0]}")
print(f"            busy: {cores}" + (f"; attacker CPU {aticks / hz / dur * 100:.0f}% of a core" if tag.startswith("attack") else ""))
print("            dnsperf " + codes)
PY
  if [ "$kind" = attack ]; then
    python3 - "$OUT" "$round" <<'PY'
import json, sys
out, r = sys.argv[1], sys.argv[2]
a = json.load(open(f"{out}/attacker-{r}.json"))
names = {"0": "NOERROR", "2": "SERVFAIL", "3": "NXDOMAIN", "5": "REFUSED"}
rc = ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(a["rcodes"].items()))
print(f"            attacker: {a['sent']} sent in {a['seconds']} s ({a['sent_per_s']}/s), {a['send_errors']} send errors, "
      f"{a['answers']} answers ({rc or 'none'}); TCP {a['tcp_established']} established, "
      f"{a['tcp_closed_by_dnsd']} closed by dnsd, {a['tcp_reopened']} re-opened, {a['tcp_open_at_stop']} open at stop "
      f"(max {a['tcp_open_max']})")
def m(f):
    d = {}
    for line in open(f):
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                d[k] = float(v)
            except ValueError:
                pass
    return d
b, du, af = (m(f"{out}/metrics-attack-{r}-{w}.txt") for w in ("before", "during", "after"))
delta = lambda k: int(af.get(k, 0) - b.get(k, 0))
sf = lambda d: sum(v for k, v in d.items() if k.startswith("dnsd_queries_total") and 'rcode="SERVFAIL"' in k)
print(f"            dnsd: forwarded +{delta('dnsd_forwarded_total')}, refused at the forward cap "
      f"+{delta('dnsd_forward_overload_total')}, at the per-source share +{delta('dnsd_forward_source_limited_total')}, upstream failures +{delta('dnsd_upstream_failures_total')}, "
      f"SERVFAIL +{int(sf(af) - sf(b))}, TCP closed at the cap +{delta('dnsd_tcp_overload_total')}; "
      f"at dnsperf's end: {int(du.get('dnsd_tcp_connections', -1))} TCP connections, "
      f"{int(du.get('dnsd_forwards_in_flight', -1))} forwards in flight")
PY
    # Let the forwards still at the slow upstream time out (2 s) before the next run.
    sleep 3
  else
    sleep 1
  fi
}

for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="base attack"; else order="attack base"; fi
  echo "== round $round ($order)"
  for kind in $order; do one_run "$kind" "$round"; done
done

echo "== upstream got: $(cat "$OUT/upstream.json" 2>/dev/null || echo '-')"
echo "== dnsd after the rounds: $(fds "$DNSD") descriptors, RSS $(awk '/^VmRSS/ {print $2}' /proc/"$DNSD"/status) KiB"
python3 - "$OUT" "$ROUNDS" "$DURATION" "$ATTACK_QPS" "$IDLE_TCP" "$(getconf CLK_TCK)" <<'PY'
import json, re, statistics, sys
out, rounds, dur, qps, idle, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
def q(tag):
    m = re.search(r"Queries per second:\s+([\d.]+)", open(f"{out}/dnsperf-{tag}.txt").read())
    return float(m.group(1)) if m else None
def us(tag):  # dnsd's CPU time per answered dnsperf query
    m = re.search(r"Queries completed:\s+(\d+)", open(f"{out}/dnsperf-{tag}.txt").read())
    t = int(open(f"{out}/ticks-{tag}.txt").read().split()[0])
    return t / hz * 1e6 / int(m.group(1)) if m and int(m.group(1)) else None
base = [q(f"base-{i}") for i in range(1, rounds + 1)]
att = [q(f"attack-{i}") for i in range(1, rounds + 1)]
smp = [json.load(open(f"{out}/sample-attack-{i}.json")) for i in range(1, rounds + 1)]
bsmp = [json.load(open(f"{out}/sample-base-{i}.json")) for i in range(1, rounds + 1)]
f = lambda v: "-" if v is None else f"{v:,.0f}"
print(f"\n{rounds} rounds, {dur} s per dnsperf run; attack {qps}/s forwarded names + {idle} idle TCP; results in {out}")
print(f"{'round':<6}{'baseline qps':>14}{'attack qps':>12}{'ratio':>7}   attack fds max (baseline)   "
      f"attack RSS KiB max (baseline)   dnsd µs/answer baseline, attack")
ratios = []
for i in range(rounds):
    r = att[i] / base[i] if base[i] and att[i] is not None else None
    if r is not None:
        ratios.append(r)
    fds = f"{smp[i]['fds_max']} ({bsmp[i]['fds_max']})"
    rss = f"{smp[i]['rss_max_kb']} ({bsmp[i]['rss_max_kb']})"
    ub, ua = us(f"base-{i + 1}"), us(f"attack-{i + 1}")
    cpu = "-" if ub is None or ua is None else f"{ub:.2f}, {ua:.2f}"
    print(f"{i + 1:<6}{f(base[i]):>14}{f(att[i]):>12}{'-' if r is None else f'{r:.2f}':>7}   {fds:<28}{rss:<32}{cpu}")
if ratios:
    med = statistics.median(ratios)
    pairs = [(b, a) for b, a in zip(base, att) if b and a is not None]
    tot = sum(a for _, a in pairs) / sum(b for b, _ in pairs)
    print(f"per-round ratios {', '.join(f'{r:.2f}' for r in ratios)}: median {med:.2f}, total {tot:.2f}, "
          f"lowest {min(ratios):.2f}: {'met' if med >= 0.9 else 'not met'} (target: median >= 0.90)")
    print(f"dnsd descriptors max under attack {max(s['fds_max'] for s in smp)}, "
          f"RSS max {max(s['rss_max_kb'] for s in smp)} KiB")
else:
    print("no ratio: dnsperf gave no qps figure (see dnsperf-*.txt)")
    sys.exit(1)
PY
echo "== load after: $(uptime)"
