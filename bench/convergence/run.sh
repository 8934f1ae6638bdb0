#!/usr/bin/env bash
# Convergence: time from `wgtool machine add` to dnsd answering the machine's name, against
# the embedded SQLite registry and against etcd (a single member on loopback, started here).
# Targets: p99 < 100 ms on SQLite, < 1 s on etcd.
#
# Needs: python3, etcd (apt etcd-server). Builds wgtool and dnsd (release) if SIXPN_BIN has
# none. Touches only loopback and a temp dir; stops what it started.
# Usage: bench/convergence/run.sh [N]      (N machines per backend, default 100)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/convergence
N=${1:-100}
BIN=${SIXPN_BIN:-$ROOT/target/release}
if [[ ! -x $BIN/wgtool || ! -x $BIN/dnsd ]]; then
    (cd "$ROOT" && cargo build --release -p wgtool -p dnsd)
fi
WORK=$(mktemp -d /tmp/sixpn-convergence.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

KEY=HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=

bench() {
    local label=$1 url=$2 port
    "$BIN/wgtool" --registry "$url" org create acme >/dev/null
    "$BIN/wgtool" --registry "$url" node add host-a --region iad \
        --endpoint 192.0.2.1:51820 --public-key "$KEY" >/dev/null
    port=$(free_port)
    "$BIN/dnsd" --registry "$url" --listen "127.0.0.1:$port" --default-org acme \
        --upstream 127.0.0.1:9 >"$WORK/dnsd-$label.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        python3 - "$port" <<'PY' && break || sleep 0.1
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1)
s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05_apps\x08internal\x00\x00\x10\x00\x01", ("127.0.0.1", int(sys.argv[1])))
s.recvfrom(512)
PY
    done
    python3 "$HERE/measure.py" --wgtool "$BIN/wgtool" --registry "$url" \
        --dns "127.0.0.1:$port" --n "$N" --label "$label"
}

bench sqlite "$WORK/registry.db"

CLIENT=$(free_port)
PEER=$(free_port)
etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$CLIENT" --advertise-client-urls "http://127.0.0.1:$CLIENT" \
    --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
    --initial-cluster "bench=http://127.0.0.1:$PEER" --log-level warn >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$CLIENT") 2>/dev/null && break
    sleep 0.1
done
sleep 1 # leader election
bench etcd "etcd://127.0.0.1:$CLIENT/bench"
