#!/usr/bin/env python3
"""fakecloud: a Firebase Realtime Database REST + SSE stand-in for tests (python3 stdlib only).

Data is one JSON tree in memory guarded by one lock. Control API: POST /_control with a JSON
object {"op": ...}:
  reset                      clear data, faults, log and skew
  dump                       -> the whole tree
  log                        -> [{"method","path","query","body","if_match"}...] of data writes
                             (if_match: the request's if-match header, or null)
  reads                      -> [{"path","query"}...] of plain (non-stream) GETs
  attempts                   -> [{"method","path","query","t_ms","status"}...] of every data request,
                                failed or injected ones included (t_ms: arrival, real time)
  streams                    -> {"/path": n} streams open now
  fail {"status":N,"count":C,"path":"substr","method":M}   next C matching requests (path
                             substring, optional method) answer N (401/429/5xx...)
  clear_faults               forget pending fail and lose_replies entries
  reject {"status":400,"contains":"text"}       writes whose body contains text answer status
                                                (persistent until reset)
  lose_replies {"count":C,"path":"substr","status":S}  the next C writes matching are APPLIED but
                             answered S (0: the connection is dropped, no reply) - a reply lost
                             after the cloud committed, as in a crash or timeout
  slow {"ms":M}              delay every data request by M ms
  skew {"ms":X}              server timestamps = real time + X
  cut_streams                close every open stream (mid-event: half an event is sent first)
  stream_event {"type":t,"data":d}  send a raw event (cancel, auth_revoked) on every stream
  silence_streams {"on":b}   stop sending anything (incl. keep-alives) on streams
  keepalive {"ms":M}         keep-alive period (default 30000)
  secret {"value":s}         require auth=s or access_token=s (null = no auth)
  tokens {"values":[...]}    accepted access tokens
  token_ttl {"s":N}          tokens issued from now on expire after N s (then 401); default 3600
POST /_oauth/token: jwt-bearer grant (form body) -> {"access_token": new accepted token,
                             "expires_in": token_ttl}
  down {"ms":M}              close the listener for M ms (connections refused)
  drop {"on":b}              while on, every data request's connection is closed without a reply
                             and open streams are cut; the control API keeps working
  set {"path":p,"value":v}   another writer: sets v at p (streams hear it), no fault applies,
                             not in the log
  heal                       clear injected faults (fail, lose_replies, reject, slow, silence,
                             drop, echo_sv, no_date, no_streaming)
                             and keep data, log and skew
  index {"path":p,"on":[c...]}  the rules' ".indexOn" at p (children, or ".value"): queries
                             ordered by a child or by value need it, as in Firebase
  echo_sv {"on":b}           writes answer the body as sent, server values unresolved (as
                             npm firebase-server does); the stored value is resolved
  no_date {"on":b}           answers carry no Date header
  no_streaming {"on":b}      a GET asking for text/event-stream is answered with plain JSON
                             (200, application/json), as by a server without streaming
  stream_empty {"on":b}      streams answer 200 text/event-stream and close before any event
Requests are checked as Firebase checks them (firebase_rules.py): invalid paths and keys in URLs
and bodies, size limits, server values, ETag headers and query parameters get Firebase's status
and error body.
CLI: --port 0 prints the chosen port as the first stdout line. --secret S requires auth.
Queries on GET: orderBy="$key"|"$value"|"<child>", startAt/endAt/equalTo (JSON), limitToFirst/Last,
answered with Firebase's ordering (null < false < true < numbers < strings < objects, ties by key;
keys that are 32-bit integers first; strings by UTF-16 code units, as the Firebase server). Conditional writes: GET with X-Firebase-ETag: true returns an
ETag; PUT/DELETE with if-match answer 412 with the current value and ETag on mismatch.
Code: fakecloud.py (HTTP handler, control API, main), fakecloud_data.py (the tree and shared
state), fakecloud_query.py (query evaluation), fakecloud_sse.py (streams), firebase_rules.py
(what Firebase refuses, and its error bodies).
"""
import argparse
import email.utils
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import firebase_rules as rules
from fakecloud_data import (CONNECTIONS, EVENTS, LOCK, SECRET, STATE, STREAM_COND, etag_of, get_at,
                            make_push_id, publish, reset_state, resolve_sv, set_at, split)
