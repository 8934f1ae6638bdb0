#!/usr/bin/env python3
"""Sends COUNT UDP datagrams of 1,400 bytes (bigger than the tunnel's MTU, so each leaves
the sender in two fragments) in bursts, each numbered and filled with a pattern that starts
where its number says; the receiver prints how many came, how many came after a higher
number and how many were not what was sent. For tests/meshd_offload.rs.

usage: meshd_offload_fragments.py recv|send ADDR PORT COUNT
"""
import socket, struct, sys, time
mode, addr, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
pattern = bytes(range(256)) * 7
def body(n):
    return struct.pack("!I", n) + pattern[n % 256 : n % 256 + 1396]
s = socket.socket(family, socket.SOCK_DGRAM)
if mode == "recv":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((addr, port))
    s.settimeout(5)
    print("listening", flush=True)
    got, late, bad, last = 0, 0, 0, -1
    try:
        while got < count:
            data = s.recv(2048)
            n = struct.unpack("!I", data[:4])[0]
            got += 1
            late += n < last
            bad += data != body(n)
            last = max(last, n)
    except socket.timeout:
        pass
    print(f"got {got} late {late} bad {bad}", flush=True)
else:
    for n in range(count):
        s.sendto(body(n), (addr, port))
        if n % 20 == 19:
            time.sleep(0.002)
