#!/usr/bin/env python3
"""A scripted Anthropic Messages API on loopback, for the client tests.

    python3 anthropic_mock.py [--port 0]

Prints `listening on 127.0.0.1:PORT` on stdout once it accepts connections,
then serves until killed. Standard library only; binds 127.0.0.1 only.

The real `claude` CLI (Claude Code) is pointed at it with
`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`. It answers the way the real API
streams (SSE: message_start, ping, content_block_start/delta/stop,
message_delta with usage, message_stop), with one script:

- turn 1: a short text, then a `Write` tool call creating `hello.txt`
  ("hi") in the CLI's working directory (read from the system prompt);
- turn 2 (the request carries the tool_result): a text ending with a
  `## Summary` section, stop_reason end_turn;
- a request offering no tools (the CLI's side requests: titles, topics):
  a short text;
- when the newest user message holds `[ask]` (a task's instructions), turn
  1 writes claudomator's question file instead (`.claudomator/question.json`:
  QUESTION with CHOICES), so the task blocks; the answer, a later message of
  the same session, gets the usual script.

Also: any HEAD -> 200 (the CLI preconnects), POST .../count_tokens ->
{"input_tokens": 42}, anything else -> a 404 Anthropic-style error.
Requests are logged to stderr, one line each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INPUT_TOKENS = 1234
OUTPUT_TOKENS = 56
FIRST_TEXT = "I'll create the file."
FINAL_TEXT = (
    "I created hello.txt.\n\n## Summary\n"
    "Created hello.txt containing 'hi' in the working directory."
)
QUESTION = "Which greeting should hello.txt hold?"
CHOICES = ["hi", "hello"]
ASK = "[ask]"
_CWD = re.compile(r"(?:Primary working directory|Working directory|cwd):\s*(\S+)")


def _texts(body: dict) -> list[str]:
    out: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        out.append(system)
    elif isinstance(system, list):
        out += [b.get("text", "") for b in system if isinstance(b, dict)]
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return out


def working_directory(body: dict) -> str:
    for text in _texts(body):
        m = _CWD.search(text)
        if m:
            return m.group(1)
    return os.getcwd()


def has_tool_result(body: dict) -> bool:
    messages = body.get("messages") or []
    if not messages:
        return False
    content = messages[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def asks(body: dict) -> bool:
    """The newest user message holds the ASK marker."""
    messages = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    if not messages:
        return False
    content = messages[-1].get("content")
    if isinstance(content, str):
        return ASK in content
    return any(isinstance(b, dict) and ASK in str(b.get("text", "")) for b in content or [])


def answer(body: dict) -> tuple[list[dict], str]:
    """The content blocks and stop reason for one /v1/messages request."""
    tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
    if not tools:
        return [{"type": "text", "text": "Mock title"}], "end_turn"
    if has_tool_result(body):
        return [{"type": "text", "text": FINAL_TEXT}], "end_turn"
    tool = "Write" if "Write" in tools else tools[0]
    if asks(body):
        path = os.path.join(working_directory(body), ".claudomator", "question.json")
        question = json.dumps({"question": QUESTION, "choices": CHOICES, "context": "Both are one line."})
        return [
            {"type": "text", "text": "I need to ask which greeting you want."},
            {
                "type": "tool_use",
                "id": "toolu_mock_" + uuid.uuid4().hex[:12],
                "name": tool,
                "input": {"file_path": path, "content": question},
            },
        ], "tool_use"
    path = os.path.join(working_directory(body), "hello.txt")
    return [
        {"type": "text", "text": FIRST_TEXT},
        {
            "type": "tool_use",
            "id": "toolu_mock_" + uuid.uuid4().hex[:12],
            "name": tool,
            "input": {"file_path": path, "content": "hi"},
        },
    ], "tool_use"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer is sized or chunked

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("[anthropic-mock] %s %s\n" % (self.command, self.path))

    def _body(self) -> dict:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return body if isinstance(body, dict) else {}

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_mock")
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, name: str, data: dict) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._not_found()

    def _not_found(self) -> None:
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"mock: no route {self.command} {self.path}"}})

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?")[0]
        if path.endswith("/v1/messages/count_tokens"):
            return self._json(200, {"input_tokens": 42})
        if not path.endswith("/v1/messages"):
            return self._not_found()
        blocks, stop = answer(body)
        model = body.get("model") or "claude-mock"
        message_id = "msg_mock_" + uuid.uuid4().hex[:16]
        usage = {
            "input_tokens": INPUT_TOKENS,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if not body.get("stream"):
            return self._json(200, {
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": blocks, "stop_reason": stop, "stop_sequence": None,
                "usage": dict(usage, output_tokens=OUTPUT_TOKENS),
            })
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_mock")
        self.end_headers()
        self._event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                text = block["text"]
                parts = [text[: len(text) // 2], text[len(text) // 2:]]
                deltas = [{"type": "text_delta", "text": p} for p in parts]
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                js = json.dumps(block["input"])
                parts = [js[: len(js) // 2], js[len(js) // 2:]]
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
            self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            for delta in deltas:
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": OUTPUT_TOKENS}})
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="scripted Anthropic Messages API (loopback)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
