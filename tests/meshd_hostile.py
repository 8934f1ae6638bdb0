#!/usr/bin/env python3
"""Hostile WireGuard traffic for tests/meshd_hostile.rs (standard library only).

  capture IFACE DST_IP DST_PORT OUT SECONDS TYPES
      Watches IPv4/UDP leaving IFACE for DST_IP:DST_PORT (an AF_PACKET socket) and writes
      the first datagram of each WireGuard message type in TYPES (e.g. 1,4) to OUT as
      `type hex` lines, then exits; or exits after SECONDS with what it has.
  send HOST PORT RATE KIND [ARGS]
      Sends datagrams of one KIND at most RATE a second from one socket, gathers what comes
      back, and prints `sent N`, `replies N` and `reply_type_T N` lines.

KINDs: garbage N | empty N | truncated | unknown-index N LIVE | forged-counter N CAPTURE |
       replay CAPTURE TIMES | bad-mac-init N | valid-mac-init N PUBKEY_BASE64
"""

import base64
import hashlib
import os
import random
import socket
import struct
import sys
import time

INIT, RESPONSE, COOKIE, DATA = 1, 2, 3, 4
SIZES = {INIT: 148, RESPONSE: 92, COOKIE: 64}
DATA_MIN = 32


def header(kind):
    return struct.pack("<I", kind)


def is_wireguard(d):
    """Whether boringtun's parser would take `d` as a message (then it is not garbage)."""
    if len(d) < 4:
        return False
    kind = struct.unpack("<I", d[:4])[0]
    return SIZES.get(kind) == len(d) or (kind == DATA and len(d) >= DATA_MIN)


def garbage(n):
    for i in range(n):
        # Every length from 1 to 2000 comes up, small ones often.
        length = 1 + (i % 2000 if i % 3 else random.randrange(64))
        d = bytearray(os.urandom(length))
        if is_wireguard(d):
            d[1] |= 0x80
        yield bytes(d)


def truncated():
    for kind, size in list(SIZES.items()) + [(DATA, DATA_MIN)]:
        for length in range(4, size):
            yield header(kind) + os.urandom(length - 4)
        if kind != DATA:
            for length in range(size + 1, size + 17):
                yield header(kind) + os.urandom(length - 4)
            # The right size, but the three reserved bytes are not zero.
            yield bytes([kind, 1, 0, 0]) + os.urandom(size - 4)


def mac1(msg, pubkey):
    key = hashlib.blake2s(b"mac1----" + base64.b64decode(pubkey)).digest()
    return hashlib.blake2s(msg, key=key, digest_size=16).digest()


def unknown_index(n, live, pubkey):
    """Responses, cookie replies and data for receiver indexes no peer holds: the top 24
    bits pick the peer, so stay clear of the live peer's. Responses carry a right mac1
    for the responder's key, so that they get past the MAC check to the index lookup."""
    for i in range(n):
        while True:
            index = random.getrandbits(32)
            if index >> 8 != live >> 8:
                break
        # Few responses: more than 100 a second would (rightly) meet the handshake limiter.
        kind = RESPONSE if i % 50 == 0 else (COOKIE, DATA)[i % 2]
        if kind == RESPONSE:
            # type, sender index, receiver index, ephemeral, empty; then mac1, mac2.
            msg = header(kind) + os.urandom(4) + struct.pack("<I", index) + os.urandom(48)
            yield msg + mac1(msg, pubkey) + bytes(16)
            continue
        length = SIZES.get(kind) or random.randrange(DATA_MIN, 200)
        yield header(kind) + struct.pack("<I", index) + os.urandom(length - 8)


def read_capture(path):
    out = []
    with open(path) as f:
        for line in f:
            kind, data = line.split()
            out.append((int(kind), bytes.fromhex(data)))
    return out


def forged_counter(n, path):
    """The live receiver index, counters far beyond the real ones, bytes that do not
    authenticate: must not move the replay window."""
    data = [d for k, d in read_capture(path) if k == DATA][0]
    counter = struct.unpack("<Q", data[8:16])[0]
    for i in range(n):
        yield data[:8] + struct.pack("<Q", counter + 1_000_000 + i) + os.urandom(len(data) - 16)


def replay(path, times):
    for _ in range(times):
        for _, d in read_capture(path):
            yield d


def bad_mac_init(n):
    for _ in range(n):
        yield header(INIT) + os.urandom(SIZES[INIT] - 4)


def valid_mac_init(n, pubkey):
    """Initiations whose mac1 is right for the responder's key (so they get past the cheap
    check) but whose contents are random (so the Noise handshake fails)."""
    for _ in range(n):
        msg = header(INIT) + os.urandom(112)
        yield msg + mac1(msg, pubkey) + bytes(16)


def send(host, port, rate, datagrams):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setblocking(False)
    replies = {}

    def drain():
        while True:
            try:
                d = sock.recv(4096)
            except BlockingIOError:
                return
            kind = d[0] if d else -1
            replies[kind] = replies.get(kind, 0) + 1

    start = time.monotonic()
    sent = 0
    for d in datagrams:
        while True:
            try:
                sock.sendto(d, (host, port))
                break
            except BlockingIOError:
                time.sleep(0.001)
        sent += 1
        if sent % 50 == 0:
            drain()
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        drain()
        time.sleep(0.02)
    print(f"sent {sent}")
    print(f"seconds {time.monotonic() - start - 1.0:.3f}")
    print(f"replies {sum(replies.values())}")
    for kind, count in sorted(replies.items()):
        print(f"reply_type_{kind} {count}")


def capture(iface, dst_ip, dst_port, out, seconds, types):
    want = {int(t) for t in types.split(",")}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    dst = socket.inet_aton(dst_ip)
    got = {}
    print("capturing", flush=True)
    deadline = time.monotonic() + seconds
    while want - got.keys() and time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except socket.timeout:
            continue
        if len(frame) < 42 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or ip[16:20] != dst:
            continue
        udp = ip[ihl:]
        port, length = struct.unpack("!HH", udp[2:6])
        payload = udp[8:length]
        # One datagram, not a GSO run of several (those are longer than any one of ours).
        if port != dst_port or len(payload) < 4 or len(payload) > 1500:
            continue
        kind = payload[0]
        if kind in want and kind not in got and is_wireguard(payload):
            got[kind] = payload
    with open(out + ".tmp", "w") as f:
        for kind, d in sorted(got.items()):
            f.write(f"{kind} {d.hex()}\n")
    os.rename(out + ".tmp", out)
    print("captured", sorted(got), flush=True)


def main(argv):
    if argv[0] == "capture":
        iface, dst_ip, dst_port, out, seconds, types = argv[1:7]
        return capture(iface, dst_ip, int(dst_port), out, float(seconds), types)
    host, port, rate, kind, *args = argv[1:]
    gen = {
        "garbage": lambda: garbage(int(args[0])),
        "empty": lambda: (b"" for _ in range(int(args[0]))),
        "truncated": truncated,
        "unknown-index": lambda: unknown_index(int(args[0]), int(args[1]), args[2]),
        "forged-counter": lambda: forged_counter(int(args[0]), args[1]),
        "replay": lambda: replay(args[0], int(args[1])),
        "bad-mac-init": lambda: bad_mac_init(int(args[0])),
        "valid-mac-init": lambda: valid_mac_init(int(args[0]), args[1]),
    }[kind]
    send(host, int(port), float(rate), gen())


if __name__ == "__main__":
    main(sys.argv[1:])
