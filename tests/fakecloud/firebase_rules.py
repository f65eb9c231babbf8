"""The request rules Firebase Realtime Database's REST server applies, for fakecloud.

fakecloud must refuse whatever Firebase refuses, with Firebase's status and error body, so that
a gateway passing against it also passes against the real database. Every check here returns
None (allowed) or (status, message); fakecloud answers the message as Firebase lays it out
(error_body). Where a rule or its wording comes from:

  [ref]    the Firebase REST reference and guides (firebase.google.com/docs/reference/rest/database,
           /docs/database/rest/retrieve-data, /docs/database/usage/limits)
  [seen]   answers of the live service quoted in public code (Firebase's own wording)
  [sdk]    the official JS SDK 7.24 (tests/peers/node_modules/@firebase/database): the limits it
           checks before sending are the server's; the server's wording for them is unknown
  [strict] not documented either way: fakecloud refuses, so the gateway never relies on it

Plain functions of their arguments: no state, no locks.
"""
import json
import re
import urllib.parse

MAX_DEPTH = 32                   # [ref] limits: depth of child nodes; [sdk] MAX_PATH_DEPTH
MAX_PATH_BYTES = 768             # [ref] limits: key length; [sdk] counts the whole path ('/' too)
MAX_STRING_BYTES = 10 << 20      # [ref] limits: size of a single string (UTF-8)
MAX_WRITE_BYTES = 256 << 20      # [ref] limits: size of a single write request from the REST API

# [seen] 400 for a URL path with a character keys may not hold, '%2F' (an encoded '/') and
# control characters included; a backslash too (reported "verified live" by a public project's
# security notes; not in the reference).
INVALID_PATH = "Invalid path: Invalid token in path"
# [seen] bodies
INVALID_JSON = "Invalid data; couldn't parse JSON object, array, or value."
NOT_AN_OBJECT = "Invalid data; couldn't parse JSON object. Are you sending a JSON object with valid key names?"
INVALID_KEY = "Invalid data; couldn't parse key beginning at %d:%d. Key value can't be empty or contain $ # [ ] / or ."
PERMISSION_DENIED = "Permission denied"
# [seen] queries
ORDER_BY_PATH = "orderBy must be a valid JSON encoded path"
ORDER_BY_NEEDED = "orderBy must be defined when other query parameters are defined"
NOT_A_PRIMITIVE = "Constraint index field must be a JSON primitive"
INDEX_NOT_DEFINED = 'Index not defined, add ".indexOn": "%s", for path "%s", to the rules'

KEY_FORBIDDEN = set(".$#[]/")


def error_body(message):
    """Firebase's error layout (pretty-printed, a space before the colon) [seen]."""
    return ('{\n  "error" : %s\n}\n' % json.dumps(message)).encode()


def valid_key(key):
    """A data key: not empty, none of . $ # [ ] / nor ASCII control characters [ref]."""
    return bool(key) and not any(c in KEY_FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7f for c in key)


def path_bytes(parts):
    """Bytes of a path as the SDK counts them: a leading '/' and one between segments [sdk]."""
    return max(1, len(parts)) + sum(len(p.encode("utf-8", "surrogatepass")) for p in parts)


