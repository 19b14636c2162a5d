"""The base of the tests' fake OpenAI-compatible servers: quiet, JSON replies."""

import json
from http.server import BaseHTTPRequestHandler


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with JSON (or a raw string body)."""

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
