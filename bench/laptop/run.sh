#!/usr/bin/env bash
# A laptop's one TCP stream through the org network, side by side in one run: `wgtool
# proxy` over UDP, `wgtool proxy` over a WebSocket (wss://, flyctl's framing), `onetun` on
# the same tunnel file, and the kernel path (the tunnel file up on a wireguard-go
# interface). For each: throughput of one download of BYTES from a machine behind the
# gateway (and of one upload of BYTES to it, with DIRECTIONS="down up"), and the laptop
# client's peak RSS and CPU time (user+system) for that transfer. An upload ends when the
# machine, having read BYTES, says so (no half-close: onetun closes a connection whole on
# the first FIN). Each is
# run ROUNDS times, the order rotating each round; medians are printed, then ratios.
#
#   bench/laptop/run.sh                         # 300 MB per download, 3 rounds
#   DIRECTIONS="down up" bench/laptop/run.sh    # uploads too
#   BYTES=100000000 ROUNDS=5 bench/laptop/run.sh
#   CLIENTS="wgtool-udp onetun" bench/laptop/run.sh
#   WGTOOL=/path/to/wgtool MESHD=/path/to/meshd bench/laptop/run.sh   # no build (the
#                                        wgtool-tunnel beside that wgtool goes with it)
#   KEEP=1 bench/laptop/run.sh                  # keep the logs (the path is printed)
#
# Topology (network namespaces on one bridge, made here and removed on exit): the laptop;
# a gateway running meshd --gateway --websocket-listen [::]:443; a host running meshd with
# a machine of app `web`, whose socat serves BYTES of zeros on port 8091. Nothing on the
# laptop but loopback and its veth; the client is the only thing that carries the tunnel.
#
# Needs root. Builds wgtool and meshd in release mode; installs onetun from crates.io into
# $TOOLS (default /tmp/sixpn-bench-tools) once. Packages: wireguard-go wireguard-tools
# socat iproute2 curl (scripts/deps test has them).
set -euo pipefail
cd "$(dirname "$0")/../.."

BYTES=${BYTES:-300000000}
ROUNDS=${ROUNDS:-3}
# Longest a single download may take; a client slower than BYTES/TMAX is cut and its
# throughput is what arrived by then.
TMAX=${TMAX:-60}
CLIENTS=${CLIENTS:-"wgtool-udp wgtool-ws onetun kernel"}
DIRECTIONS=${DIRECTIONS:-down}
TOOLS=${TOOLS:-/tmp/sixpn-bench-tools}
ONETUN_VERSION=${ONETUN_VERSION:-0.3.10}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

for tool in wireguard-go wg wg-quick socat ip curl; do
  command -v "$tool" >/dev/null || { echo "bench/laptop: missing $tool (scripts/deps test)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench/laptop: needs root (network namespaces)"; exit 2; }
if [[ " $CLIENTS " == *" onetun "* ]] && [ ! -x "$TOOLS/bin/onetun" ]; then
  echo "installing onetun $ONETUN_VERSION into $TOOLS (once)" >&2
  cargo install --quiet --locked onetun --version "$ONETUN_VERSION" --root "$TOOLS"
fi
if [ -z "${WGTOOL:-}" ] || [ -z "${MESHD:-}" ]; then
  cargo build --release -q -p wgtool -p sixpn-inproc -p meshd --bins
fi
WORK=$(mktemp -d /tmp/sixpn-bench-laptop.XXXXXX)
# Copies: a build of another checkout sharing the target dir must not swap them mid-run.
cp "${WGTOOL:-$TARGET/release/wgtool}" "$WORK/wgtool"
# wgtool execs the tunnel's own binary beside it (and runs the tunnel itself without one).
tunnel_bin=$(dirname "${WGTOOL:-$TARGET/release/wgtool}")/wgtool-tunnel
if [ -x "$tunnel_bin" ]; then cp "$tunnel_bin" "$WORK/wgtool-tunnel"; fi
cp "${MESHD:-$TARGET/release/meshd}" "$WORK/meshd"
WGTOOL=$WORK/wgtool
MESHD=$WORK/meshd

