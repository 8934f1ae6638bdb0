#!/usr/bin/env bash
# sixpn quickstart: a whole mesh on one machine, in network namespaces.
#
#   three hosts (h1 is the gateway) on a bridge underlay, each running meshd against one
#   embedded (SQLite) registry, and dnsd beside each; a machine on h3 serving HTTP; a laptop
#   that joins with a `wgtool create` tunnel file through wg-quick (meshd as the userspace
#   WireGuard where the kernel has no WireGuard module), resolves web.internal through the
#   gateway's dnsd and fetches the page by name through the gateway.
#
# Needs root; installs what it needs with apt if missing (`scripts/deps run`: the build's
# protobuf-compiler, iproute2, wireguard-tools, socat, curl, dnsutils) and builds the binaries
# (SIXPN_BIN=DIR uses binaries already built there instead). Every step is checked: it exits
# non-zero, with the logs' tails, if one fails, and cleans up in every case.
# Usage: sudo examples/quickstart.sh        (KEEP=1 to pause before cleaning up)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "quickstart: run as root (it makes network namespaces)" >&2; exit 2; }
"$ROOT/scripts/deps" run
if [[ -n ${SIXPN_BIN:-} ]]; then
    BIN=$(realpath -m "$SIXPN_BIN")
else
    command -v cargo >/dev/null || {
        echo "quickstart: no cargo in PATH (install Rust from https://rustup.rs, or build as yourself and run with SIXPN_BIN=target/debug)" >&2
        exit 2
    }
    echo "== building meshd, wgtool, dnsd"
    (cd "$ROOT" && cargo build --bins -p meshd -p wgtool -p dnsd)
    BIN=$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}/debug")
fi
for b in meshd wgtool dnsd; do
    [[ -x $BIN/$b ]] || { echo "quickstart: $BIN/$b is missing" >&2; exit 2; }
done

