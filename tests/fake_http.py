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


class CountingCompletions(JSONHandler):
    """A fake /v1/completions server that records how many requests were in flight at once.

    Each request sleeps ``delay`` seconds (so concurrent requests overlap); the answer to a
    generation request is " s<seed % 1000>-<choice index>" with log-prob -0.1 per choice, and
    ``honour_n`` says whether it returns ``n`` choices or always one. Echo requests answer
    one token per space-separated word with log p = -len(token) / 10 (a correct server).
    """

    delay = 0.05
    honour_n = True
    in_flight = 0
    max_in_flight = 0
    requests: list = []
    lock = None  # a threading.Lock, set by the test

    @classmethod
    def reset_max_in_flight(cls, timeout: float = 10.0) -> None:
        """Set max_in_flight to 0 once no request is counted in flight (handlers count
        themselves out before their reply goes, so this returns at once after a client has all
        its answers; it guards against a handler of an earlier test still running)."""
        import time

        end = time.monotonic() + timeout
        while cls.in_flight and time.monotonic() < end:
            time.sleep(0.005)
        assert cls.in_flight == 0, f"{cls.in_flight} requests still in flight"
        cls.max_in_flight = 0

    def do_GET(self):
        self._send(200, {"data": [{"id": "fake-model"}]})

    def do_POST(self):
        import time

        cls = type(self)
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # counted out before the reply goes: a client that holds its answer may send the next
        # request at once, and must not find this one still counted
        with cls.lock:
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            cls.requests.append(req)
        try:
            time.sleep(cls.delay)
            reply = cls._reply(req)
        finally:
            with cls.lock:
                cls.in_flight -= 1
        self._send(200, reply)

    @classmethod
    def _reply(cls, req) -> dict:
        if req.get("echo"):
            words = req["prompt"].split(" ")
            toks = [words[0]] + [" " + w for w in words[1:]]
            offs, pos = [], 0
            for t in toks:
                offs.append(pos)
                pos += len(t)
            lp = [None] + [-len(t) / 10 for t in toks[1:]]
            return {"choices": [{"text": req["prompt"], "logprobs": {
                "tokens": toks, "token_logprobs": lp, "text_offset": offs},
                "finish_reason": "length"}]}
        if req["temperature"] == 0:
            return {"choices": [{"text": " Paris", "logprobs": {
                "tokens": [" Paris"], "token_logprobs": [-0.6]}, "finish_reason": "stop"}]}
        n = int(req.get("n", 1)) if cls.honour_n else 1
        choices = [{"index": k, "text": f" s{req['seed'] % 1000}-{k}",
                    "logprobs": {"tokens": [f" s{req['seed'] % 1000}-{k}"],
                                 "token_logprobs": [-0.1]},
                    "finish_reason": "stop"} for k in reversed(range(n))]
        return {"choices": choices}