tag=$(printf '%x' $(( $$ & 0xffff )))
BR=blb$tag; LAP=bll$tag; GW=blg$tag; HOST=blh$tag
cleanup() {
  for ns in $LAP $GW $HOST $BR; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f "/var/run/wireguard/wgl$tag.sock"
  if [ "${KEEP:-}" = 1 ]; then echo "bench/laptop: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- the network: three namespaces on one bridge ---
ip netns add $BR
ip -n $BR link set lo up
ip -n $BR link add br0 type bridge
ip -n $BR link set br0 up
n=0
for ns in $LAP $GW $HOST; do
  n=$((n + 1))
  ip netns add $ns
  ip -n $ns link set lo up
  ip link add ve$tag$n netns $ns type veth peer name vb$tag$n netns $BR
  ip -n $BR link set vb$tag$n master br0 up
  ip -n $ns link set ve$tag$n name eth0
  ip -n $ns addr add 10.231.0.$n/24 dev eth0
  ip -n $ns link set eth0 up
done
GW_IP=10.231.0.2; HOST_IP=10.231.0.3

# --- the registry, the two meshd, the machine, the laptop's tunnel file ---
REG=$WORK/registry.db
wg_tool() { "$WGTOOL" --registry "$REG" "$@"; }
wg_tool org create acme >/dev/null
start_meshd() { # ns node ip [flags]
  local ns=$1 node=$2 ip=$3; shift 3
  RUST_LOG=${MESHD_LOG:-warn} ip netns exec "$ns" "$MESHD" --registry "$REG" --node "$node" --region iad \
    --endpoint "$ip:51820" --key "$WORK/$node.key" --interface "wm$node$tag" \
    --metrics 127.0.0.1:9109 "$@" >"$WORK/meshd-$node.log" 2>&1 &
  disown
  for _ in $(seq 200); do
    ip netns exec "$ns" wg show "wm$node$tag" public-key >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench/laptop: meshd on $node did not come up:"; cat "$WORK/meshd-$node.log"; exit 1
}
start_meshd $GW gw $GW_IP --gateway --websocket-listen '[::]:443'
start_meshd $HOST b $HOST_IP
WEB=$(wg_tool machine add web --org acme --region iad --node b | awk '{print $2}')
for _ in $(seq 200); do
  ip -n $HOST -6 addr | grep -q " $WEB/" && break
  sleep 0.05
done
ip netns exec $HOST socat -b 65536 "TCP6-LISTEN:8091,bind=[$WEB],reuseaddr,fork,backlog=16" \
  "SYSTEM:head -c $BYTES /dev/zero" >"$WORK/socat.log" 2>&1 &
disown
# The upload sink: reads BYTES and answers how many it read.
ip netns exec $HOST socat -b 65536 "TCP6-LISTEN:8092,bind=[$WEB],reuseaddr,fork,backlog=16" \
  "SYSTEM:head -c $BYTES | wc -c" >"$WORK/socat-up.log" 2>&1 &
disown
for _ in $(seq 100); do ip netns exec $HOST ss -ltn | grep -q ':8091 ' && break; sleep 0.05; done
for _ in $(seq 100); do ip netns exec $HOST ss -ltn | grep -q ':8092 ' && break; sleep 0.05; done
CONF=$WORK/lap.conf
wg_tool create acme iad lap "$CONF" >/dev/null
chmod 600 "$CONF"
field() { awk -F' = ' -v k="$1" '$1 == k {print $2; exit}' "$CONF"; }
LAP_ADDR=$(field Address); LAP_ADDR=${LAP_ADDR%/*}
GW_KEY=$(field PublicKey)
ALLOWED=$(field AllowedIPs)
export SIXPN_STATE_DIR=$WORK/state

# --- measuring ---
HZ=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# Where the resident memory is now: anonymous (heap, stacks) and file-backed (the binary's
# and libraries' pages), in KiB; for the log, to tell code from data.
rss_parts() { awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "anon %s KiB, file %s KiB", a, f}' "/proc/$1/status"; }
now() { date +%s.%N; }
RESULTS=$WORK/results.txt
: > "$RESULTS"

# One download of BYTES from 127.0.0.1:$1 (or [$1]:8091 if it holds a colon) in the
# laptop's namespace; prints "bytes seconds".
download() {
  local dst
  if [[ $1 == *:* ]]; then dst="TCP6:[$1]:8091"; else dst="TCP4:127.0.0.1:$1"; fi
  local t0 t1 got
  t0=$(now)
  got=$(ip netns exec $LAP timeout "$TMAX" socat -b 65536 -u "$dst" STDOUT | wc -c) || true
  t1=$(now)
  echo "$got $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
}

# One upload of BYTES to 127.0.0.1:$1 (or [$1]:8092), until the machine answers how many it
# read; prints "bytes seconds".
upload() {
  local host=127.0.0.1 port=$1
  if [[ $1 == *:* ]]; then host=$1; port=8092; fi
  local t0 t1 got
  t0=$(now)
  got=$(ip netns exec $LAP timeout "$TMAX" python3 -c '
import socket, sys
host, port, left = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
chunk = bytes(65536)
while left > 0:
    left -= s.send(chunk[: min(left, len(chunk))])
answer = b""
while not answer.endswith(b"\n"):
    got = s.recv(64)
    if not got:
        break
    answer += got
print(answer.decode().strip())
' "$host" "$port" "$BYTES" | tr -dc 0-9) || true
  t1=$(now)
  echo "${got:-0} $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
}

# Waits until a line of the file $2 holds $1.
wait_line() {
  for _ in $(seq 400); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done
  echo "bench/laptop: no \`$1\` in $2:"; cat "$2"; return 1
}

# Records one measurement: client round pid, with the client already up and idle. $5 is
# the direction (down: a download, up: an upload).
measure() {
  local client=$1 round=$2 pid=$3 dst=$4 dir=${5:-down}
  local c0 c1 out idle
  idle=$(rss_parts "$pid")
  c0=$(cpu_ticks "$pid")
  if [ "$dir" = up ]; then out=$(upload "$dst"); else out=$(download "$dst"); fi
  c1=$(cpu_ticks "$pid")
  client=$client-$dir
  read -r got secs <<<"$out"
  local hwm
  hwm=$(hwm_kb "$pid")
  local mbps cpu
  mbps=$(awk -v b="$got" -v s="$secs" 'BEGIN {printf "%.1f", b / s / 1e6}')
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz}')
  echo "$client $round $mbps $hwm $cpu $got $secs" >> "$RESULTS"
  echo "  $client: $got B in $secs s = $mbps MB/s, peak RSS $hwm KiB, CPU $cpu s (idle before: $idle; after: $(rss_parts "$pid"))" >&2
  # MAPS=1: which files the file-backed part is, largest first.
  if [ "${MAPS:-0}" = 1 ]; then
    awk '/^[0-9a-f]+-[0-9a-f]+ / {f=$6} /^Rss:/ {if (f != "") r[f]+=$2} END {for (k in r) if (r[k]) printf "    %6d KiB %s\n", r[k], k}' "/proc/$pid/smaps" | sort -rn | head -8 >&2
  fi
  [ "$got" = "$BYTES" ] || echo "  $client: only $got of $BYTES bytes arrived (cut at ${TMAX}s?)" >&2
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The machine's port for a direction.
remote_port() { if [ "$1" = up ]; then echo 8092; else echo 8091; fi; }

run_wgtool() { # transport round name direction
  local log=$WORK/$3-$2-$4.log
  ip netns exec $LAP "$WGTOOL" proxy --config "$CONF" --transport "$1" 0 "[$WEB]:$(remote_port "$4")" >"$log" 2>&1 &
  local pid=$!
  wait_line "listening on 127.0.0.1:" "$log"
  local port
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
  measure "$3" "$2" "$pid" "$port" "$4"
  stop "$pid"
}

run_onetun() { # round direction
  local log=$WORK/onetun-$1-$2.log port=18091
  printf '%s\n' "$(field PrivateKey)" > "$WORK/lap.key"; chmod 600 "$WORK/lap.key"
  RUST_LOG=warn ip netns exec $LAP "$TOOLS/bin/onetun" "127.0.0.1:$port:[$WEB]:$(remote_port "$2")" \
    --endpoint-addr "$GW_IP:51820" --endpoint-public-key "$GW_KEY" \
    --private-key-file "$WORK/lap.key" --source-peer-ip "$LAP_ADDR" --keep-alive 25 >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do ip netns exec $LAP ss -ltn | grep -q "127.0.0.1:$port " && break; sleep 0.05; done
  # onetun handshakes on the first connection; one small connection first so its handshake
  # is not in the figure (wgtool's is not either: it waits for the handshake before listening).
  if [ "$2" = up ]; then
    ip netns exec $LAP timeout 10 socat -u /dev/null "TCP4:127.0.0.1:$port" 2>/dev/null || true
  else
    ip netns exec $LAP timeout 10 socat -u "TCP4:127.0.0.1:$port" STDOUT 2>/dev/null | head -c 1 >/dev/null || true
  fi
  measure onetun "$1" "$pid" "$port" "$2"
  stop "$pid"
}

run_kernel() { # round direction
  local ifc=wgl$tag
  ip netns exec $LAP wireguard-go -f "$ifc" >"$WORK/wireguard-go-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do [ -S "/var/run/wireguard/$ifc.sock" ] && break; sleep 0.05; done
  wg-quick strip "$CONF" > "$WORK/lap.stripped"
  ip netns exec $LAP wg setconf "$ifc" "$WORK/lap.stripped"
  rm -f "$WORK/lap.stripped"
  ip -n $LAP -6 addr add "$LAP_ADDR/128" dev "$ifc"
  ip -n $LAP link set "$ifc" mtu 1420 up
  ip -n $LAP -6 route add "$ALLOWED" dev "$ifc"
  # boringtun stamps its handshakes 27 s ahead of wireguard-go (a TAI64 base of 2^62 + 37
  # against + 10), so the gateway takes wireguard-go's initiations as replays for up to 27 s
  # after a boringtun client (wgtool, onetun) handshook with the same key: wait that out.
  if ! ip netns exec $LAP ping -6 -c 1 -w 45 "$WEB" >/dev/null; then
    echo "bench/laptop: the wireguard-go laptop got no ping answer from $WEB"
    ip netns exec $LAP wg show "$ifc"; ip -n $LAP -6 route; ip -n $LAP -6 addr
    tail -20 "$WORK/meshd-gw.log"
    exit 1
  fi
  measure kernel "$1" "$pid" "$WEB" "$2"
  stop "$pid"
  ip -n $LAP link del "$ifc" 2>/dev/null || true
  rm -f "/var/run/wireguard/$ifc.sock"
}

read -r -a order <<< "$CLIENTS"
for round in $(seq "$ROUNDS"); do
  k=$(( (round - 1) % ${#order[@]} ))
  for client in "${order[@]:k}" "${order[@]:0:k}"; do
    for dir in $DIRECTIONS; do
      echo "round $round: $client $dir" >&2
      case $client in
        wgtool-udp) run_wgtool udp "$round" wgtool-udp "$dir" ;;
        wgtool-ws) run_wgtool websocket "$round" wgtool-ws "$dir" ;;
        onetun) run_onetun "$round" "$dir" ;;
        kernel) run_kernel "$round" "$dir" ;;
        *) echo "bench/laptop: unknown client $client"; exit 2 ;;
      esac
      sleep 1
    done
  done
done

ws=$(ip netns exec $GW curl -s --max-time 2 http://127.0.0.1:9109/metrics \
  | awk '/^meshd_transport_datagrams_total\{transport="websocket",direction="rx"\}/ {print $2}')

echo
echo "One TCP transfer of $BYTES bytes through the gateway, from a machine (-down) and to it"
echo "(-up); medians of $ROUNDS rounds."
echo "Client: the laptop-side process that carries the tunnel (for kernel: wireguard-go; the"
echo "kernel's own TCP/IP and socket work is not in its CPU time). $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)."
python3 - "$RESULTS" "$CLIENTS" "$DIRECTIONS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
clients = [f"{c}-{d}" for d in sys.argv[3].split() for c in sys.argv[2].split()]
med = {}
print(f"{'client':<16} {'MB/s':>8} {'peak RSS MiB':>13} {'CPU s':>7} {'CPU s/GB':>9} {'complete':>9}")
for c in clients:
    r = [x for x in rows if x[0] == c]
    if not r:
        continue
    mbps = statistics.median(float(x[2]) for x in r)
    rss = statistics.median(int(x[3]) for x in r) / 1024
    cpu = statistics.median(float(x[4]) for x in r)
    per_gb = statistics.median(float(x[4]) / (int(x[5]) / 1e9) if int(x[5]) else float("nan") for x in r)
    full = sum(1 for x in r if x[5] == r[0][5] and int(x[5]) > 0)
    med[c] = (mbps, rss, per_gb)
    print(f"{c:<16} {mbps:>8.1f} {rss:>13.1f} {cpu:>7.2f} {per_gb:>9.2f} {full:>6}/{len(r)}")
print()
for d in sys.argv[3].split():
    if med.get(f"onetun-{d}", (0,))[0] > 0:
        o = med[f"onetun-{d}"]
        for c in ("wgtool-udp", "wgtool-ws"):
            if f"{c}-{d}" in med:
                m = med[f"{c}-{d}"]
                print(f"{c}-{d}/onetun: throughput {m[0]/o[0]:.2f} (target >= 1), peak RSS {m[1]/o[1]:.2f} (target <= 1), CPU per GB {m[2]/o[2]:.2f}")
    if med.get(f"kernel-{d}", (0,))[0] > 0:
        k = med[f"kernel-{d}"]
        for c in ("wgtool-udp", "wgtool-ws", "onetun"):
            if f"{c}-{d}" in med:
                print(f"{c}-{d}/kernel: throughput {med[f'{c}-{d}'][0]/k[0]:.2f}")
PY
echo "gateway: ${ws:-0} datagrams received over WebSocket in all (wgtool-ws ran on wss://)."