def parse_url_path(raw):
    """`raw` is the URL path before '?', '.json' removed. Returns (segments, error).

    Segments are split on the raw '/' and percent-decoded one by one, so '%2F' stays inside its
    segment and is refused like any '/' in a key [seen]."""
    parts = []
    for seg in raw.split("/"):
        if not seg:
            continue  # '/a//b' is '/a/b'
        try:
            key = urllib.parse.unquote(seg, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return None, (400, INVALID_PATH)
        if not valid_key(key) or "\\" in key:
            return None, (400, INVALID_PATH)
        parts.append(key)
    if len(parts) > MAX_DEPTH or path_bytes(parts) > MAX_PATH_BYTES:
        return None, (400, INVALID_PATH)  # [sdk] limits; the server's wording is not known
    return parts, None


def _reject_constant(name):
    raise ValueError("not JSON: " + name)  # NaN, Infinity: Python accepts them, JSON does not


def _pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")  # [strict]
    return dict(pairs)


def _line_col(text, index):
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _key_positions(text):
    """(key, index of its opening quote) of every object key, in document order."""
    i, n = 0, len(text)
    while i < n:
        if text[i] != '"':
            i += 1
            continue
        value, end = json.decoder.scanstring(text, i + 1)
        j = end
        while j < n and text[j] in " \t\r\n":
            j += 1
        if j < n and text[j] == ":":
            yield value, i
        i = end


def _first_bad_key(value, is_key_ok):
    if isinstance(value, dict) and set(value) == {".sv"}:
        return None  # a server value: check_value checks its shape
    if isinstance(value, dict):
        for k, v in value.items():
            if not is_key_ok(k, v):
                return k
            bad = _first_bad_key(v, is_key_ok)
            if bad is not None:
                return bad
    elif isinstance(value, list):
        for v in value:
            bad = _first_bad_key(v, is_key_ok)
            if bad is not None:
                return bad
    return None


def _server_value_ok(v):
    """{".sv": "timestamp"} or {".sv": {"increment": <number>}} [ref]; anything else [strict]."""
    sv = v.get(".sv")
    if sv == "timestamp":
        return True
    return (isinstance(sv, dict) and set(sv) == {"increment"} and isinstance(sv["increment"], (int, float))
            and not isinstance(sv["increment"], bool))


def _data_key_ok(k, v):
    # '.sv' only as the one key of a server value (skipped above); '.priority' and '.value' are
    # Firebase's own and the gateway never sends them [strict].
    return valid_key(k)


def check_value(value, base_parts):
    """Keys, depth, path length and string size of a value written at base_parts."""
    stack = [(value, list(base_parts))]
    while stack:
        v, parts = stack.pop()
        if isinstance(v, list):
            v = {str(i): c for i, c in enumerate(v)}
        if isinstance(v, dict):
            if ".sv" in v:
                if len(v) != 1 or not _server_value_ok(v):
                    return (400, INVALID_JSON)  # [strict] wording not known
                continue
            for k, c in v.items():
                stack.append((c, parts + [k]))
            continue
        if len(parts) > MAX_DEPTH or path_bytes(parts) > MAX_PATH_BYTES:
            return (400, "Invalid data; path /%s exceeds the maximum depth (%d) or length (%d bytes)"
                    % ("/".join(parts[:4]) + ("/..." if len(parts) > 4 else ""), MAX_DEPTH, MAX_PATH_BYTES))
        if isinstance(v, str) and len(v) > MAX_STRING_BYTES // 4 and len(v.encode()) > MAX_STRING_BYTES:
            return (400, "Invalid data; string exceeds %d bytes" % MAX_STRING_BYTES)  # wording not known
    return None


def parse_body(raw, method, base_parts):
    """A write's body: (value, error). PATCH keys are paths relative to base_parts, each segment
    a valid key, none an ancestor of another (the SDK refuses that before sending [sdk])."""
    if len(raw) > MAX_WRITE_BYTES:
        return None, (413, "Data to write exceeds the maximum size of %d bytes" % MAX_WRITE_BYTES)  # wording not known
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, (400, INVALID_JSON)
    if not text.strip():
        return None, (400, INVALID_JSON)  # [strict] a write must carry a value
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None, (400, INVALID_JSON)
    if method == "PATCH":
        if not isinstance(value, dict):
            return None, (400, NOT_AN_OBJECT)
        paths = {}
        for k in value:
            segs = [s for s in k.split("/") if s]
            if not segs or not all(valid_key(s) for s in segs):
                return None, _key_error(text, k)
            paths[k] = segs
        ordered = sorted(paths.values())
        for a, b in zip(ordered, ordered[1:]):
            if b[:len(a)] == a:
                return None, (400, "Invalid data; path /%s is an ancestor of /%s" % ("/".join(a), "/".join(b)))
        for k, segs in paths.items():
            bad = _first_bad_key(value[k], _data_key_ok)
            if bad is not None:
                return None, _key_error(text, bad)
            err = check_value(value[k], base_parts + segs)
            if err:
                return None, err
        return value, None
    bad = _first_bad_key(value, _data_key_ok)
    if bad is not None:
        return None, _key_error(text, bad)
    err = check_value(value, base_parts)
    return (None, err) if err else (value, None)


def _key_error(text, key):
    for k, index in _key_positions(text):
        if k == key:
            return (400, INVALID_KEY % _line_col(text, index))
    return (400, INVALID_KEY % (1, 1))


# Query parameters Firebase's REST API takes [ref]; auth_variable_override [ref: "Authenticate
# REST requests"]. Anything else is refused [strict]: a misspelt parameter is a gateway bug.
KNOWN_PARAMS = {"auth", "access_token", "print", "shallow", "callback", "format", "download", "timeout",
                "writeSizeLimit", "orderBy", "limitToFirst", "limitToLast", "startAt", "endAt", "equalTo",
                "auth_variable_override"}
QUERY_PARAMS = ("startAt", "endAt", "equalTo", "limitToFirst", "limitToLast")


def _primitive(text):
    try:
        v = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None, False
    return v, not isinstance(v, (dict, list))


def check_query(query, method, headers, path, indexes):
    """query: urllib.parse.parse_qs result. indexes: {"/path": set of indexed children, ".value"}.
    Returns None or (status, message)."""
    for name, values in query.items():
        if name not in KNOWN_PARAMS:
            return (400, "Unknown query parameter '%s'" % name)  # [strict]
        if len(values) != 1:
            return (400, "Query parameter '%s' given more than once" % name)  # [strict]
    q = {k: v[0] for k, v in query.items()}
    if "print" in q and q["print"] not in ("pretty", "silent"):
        return (400, "print must be 'pretty' or 'silent'")  # [strict] wording not known
    if "auth_variable_override" in q:
        try:
            v = json.loads(q["auth_variable_override"], parse_constant=_reject_constant)
            ok = v is None or isinstance(v, dict)
        except ValueError:
            ok = False
        if not ok:
            return (400, "auth_variable_override must be a JSON object or null")  # [strict] wording not known
    # if-match makes sense on PUT and DELETE only [ref: conditional requests]; elsewhere [strict].
    if headers.get("if-match") is not None and method not in ("PUT", "DELETE"):
        return (400, "if-match is only supported on PUT and DELETE")
    if headers.get("X-Firebase-ETag") is not None and method != "GET":
        return (400, "X-Firebase-ETag is only supported on GET")  # [strict]
    has_query = any(p in q for p in QUERY_PARAMS) or "orderBy" in q
    if not has_query:
        return None
    if method != "GET":
        return (400, "Queries are only supported on GET")  # [strict]
    if "orderBy" not in q:
        return (400, ORDER_BY_NEEDED)
    by, _ = _primitive(q["orderBy"])
    if not isinstance(by, str) or not by:
        return (400, ORDER_BY_PATH)
    if "shallow" in q:
        return (400, "Mixing 'shallow' and querying parameters is not supported")  # [strict] wording not known
    if headers.get("X-Firebase-ETag") is not None:
        return (400, "ETags are not supported with queries")  # [strict]
    for name in ("startAt", "endAt", "equalTo"):
        if name in q:
            v, ok = _primitive(q[name])
            if not ok:
                return (400, NOT_A_PRIMITIVE)
            if by == "$key" and not isinstance(v, str):
                return (400, "%s must be a string when ordering by $key" % name)  # [strict] wording not known
    if "equalTo" in q and ("startAt" in q or "endAt" in q):
        return (400, "equalTo cannot be specified in addition to startAt or endAt")  # [strict] wording not known
    if "limitToFirst" in q and "limitToLast" in q:
        return (400, "limitToFirst and limitToLast cannot both be specified")  # [strict] wording not known
    for name in ("limitToFirst", "limitToLast"):
        if name in q and not re.fullmatch(r"[1-9][0-9]{0,9}", q[name]):
            return (400, "%s must be a positive integer" % name)  # [strict] wording not known
    # Ordering by a child or by value needs an index in the rules [ref: retrieve-data, "Indexing
    # data"; the wording seen]; by key does not.
    if by != "$key" and by != "$priority":
        child = ".value" if by == "$value" else by
        where = "/" + "/".join(path)
        if child not in indexes.get(where, set()):
            return (400, INDEX_NOT_DEFINED % (child, where))
    return None
