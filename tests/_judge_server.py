"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the judge tests.

The behaviour of a request is chosen by a ``CASE=<name>`` tag in its last message, so it does
not depend on which thread or in which order the client sends it:

- ``ok``: a valid grade/verdict (``Score: [[7]]`` or ``[[A]]``);
- ``garbage``: HTTP 200 with text in no verdict format;
- ``e500``: HTTP 500 every time; ``flaky``: HTTP 500 on the first request, then ``ok``;
- ``r429``: HTTP 429 on the first request, then ``ok``;
- ``truncated``: HTTP 200 with a JSON body cut in the middle, every time;
- ``slow``: answers only after ``slow_s`` seconds (past the client's timeout).

Anything without a tag gets ``ok``. ``hits[case]`` counts requests per case, ``auth`` records
the Authorization headers seen.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text},
         "finish_reason": "stop"}]}).encode()


class ScriptedJudge:
    """Start with ``with ScriptedJudge() as srv:``; ``srv.url`` is the API root."""

    def __init__(self, *, slow_s: float = 3.0, always: str | None = None):
        self.hits: Counter = Counter()
        self.auth: list[str | None] = []
        self.slow_s, self.always = slow_s, always
        self._lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                m = re.search(r"CASE=(\w+)", text)
                case = outer.always or (m.group(1) if m else "ok")
                with outer._lock:
                    outer.hits[case] += 1
                    n = outer.hits[case]
                    outer.auth.append(self.headers.get("Authorization"))
                pairwise = "[[A]]" in text
                valid = "I prefer the first. [[A]]" if pairwise else "Fine answer.\nScore: [[7]]"
                if case == "e500" or (case == "flaky" and n == 1):
                    return self._send(500, b'{"error": "boom"}')
                if case == "r429" and n == 1:
                    return self._send(429, b'{"error": "slow down"}')
                if case == "truncated":
                    return self._send(200, _completion(valid)[:40])
                if case == "slow":
                    outer._release.wait(outer.slow_s)
                if case == "garbage":
                    return self._send(200, _completion("Hmm, maybe an eight out of ten?"))
                return self._send(200, _completion(valid))

            def _send(self, status: int, payload: bytes):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before the answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedJudge:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()  # let slow handlers finish at once
        self.server.shutdown()
        self.server.server_close()
