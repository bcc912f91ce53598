"""Small local servers for outbound-request tests: an HTTP server in a thread, a TCP listener that never answers,
and a canary that counts the connections it gets (proof that a refused request never left)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return


class LocalHTTPServer:
    """`handler` served by a ThreadingHTTPServer on `host` (a free port) in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.port = self.httpd.server_port
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Listener:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            self.accepted(conn)

    def accepted(self, conn: socket.socket) -> None:
        self.held.append(conn)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def stop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass  # not connected in some kernels' eyes: close() below is enough then
        self.sock.close()
        for conn in self.held:
            conn.close()


class SilentServer(_Listener):
    """Accepts connections and never answers: a hung server, for timeouts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)


class Canary(_Listener):
    """Counts the connections it accepts and closes each at once."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0) -> None:
        self.connections = 0
        super().__init__(host, port)

    def accepted(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.close()
