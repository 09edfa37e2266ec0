"""Retries on UNAVAILABLE through a server restart (reads, and submits with
an idempotency key; never a submit without one), per-call deadlines and
metadata, in `Client` and `AsyncClient`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from claudomator_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    TaskState,
    UnauthenticatedError,
    Task,
    UnavailableError,
)
from claudomator_client.v1 import service_pb2, service_pb2_grpc

from conftest import QUEUE_ONLY, TOKEN, Server, start_server


def back_in(server: Server, seconds: float) -> threading.Thread:
    """Starts the killed server again after `seconds`, in a thread."""
    def run() -> None:
        time.sleep(seconds)
        server.start_again()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_reads_and_keyed_submits_retry_through_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path, QUEUE_ONLY)
    try:
        with Client(server.address) as client:
            task = client.submit_task("survives a restart").task

            server.kill()
            started = time.monotonic()
            # No idempotency key: not retried (it might have been stored).
            with pytest.raises(UnavailableError):
                client.submit_task("not retried")
            assert time.monotonic() - started < 1.0
            with pytest.raises(UnavailableError):
                client.with_options(retries=0).get_task(task.id)

            thread = back_in(server, 0.5)
            # A read waits the restart out.
            assert client.get_task(task.id).state == TaskState.TASK_STATE_QUEUED
            assert time.monotonic() - started >= 0.5
            thread.join()

            server.kill()
            thread = back_in(server, 0.5)
            key = "key-" + uuid.uuid4().hex
            again = client.submit_task("keyed", idempotency_key=key)
            thread.join()
            assert again.created
            assert not client.submit_task("keyed", idempotency_key=key).created
            assert [t.spec.name for t in client.list_tasks().tasks if t.id == again.task.id]
    finally:
        server.stop()


def test_async_reads_retry_through_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path, QUEUE_ONLY)

    async def main() -> None:
        async with AsyncClient(server.address) as client:
            task = (await client.submit_task("survives a restart")).task
            server.kill()
            with pytest.raises(UnavailableError):
                await client.submit_task("not retried")
            thread = back_in(server, 0.5)
            assert (await client.get_task(task.id)).id == task.id
            thread.join()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_per_call_deadline_and_metadata(auth_server: Server) -> None:
    with Client(auth_server.address, call_timeout=None) as client:
        with pytest.raises(UnauthenticatedError):
            client.list_tasks()
        # Metadata for one call (here the token), besides the client's.
        authed = client.with_options(metadata=[("authorization", f"Bearer {TOKEN}")])
        task = authed.submit_task("with call metadata", tags=["metadata"]).task
        assert authed.get_task(task.id).id == task.id
        assert client.call_timeout is None

    async def main() -> None:
        async with AsyncClient(auth_server.address, metadata=[("authorization", f"Bearer {TOKEN}")]) as client:
            assert (await client.get_task(task.id)).id == task.id

    asyncio.run(main())


class SlowService(service_pb2_grpc.ClaudomatorServiceServicer):
    """Answers GetTask after 2 s, with the metadata it was sent."""

    def GetTask(self, request, context):  # noqa: N802 - the RPC's name
        time.sleep(2)
        seen = ",".join(f"{k}={v}" for k, v in context.invocation_metadata() if k.startswith("x-"))
        return service_pb2.GetTaskResponse(task=Task(id=request.id, state_reason=seen))


def test_per_call_deadline_against_a_slow_server() -> None:
    # A stand-in gRPC server in this process that takes 2 s to answer.
    slow = grpc.server(ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_ClaudomatorServiceServicer_to_server(SlowService(), slow)
    address = "127.0.0.1:%d" % slow.add_insecure_port("127.0.0.1:0")
    slow.start()
    try:
        with Client(address, call_timeout=None, metadata=[("x-client", "1")]) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                client.with_options(call_timeout=0.3).get_task("a")
            assert time.monotonic() - started < 1.5
            assert client.call_timeout is None  # the client's own is untouched
            task = client.with_options(metadata=[("x-call", "2")]).get_task("b")
            assert task.state_reason == "x-call=2" and time.monotonic() - started >= 2

        async def main() -> None:
            async with AsyncClient(address, call_timeout=None) as client:
                with pytest.raises(DeadlineExceededError):
                    await client.with_options(call_timeout=0.3).get_task("c")

        asyncio.run(main())
    finally:
        slow.stop(grace=None)
