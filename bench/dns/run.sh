#!/usr/bin/env bash
# Serves the same 1,000-app `.internal` zone from dnsd, NSD and Knot, and runs dnsperf with one
# query mix against each in the same run. The server is pinned to one core, dnsperf to the
# other. Prints qps, latency, RSS and the server's CPU time per answered query side by side,
# then dnsd's add-to-answer latency (a machine written to the registry → its AAAA answered).
#
# Needs root-free loopback only; packages: nsd knot dnsperf dnsutils (apt).
# Usage: bench/dns/run.sh [seconds per server, default 10] [apps, default 1000]
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${1:-10}
APPS=${2:-1000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
for tool in nsd knotd dnsperf dig taskset; do
  command -v "$tool" >/dev/null || { echo "bench/dns: missing $tool (apt-get install -y nsd knot dnsperf dnsutils util-linux)"; exit 2; }
done

cargo build --release -q -p dnsd --bin dnsd --example bench_zone --example live_latency
BIN=target/release
WORK=$(mktemp -d /tmp/sixpn-bench-dns.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/examples/bench_zone" "$WORK/registry.db" "$WORK" "$APPS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The CPU time (user+system, in clock ticks) of a process and all its descendants.
tree_pids() { local p=$1; echo "$p"; for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done; }
cpu_ticks() {
  local total=0 t
  for p in $(tree_pids "$1"); do
    # utime and stime are fields 14 and 15; count after the ")" closing the command name,
    # which may hold spaces ("nsd: server 1").
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
rss_kb() {
  local total=0 r
  for p in $(tree_pids "$1"); do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${r:-0}))
  done
  echo "$total"
}
wait_up() {
  for _ in $(seq 1 100); do
    local out
    out=$(dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short app1.internal AAAA 2>/dev/null || true)
    [[ "$out" == *fdaa* ]] && return 0
    sleep 0.1
  done
  echo "bench/dns: server on port $1 did not come up"; return 1
}

HZ=$(getconf CLK_TCK)
RESULTS="$WORK/results.txt"
: > "$RESULTS"

measure() { # name pid port
  local name=$1 pid=$2 port=$3
  wait_up "$port"
  # Warm up, then measure.
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l 2 -c 10 -q 200 >/dev/null 2>&1 || true
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$SECS" -c 10 -q 200 2>&1)
  after=$(cpu_ticks "$pid")
  local rss completed qps lat
  rss=$(rss_kb "$pid")
  completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
  local lost
  lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  local us_per_q
  us_per_q=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$completed" 'BEGIN { printf "%.2f", (t / hz) * 1e6 / n }')
  echo "$name $qps $lat $rss $us_per_q $completed $lost" >> "$RESULTS"
  echo "$out" > "$WORK/dnsperf-$name.txt"
}

# --- dnsd ---
P=$(free_port)
echo "$P" > "$WORK/dnsd.port"
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN/dnsd" --registry "$WORK/registry.db" --listen "127.0.0.1:$P" \
  --default-org bench --upstream 127.0.0.1:9 --udp-workers 1 &
DNSD=$!; PIDS+=("$DNSD")
measure dnsd "$DNSD" "$P"

# --- NSD ---
P=$(free_port)
mkdir -p "$WORK/nsd"
cat > "$WORK/nsd/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$P
  server-count: 1
  username: ""
  chroot: ""
  database: ""
  zonelistfile: "$WORK/nsd/zone.list"
  xfrdfile: "$WORK/nsd/xfrd.state"
  pidfile: "$WORK/nsd/nsd.pid"
  zonesdir: "$WORK"
  verbosity: 0
  hide-version: yes
  # NSD rate-limits responses per source by default (RRL); the benchmark has one source.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: internal
  zonefile: internal.zone
EOF
taskset -c "$SERVER_CPU" nsd -d -c "$WORK/nsd/nsd.conf" 2>"$WORK/nsd/log" &
NSD=$!; PIDS+=("$NSD")
measure nsd "$NSD" "$P"
kill "$NSD" 2>/dev/null || true

# --- Knot ---
P=$(free_port)
mkdir -p "$WORK/knot"
cat > "$WORK/knot/knot.conf" <<EOF
server:
  listen: 127.0.0.1@$P
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  rundir: "$WORK/knot"
log:
  - target: stderr
    any: error
database:
  storage: "$WORK/knot"
template:
  - id: default
    storage: "$WORK"
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: internal
    file: internal.zone
EOF
taskset -c "$SERVER_CPU" knotd -c "$WORK/knot/knot.conf" 2>"$WORK/knot/log" &
KNOT=$!; PIDS+=("$KNOT")
measure knot "$KNOT" "$P"
kill "$KNOT" 2>/dev/null || true

echo
echo "Same zone ($APPS apps), same query mix, ${SECS}s each; server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU."
printf "%-6s %12s %14s %10s %16s %12s %8s\n" server qps "avg latency" "RSS KiB" "CPU µs/answer" answered lost
while read -r name qps lat rss us n lost; do
  printf "%-6s %12s %14s %10s %16s %12s %8s\n" "$name" "$qps" "${lat}s" "$rss" "$us" "$n" "$lost"
done < "$RESULTS"
awk '
  { qps[$1] = $2; cpu[$1] = $5 }
  END {
    printf "\ndnsd/NSD qps ratio: %.2f (target >= 1)\n", qps["dnsd"] / qps["nsd"]
    printf "dnsd/Knot CPU-per-answer ratio: %.2f (target <= 1)\n", cpu["dnsd"] / cpu["knot"]
  }' "$RESULTS"

# --- add-to-answer latency (dnsd) ---
# A machine written to the registry (as `wgtool` does) → dnsd answers its AAAA. dnsd is still
# running on the registry the zone came from.
echo
"$BIN/examples/live_latency" "$WORK/registry.db" "127.0.0.1:$(cat "$WORK/dnsd.port")" 50
