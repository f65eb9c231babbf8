#!/usr/bin/env python3
"""Minimal HTTP peers for HttpClient's transport tests. Prints the bound port on the first line.

  http_peer.py tls CERT KEY   HTTPS server answering every GET with 200 {"ok":true}
  http_peer.py proxy          plain-HTTP forward proxy stand-in: answers 200 with the request
                              line it received as the body (absolute-form URI when proxied)
  http_peer.py silent         accepts connections and never answers
"""
import socket
import ssl
import sys
import threading


def serve(sock, handle):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1")


def answer(conn, body):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))
    conn.close()


def main():
    mode = sys.argv[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    print(sock.getsockname()[1], flush=True)
    if mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])

        def handle(conn):
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
                if read_head(tls) is not None:
                    answer(tls, b'{"ok":true}')
            except (ssl.SSLError, OSError):
                conn.close()  # the client refused our certificate: expected
        serve(sock, handle)
    elif mode == "proxy":
        def handle(conn):
            head = read_head(conn)
            if head is not None:
                answer(conn, head.split("\r\n", 1)[0].encode())
        serve(sock, handle)
    elif mode == "silent":
        held = []
        while True:
            conn, _ = sock.accept()
            held.append(conn)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
