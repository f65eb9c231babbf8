"""fakecloud's server-sent events: a GET asking for text/event-stream gets the value at its path
as a first `put`, then every related write as Firebase words it (relative to the stream's root,
or the root's new value when the write was above it), keep-alives, and the injected stream
faults (cut mid-event, silence, raw events, a stream that closes before any event).
"""
import json
import time

from fakecloud_data import EVENTS, LOCK, STATE, STREAM_COND, get_at


class StreamReplies:
    """The streaming half of fakecloud's request handler (a BaseHTTPRequestHandler mixin)."""

    def stream(self, parts):
        key = "/" + "/".join(parts)
        with LOCK:
            STATE["streams"][key] = STATE["streams"].get(key, 0) + 1
            self.attempt["status"] = 200
        try:
            self.stream_events(parts)
        finally:
            with LOCK:
                STATE["streams"][key] = STATE["streams"].get(key, 1) - 1

    def stream_events(self, parts):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(text):
            raw = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()

        if STATE["stream_empty"]:
            self.close_connection = True
            self.wfile.write(b"0\r\n\r\n")
            return

        with LOCK:
            gen = STATE["stream_gen"]
            cursor = len(EVENTS)
            snapshot = get_at(STATE["data"], parts)
        try:
            send("event: put\ndata: %s\n\n" % json.dumps({"path": "/", "data": snapshot}))
            last_ka = time.time()
            while True:
                with STREAM_COND:
                    STREAM_COND.wait(0.05)
                    if STATE["stream_gen"] != gen:
                        cut = True
                        pending = []
                    else:
                        cut = False
                        pending = EVENTS[cursor:]
                        cursor = len(EVENTS)
                    silence = STATE["silence"]
                    ka = STATE["keepalive_ms"]
                if cut:
                    send("event: put\ndata: {\"path\":\"/\",\"da")  # half an event, then close
                    self.close_connection = True
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if silence:
                    continue
                for wparts, kind, data in pending:
                    ev = relative_event(parts, wparts, kind, data)
                    if ev:
                        send("event: %s\ndata: %s\n\n" % ev)
                if time.time() - last_ka >= ka / 1000:
                    send("event: keep-alive\ndata: null\n\n")
                    last_ka = time.time()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def relative_event(root, wparts, kind, data):
    """Event for a stream at `root` from a write of `kind` at `wparts`, or None if unrelated."""
    if wparts is None:  # injected raw event (cancel, auth_revoked)
        return (kind, json.dumps(data))
    n = min(len(root), len(wparts))
    if root[:n] != wparts[:n]:
        return None
    if len(wparts) >= len(root):
        rel = "/" + "/".join(wparts[len(root):])
        return (kind, json.dumps({"path": rel, "data": data}))
    # the write is above the stream's root: send what changed below the root as a put
    with LOCK:
        return ("put", json.dumps({"path": "/", "data": get_at(STATE["data"], root)}))
