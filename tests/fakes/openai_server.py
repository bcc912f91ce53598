"""A real OpenAI-compatible HTTP server for tests: `/v1/embeddings` and `/v1/chat/completions` on a loopback port.

Vectors are a pure function of the input text (see `raw_vector`), so tests can compute what they expect.
Failures are scripted per request (`fail_next` answers an error status, `hang_next` answers only after a delay
a client's timeout should not wait for, `drop_next` closes the connection without an answer; `fail_all` does one
of them to every request until `clear_faults`), chat replies are scripted (`queue_replies`), and every request is
recorded with the fault it met, failed ones included, so tests can count attempts and read what was sent.
`latency_s` makes every embeddings request take that long, as a remote model does; requests are served each on a
thread of its own, and `peak_in_flight` says how many were being answered at once at most.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_DIM = 32
MODEL_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
DEFAULT_REPLY = "Hello from the test server."


def raw_vector(text: str, dim: int) -> npt.NDArray[np.float32]:
    """The server's deterministic, deliberately unnormalised vector for `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vec: npt.NDArray[np.float32] = (np.random.default_rng(seed).standard_normal(dim) * 3.0).astype(np.float32)
    return vec


def expected_vector(text: str, dim: int) -> npt.NDArray[np.float32]:
    vec = raw_vector(text, dim)
    out: npt.NDArray[np.float32] = (vec / np.linalg.norm(vec)).astype(np.float32)
    return out


@dataclass(frozen=True)
class Failure:
    status: int
    headers: dict[str, str]
    message: str
    # "status": answer `status`; "hang": answer normally only after `hang_s`; "drop": close without an answer
    kind: str = "status"
    hang_s: float = 0.0

    @property
    def name(self) -> str:
        return str(self.status) if self.kind == "status" else self.kind


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    # the scripted fault this request met ("429", "500", "hang", "drop"), None when it was served normally
    fault: str | None = None

    @property
    def inputs(self) -> list[str]:
        """The texts of an embeddings request."""
        value = self.body.get("input") if isinstance(self.body, dict) else None
        return [value] if isinstance(value, str) else [str(t) for t in value or []]


class OpenAIServer:
    def __init__(self, api_key: str | None = None, default_reply: str = DEFAULT_REPLY, latency_s: float = 0.0) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.in_flight = 0  # embeddings requests being answered now
        self.peak_in_flight = 0
        self.default_reply = default_reply
        self.requests: list[RecordedRequest] = []
        # Knobs for a misbehaving server: answer data in reverse index order, drop the last n vectors,
        # answer vectors of this size whatever the model and `dimensions`.
        self.reverse_order = False
        self.drop_embeddings = 0
        self.force_dim: int | None = None
        self._failures: deque[Failure | None] = deque()
        self._always: Failure | None = None
        self._replies: deque[str] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()  # releases hanging requests at close
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, status: int, *, retry_after: str | None = None, retry_after_ms: str | None = None,
                  message: str | None = None, times: int = 1, after: int = 0) -> None:
        """After `after` requests pass, the next `times` (any endpoint) answer `status` with an OpenAI error body."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        with self._lock:
            self._failures.extend([None] * after)
            for _ in range(times):
                self._failures.append(Failure(status, headers, message or f"scripted failure {status}"))

    def hang_next(self, seconds: float, *, times: int = 1, after: int = 0) -> None:
        """After `after` requests pass, the next `times` are answered only after `seconds` (past a client's timeout)."""
        with self._lock:
            self._failures.extend([None] * after)
            self._failures.extend([Failure(200, {}, "", "hang", seconds)] * times)

    def drop_next(self, *, times: int = 1, after: int = 0) -> None:
        """After `after` requests pass, the next `times` have their connection closed without an answer."""
        with self._lock:
            self._failures.extend([None] * after)
            self._failures.extend([Failure(0, {}, "", "drop")] * times)

    def fail_all(self, failure: Failure, *, after: int = 0) -> None:
        """After whatever is scripted and then `after` more requests, every request meets `failure` until
        `clear_faults`."""
        with self._lock:
            self._failures.extend([None] * after)
            self._always = failure

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._always = None

    def queue_replies(self, *replies: str) -> None:
        """Chat completions answer these, in order; then `default_reply`."""
        with self._lock:
            self._replies.extend(replies)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # --- request handling (server threads) ---

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any] | None:
        """(status, headers, body) to answer, or None to close the connection without one."""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            failure = self._failures.popleft() if self._failures else self._always
            self.requests.append(RecordedRequest(path, body, headers, fault=failure.name if failure else None))
        if failure is not None:
            if failure.kind == "drop":
                return None
            if failure.kind == "hang":
                self._closing.wait(failure.hang_s)
            else:
                return failure.status, failure.headers, _error(failure.message, "server_error", None)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if not isinstance(body, dict):
            return 400, {}, _error("The request body must be a JSON object.", "invalid_request_error", None)
        if path == "/v1/embeddings":
            return self._embeddings(body)
        if path == "/v1/chat/completions":
            return self._chat(body)
        return 404, {}, _error(f"Unknown path {path}", "invalid_request_error", None)

    def _embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.latency_s > 0:
                self._closing.wait(self.latency_s)
            return self._embeddings_answer(body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _embeddings_answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
            return 400, {}, _error("'input' must be a non-empty string or array of non-empty strings.",
                                   "invalid_request_error", None)
        if len(inputs) > 2048:
            return 400, {}, _error("'input' must have at most 2048 items.", "invalid_request_error", None)
        model = str(body.get("model") or "")
        dim = self.force_dim or body.get("dimensions") or MODEL_DIMS.get(model, DEFAULT_DIM)
        if not isinstance(dim, int) or dim <= 0:
            return 400, {}, _error("'dimensions' must be a positive integer.", "invalid_request_error", None)
        as_base64 = body.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for i, text in enumerate(inputs):
            vec = raw_vector(text, dim)
            encoded: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii") if as_base64 \
                else [float(x) for x in vec]
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        if self.drop_embeddings:
            data = data[:-self.drop_embeddings]
        if self.reverse_order:
            data.reverse()
        tokens = sum(len(t.split()) for t in inputs)
        return 200, {}, {"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, {}, _error("'messages' must be a non-empty array.", "invalid_request_error", None)
        with self._lock:
            reply = self._replies.popleft() if self._replies else self.default_reply
        return 200, {}, {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": str(body.get("model") or ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(reply.split()),
                      "total_tokens": 1 + len(reply.split())},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive like a real API server: the SDK reuses its connections.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = server._handle(self.path, headers, raw)
                if answer is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, extra, payload = answer
                try:
                    self._send(status, extra, payload)
                except OSError:
                    self.close_connection = True  # the client gave up on a hanging answer

            def do_GET(self) -> None:
                self._send(404, {}, _error(f"Unknown path {self.path}", "invalid_request_error", None))

            def _send(self, status: int, extra: dict[str, str], payload: Any) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
