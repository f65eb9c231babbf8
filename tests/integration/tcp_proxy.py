#!/usr/bin/env python3
"""tcp_proxy: forwards 127.0.0.1:<port> to 127.0.0.1:<target>, and cuts the link on demand.

A WAN outage in front of a cloud that cannot itself go down (npm firebase-server keeps its data
in memory only). SIGUSR1: down (the listener closes, so connections are refused, and open ones
are reset). SIGUSR2: up again on the same port. --port 0 prints the chosen port first.
"""
import argparse
import signal
import socket
import struct
import threading
import time

LOCK = threading.Lock()
CONNS = set()
WANT = {"up": True}


def reset(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        s.close()
    except OSError:
        pass


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client, target):
    try:
        upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
        upstream.settimeout(None)
    except OSError:
        reset(client)
        return
    with LOCK:
        CONNS.update((client, upstream))
    a = threading.Thread(target=pipe, args=(client, upstream), daemon=True)
    b = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    a.start()
    b.start()
    a.join()
    b.join()
    with LOCK:
        CONNS.discard(client)
        CONNS.discard(upstream)
    client.close()
    upstream.close()


def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(100):
        try:
            s.bind(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.05)
    s.listen(128)
    s.settimeout(0.05)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--target", type=int, required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGUSR1, lambda *_: WANT.update(up=False))
    signal.signal(signal.SIGUSR2, lambda *_: WANT.update(up=True))
    listener = listen(args.port)
    port = listener.getsockname()[1]
    print(port, flush=True)
    while True:
        if not WANT["up"] and listener is not None:
            listener.close()
            listener = None
            with LOCK:
                for c in list(CONNS):
                    reset(c)
        if WANT["up"] and listener is None:
            listener = listen(port)
        if listener is None:
            time.sleep(0.05)
            continue
        try:
            client, _ = listener.accept()
        except (socket.timeout, OSError):
            continue
        client.settimeout(None)
        threading.Thread(target=serve, args=(client, args.target), daemon=True).start()


if __name__ == "__main__":
    main()
