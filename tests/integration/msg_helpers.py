"""Shared by the messaging tests: a moto server for SQS, an HTTP proxy that records the SQS
actions a client calls, and a TCP proxy that delays the broker's answers (so a test can tell one
round trip from many)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import free_port
from db_helpers import missing

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def start_moto(log_dir: Path) -> tuple[str, subprocess.Popen]:
    """A moto server on 127.0.0.1 (a free port): its URL and process."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        missing("moto_server (moto[server] of requirements-dev.txt) is not installed")
    port = free_port()
    log_path = log_dir / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return url, proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {url}: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)


class SqsRecorder:
    """An HTTP proxy in front of an SQS endpoint recording each call's action (the JSON
    protocol's ``X-Amz-Target``) and its number of ``Entries`` (batch calls)."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[str, int]] = []
        host, port = upstream.removeprefix("http://").split(":")
        lock = threading.Lock()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = (self.headers.get("X-Amz-Target") or "?").rsplit(".", 1)[-1]
                try:
                    entries = len(json.loads(body or b"{}").get("Entries") or [])
                except ValueError:
                    entries = 0
                with lock:
                    calls.append((action, entries))
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, action: str) -> list[int]:
        """The entry counts of the calls of ``action`` so far."""
        return [n for a, n in list(self.calls) if a == action]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DelayProxy:
    """A TCP proxy to ``port`` on 127.0.0.1 that forwards the server's bytes ``delay`` seconds
    after they came (pipelined answers are not delayed one after the other): N sequential round
    trips take at least N × delay, one pipelined round trip about one delay."""

    def __init__(self, port: int, delay: float) -> None:
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream = port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        import queue

        chunks: queue.Queue = queue.Queue()

        def send() -> None:
            while True:
                due, data = chunks.get()
                if data is None:
                    dst.close()
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=send, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + delay, data or None))
            if not data:
                return

    def close(self) -> None:
        self.listener.close()
