#!/usr/bin/env python3
"""Hostile clients for meshd's WebSocket listener (tests/websocket.rs).

usage: websocket_hostile.py HOST PORT frames       -> one line per case: "<case> closed|open"
       websocket_hostile.py HOST PORT idle N SECS   -> opens N TCP connections, holds them
                                                       SECS seconds, prints how many the
                                                       gateway had closed by then
"""
import os
import socket
import ssl
import struct
import sys
import time

MAGIC = struct.pack(">I", 0x2FACED77)


def connect(host, port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=5))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(
        (
            "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, port, key)
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise RuntimeError("no upgrade answer")
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise RuntimeError("upgrade refused: %r" % head)
    return s


def ws_frame(payload, opcode=2):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def closed_by_gateway(s, wait=5.0):
    """True when the gateway ends the connection (a close frame or EOF) within `wait`."""
    s.settimeout(wait)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
            # A close frame from the server: opcode 8.
            if data[0] & 0x0F == 8:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def frames(host, port):
    cases = [
        ("bad_magic", [ws_frame(b"\x00\x00\x00\x01hello")]),
        ("empty_frame", [ws_frame(MAGIC + struct.pack(">I", 0))]),
        ("frame_too_long", [ws_frame(MAGIC + struct.pack(">I", 70000) + b"x" * 100)]),
        # Half a frame, then the client ends the WebSocket.
        ("truncated", [ws_frame(MAGIC + struct.pack(">I", 100) + b"y" * 10), ws_frame(b"", 8)]),
        ("bad_message", [ws_frame(b"text, not binary", 1)]),
    ]
    for name, messages in cases:
        s = connect(host, port)
        for m in messages:
            s.sendall(m)
        print(name, "closed" if closed_by_gateway(s) else "open", flush=True)
        s.close()


def idle(host, port, n, secs):
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((host, port), timeout=5))
        except OSError as e:
            print("connect failed:", e, flush=True)
            break
    print("opened", len(socks), flush=True)
    deadline = time.time() + secs
    closed = 0
    pending = list(socks)
    while pending and time.time() < deadline:
        still = []
        for s in pending:
            s.setblocking(False)
            try:
                data = s.recv(1)
                if not data:
                    closed += 1
                    continue
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
                continue
            still.append(s)
        pending = still
        time.sleep(0.2)
    print("closed", closed, flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "frames":
        frames(host, port)
    else:
        idle(host, port, int(sys.argv[4]), float(sys.argv[5]))