from fakecloud_query import run_query
from fakecloud_sse import StreamReplies


class Handler(StreamReplies, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            CONNECTIONS.add(self.connection)

    def finish(self):
        with LOCK:
            CONNECTIONS.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def reply(self, status, body=None, headers=None):
        if getattr(self, "attempt", None) is not None:
            self.attempt["status"] = status
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def reply_error(self, status, message):
        """An error as Firebase answers it: status and its {"error": ...} layout."""
        if getattr(self, "attempt", None) is not None:
            self.attempt["status"] = status
        raw = rules.error_body(message)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def date_time_string(self, timestamp=None):
        """The Date header tells the server's (skewed) clock, like its server timestamps."""
        return email.utils.formatdate(time.time() + STATE["skew_ms"] / 1000, usegmt=True)

    def send_header(self, keyword, value):
        if keyword == "Date" and STATE["no_date"]:
            return
        super().send_header(keyword, value)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self): self.handle_data("GET")
    def do_PUT(self): self.handle_data("PUT")
    def do_PATCH(self): self.handle_data("PATCH")
    def do_DELETE(self): self.handle_data("DELETE")

    def do_POST(self):
        if self.path.startswith("/_control"):
            return self.control()
        if self.path.startswith("/_oauth/token"):
            return self.token()
        self.handle_data("POST")

    def control(self):
        req = json.loads(self.body() or b"{}")
        op = req.get("op")
        with LOCK:
            if op == "reset":
                reset_state()
                EVENTS.clear()
                SECRET["value"] = SERVER_ARGS.secret
                SECRET["tokens"] = {}
            elif op == "dump":
                return self.reply(200, STATE["data"])
            elif op == "log":
                return self.reply(200, STATE["log"])
            elif op == "reads":
                return self.reply(200, STATE["reads"])
            elif op == "attempts":
                return self.reply(200, STATE["attempts"])
            elif op == "streams":
                return self.reply(200, {k: n for k, n in STATE["streams"].items() if n})
            elif op == "token_ttl":
                STATE["token_ttl"] = req["s"]
            elif op == "fail":
                STATE["fails"].append({"status": req["status"], "count": req.get("count", 1),
                                       "path": req.get("path", ""), "method": req.get("method")})
            elif op == "clear_faults":
                STATE["fails"] = []
                STATE["lose"] = []
            elif op == "lose_replies":
                STATE["lose"].append({"status": req.get("status", 0), "count": req.get("count", 1),
                                      "path": req.get("path", "")})
            elif op == "reject":
                STATE["rejects"].append((req.get("status", 400), req["contains"]))
            elif op == "slow":
                STATE["slow_ms"] = req["ms"]
            elif op == "skew":
                STATE["skew_ms"] = req["ms"]
            elif op == "keepalive":
                STATE["keepalive_ms"] = req["ms"]
            elif op == "silence_streams":
                STATE["silence"] = bool(req.get("on", True))
            elif op == "stream_event":  # e.g. {"type":"auth_revoked","data":"..."} to all streams
                EVENTS.append((None, req["type"], req.get("data")))
                STREAM_COND.notify_all()
            elif op == "cut_streams":
                STATE["stream_gen"] += 1
                STREAM_COND.notify_all()
            elif op == "secret":
                SECRET["value"] = req.get("value")
            elif op == "tokens":
                SECRET["tokens"] = {t: None for t in req.get("values", [])}
            elif op == "drop":
                STATE["drop"] = bool(req.get("on", True))
                if STATE["drop"]:
                    STATE["stream_gen"] += 1
                    STREAM_COND.notify_all()
            elif op == "set":
                parts = split(req["path"])
                set_at(parts, req.get("value"))
                publish(parts, "put", get_at(STATE["data"], parts))
            elif op == "heal":
                STATE.update(fails=[], lose=[], rejects=[], slow_ms=0, silence=False, drop=False,
                             echo_sv=False, no_date=False, no_streaming=False, stream_empty=False)
            elif op == "index":
                STATE["indexes"]["/" + "/".join(split(req["path"]))] = list(req.get("on", []))
            elif op in ("echo_sv", "no_date", "no_streaming", "stream_empty"):
                STATE[op] = bool(req.get("on", True))
            elif op == "down":
                self.close_connection = True
            else:
                return self.reply(400, {"error": "unknown op"})
        if op == "down":
            # Down before the answer: a request the test sends after it is refused, never applied
            # with its answer lost to the reset (which a retry would then upload twice).
            take_down(self.connection)
            threading.Thread(target=bring_up, args=(req["ms"],), daemon=True).start()
        self.reply(200, {"ok": True})

    def token(self):
        """OAuth2 jwt-bearer exchange: accepts any three-part assertion, issues a fresh token."""
        form = urllib.parse.parse_qs(self.body().decode())
        grant = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
            return self.reply(400, {"error": "invalid_grant"})
        with LOCK:
            STATE["etag_gen"] += 1
            tok = "sa-token-%d" % STATE["etag_gen"]
            ttl = STATE["token_ttl"]
            SECRET["tokens"][tok] = time.time() + ttl
            STATE["log"].append({"method": "TOKEN", "path": "/_oauth/token", "query": "",
                                 "body": {"assertion": assertion}, "t_ms": int(time.time() * 1000)})
        self.reply(200, {"access_token": tok, "expires_in": ttl, "token_type": "Bearer"})

    def authorized(self, query):
        if SECRET["value"] is None and not SECRET["tokens"]:
            return True
        auth = query.get("auth", [None])[0]
        tok = query.get("access_token", [None])[0]
        if auth is not None and auth == SECRET["value"]:
            return True
        if tok is None or tok not in SECRET["tokens"]:
            return False
        expiry = SECRET["tokens"][tok]
        return expiry is None or time.time() < expiry

    def handle_data(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        too_big = int(self.headers.get("Content-Length") or 0) > rules.MAX_WRITE_BYTES
        raw = b"" if too_big else self.body()
        path = urllib.parse.unquote(url.path)
        self.attempt = {"method": method, "path": path, "query": url.query,
                        "t_ms": int(time.time() * 1000), "status": None}
        with LOCK:
            STATE["attempts"].append(self.attempt)
        if not url.path.endswith(".json"):
            return self.reply(404, {"error": "not found"})
        parts, path_error = rules.parse_url_path(url.path[:-5])
        with LOCK:
            dropped = STATE["drop"]
        if dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with LOCK:
            slow = STATE["slow_ms"]
            status = None
            for f in STATE["fails"]:
                if f["count"] > 0 and f["path"] in path and f.get("method") in (None, method):
                    f["count"] -= 1
                    status = f["status"]
                    break
            if status is None and method != "GET":
                for st, text in STATE["rejects"]:
                    if text.encode() in raw:
                        status = st
        if slow:
            time.sleep(slow / 1000)
        if status is not None:
            return self.reply(status, {"error": "injected"})
        if too_big:
            self.close_connection = True  # the body was not read
            return self.reply_error(413, "Data to write exceeds the maximum size of %d bytes" % rules.MAX_WRITE_BYTES)
        if path_error:
            return self.reply_error(*path_error)
        if not self.authorized(query):
            return self.reply_error(401, rules.PERMISSION_DENIED)
        with LOCK:
            indexes = {k: set(v) for k, v in STATE["indexes"].items()}
            streaming = not STATE["no_streaming"]
        query_error = rules.check_query(query, method, self.headers, parts, indexes)
        if query_error:
            return self.reply_error(*query_error)
        if method == "GET" and "text/event-stream" in (self.headers.get("Accept") or "") and streaming:
            return self.stream(parts)
        body = None
        if method in ("PUT", "POST", "PATCH"):
            # A push's key adds one segment to the path the limits apply to.
            body, body_error = rules.parse_body(raw, method, parts + (["-" * 20] if method == "POST" else []))
            if body_error:
                return self.reply_error(*body_error)
        silent = query.get("print", [""])[0] == "silent"
        with LOCK:
            cur = get_at(STATE["data"], parts)
            if method == "GET":
                headers = {"ETag": etag_of(cur)} if self.headers.get("X-Firebase-ETag") == "true" else {}
                STATE["reads"].append({"path": "/" + "/".join(parts), "query": url.query})
                result = run_query(cur, query)
                return self.reply(200, cur if result is None and "orderBy" not in query else result, headers)
            STATE["log"].append({"method": method, "path": "/" + "/".join(parts),
                                 "query": url.query, "body": body,
                                 "t_ms": int(time.time() * 1000) + STATE["skew_ms"],
                                 "if_match": self.headers.get("if-match")})
            if_match = self.headers.get("if-match")
            if if_match is not None and if_match != etag_of(cur):  # hashing is O(subtree): only when asked
                return self.reply(412, cur, {"ETag": etag_of(cur)})
            if method == "PUT":
                value = resolve_sv(body, parts)
                set_at(parts, value)
                publish(parts, "put", value)
                result = value
            elif method == "POST":
                key = make_push_id()
                value = resolve_sv(body, parts + [key])
                set_at(parts + [key], value)
                publish(parts + [key], "put", value)
                result = {"name": key}
            elif method == "DELETE":
                set_at(parts, None)
                publish(parts, "put", None)
                result = None
            else:  # PATCH: keys are paths (firebase_rules checked them)
                result = {k: resolve_sv(v, parts + split(k)) for k, v in body.items()}
                for k, v in result.items():
                    set_at(parts + split(k), v)
                publish(parts, "patch", result)
            if STATE["echo_sv"] and method in ("PUT", "PATCH"):
                result = body  # what was sent, server values unresolved
            lost = None
            for f in STATE["lose"]:
                if f["count"] > 0 and f["path"] in path + raw.decode(errors="replace"):
                    f["count"] -= 1
                    lost = f["status"]
                    break
        if lost is not None:
            if lost == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            return self.reply(lost, {"error": "injected after applying"})
        if silent:
            self.attempt["status"] = 204
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.reply(200, result)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


SERVER = {}
SERVER_ARGS = None


def take_down(keep):
    """Close the listening socket (connections refused) and reset every connection but `keep`."""
    SERVER["srv"].socket.close()
    with LOCK:
        for c in list(CONNECTIONS):
            if c is keep:
                continue
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def bring_up(ms):
    """After ms, listen again on the same port."""
    srv = SERVER["srv"]
    port = srv.server_address[1]
    time.sleep(ms / 1000)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(100):
        try:
            s.bind(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.05)
    s.listen(128)
    srv.socket = s


def main():
    global SERVER_ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", default=None)
    SERVER_ARGS = ap.parse_args()
    SECRET["value"] = SERVER_ARGS.secret
    srv = Server(("127.0.0.1", SERVER_ARGS.port), Handler)
    SERVER["srv"] = srv
    print(srv.server_address[1], flush=True)
    # serve_forever's selector holds the old socket; poll the listener ourselves so `down` works.
    import selectors
    while True:
        try:
            sel = selectors.DefaultSelector()
            sel.register(srv.socket, selectors.EVENT_READ)
            for _ in range(20):
                if sel.select(0.05):
                    srv._handle_request_noblock()
            sel.close()
        except (OSError, ValueError):
            time.sleep(0.05)


if __name__ == "__main__":
    main()
