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
# [sdk] limits; the server's wording for them is not known
LIMITS = "Invalid data; a path exceeds the maximum depth (%d) or length (%d bytes)" % (32, 768)

def error_body(message):
    """Firebase's error layout (pretty-printed, a space before the colon) [seen]."""
    return ('{\n  "error" : %s\n}\n' % json.dumps(message)).encode()


_FORBIDDEN = re.compile(r"[.$#\[\]/\x00-\x1f\x7f]")
_FORBIDDEN_IN_PATH = re.compile(r"[.$#\[\]\x00-\x1f\x7f]")  # '/' separates keys


def valid_key(key):
    """A data key: not empty, none of . $ # [ ] / nor ASCII control characters [ref]."""
    return bool(key) and not _FORBIDDEN.search(key)


def _utf8_len(s):
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def path_bytes(parts):
    """Bytes of a path as the SDK counts them: a leading '/' and one between segments [sdk]."""
    return max(1, len(parts) + sum(_utf8_len(p) for p in parts))


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


def _server_value_ok(v):
    """{".sv": "timestamp"} or {".sv": {"increment": <number>}} [ref]; anything else [strict]."""
    sv = v.get(".sv")
    if sv == "timestamp":
        return True
    return (isinstance(sv, dict) and set(sv) == {"increment"} and isinstance(sv["increment"], (int, float))
            and not isinstance(sv["increment"], bool))


class _Refused(Exception):
    def __init__(self, answer):
        super().__init__(answer)
        self.answer = answer


def _walk(d, depth, nbytes, text):
    """Checks the children of dict `d`, whose path has `depth` segments and `nbytes` bytes as the
    SDK counts them; raises _Refused. Depth first in document order, so the first bad key is the
    first in the text. Written for speed: bodies of thousands of writes are the common case."""
    if ".sv" in d and len(d) == 1:
        if not _server_value_ok(d):
            raise _Refused((400, INVALID_JSON))  # [strict] wording not known
        return
    depth += 1
    if depth > MAX_DEPTH:
        raise _Refused((400, LIMITS))
    for k, c in d.items():
        if not k or _FORBIDDEN.search(k):
            raise _Refused(_key_error(text, k))
        nb = nbytes + 1 + (len(k) if k.isascii() else _utf8_len(k))
        if nb > MAX_PATH_BYTES:
            raise _Refused((400, LIMITS))
        t = type(c)
        if t is dict:
            _walk(c, depth, nb, text)
        elif t is list:
            _walk({str(i): x for i, x in enumerate(c)}, depth, nb, text)
        elif t is str and len(c) > MAX_STRING_BYTES // 4 and len(c.encode()) > MAX_STRING_BYTES:
            raise _Refused((400, "Invalid data; string exceeds %d bytes" % MAX_STRING_BYTES))  # wording not known


def _check_tree(value, depth, nbytes, text):
    """Keys, depth, path length and string size of a value written at a path of `depth` segments
    and `nbytes` bytes. '.sv' is a key only as the one key of a server value; '.priority' and
    '.value' are Firebase's own and the gateway never sends them [strict]."""
    try:
        if type(value) is list:
            value = {str(i): x for i, x in enumerate(value)}
        if type(value) is dict:
            _walk(value, depth, nbytes, text)
        elif depth > MAX_DEPTH or max(1, nbytes) > MAX_PATH_BYTES:
            return (400, LIMITS)
        elif type(value) is str and len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            return (400, "Invalid data; string exceeds %d bytes" % MAX_STRING_BYTES)
    except _Refused as e:
        return e.answer
    except RecursionError:
        return (400, LIMITS)
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
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None, (400, INVALID_JSON)
    depth, nbytes = len(base_parts), len(base_parts) + sum(_utf8_len(p) for p in base_parts)
    if method != "PATCH":
        err = _check_tree(value, depth, nbytes, text)
        return (None, err) if err else (value, None)
    if not isinstance(value, dict):
        return None, (400, NOT_AN_OBJECT)
    paths = {}  # normalized path -> its value
    for k, v in value.items():
        p = k.strip("/")
        if "//" in p:
            p = "/".join(seg for seg in p.split("/") if seg)
        if not p or _FORBIDDEN_IN_PATH.search(p):
            return None, _key_error(text, k)
        paths[p] = v
    for p in paths:  # an ancestor of p is one of its prefixes
        i = p.find("/")
        while i != -1:
            if p[:i] in paths:
                return None, (400, "Invalid data; path /%s is an ancestor of /%s" % (p[:i], p))
            i = p.find("/", i + 1)
    for p, v in paths.items():
        err = _check_tree(v, depth + p.count("/") + 1, nbytes + 1 + _utf8_len(p), text)
        if err:
            return None, err
    return value, None


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
