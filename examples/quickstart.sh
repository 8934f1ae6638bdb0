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
#
# SITE=1 adds an on-prem site: a router namespace joined with a `wgtool create --route` file
# (wg-quick, meshd as its userspace WireGuard) and a LAN behind it with 2001:db8:20::/64 and
# 10.20.0.0/24. The laptop then fetches a page from the LAN host over IPv6 and, by name,
# over IPv4 through its 4via6 address (10-20-0-5.site-ams._site.internal), and the LAN
# host fetches the machine's page by its fdaa address.
# Usage: sudo examples/quickstart.sh        (KEEP=1 to pause before cleaning up, SITE=1)
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
ROUTER=sxrt$ID
SITEIF=sxs$ID
LAN=sxlan$ID
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
    [[ -f $WORK/$SITEIF.conf ]] &&
        in_ns "$ROUTER" env PATH="$BIN:$PATH" wg-quick down "$WORK/$SITEIF.conf" >/dev/null 2>&1
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
    rm -f "/var/run/wireguard/$LAPIF.sock" "/var/run/wireguard/$SITEIF.sock"
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

if [[ ${SITE:-} == 1 ]]; then
    echo "== a site: router $ROUTER joins with wgtool create --route, LAN $LAN behind it"
    attach "$ROUTER"
    wgtool create acme iad site-ams "$WORK/site-ams.conf" \
        --route 2001:db8:20::/64 --route 10.20.0.0/24 || fail "wgtool create site-ams"
    grep -v '^DNS' "$WORK/site-ams.conf" >"$WORK/$SITEIF.conf"
    chmod 600 "$WORK/$SITEIF.conf"
    ip netns add "$LAN"
    NAMESPACES=("$LAN" "${NAMESPACES[@]}")
    ip link add "sxli$ID" netns "$LAN" type veth peer name "sxlo$ID" netns "$ROUTER"
    in_ns "$ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    in_ns "$ROUTER" ip addr add 10.20.0.1/24 dev "sxlo$ID"
    in_ns "$ROUTER" ip -6 addr add 2001:db8:20::1/64 dev "sxlo$ID" nodad
    in_ns "$ROUTER" ip link set "sxlo$ID" up
    in_ns "$LAN" ip link set lo up
    in_ns "$LAN" ip link set "sxli$ID" name eth0
    in_ns "$LAN" ip addr add 10.20.0.5/24 dev eth0
    in_ns "$LAN" ip -6 addr add 2001:db8:20::5/64 dev eth0 nodad
    in_ns "$LAN" ip link set eth0 up
    in_ns "$LAN" ip route add default via 10.20.0.1
    in_ns "$LAN" ip -6 route add default via 2001:db8:20::1
    in_ns "$ROUTER" env WG_QUICK_USERSPACE_IMPLEMENTATION=meshd PATH="$BIN:$PATH" \
        wg-quick up "$WORK/$SITEIF.conf" >"$WORK/site-wg-quick.log" 2>&1 || fail "wg-quick up (site)"
    for fam in 4 6; do
        printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the site LAN over IPv%s\n' "$fam" >"$WORK/lan$fam"
    done
    in_ns "$LAN" socat TCP4-LISTEN:8080,reuseaddr,fork "SYSTEM:cat $WORK/lan4" 2>/dev/null &
    in_ns "$LAN" socat TCP6-LISTEN:8080,ipv6only=1,reuseaddr,fork "SYSTEM:cat $WORK/lan6" 2>/dev/null &
    # The router speaks first (as its PersistentKeepalive would), so the gateway learns where
    # it is: the org's DNS address answers pings on every host that serves the org.
    SITE_DNS=$(sed -n 's/^DNS = //p' "$WORK/site-ams.conf")
    in_ns "$ROUTER" ping -6 -c 1 -W 5 "$SITE_DNS" >/dev/null || fail "the site router cannot reach $SITE_DNS"
fi

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

if [[ ${SITE:-} == 1 ]]; then
    fetch() { # namespace url want what
        local out i
        for i in $(seq 50); do
            out=$(in_ns "$1" curl -sS --max-time 2 "$2" 2>&1 || true)
            [[ $out == "$3" ]] && { echo "$out"; return 0; }
            sleep 0.2
        done
        fail "$4 (got '$out')"
    }
    echo "== laptop: curl http://[2001:db8:20::5]:8080/ (the site's IPv6 prefix, routed natively)"
    fetch "$LAPTOP" "http://[2001:db8:20::5]:8080/" "hello from the site LAN over IPv6" \
        "the laptop could not reach the site LAN over IPv6"
    name=10-20-0-5.site-ams._site.internal
    via=$(in_ns "$LAPTOP" dig +short +time=2 +tries=2 AAAA "$name" "@$DNS" || true)
    echo "== laptop: $name is $via (4via6: the site's /96 and 10.20.0.5)"
    [[ $via == fdaa:*:a14:5 ]] || fail "$name did not resolve to a 4via6 address (got '$via')"
    echo "== laptop: curl http://$name:8080/ (NAT64 at the gateway to 10.20.0.5)"
    fetch "$LAPTOP" "http://$name:8080/" "hello from the site LAN over IPv4" \
        "the laptop could not reach 10.20.0.5 through 4via6"
    echo "== LAN host: curl http://[$MADDR]:8080/ (the site reaches the machine)"
    fetch "$LAN" "http://[$MADDR]:8080/" "$want" "the site LAN could not reach the machine"
fi

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
