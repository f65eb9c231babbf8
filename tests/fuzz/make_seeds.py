#!/usr/bin/env python3
"""Regenerates corpus/ from the SDK traces: every `raw` hex line, plus each
decoded request line re-encoded. Endpoint seeds frame datagrams (see
fuzz_coap_endpoint.cc). Usage: make_seeds.py TRACE_DIR"""
import glob, os, re, sys

here = os.path.dirname(os.path.abspath(__file__))
NUM = {"Uri-Host": 3, "Observe": 6, "Uri-Path": 11, "Uri-Query": 15}
TYPES = {"CON": 0, "NON": 1, "ACK": 2, "RST": 3}
METHODS = {"EMPTY": 0, "GET": 1, "POST": 2, "PUT": 3, "DELETE": 4}

def ext(v):
    if v < 13: return v, b""
    if v < 269: return 13, bytes([v - 13])
    return 14, (v - 269).to_bytes(2, "big")

def encode(line):
    f = line.split()
    i = 2 + (f[1] == "C->S")
    t, c = f[i], f[i + 1]
    code = METHODS[c] if c in METHODS else int(c[0]) << 5 | int(c[2:])
    mid, tok, opts, payload = 0, b"", [], b""
    for w in f[i + 2:]:
        if w.startswith("mid="): mid = int(w[4:])
        elif w.startswith("tok="): tok = bytes.fromhex(w[4:])
        elif w.startswith("payload["): payload = bytes.fromhex(w.split("=", 1)[1])
        elif "=" in w and w.split("=", 1)[0] in NUM:
            k, v = w.split("=", 1)
            v = v.strip('"')
            n = NUM[k]
            val = int(v).to_bytes((int(v).bit_length() + 7) // 8, "big") if n == 6 else v.encode()
            opts.append((n, val))
    opts.sort(key=lambda o: o[0])
    out = bytes([0x40 | TYPES[t] << 4 | len(tok), code]) + mid.to_bytes(2, "big") + tok
    last = 0
    for n, v in opts:
        d, de = ext(n - last); l, le = ext(len(v))
        out += bytes([d << 4 | l]) + de + le + v
        last = n
    if payload: out += b"\xff" + payload
    return out

packets = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.log"))):
    for line in open(path):
        s = line.strip()
        if s.startswith("raw "): packets.append(bytes.fromhex(s[4:]))
        elif "->" in s and " EMPTY " not in s: packets.append(encode(s))
packets = list(dict.fromkeys(packets))
for sub in ("fuzz_coap_message", "fuzz_coap_endpoint"):
    d = os.path.join(here, "corpus", sub)
    for old in glob.glob(os.path.join(d, "*")): os.remove(old)
for k, p in enumerate(packets):
    open(os.path.join(here, "corpus/fuzz_coap_message", f"trace_{k:03d}"), "wb").write(p)
frame = lambda peer, p: bytes([peer]) + len(p).to_bytes(2, "big") + p
reqs = [p for p in packets if p[1] in (1, 2, 3, 4)]
for k in range(0, len(reqs), 4):
    chunk = reqs[k:k + 4]
    seed = b"".join(frame(j % 4, p) for j, p in enumerate(chunk))
    seed += b"".join(frame(j % 4, p) for j, p in enumerate(chunk))  # duplicates
    seed += b"\xf0\xf1\xf2\xf0\xf1"
    seed += b"\xf4\x20\xf0\xf4\xff\xf4\xff\xf6\xf7\xf1"  # time: separate ACK, retransmissions
    open(os.path.join(here, "corpus/fuzz_coap_endpoint", f"session_{k:03d}"), "wb").write(seed)
# The SDK's token-carrying empty ACK, a ping and an observe registration.
special = frame(0, bytes.fromhex("4401020002458b6b3d066d796170702e77696c64646f67696f2e636f6d310051614c2e63733d73486f5274313233")) \
    + b"\xf1\xf1\xf1" + frame(0, bytes.fromhex("64006e9602458b6b")) + frame(1, bytes.fromhex("40000001")) + b"\xf2\xf3"
open(os.path.join(here, "corpus/fuzz_coap_endpoint", "observe_ack_ping"), "wb").write(special)
# Time: an observer moved, restored, notified with CONs that are never acknowledged until it is
# dropped; then past EXCHANGE_LIFETIME (247 s) so housekeeping expires duplicates and evicts peers.
obs = bytes.fromhex("4401020002458b6b3d066d796170702e77696c64646f67696f2e636f6d310051614c2e63733d73486f5274313233")
timed = frame(0, obs) + b"\xf5\x01\xf8" + b"\xf1\xf4\x40" * 25 + b"\xf7" + frame(2, obs) + b"\xf1" \
    + b"\xf4\xff" * 30 + frame(0, obs) + b"\xf2"
open(os.path.join(here, "corpus/fuzz_coap_endpoint", "observe_time"), "wb").write(timed)
print(len(packets), "message seeds,", len(reqs) // 4 + 3, "endpoint seeds")
