"""fakecloud's database: the one JSON tree in memory and everything the request threads share,
guarded by LOCK (an RLock; STREAM_COND waits on it). Paths are lists of segments (split).

- STATE: the tree ("data"), the logs the control API reads back, and the injected faults.
- EVENTS: every write as (parts, kind, data), appended under STREAM_COND; streams
  (fakecloud_sse) read it from their own cursor.
- Server values are resolved against the tree and the (skewed) clock as Firebase resolves them;
  push ids are made as Firebase makes them (time-ordered, then random, incremented on a tie).
"""
import json
import threading
import time

LOCK = threading.RLock()
STATE = {}


def reset_state():
    STATE.update(data=None, log=[], fails=[], rejects=[], slow_ms=0, skew_ms=0, keepalive_ms=30000,
                 silence=False, stream_gen=0, etag_gen=0, reads=[], lose=[], attempts=[], streams={},
                 token_ttl=3600, drop=False, indexes={}, echo_sv=False, no_date=False,
                 no_streaming=False, stream_empty=False)


reset_state()
CONNECTIONS = set()  # open client sockets, so `down` can reset them  # (handler, path, queue condition) registered streams
STREAM_COND = threading.Condition(LOCK)
EVENTS = []  # list of (seq, path, kind, path_rel_root, data) appended on writes
SECRET = {"value": None, "tokens": {}}  # tokens: token -> expiry (time.time()), None = never


def split(path):
    return [p for p in path.strip("/").split("/") if p]


def get_at(tree, parts):
    for p in parts:
        if not isinstance(tree, dict) or p not in tree:
            return None
        tree = tree[p]
    return tree


def prune(v):
    if isinstance(v, dict):
        out = {k: prune(c) for k, c in v.items()}
        out = {k: c for k, c in out.items() if c is not None}
        return out or None
    if isinstance(v, list):
        return prune({str(i): c for i, c in enumerate(v)})
    return v


def set_at(parts, value):
    value = prune(value)
    if not parts:
        STATE["data"] = value
        return
    if not isinstance(STATE["data"], dict):
        STATE["data"] = {}
    node = STATE["data"]
    chain = []
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            if value is None:  # nothing below a plain value (or nothing) to remove
                return
            node[p] = {}
        chain.append((node, p))
        node = node[p]
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    for parent, key in reversed(chain):  # remove emptied ancestors
        if parent[key] == {}:
            del parent[key]
    if STATE["data"] == {}:
        STATE["data"] = None


def resolve_sv(v, parts):
    if isinstance(v, dict):
        if set(v.keys()) == {".sv"}:
            sv = v[".sv"]
            if sv == "timestamp":
                return int(time.time() * 1000) + STATE["skew_ms"]
            if isinstance(sv, dict) and "increment" in sv:
                cur = get_at(STATE["data"], parts)
                cur = cur if isinstance(cur, (int, float)) and not isinstance(cur, bool) else 0
                total = cur + sv["increment"]
                # Firebase adds integers as 64-bit integers; past that range the sum is a double.
                return total if isinstance(total, float) or -2**63 <= total < 2**63 else float(total)
            raise ValueError("unknown server value")
        return {k: resolve_sv(c, parts + [k]) for k, c in v.items()}
    if isinstance(v, list):
        return [resolve_sv(c, parts + [str(i)]) for i, c in enumerate(v)]
    return v


def etag_of(value):
    import hashlib
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()


def publish(parts, kind, data):
    """Queue a stream event for every stream whose location is related to parts."""
    with STREAM_COND:
        EVENTS.append((parts, kind, data))
        STREAM_COND.notify_all()


PUSH_CHARS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
PUSH_STATE = {"last": 0, "rand": [0] * 12}


def make_push_id():
    import random
    now = int(time.time() * 1000) + STATE["skew_ms"]
    if now == PUSH_STATE["last"]:
        r = PUSH_STATE["rand"]
        i = 11
        while i >= 0 and r[i] == 63:
            r[i] = 0
            i -= 1
        if i >= 0:
            r[i] += 1
    else:
        PUSH_STATE["rand"] = [random.randrange(64) for _ in range(12)]
        PUSH_STATE["last"] = now
    ts = ""
    for _ in range(8):
        ts = PUSH_CHARS[now % 64] + ts
        now //= 64
    return ts + "".join(PUSH_CHARS[c] for c in PUSH_STATE["rand"])
