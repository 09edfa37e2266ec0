"""A scripted OpenAI-compatible chat API on loopback, for the clients' tests
that need a task to run (and to be retried) with the server's `local` agent.

    python3 openai_mock.py        # prints "listening on 127.0.0.1:PORT"

POST /v1/chat/completions answers a short text (streamed as SSE when the
request asks for a stream, else whole). A request whose text contains
`RATE-LIMIT-ONCE:<word>` is answered 429 (Retry-After: 1) the first time
that word is seen, so the server's executor retries the task. GET
/v1/models lists one model. Python standard library only.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "mock-model"
ANSWER = "Done: nothing to change."
_seen: set[str] = set()
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(format % args + "\n")

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error":{"message":"not found"}}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error":{"message":"not found"}}')
            return
        request = json.loads(raw or "{}")
        m = re.search(r"RATE-LIMIT-ONCE:(\w+)", raw)
        if m:
            with _lock:
                first = m.group(1) not in _seen
                _seen.add(m.group(1))
            if first:
                body = json.dumps({"error": {"message": "rate limited (scripted)", "type": "rate_limit"}})
                self._send(429, body.encode(), headers={"Retry-After": "1"})
                return
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        if request.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": usage},
            ]
            body = "".join(f"data: {json.dumps(dict(c, model=MODEL, object='chat.completion.chunk'))}\n\n"
                           for c in chunks) + "data: [DONE]\n\n"
            self._send(200, body.encode(), content_type="text/event-stream")
        else:
            body = json.dumps({
                "object": "chat.completion", "model": MODEL, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": ANSWER}}],
            })
            self._send(200, body.encode())


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