ID=$$
WORK=$(mktemp -d /tmp/sixpn-quickstart.XXXXXX)
REG=$WORK/registry.db
NS_BR=sxbr$ID
HOSTS=(h1 h2 h3)
LAPTOP=sxlap$ID
LAPIF=sxl$ID
NAMESPACES=()
wgtool() { "$BIN/wgtool" --registry "$REG" "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
fail() { # message: says what failed, with the logs' tails, and exits 1 (cleanup still runs)
    echo "quickstart: FAILED: $*" >&2
    for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    [[ -f $WORK/$LAPIF.conf ]] &&
        in_ns "$LAPTOP" env PATH="$BIN:$PATH" wg-quick down "$WORK/$LAPIF.conf" >/dev/null 2>&1
    local ns pids=()
    for ns in "${NAMESPACES[@]}"; do pids+=($(ip netns pids "$ns" 2>/dev/null)); done
    if [[ ${#pids[@]} -gt 0 ]]; then
        kill "${pids[@]}" 2>/dev/null
        local pid alive
        for _ in $(seq 20); do # a moment to stop cleanly, then SIGKILL
            alive=0
            for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [[ $alive == 0 ]] && break
            sleep 0.1
        done
        kill -9 "${pids[@]}" 2>/dev/null
    fi
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    for h in "${HOSTS[@]}"; do rm -f "/var/run/wireguard/sx$h$ID.sock"; done
    rm -f "/var/run/wireguard/$LAPIF.sock"
    rm -rf "/etc/netns/$LAPTOP"
    if [[ $rc == 0 ]]; then
        rm -rf "$WORK"
    else # keep the logs and the registry, not the keys
        rm -f "$WORK"/*.key "$WORK"/*.conf
        echo "quickstart: exit $rc; cleaned up, logs kept in $WORK" >&2
    fi
}
trap cleanup EXIT
# Ctrl-C or a kill (a CI timeout) exits through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== underlay: a bridge in $NS_BR, 10.99.0.0/24"
ip netns add "$NS_BR"
NAMESPACES+=("$NS_BR")
in_ns "$NS_BR" ip link add br0 type bridge
in_ns "$NS_BR" ip link set br0 up
n=0
attach() { # namespace
    local ns=$1
    n=$((n + 1))
    ip netns add "$ns"
    NAMESPACES=("$ns" "${NAMESPACES[@]}")
    ip link add "sxv$ID$n" netns "$ns" type veth peer name "sxo$ID$n" netns "$NS_BR"
    in_ns "$NS_BR" ip link set "sxo$ID$n" master br0 up
    in_ns "$ns" ip link set lo up
    in_ns "$ns" ip link set "sxv$ID$n" name eth0
    in_ns "$ns" ip addr add "10.99.0.$n/24" dev eth0
    in_ns "$ns" ip link set eth0 up
}

wgtool org create acme
for h in "${HOSTS[@]}"; do
    ns=sx$h$ID
    attach "$ns"
    gw=()
    [[ $h == h1 ]] && gw=(--gateway)
    echo "== $h: meshd in namespace $ns, endpoint 10.99.0.$n:51820 ${gw[*]}"
    in_ns "$ns" "$BIN/meshd" --registry "$REG" --node "$h" --region iad \
        --endpoint "10.99.0.$n:51820" --key "$WORK/$h.key" --interface "sx$h$ID" \
        --metrics 127.0.0.1:9109 "${gw[@]}" >"$WORK/$h.log" 2>&1 &
    # dnsd answers .internal names at the org's fdaa:<net>::3, which meshd puts on sx$h$ID.
    in_ns "$ns" "$BIN/dnsd" --registry "$REG" --listen "[::]:53" --metrics 127.0.0.1:9153 \
        >"$WORK/$h-dnsd.log" 2>&1 &
done
for h in "${HOSTS[@]}"; do
    for i in $(seq 100); do
        wgtool node list 2>/dev/null | grep -q "^$h " && break
        [[ $i == 100 ]] && fail "$h's meshd did not register its node in 10 s"
        sleep 0.1
    done
done
wgtool node list

echo "== a machine on h3 serving HTTP"
read -r MID MADDR < <(wgtool machine add web --org acme --region iad --node h3) || fail "wgtool machine add"
echo "machine $MID at $MADDR"
for i in $(seq 100); do
    in_ns "sxh3$ID" ip -6 addr show | grep -q "$MADDR/" && break
    [[ $i == 100 ]] && fail "meshd on h3 did not put $MADDR on sxh3$ID in 10 s"
    sleep 0.1
done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from machine %s on h3\n' "$MID" >"$WORK/page"
in_ns "sxh3$ID" socat "TCP6-LISTEN:8080,bind=[$MADDR],reuseaddr,fork" "SYSTEM:cat $WORK/page" 2>/dev/null &

echo "== a laptop joins with a wgtool tunnel file"
attach "$LAPTOP"
wgtool create acme iad alice "$WORK/alice.conf"
# wg-quick would hand the DNS line to resolvconf, which rewrites this machine's own
# /etc/resolv.conf even from a namespace; the laptop namespace gets its own file instead.
DNS=$(sed -n 's/^DNS = //p' "$WORK/alice.conf")
[[ -n $DNS ]] || fail "the tunnel file has no DNS line"
mkdir -p "/etc/netns/$LAPTOP"
echo "nameserver $DNS" >"/etc/netns/$LAPTOP/resolv.conf"
grep -v '^DNS' "$WORK/alice.conf" >"$WORK/$LAPIF.conf"
chmod 600 "$WORK/$LAPIF.conf"
in_ns "$LAPTOP" env WG_QUICK_USERSPACE_IMPLEMENTATION=meshd PATH="$BIN:$PATH" \
    wg-quick up "$WORK/$LAPIF.conf" || fail "wg-quick up"
# The laptop's only way to the org's network is the tunnel.
route=$(in_ns "$LAPTOP" ip -6 route get "$MADDR" 2>&1) || true
[[ $route == *" dev $LAPIF "* ]] || fail "the laptop routes $MADDR not through $LAPIF: $route"

echo "== laptop: dig web.internal AAAA @$DNS (dnsd on the gateway, through the tunnel)"
for i in $(seq 50); do
    got=$(in_ns "$LAPTOP" dig +short +time=1 +tries=1 AAAA web.internal "@$DNS" 2>/dev/null || true)
    [[ $got == "$MADDR" ]] && { echo "$got"; break; }
    [[ $i == 50 ]] && fail "web.internal did not resolve to $MADDR (got '$got')"
    sleep 0.2
done
txt=$(in_ns "$LAPTOP" dig +short +time=2 +tries=2 TXT vms.web.internal "@$DNS" || true)
echo "$txt"
[[ $txt == *"$MID"* ]] || fail "TXT vms.web.internal does not list machine $MID (got '$txt')"

echo "== laptop: curl http://web.internal:8080/ (laptop → h1 gateway → h3; the name from the laptop's resolver)"
want="hello from machine $MID on h3"
for i in $(seq 50); do
    out=$(in_ns "$LAPTOP" curl -sS --max-time 2 -w '%{remote_ip}' "http://web.internal:8080/" 2>&1 || true)
    if [[ $out == "$want"$'\n'"$MADDR" ]]; then
        echo "${out%$'\n'*}   (from $MADDR)"
        break
    fi
    [[ $i == 50 ]] && fail "the laptop could not fetch the page by name (got '$out')"
    sleep 0.2
done
hs=$(in_ns "$LAPTOP" wg show "$LAPIF" latest-handshakes | awk '{print $2}')
[[ ${hs:-0} -gt 0 ]] || fail "the laptop's tunnel has no handshake"

cat <<MSG

== It works ($SECONDS s). What to look at (re-run with KEEP=1 to keep it up):
  ip netns exec sxh1$ID wg show sxh1$ID          # the gateway's peers: h2, h3 and alice, with handshakes
  ip netns exec sxh3$ID ip -6 addr show sxh3$ID  # meshd put the machine's address (and the org DNS ::3) there
  ip netns exec $LAPTOP dig AAAA web.internal     # the laptop's resolver is the org's dnsd
  ip netns exec $LAPTOP dig TXT _apps.internal; ip netns exec $LAPTOP dig AAAA top1.nearest.of.web.internal
  ip netns exec sxh1$ID curl -s 127.0.0.1:9109/metrics | grep -v '^#'   # forwarded, drops by reason
  $BIN/wgtool --registry $REG machine list       # the registry meshd follows
  cat $WORK/alice.conf                            # the laptop's tunnel file
MSG
if [[ ${KEEP:-} == 1 ]]; then
    read -r -p "press enter to tear it all down " _
fi
