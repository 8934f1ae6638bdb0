#!/usr/bin/env bash
# Data-plane benchmark: the same WireGuard tunnel between two network-namespace hosts on a
# veth, carried in turn by no tunnel (the ceiling), meshd, wireguard-go and boringtun-cli.
# Each is measured ROUNDS times, alternating; medians are printed side by side.
#
#   bench/dataplane.sh                 # all implementations, 10 s per iperf3 run, 2 rounds
#   DURATION=5 ROUNDS=3 IMPLS="meshd wireguard-go" bench/dataplane.sh
#   TESTS="ping udp" MESHD=/path/to/other/meshd IMPLS=meshd bench/dataplane.sh
#
# Needs root. Installs iperf3/wireguard-go/wireguard-tools with apt if missing and
# boringtun-cli from crates.io into $TOOLS (default /tmp/sixpn-bench-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
IMPLS=${IMPLS:-"none meshd wireguard-go boringtun-cli"}
TESTS=${TESTS:-"ping tcp1 tcp4 udp"}
PINGS=${PINGS:-300}
TOOLS=${TOOLS:-/tmp/sixpn-bench-tools}
OUT=${OUT:-$(mktemp -d /tmp/sixpn-bench.XXXX)}
mkdir -p "$OUT"

need=()
for p in iperf3 wireguard-go wireguard-tools iproute2 iputils-ping python3 openssl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ " $IMPLS " == *" boringtun-cli "* ]] && [ ! -x "$TOOLS/bin/boringtun-cli" ]; then
  echo "installing boringtun-cli into $TOOLS (once)" >&2
  cargo install --quiet boringtun-cli --version 0.7.1 --root "$TOOLS"
fi
if [[ " $IMPLS " == *" meshd "* ]]; then
  [ -n "${MESHD:-}" ] || cargo build --quiet --release -p meshd
fi
MESHD=${MESHD:-$PWD/target/release/meshd}

tag=$(printf '%x' $(( $$ & 0xffff )))
A=bpa$tag; B=bpb$tag
cleanup() {
  for ns in $A $B; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add va$tag netns $A type veth peer name vb$tag netns $B
ip -n $A addr add 10.201.0.1/24 dev va$tag; ip -n $B addr add 10.201.0.2/24 dev vb$tag
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set va$tag up; ip -n $B link set vb$tag up

KA=$(wg genkey); KB=$(wg genkey)
PA=$(echo "$KA" | wg pubkey); PB=$(echo "$KB" | wg pubkey)

# Starts $1 on interface wg$tag in both namespaces and configures it with `wg`.
up() {
  local impl=$1
  for side in A B; do
    # Namespaces share /var/run/wireguard, so each side needs its own interface name.
    local ns=${!side} if=wg$side$tag key port peer peerep tunaddr
    if [ $side = A ]; then key=$KA port=51001 peer=$PB peerep=10.201.0.2:51002 tunaddr=10.202.0.1
    else key=$KB port=51002 peer=$PA peerep=10.201.0.1:51001 tunaddr=10.202.0.2; fi
    case $impl in
      wireguard-go) ip netns exec $ns wireguard-go -f $if >"$OUT/$impl-$side.log" 2>&1 & ;;
      boringtun-cli) ip netns exec $ns "$TOOLS/bin/boringtun-cli" -f --disable-drop-privileges $if >"$OUT/$impl-$side.log" 2>&1 & ;;
      meshd) ip netns exec $ns "$MESHD" --foreground $if >"$OUT/$impl-$side.log" 2>&1 & ;;
    esac
    for _ in $(seq 100); do ip -n $ns link show $if >/dev/null 2>&1 && [ -S /var/run/wireguard/$if.sock ] && break; sleep 0.05; done
    echo "$key" > "$OUT/key"
    ip netns exec $ns wg set $if private-key "$OUT/key" listen-port $port peer "$peer" allowed-ips 10.202.0.0/24 endpoint $peerep
    ip -n $ns addr add $tunaddr/24 dev $if
    ip -n $ns link set $if mtu 1420 up
  done
  rm -f "$OUT/key"
  ip netns exec $A ping -c 1 -W 5 10.202.0.2 >/dev/null
}

down() {
  local impl=$1
  [ "$impl" = none ] && return
  for ns in $A $B; do
    for pid in $(ip netns pids "$ns"); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.5
  ip -n $A link del wgA$tag 2>/dev/null || true
  ip -n $B link del wgB$tag 2>/dev/null || true
  rm -f /var/run/wireguard/wgA$tag.sock /var/run/wireguard/wgB$tag.sock
}

