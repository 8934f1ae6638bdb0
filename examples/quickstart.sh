#!/usr/bin/env bash
# sixpn quickstart: a whole mesh on one machine, in network namespaces.
#
#   three hosts (h1 is the gateway) on a bridge underlay, each running meshd against one
#   embedded (SQLite) registry, and dnsd beside each; a machine on h3 serving HTTP; a laptop
#   that joins with a `wgtool create` tunnel file through wg-quick (meshd as the userspace
#   WireGuard), resolves web.internal through the gateway's dnsd and fetches the page
#   through the gateway.
#
# Needs root; installs iproute2, wireguard-tools, socat, curl and dnsutils with apt if they
# are missing, and builds the binaries. Cleans up after itself.
# Usage: sudo examples/quickstart.sh        (KEEP=1 to pause before cleaning up)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SIXPN_BIN:-$ROOT/target/debug}
[[ $(id -u) == 0 ]] || { echo "quickstart: run as root (it makes network namespaces)" >&2; exit 2; }
missing=()
for p in iproute2 wireguard-tools socat curl dnsutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    # --no-install-recommends: wireguard-tools would otherwise pull in a kernel image.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ -z ${SIXPN_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --bins -p meshd -p wgtool -p dnsd)
fi

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

cleanup() {
    set +e
    in_ns "$LAPTOP" env PATH="$BIN:$PATH" wg-quick down "$WORK/$LAPIF.conf" >/dev/null 2>&1
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK" "/etc/netns/$LAPTOP"
}
trap cleanup EXIT

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
    for _ in $(seq 100); do wgtool node list 2>/dev/null | grep -q "^$h " && break; sleep 0.1; done
done
wgtool node list

echo "== a machine on h3 serving HTTP"
read -r MID MADDR < <(wgtool machine add web --org acme --region iad --node h3)
echo "machine $MID at $MADDR"
for _ in $(seq 100); do in_ns "sxh3$ID" ip -6 addr show | grep -q "$MADDR/" && break; sleep 0.1; done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from machine %s on h3\n' "$MID" >"$WORK/page"
in_ns "sxh3$ID" socat "TCP6-LISTEN:8080,bind=[$MADDR],reuseaddr,fork" "SYSTEM:cat $WORK/page" 2>/dev/null &

echo "== a laptop joins with a wgtool tunnel file"
attach "$LAPTOP"
wgtool create acme iad alice "$WORK/alice.conf"
# wg-quick would hand the DNS line to resolvconf, which rewrites this machine's own
# /etc/resolv.conf even from a namespace; the laptop namespace gets its own file instead.
DNS=$(sed -n 's/^DNS = //p' "$WORK/alice.conf")
mkdir -p "/etc/netns/$LAPTOP"
echo "nameserver $DNS" >"/etc/netns/$LAPTOP/resolv.conf"
grep -v '^DNS' "$WORK/alice.conf" >"$WORK/$LAPIF.conf"
chmod 600 "$WORK/$LAPIF.conf"
in_ns "$LAPTOP" env WG_QUICK_USERSPACE_IMPLEMENTATION=meshd PATH="$BIN:$PATH" wg-quick up "$WORK/$LAPIF.conf"

echo "== laptop: dig web.internal AAAA @$DNS (dnsd on the gateway, through the tunnel)"
for i in $(seq 50); do
    got=$(in_ns "$LAPTOP" dig +short +time=1 +tries=1 AAAA web.internal "@$DNS" 2>/dev/null || true)
    [[ $got == "$MADDR" ]] && { echo "$got"; break; }
    [[ $i == 50 ]] && { echo "quickstart: web.internal did not resolve to $MADDR (got '$got'); logs in $WORK" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1; }
    sleep 0.2
done
in_ns "$LAPTOP" dig +short TXT vms.web.internal "@$DNS"

echo "== laptop: curl http://web.internal:8080/ (laptop → h1 gateway → h3)"
for i in $(seq 50); do
    if out=$(in_ns "$LAPTOP" curl -s --max-time 2 "http://web.internal:8080/"); then
        echo "$out"
        break
    fi
    [[ $i == 50 ]] && { echo "quickstart: the laptop could not reach the machine; logs in $WORK" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1; }
    sleep 0.2
done

cat <<MSG

== It works. What to look at (while it runs, or re-run with KEEP=1):
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
