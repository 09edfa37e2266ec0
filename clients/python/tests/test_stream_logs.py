"""StreamLogs through a real agent run: the real `claude` CLI driven by a
scripted Anthropic API, run by the server's executor."""

from __future__ import annotations

import time

from claudomator_client import (
    Client,
    ExecutionState,
    LogEventKind,
    TaskState,
)

from conftest import Server

FINAL_STATES = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_TIMED_OUT,
    TaskState.TASK_STATE_CANCELLED,
    TaskState.TASK_STATE_BUDGET_EXCEEDED,
}


def wait_final(client: Client, task_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(task_id)
        if task.state in FINAL_STATES or time.monotonic() > deadline:
            return task
        time.sleep(0.1)


def test_stream_logs_follows_a_run_to_the_end(agent_server: Server) -> None:
    with Client(agent_server.address) as client:
        task = client.submit_task(
            "Create hello.txt containing hi", agent="claude", tags=["stream"]
        ).task

        started = time.monotonic()
        # By task id, following: waits for the first execution, then reads
        # every event live until the execution ends.
        events = list(client.stream_logs(task_id=task.id, follow=True))
        elapsed = time.monotonic() - started
        assert elapsed < 60, elapsed

        kinds = [e.kind for e in events]
        assert [e.offset for e in events] == list(range(len(events)))
        assert len({e.execution_id for e in events}) == 1
        for kind in (LogEventKind.LOG_EVENT_KIND_TEXT, LogEventKind.LOG_EVENT_KIND_TOOL_CALL,
                     LogEventKind.LOG_EVENT_KIND_TOOL_RESULT, LogEventKind.LOG_EVENT_KIND_RESULT):
            assert kind in kinds, (LogEventKind.Name(kind), [e.text for e in events])
        tool_call = next(e for e in events if e.kind == LogEventKind.LOG_EVENT_KIND_TOOL_CALL)
        assert "Write" in tool_call.text and "hello.txt" in tool_call.text
        assert tool_call.raw and tool_call.payload_json  # the CLI's own line and its JSON
        # Sent once (it is the payload), filled back in by the client.
        assert tool_call.raw_is_payload and tool_call.raw == tool_call.payload_json
        assert any("## Summary" in e.text for e in events)
        assert all(e.time.seconds > 0 for e in events)
        # The stream ended because the execution did.
        execution_id = events[0].execution_id
        execution = client.get_execution(execution_id)
        assert execution.state != ExecutionState.EXECUTION_STATE_RUNNING

        final = wait_final(client, task.id)
        assert final.state == TaskState.TASK_STATE_COMPLETED, final.state_reason
        assert "hello.txt" in final.summary
        execution = client.get_execution(execution_id)
        assert execution.state == ExecutionState.EXECUTION_STATE_SUCCEEDED
        assert list(execution.changed_files) == ["hello.txt"]
        assert execution.turns == 2 and execution.input_tokens > 0
        assert [e.id for e in client.list_executions(task.id).executions] == [execution_id]

        # The same log again, by execution id, from an offset, without follow.
        again = list(client.stream_logs(execution_id, from_offset=2))
        assert [(e.offset, e.kind, e.text) for e in again] == [
            (e.offset, e.kind, e.text) for e in events[2:]
        ]

        # Stopping a stream early.
        with client.stream_logs(execution_id) as stream:
            first = next(stream)
            stream.cancel()
            assert list(stream) == []
        assert first.offset == 0
