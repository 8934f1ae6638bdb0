#!/usr/bin/env python3
"""Times `wgtool machine add` until dnsd answers `<id>.vm.<app>.internal`.

Two figures per machine: from starting `wgtool machine add` (what a person sees), and from
wgtool returning (the write committed) to the first answer (the registry-to-DNS path alone).
dnsd is asked over UDP every millisecond; a name that takes longer than --timeout counts as
a miss.
"""
import argparse
import json
import random
import socket
import struct
import subprocess
import sys
import time


def query(name: str, qtype: int = 28) -> bytes:
    header = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)


def answered(sock: socket.socket, addr, name: str) -> bool:
    sock.sendto(query(name), addr)
    try:
        data, _ = sock.recvfrom(4096)
    except socket.timeout:
        return False
    flags, _qd, ancount = struct.unpack(">HHH", data[2:8])
    return (flags & 0xF) == 0 and ancount > 0


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wgtool", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--dns", required=True, help="ip:port of dnsd")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    host, port = a.dns.rsplit(":", 1)
    addr = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    total, after_write, misses = [], [], 0
    for i in range(a.n):
        t0 = time.perf_counter()
        out = subprocess.run(
            [a.wgtool, "--registry", a.registry, "machine", "add", "web",
             "--org", "acme", "--region", "iad", "--node", "host-a"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        t_write = time.perf_counter()
        name = f"{out[0]}.vm.web.internal"
        while not answered(sock, addr, name):
            if time.perf_counter() - t_write > a.timeout:
                misses += 1
                break
            time.sleep(0.001)
        else:
            t1 = time.perf_counter()
            total.append((t1 - t0) * 1000)
            after_write.append((t1 - t_write) * 1000)
    result = {
        "backend": a.label,
        "n": a.n,
        "misses": misses,
        "add_to_answer_ms": {p: round(pct(total, q), 1) for p, q in (("p50", 50), ("p99", 99), ("max", 100))},
        "commit_to_answer_ms": {p: round(pct(after_write, q), 1) for p, q in (("p50", 50), ("p99", 99), ("max", 100))},
    }
    print(json.dumps(result))
    return 0 if misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
