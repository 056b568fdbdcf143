"""A small real HTTP server on 127.0.0.1 that speaks the OpenAI-compatible contract an analyst endpoint needs:
`GET /v1/models` and `POST /v1/chat/completions` (non-streaming), as vLLM, SGLang or `transformers serve` answer them.

Its replies are meta-experiences in the paper's output format, numbered in the order the requests came, so a test
can trace each analysis from the server to the run files. `mode` changes its behaviour between requests:
`ok`, `slow` (answers after `delay` seconds), `fail` (HTTP 500), `length` (a reply cut at its budget). `stop()`
shuts it down mid-run; the first `fail_first` chat requests fail (HTTP 500). It records every request's body and
Authorization header.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "teacher-test"


def analysis(n: int) -> str:
    return ("**Failure Point:** Solution 1 added the numbers in the wrong order at the first step.\n"
            "**Latent Cognitive Pattern:** Rushing past the check of each partial result.\n"
            f"### 2. Analysis of Success Factors\nSolution 2 wrote every step down (reply {n}).\n"
            "### 3. First-Person Reflective Summary\nI should verify each intermediate result before going on.\n"
            "### 4. Subject Heuristics (Internalized Experience)\n- When adding, recompute each partial sum once.\n")


class ChatServer:
    def __init__(self, model: str = MODEL, port: int = 0):
        self.model, self.mode, self.delay, self.fail_first = model, "ok", 0.0, 0
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(body)
            n = len(self.requests)
        if self.mode == "fail" or n <= self.fail_first:
            return 500, {"error": {"message": "internal error", "type": "server_error"}}
        if self.mode == "slow":
            time.sleep(self.delay)
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"model {body.get('model')} not found", "type": "NotFoundError"}}
        text = analysis(n)
        finish = "stop"
        if self.mode == "length":
            text, finish = text[:80], "length"
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        return 200, {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(text) // 4,
                      "total_tokens": (prompt_chars + len(text)) // 4},
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.auth.append(self.headers.get("Authorization"))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                self._send(*server._reply(body))

        return Handler