measure() {
  local impl=$1 round=$2 dst=10.202.0.2
  [ "$impl" = none ] && dst=10.201.0.2
  # Ping first, on an idle tunnel: after the UDP flood the receive queues are still full.
  if [[ " $TESTS " == *" ping "* ]]; then
    ip netns exec $A ping -c "$PINGS" -i 0.01 $dst > "$OUT/$impl-$round-ping.txt" || true
  fi
  if [[ " $TESTS " == *" tcp1 "* ]]; then
    ip netns exec $B iperf3 -s -D -1 -p 5201 >/dev/null; sleep 0.2
    ip netns exec $A iperf3 -c $dst -p 5201 -t "$DURATION" -J > "$OUT/$impl-$round-tcp1.json" || true
  fi
  if [[ " $TESTS " == *" tcp4 "* ]]; then
    ip netns exec $B iperf3 -s -D -1 -p 5202 >/dev/null; sleep 0.2
    ip netns exec $A iperf3 -c $dst -p 5202 -t "$DURATION" -P 4 -J > "$OUT/$impl-$round-tcp4.json" || true
  fi
  if [[ " $TESTS " == *" udp "* ]]; then
    ip netns exec $B iperf3 -s -D -1 -p 5203 >/dev/null; sleep 0.2
    ip netns exec $A iperf3 -c $dst -p 5203 -t "$DURATION" -u -b 0 -l 1400 -J > "$OUT/$impl-$round-udp.json" 2>/dev/null || true
  fi
}

read -r -a order <<< "$IMPLS"
for round in $(seq "$ROUNDS"); do
  # Each round starts with the next implementation, so none always follows the same one
  # (a UDP flood leaves the machine busy for a moment); and a pause between them.
  k=$(( (round - 1) % ${#order[@]} ))
  for impl in "${order[@]:k}" "${order[@]:0:k}"; do
    echo "round $round: $impl" >&2
    [ "$impl" = none ] || up "$impl"
    measure "$impl" "$round"
    down "$impl"
    sleep 2
  done
done

chacha=$(openssl speed -evp chacha20-poly1305 -seconds 2 -bytes 1420 2>/dev/null | awk '/^chacha20-poly1305|^ChaCha20-Poly1305/ {print $NF}' | tail -1)

python3 - "$OUT" "$ROUNDS" "$IMPLS" "$DURATION" "${chacha:-?}" <<'PY'
import json, re, statistics, sys
out, rounds, impls, duration, chacha = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def load(path):
    try:
        return json.load(open(path))
    except Exception:
        return None
def tcp(j):
    return j["end"]["sum_received"]["bits_per_second"] / 1e9 if j and "end" in j and "sum_received" in j["end"] else None
def udp(j):
    # The receiver's side; a run whose server results never came back (sum_received empty)
    # is left out rather than read as "everything arrived".
    s = j and j.get("end", {}).get("sum_received")
    if not s or not s.get("packets"): return (None, None)
    got = s["packets"] - s["lost_packets"]
    return (got / s["seconds"], s["lost_percent"])
def pings(path):
    try:
        return [float(t) for t in re.findall(r"time=([\d.]+) ms", open(path).read())]
    except Exception:
        return []
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
rows = {}
for impl in impls:
    r = range(1, rounds + 1)
    rows[impl] = (
        med(tcp(load(f"{out}/{impl}-{i}-tcp1.json")) for i in r),
        med(tcp(load(f"{out}/{impl}-{i}-tcp4.json")) for i in r),
        med(udp(load(f"{out}/{impl}-{i}-udp.json"))[0] for i in r),
        med(udp(load(f"{out}/{impl}-{i}-udp.json"))[1] for i in r),
        med([t for i in r for t in pings(f"{out}/{impl}-{i}-ping.txt")]),
        min([t for i in r for t in pings(f"{out}/{impl}-{i}-ping.txt")], default=None),
    )
fmt = lambda v, f: "-" if v is None else f.format(v)
print(f"medians of {rounds} rounds, {duration} s per iperf3 run; raw results in {out}")
print(f"RTT: median (and minimum) of every ping of every round")
print(f"{'implementation':<16}{'TCP 1 stream':>14}{'TCP 4 streams':>15}{'UDP pkts/s':>12}{'UDP loss':>10}{'RTT':>10}{'(min)':>10}")
for impl, (t1, t4, pps, loss, r, rmin) in rows.items():
    print(f"{impl:<16}{fmt(t1,'{:.2f} Gbit/s'):>14}{fmt(t4,'{:.2f} Gbit/s'):>15}{fmt(pps,'{:.0f}'):>12}{fmt(loss,'{:.1f}%'):>10}{fmt(r,'{:.3f} ms'):>10}{fmt(rmin,'({:.3f})'):>10}")
def ratio(a, b, i):
    x, y = rows.get(a), rows.get(b)
    if not x or not y or x[i] is None or not y[i]: return "-"
    return f"{x[i] / y[i]:.2f}x"
if "meshd" in rows:
    for other in ("wireguard-go", "boringtun-cli", "none"):
        if other in rows:
            print(f"meshd / {other}: TCP 1 {ratio('meshd', other, 0)}, TCP 4 {ratio('meshd', other, 1)}, UDP pkts {ratio('meshd', other, 2)}, RTT {ratio('meshd', other, 4)}")
try:
    gbs = float(chacha.rstrip("k")) * 1000 / 1e9
    print(f"crypto limit: one core seals ChaCha20-Poly1305 at {gbs:.2f} GB/s = {gbs * 8:.1f} Gbit/s (openssl speed -evp chacha20-poly1305, 1420-byte blocks)")
except ValueError:
    print(f"crypto limit: openssl speed gave no figure ({chacha})")
PY
