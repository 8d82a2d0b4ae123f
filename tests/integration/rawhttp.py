"""Tiny HTTP/1.1 client over a raw socket, for what httpx hides: pipelining, malformed input,
keep-alive and timeout checks. Also the shared problem+json assertion."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response arrived."""


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def header_list(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Conn:
    """A buffered socket connection that can read several responses in a row."""

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(f"connection closed; {len(self.buf)} unread bytes: {self.buf[:200]!r}")
        self.buf += chunk

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until_close(self) -> bytes:
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                break
        data, self.buf = self.buf, b""
        return data

    def read_head(self) -> RawResponse:
        status_line = self.readline().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError(f"not an HTTP status line: {status_line!r}")
        resp = RawResponse(version=parts[0], status=int(parts[1]), reason=parts[2] if len(parts) > 2 else "")
        while True:
            line = self.readline()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            resp.headers.append((key.strip(), value.strip()))
        return resp

    def read_chunked(self) -> bytes:
        body = b""
        while True:
            size_line = self.readline().split(b";", 1)[0].strip()
            size = int(size_line, 16)
            if size == 0:
                while self.readline():  # trailers until the blank line
                    pass
                return body
            body += self.read_exact(size)
            assert self.read_exact(2) == b"\r\n", "chunk not terminated by CRLF"

    def read_response(self, method: str = "GET") -> RawResponse:
        """Read one complete response (status line, headers, body) from the connection."""
        resp = self.read_head()
        while 100 <= resp.status < 200 and resp.status != 101:
            resp = self.read_head()
        if method.upper() == "HEAD" or resp.status in (204, 304):
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            resp.body = self.read_chunked()
        elif resp.header("content-length") is not None:
            resp.body = self.read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_until_close()
        return resp

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> RawResponse:
        self.send(build_request(method, path, headers, body))
        return self.read_response(method)

    def wait_closed(self, timeout: float) -> float | None:
        """Wait until the server closes the connection (EOF or reset); return the seconds it took,
        or None if it was still open after `timeout`. Data the server sends meanwhile is discarded."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - start
            if not chunk:
                return time.monotonic() - start


def build_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    headers = dict(headers or {})
    lower = {k.lower() for k in headers}
    if "host" not in lower:
        headers["Host"] = "127.0.0.1"
    if body and "content-length" not in lower and "transfer-encoding" not in lower:
        headers["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def send_raw(server, data: bytes, timeout: float = 5.0, method: str = "GET") -> RawResponse | None:
    """Send raw bytes on a fresh connection; return the response, or None if the server closed
    the connection without answering. Raises TimeoutError if the server neither answers nor closes."""
    with Conn(server.host, server.port, timeout=timeout) as conn:
        try:
            conn.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return conn.read_response(method)
        except (ConnectionClosed, ConnectionResetError):
            return None


def _get(resp, attr_httpx: str, attr_raw: str):
    return getattr(resp, attr_httpx) if hasattr(resp, attr_httpx) else getattr(resp, attr_raw)


def content_type_of(resp) -> str:
    if isinstance(resp, RawResponse):
        return resp.header("content-type") or ""
    return resp.headers.get("content-type", "")


def status_of(resp) -> int:
    return resp.status if isinstance(resp, RawResponse) else resp.status_code


def body_of(resp) -> bytes:
    return resp.body if isinstance(resp, RawResponse) else resp.content


def assert_problem(resp, status: int) -> dict:
    """Assert an RFC 7807 problem response (works for httpx, TestClient and RawResponse objects)."""
    got = status_of(resp)
    body = body_of(resp)
    assert got == status, f"expected {status}, got {got}: {body[:500]!r}"
    ctype = content_type_of(resp)
    assert ctype.split(";")[0].strip().lower() == "application/problem+json", (
        f"{status} has content-type {ctype!r}, not application/problem+json; body {body[:300]!r}"
    )
    problem = json.loads(body)
    assert isinstance(problem, dict), problem
    assert isinstance(problem.get("type"), str) and problem["type"], f"problem without 'type': {problem}"
    assert isinstance(problem.get("title"), str) and problem["title"], f"problem without 'title': {problem}"
    assert problem.get("status") == status, f"problem 'status' is {problem.get('status')!r}, not {status}"
    return problem
