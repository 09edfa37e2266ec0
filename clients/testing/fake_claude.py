#!/usr/bin/env python3
"""A stand-in for the `claude` CLI that prints a long stream-json run fast.

Only for the benchmarks (clients/bench-streamlogs, clients/bench-board):
configured as `[agents.claude] command`, it ignores its arguments and
prints, in Claude Code's `--output-format stream-json --verbose` shapes, a
`system/init` event, FAKE_CLAUDE_EVENTS (default 20000) assistant text
events and a successful `result`, then exits 0. With FAKE_CLAUDE_TOOL_EVERY=N
every Nth pair of those events is a tool call (`Read`) and its result
instead. It makes an execution with a big log without a model or a network.
"""

import json
import os
import sys
import uuid


def main() -> None:
    events = int(os.environ.get("FAKE_CLAUDE_EVENTS", "20000"))
    session = str(uuid.uuid4())
    out = sys.stdout
    out.write(json.dumps({
        "type": "system", "subtype": "init", "session_id": session, "cwd": os.getcwd(),
        "model": "claude-sonnet-4-5", "tools": ["Read", "Write", "Edit"],
        "permissionMode": "acceptEdits", "apiKeySource": "none",
        "claude_code_version": "fake", "analytics_disabled": True,
    }) + "\n")
    tool_every = int(os.environ.get("FAKE_CLAUDE_TOOL_EVERY", "0"))
    for i in range(events):
        if tool_every and (i // 2) % tool_every == 0 and (i - i % 2) + 1 < events:
            tool_id = f"toolu_fake_{i // 2:08d}"
            if i % 2 == 0:
                out.write(json.dumps({
                    "type": "assistant",
                    "message": {"id": f"msg_fake_tool_{i}", "type": "message", "role": "assistant",
                                "model": "claude-sonnet-4-5",
                                "content": [{"type": "tool_use", "id": tool_id, "name": "Read",
                                             "input": {"file_path": f"src/module_{i % 97}.rs"}}]},
                    "parent_tool_use_id": None, "session_id": session,
                }) + "\n")
            else:
                out.write(json.dumps({
                    "type": "user",
                    "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id,
                                                             "content": f"fn module_{i % 97}() {{}}\n"}]},
                    "parent_tool_use_id": None, "session_id": session,
                }) + "\n")
            continue
        out.write(json.dumps({
            "type": "assistant",
            "message": {
                "id": f"msg_fake_{i // 100:06d}", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": f"Step {i}: looked at src/module_{i % 97}.rs and it compiles."}],
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
            "parent_tool_use_id": None,
            "session_id": session,
        }) + "\n")
    out.write(json.dumps({
        "type": "result", "subtype": "success", "is_error": False,
        "result": f"Done.\n\n## Summary\nPrinted {events} events.",
        "session_id": session, "total_cost_usd": 0.0, "num_turns": 1,
        "usage": {"input_tokens": 10, "output_tokens": events},
        "duration_ms": 1, "duration_api_ms": 1, "stop_reason": "end_turn",
    }) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
