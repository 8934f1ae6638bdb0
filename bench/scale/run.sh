#!/usr/bin/env bash
# The scale bench (issue 16): builds a registry of MACHINES machines and PEERS laptops at one
# gateway in seconds, then measures what a change costs and what a gateway holds, printing one
# line per figure:
#
#   build_s, registry_read_s (every record read by a client that only counts them: the
#   floor under a start), dnsd_start_s, dnsd_rss_mb (at start and after the changes),
#   dnsd_restart_s (from its local copy, `--registry-copy`), gateway_start_s and
#   gateway_restart_s (the gateway's meshd until it holds every peer; the restart from its
#   local copy, with the changes),
#   add_to_answer_ms p50/p99 (ADDS `wgtool machine add`s, each until dnsd answers its name),
#   wgtool_add_ms p50/p99, wgtool_create_ms p50/p99 (CREATES laptops joining with `wgtool
#   create`, each writing its tunnel file), meshd_apply_ms p50/p99 (the gateway's model and core time per
#   revision, from its log), meshd_kernel_ms p50/p99 (its `ip` commands for addresses),
#   gateway_rss_mb with 0 and with ACTIVE active peers, first_handshake_ms p50/p99.
#
#   bench/scale/run.sh [MACHINES] [PEERS]          # defaults 10000 1000
#   BACKEND=etcd bench/scale/run.sh 100000 100000
#
# Variables: BACKEND (sqlite | etcd), ADDS (50), CREATES (10), WGTOOL_BASE (another build's
# wgtool, whose `create` is timed in the same run), ACTIVE (1000, at most PEERS), SEED (1),
# SIXPN_BIN (skip the build and use meshd, dnsd, wgtool and the examples from there).
# Needs root (a network namespace and a TUN device for the gateway's meshd), python3, and
# etcd for BACKEND=etcd (apt: etcd-server). Everything runs inside a namespace the script
# makes and removes; the only traffic is on its loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
MACHINES=${1:-10000}
PEERS=${2:-1000}
if [ -z "${SIXPN_BIN:-}" ]; then
  cargo build --release -q -p meshd -p dnsd -p wgtool --bins
  cargo build --release -q -p meshd --example scale_registry --example scale_handshake
  SIXPN_BIN=$PWD/target/release
fi
NS=sixpn-scale-$$
ip netns add "$NS"
trap 'ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null; sleep 0.5; ip netns del "$NS" 2>/dev/null || true' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" env SIXPN_BIN="$SIXPN_BIN" MACHINES="$MACHINES" PEERS="$PEERS" \
  python3 bench/scale/run.py
