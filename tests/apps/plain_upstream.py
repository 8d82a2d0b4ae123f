"""A plain (non-Cello) Python HTTP app for the sidecar tests: echoes what it received."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = {"count": 0}


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        SEEN["count"] += 1
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        doc = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_length": len(body),
            "seen": SEEN["count"],
        }
        out = json.dumps(doc).encode()
        status = 201 if self.command == "POST" else 200
        if self.path.startswith("/status/"):  # /status/502: answer with that status
            status = int(self.path.split("/")[2])
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("x-upstream", "plain")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
