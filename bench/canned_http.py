"""A loopback HTTP/1.1 server that answers every request with one fixed body, keeping the
connection alive: what a boto3 call costs with a server that does no work at all.

``bench/aws_api`` starts it (its own process, as anyjob's server is) with the bytes anyjob's
``DescribeTrainingJob`` answers, so the client's own share (serialising, signing, the loopback
round trip, parsing) is measured on the same machine in the same run.

Run: ``python bench/canned_http.py BODY_FILE [CONTENT_TYPE]``; prints its port, serves until killed.
"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path


def serve_connection(conn: socket.socket, answer: bytes) -> None:
    """Read each request (headers, then ``Content-Length`` bytes of body) and send ``answer``."""
    buffered = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffered:
                data = conn.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, rest = buffered.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                data = conn.recv(65536)
                if not data:
                    return
                rest += data
            buffered = rest[length:]
            conn.sendall(answer)


def main() -> None:
    body = Path(sys.argv[1]).read_bytes()
    content_type = sys.argv[2] if len(sys.argv) > 2 else "application/x-amz-json-1.1"
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nx-amzn-RequestId: canned\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_connection, args=(conn, answer), daemon=True).start()


if __name__ == "__main__":
    main()
