"""`wait` across a retry (a `local` task rate limited once by the scripted
OpenAI-compatible API), and `watch` resuming by cursor across a restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from claudomator_client import (
    Client,
    DeadlineExceededError,
    ExecutionState,
    NotFoundError,
    TaskState,
)

from conftest import QUEUE_ONLY, Server, start_server


def test_wait_follows_a_retry_to_the_end(local_server: Server) -> None:
    with Client(local_server.address) as client:
        word = uuid.uuid4().hex[:12]
        task = client.submit_task(f"Say hi. RATE-LIMIT-ONCE:{word}", agent="local").task
        waited = client.wait(task.id, max_wait=60)
        assert waited.task.id == task.id
        assert waited.task.state == TaskState.TASK_STATE_COMPLETED, waited.task.state_reason
        runs = list(client.list_executions(task.id).executions)
        assert len(runs) == 2, [(ExecutionState.Name(r.state), r.error) for r in runs]
        assert "rate limited" in runs[0].error
        assert waited.execution is not None and waited.execution.id == runs[1].id
        assert waited.execution.state == ExecutionState.EXECUTION_STATE_SUCCEEDED
        # A stopped task answers at once.
        assert client.wait(task.id, max_wait=5).task.state == TaskState.TASK_STATE_COMPLETED


def test_wait_without_an_execution_and_with_max_wait(server: Server) -> None:
    with Client(server.address) as client:
        task = client.submit_task("never runs").task
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.wait(task.id, max_wait=0.5)
        assert time.monotonic() - started < 5
        client.cancel_task(task.id)
        waited = client.wait(task.id, max_wait=10)
        assert waited.task.state == TaskState.TASK_STATE_CANCELLED
        assert waited.execution is None
        with pytest.raises(NotFoundError):
            client.wait("01JDZ0Q3W2J9P6V5M4N8K7H6G5", max_wait=10)


def test_watch_resumes_by_cursor_across_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path, QUEUE_ONLY)
    try:
        with Client(server.address) as client:
            tag = "t-" + uuid.uuid4().hex[:8]
            events = client.watch(tag=tag)

            def next_change():
                for event in events:
                    kind = event.WhichOneof("event")
                    assert kind in ("change", "heartbeat"), kind  # never a second snapshot
                    if kind == "change":
                        return event.change

            assert next(events).WhichOneof("event") == "snapshot_end"
            a = client.submit_task("a", tags=[tag]).task
            assert next_change().task.id == a.id

            server.restart(down_for=0.3)
            # While the watch is away, another client:
            # a new task, and a change to the first.
            with Client(server.address) as other:
                b = other.submit_task("b", tags=[tag]).task
                other.cancel_task(a.id, reason="restarted")
            seen = [(c.task.id, c.to_state) for c in (next_change(), next_change())]
            assert seen == [(b.id, TaskState.TASK_STATE_QUEUED), (a.id, TaskState.TASK_STATE_CANCELLED)]

            # A live change after the reconnect comes too.
            with Client(server.address) as other:
                other.cancel_task(b.id)
            last = next_change()
            assert (last.task.id, last.to_state) == (b.id, TaskState.TASK_STATE_CANCELLED)
            events.close()
    finally:
        server.stop()
