"""Writes the built seeds (see README.md). Run from fuzz/: python3 corpus/make_seeds.py"""
import ipaddress
import os
import struct


def w(target, name, b):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    open(f"corpus/{target}/{name}", "wb").write(b)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def query(ident, name, qtype, edns):
    p = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1 if edns else 0)
    for label in name.split("."):
        if label:
            p += bytes([len(label)]) + label.encode()
    p += b"\0" + struct.pack("!HH", qtype, 1)
    if edns:
        p += b"\0" + struct.pack("!HHHHH", 41, edns, 0, 0, 0)
    return p


def ip6(src, dst, nh, l4):
    return (bytes([0x60, 0, 0, 0]) + struct.pack("!HBB", len(l4), nh, 64)
            + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + l4)


def ip4(src, dst, proto, l4, ident=0, frag=0):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, 64, proto, 0,
                              ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed))
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + l4


def udp(payload):
    return struct.pack("!HHHH", 4000, 53, 8 + len(payload), 0) + payload


def rec(selector, b):
    """One step of meshd_datagram / one packet of fragments (sixpn_fuzz::records)."""
    return bytes([selector]) + struct.pack("!H", len(b)) + b


# dns_upstream: answers to its fixed query (selector 0x10: example.com AAAA with EDNS).
q = query(0x2a2a, "example.com", 28, 1232)
question = q[12:12 + 17]
answer = (q[0:2] + bytes([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1]) + question
          + bytes([0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0x0e, 0x10, 0, 16])
          + ipaddress.ip_address("2001:db8::53").packed + bytes([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]))
w("dns_upstream", "aaaa-edns", b"\x10" + answer)
soa = b"\x02ns\xc0\x0c\x02hm\xc0\x0c" + struct.pack("!IIIII", 1, 3600, 600, 86400, 60)
nx = (q[0:2] + bytes([0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0]) + question
      + bytes([0xc0, 0x0c, 0, 6, 0, 1, 0, 0, 0, 60]) + struct.pack("!H", len(soa)) + soa)
w("dns_upstream", "nxdomain-soa-noedns", b"\x00" + nx)

machine, lan, node = "fdaa:0:1:a7b:1:0:1:2", "fdaa:0:1:b1a:1:5:a14:5", "fdaa:0:1:a7b:2:0:1:2"
echo = bytes([128, 0, 0, 0, 0, 1, 0, 1])
w("nat64", "udp6", b"\x00" + ip6(machine, lan, 17, udp(b"q")))
w("nat64", "ping6", b"\x02" + ip6(machine, lan, 58, echo + b"ping"))
w("nat64", "tcp6", b"\x04" + ip6(machine, lan, 6, struct.pack("!HHIIBBHHH", 4000, 80, 1, 0, 0x50, 2, 1024, 0, 0)))
w("nat64", "udp4", b"\x01" + ip4("10.20.0.5", "100.127.0.0", 17, udp(b"a")))
w("nat64", "ping4", b"\x03" + ip4("10.20.0.5", "100.127.0.0", 1, bytes([0, 0, 0, 0, 0, 1, 0, 1]) + b"pong"))

# The machine asks the site's LAN host, which answers the pool address; a node's machine
# pings the LAN through the gateway, time passes, the site speaks IPv6.
w("meshd_datagram", "nat64-round-trip",
  rec(2, ip6(machine, lan, 17, udp(b"question"))) + rec(3, ip4("10.20.0.5", "100.127.0.0", 17, udp(b"answer"))))
w("meshd_datagram", "forwarded",
  rec(4, ip6(node, lan, 58, echo)) + rec(7, b"\x08") + rec(3, ip6("2001:db8:5::9", node, 17, udp(b"v6"))))

# A 2980-byte UDP datagram in 1400-byte fragments, then a whole packet.
data = udp(bytes([7]) * 2972)
seed, step = b"\x00", 1400
for k in range(0, len(data), step):
    more = k + step < len(data)
    seed += rec(0, ip4("10.0.0.1", "10.0.0.2", 17, data[k:k + step], ident=77,
                       frag=(k // 8) | (0x2000 if more else 0)))
seed += rec(0, ip4("10.0.0.1", "10.0.0.2", 17, udp(b"x")))
w("fragments", "three-fragments-and-a-packet", seed)
