"""A tiny DNS peer for container tests (stdlib only, runs with the image's python3).

    python3 dns_tool.py serve PORT          answer every A query over TCP with 192.0.2.53
    python3 dns_tool.py query PORT NAME     one DNS-over-TLS query to 127.0.0.1:PORT; prints
                                            the TLS version and the A record, exit 0 if found
    python3 dns_tool.py silent PORT         an upstream that accepts and never answers
    python3 dns_tool.py hold PORT NAME      one DoT query, then wait an hour for its answer

Both stay on 127.0.0.1 inside the container's own network namespace (--network=none).
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import time

ANSWER = bytes([192, 0, 2, 53])


def _question(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return labels + b"\x00" + struct.pack("!HH", 1, 1)


def _read_msg(conn: socket.socket) -> bytes:
    size = struct.unpack("!H", conn.recv(2))[0]
    data = b""
    while len(data) < size:
        data += conn.recv(size - len(data))
    return data


def serve(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                query = _read_msg(conn)
                qid, question = query[:2], query[12:]
                header = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
                answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + ANSWER
                reply = header + question + answer
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def query(port: int, name: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    message = struct.pack("!HHHHHH", 0x4A53, 0x0100, 1, 0, 0, 0) + _question(name)
    for _ in range(100):
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
                ctx.wrap_socket(raw) as tls,
            ):
                tls.sendall(struct.pack("!H", len(message)) + message)
                reply = _read_msg(tls)
                found = ANSWER in reply[12 + len(_question(name)) :]
                print(tls.version(), name, "A", ".".join(map(str, ANSWER)) if found else "-")
                return 0 if found else 1
        except OSError:
            time.sleep(0.1)
    print("no answer")
    return 1


def silent(port: int) -> None:
    """Connections complete in the kernel's backlog; nothing is ever read or answered."""
    with socket.create_server(("127.0.0.1", port)):
        time.sleep(3600)


def hold(port: int, name: str) -> None:
    """A client whose query a silent upstream never answers: its session stays open."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    message = struct.pack("!HHHHHH", 0x4A53, 0x0100, 1, 0, 0, 0) + _question(name)
    for _ in range(100):
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=3600)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("no listener")
    with raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(struct.pack("!H", len(message)) + message)
        tls.recv(2)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "silent":
        silent(int(sys.argv[2]))
    elif sys.argv[1] == "hold":
        hold(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(query(int(sys.argv[2]), sys.argv[3]))
