"""`AsyncClient` (grpc.aio) against real servers: every RPC, the same
errors, `async for` streams, `wait` across a retry and `watch` across a
restart."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from pathlib import Path

import grpc
import pytest

from claudomator_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    ExecutionState,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    TaskState,
    UnavailableError,
)

from conftest import QUEUE_ONLY, Server, start_server
from test_every_rpc import rpc_names, snake

MISSING_ID = "01JDZ0Q3W2J9P6V5M4N8K7H6G5"


def test_every_rpc_and_method_of_client_is_on_async_client() -> None:
    missing = [n for n in rpc_names() if not callable(getattr(AsyncClient, snake(n), None))]
    assert missing == [], f"RPCs without an AsyncClient method: {missing}"
    public = {n for n, _ in inspect.getmembers(Client, callable) if not n.startswith("_")}
    assert public - set(dir(AsyncClient)) == set()


def test_calls_errors_and_streams(server: Server) -> None:
    async def main() -> None:
        tag = "t-" + uuid.uuid4().hex[:8]
        async with AsyncClient(server.address) as client:
            r = await client.submit_task("async task", tags=[tag], priority="high", timeout="45m")
            assert r.created and r.task.state == TaskState.TASK_STATE_QUEUED
            assert r.task.timeout_seconds == 45 * 60
            assert (await client.get_task(r.task.id)).id == r.task.id
            assert [t.id for t in (await client.list_tasks(tag=tag)).tasks] == [r.task.id]
            assert [t.id async for t in client.iter_tasks(tag=tag, page_size=1)] == [r.task.id]
            with pytest.raises(InvalidArgumentError, match="spec.timeout"):
                await client.submit_task("bad", timeout="soon")
            with pytest.raises(NotFoundError) as caught:
                await client.get_task(MISSING_ID)
            assert caught.value.code == grpc.StatusCode.NOT_FOUND and caught.value.message
            with pytest.raises(NotFoundError):
                await client.get_execution(MISSING_ID)
            with pytest.raises(NotFoundError):
                [e async for e in client.stream_logs(MISSING_ID)]
            for call in (client.accept_task, client.get_task_diff, client.merge_task):
                with pytest.raises(FailedPreconditionError):
                    await call(r.task.id)
            with pytest.raises(FailedPreconditionError):
                await client.reject_task(r.task.id, "again")
            with pytest.raises(FailedPreconditionError):
                await client.answer_question(r.task.id, "yes")
            assert (await client.get_system_status()).executor_enabled is False
            assert all(not i.removed for i in (await client.prune_tasks(dry_run=True)).items)
            assert "CONTRIBUTING" in (await client.elaborate("Add a CONTRIBUTING.md")).spec.instructions
            assert list((await client.list_executions(r.task.id)).executions) == []

            async with client.watch_tasks(tag=tag) as watch:
                assert (await watch.__anext__()).snapshot.id == r.task.id
                assert (await watch.__anext__()).WhichOneof("event") == "snapshot_end"
                await client.cancel_task(r.task.id, reason="async")
                async for event in watch:
                    if event.WhichOneof("event") == "change" and event.change.to_state == TaskState.TASK_STATE_CANCELLED:
                        break
            assert (await client.get_task(r.task.id)).state_reason == "async"
            waited = await client.wait(r.task.id, max_wait=10)
            assert waited.task.state == TaskState.TASK_STATE_CANCELLED and waited.execution is None
            other = (await client.submit_task("never runs")).task
            with pytest.raises(DeadlineExceededError):
                await client.wait(other.id, max_wait=0.5)

    asyncio.run(main())


def test_unreachable_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{port}", call_timeout=5, retries=0) as client:
            with pytest.raises(UnavailableError):
                await client.list_tasks()

    asyncio.run(main())


def test_async_wait_follows_a_retry(local_server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(local_server.address) as client:
            word = uuid.uuid4().hex[:12]
            task = (await client.submit_task(f"Say hi. RATE-LIMIT-ONCE:{word}", agent="local")).task
            waited = await client.wait(task.id, max_wait=60)
            assert waited.task.state == TaskState.TASK_STATE_COMPLETED, waited.task.state_reason
            runs = (await client.list_executions(task.id)).executions
            assert len(runs) == 2 and "rate limited" in runs[0].error
            assert waited.execution is not None and waited.execution.id == runs[1].id
            assert waited.execution.state == ExecutionState.EXECUTION_STATE_SUCCEEDED
            events = [e async for e in client.stream_logs(waited.execution.id)]
            assert events and [e.offset for e in events] == list(range(len(events)))

    asyncio.run(main())


def test_async_watch_resumes_across_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path, QUEUE_ONLY)

    async def main() -> None:
        tag = "t-" + uuid.uuid4().hex[:8]
        async with AsyncClient(server.address) as client:
            events = client.watch(tag=tag)

            async def next_change():
                async for event in events:
                    assert event.WhichOneof("event") in ("change", "heartbeat")
                    if event.WhichOneof("event") == "change":
                        return event.change

            assert (await events.__anext__()).WhichOneof("event") == "snapshot_end"
            a = (await client.submit_task("a", tags=[tag])).task
            assert (await next_change()).task.id == a.id
            await asyncio.get_running_loop().run_in_executor(None, server.restart, 0.3)
            with Client(server.address) as other:
                b = other.submit_task("b", tags=[tag]).task
            change = await next_change()
            assert (change.task.id, change.to_state) == (b.id, TaskState.TASK_STATE_QUEUED)
            await events.aclose()

    try:
        asyncio.run(main())
    finally:
        server.stop()
