"""`AsyncClient`: the same methods as `Client` on grpc.aio, to `await`, with
the same errors, and `async for` over the streams."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional, Sequence, cast

import grpc
import grpc.aio

from .client import (
    _UNSET,
    READS,
    RETRIES,
    _retry_pause,
    _GOING_ON,
    _RECONNECT_FIRST,
    _RECONNECT_MAX,
    _RECONNECT_OPTIONS,
    RECONNECT_FOR,
    AgentLike,
    AgentTypeLike,
    PriorityLike,
    StartFromLike,
    TaskStateLike,
    TimeoutLike,
    Waited,
    _agent_type,
    _strings,
    _target,
    _task_state,
    _watch_state,
    submit_request,
)
from .errors import ClaudomatorError, DeadlineExceededError, error_for, from_rpc_error
from .v1 import service_pb2 as pb
from .v1 import service_pb2_grpc as pb_grpc
from .v1 import task_pb2 as task_pb


class AsyncClient:
    """A connection to a claudomator server on grpc.aio: `Client`'s methods,
    each a coroutine, and its streams as async iterators.

    >>> async with AsyncClient("127.0.0.1:7070") as client:    # doctest: +SKIP
    ...     task = (await client.submit_task("Fix the flaky test")).task
    ...     async for event in client.stream_logs(task_id=task.id, follow=True):
    ...         print(event.text)

    Create it inside the event loop that uses it. Arguments, return values
    and errors are `Client`'s (see there).
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        *,
        call_timeout: Optional[float] = 30.0,
        retries: int = RETRIES,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        target, tls = _target(address)
        self.address = target
        given = {name for name, _ in options}
        options = [*options, *((n, v) for n, v in _RECONNECT_OPTIONS if n not in given)]
        if tls or credentials is not None:
            self.channel = grpc.aio.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), options=options
            )
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        #: The generated stub (on the grpc.aio channel).
        self.stub: Any = pb_grpc.ClaudomatorServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.call_timeout = call_timeout
        self.retries = retries
        #: Sent with every call besides the token (`with_options(metadata=...)`).
        self.call_metadata: tuple[tuple[str, str], ...] = tuple(metadata)

    def with_options(
        self,
        *,
        call_timeout: Optional[float] = _UNSET,
        metadata: Optional[Sequence[tuple[str, str]]] = None,
        retries: Optional[int] = None,
    ) -> "AsyncClient":
        """This client (the same channel) with other call options, for one
        call or a few: `client.with_options(call_timeout=5).get_task(id)`.
        `call_timeout` bounds each unary call, retries included (None: no
        deadline); `metadata` replaces the client's (the token stays); `retries` is how
        many times a read (or a submit with an idempotency key) meeting
        UNAVAILABLE is tried again. Closing either closes both."""
        clone = copy.copy(self)
        if call_timeout is not _UNSET:
            clone.call_timeout = call_timeout
        if metadata is not None:
            clone.call_metadata = tuple(metadata)
        if retries is not None:
            clone.retries = retries
        return clone

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata + self.call_metadata

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, rpc: str, request: Any, *, retry: bool = False, unbounded: bool = False) -> Any:
        """Calls `rpc`; a read (or `retry`) that meets UNAVAILABLE is tried
        again with backoff, within the call's deadline."""
        method = getattr(self.stub, rpc)
        retry = retry or rpc in READS
        budget = None if unbounded else self.call_timeout
        deadline = None if budget is None else time.monotonic() + budget
        attempt = 0
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await method(request, metadata=self._metadata(), timeout=timeout)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            pause = _retry_pause(err, retry, attempt, self.retries, deadline)
            if pause is None:
                raise err
            await asyncio.sleep(pause)
            attempt += 1

    # -- tasks -------------------------------------------------------------

    async def submit_task(
        self,
        instructions: str = "",
        *,
        spec: Optional[task_pb.TaskSpec] = None,
        name: str = "",
        project: str = "",
        agent: Optional[AgentLike] = None,
        timeout: Optional[TimeoutLike] = None,
        priority: Optional[PriorityLike] = None,
        tags: Iterable[str] = (),
        depends_on: Iterable[str] = (),
        parent_task_id: str = "",
        max_attempts: int = 0,
        review_required: bool = False,
        base_ref: str = "",
        start_from: Optional[StartFromLike] = None,
        idempotency_key: str = "",
        task_id: str = "",
        require_agent: bool = False,
    ) -> pb.SubmitTaskResponse:
        """`Client.submit_task`: `timeout` is the task's limit, not this call's."""
        request = submit_request(
            instructions, spec=spec, name=name, project=project, agent=agent, timeout=timeout,
            priority=priority, tags=tags, depends_on=depends_on, parent_task_id=parent_task_id,
            max_attempts=max_attempts, review_required=review_required,
            base_ref=base_ref, start_from=start_from, idempotency_key=idempotency_key, task_id=task_id, require_agent=require_agent,
        )
        return cast(pb.SubmitTaskResponse, await self._call("SubmitTask", request, retry=bool(idempotency_key)))

    async def get_task(self, task_id: str) -> task_pb.Task:
        response = await self._call("GetTask", pb.GetTaskRequest(id=task_id))
        return cast(pb.GetTaskResponse, response).task

    async def list_tasks(
        self,
        *,
        states: Iterable[TaskStateLike] = (),
        project: str = "",
        tag: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListTasksResponse:
        request = pb.ListTasksRequest(
            states=[_task_state(s) for s in states], project=project, tag=tag,
            page_size=page_size, page_token=page_token,
        )
        return cast(pb.ListTasksResponse, await self._call("ListTasks", request))

    async def iter_tasks(
        self,
        *,
        states: Iterable[TaskStateLike] = (),
        project: str = "",
        tag: str = "",
        page_size: int = 0,
    ) -> AsyncIterator[task_pb.Task]:
        """Every matching task, newest first, fetching page after page."""
        states = list(states)
        token = ""
        while True:
            page = await self.list_tasks(
                states=states, project=project, tag=tag, page_size=page_size, page_token=token
            )
            for task in page.tasks:
                yield task
            token = page.next_page_token
            if not token:
                return

    async def cancel_task(self, task_id: str, reason: str = "") -> task_pb.Task:
        request = pb.CancelTaskRequest(id=task_id, reason=reason)
        return cast(pb.CancelTaskResponse, await self._call("CancelTask", request)).task

    # -- executions --------------------------------------------------------

    async def get_execution(self, execution_id: str) -> task_pb.Execution:
        request = pb.GetExecutionRequest(id=execution_id)
        response = await self._call("GetExecution", request)
        return cast(pb.GetExecutionResponse, response).execution

    async def list_executions(
        self, task_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListExecutionsResponse:
        request = pb.ListExecutionsRequest(task_id=task_id, page_size=page_size, page_token=page_token)
        return cast(pb.ListExecutionsResponse, await self._call("ListExecutions", request))

    def stream_logs(
        self,
        execution_id: str = "",
        *,
        task_id: str = "",
        from_offset: int = 0,
        follow: bool = False,
        include_debug: bool = False,
    ) -> "AsyncLogStream":
        """`Client.stream_logs` as an async iterator (`async for`);
        `.cancel()` or `async with` ends it early."""
        if not execution_id and not task_id:
            raise ValueError("stream_logs needs an execution_id or a task_id")
        request = pb.StreamLogsRequest(
            execution_id=execution_id, task_id=task_id, from_offset=from_offset, follow=follow,
            include_debug=include_debug,
        )
        return AsyncLogStream(self.stub.StreamLogs(request, metadata=self._metadata()))

    # -- review ------------------------------------------------------------

    async def answer_question(self, task_id: str, answer: str) -> task_pb.Task:
        request = pb.AnswerQuestionRequest(task_id=task_id, answer=answer)
        return cast(pb.AnswerQuestionResponse, await self._call("AnswerQuestion", request)).task

    async def accept_task(self, task_id: str) -> task_pb.Task:
        request = pb.AcceptTaskRequest(task_id=task_id)
        return cast(pb.AcceptTaskResponse, await self._call("AcceptTask", request)).task

    async def reject_task(self, task_id: str, feedback: str) -> task_pb.Task:
        request = pb.RejectTaskRequest(task_id=task_id, feedback=feedback)
        return cast(pb.RejectTaskResponse, await self._call("RejectTask", request)).task

    async def get_task_diff(self, task_id: str, *, context_lines: int = 0) -> pb.GetTaskDiffResponse:
        request = pb.GetTaskDiffRequest(task_id=task_id, context_lines=context_lines)
        return cast(pb.GetTaskDiffResponse, await self._call("GetTaskDiff", request))

    async def merge_task(self, task_id: str, *, into: str = "", rebase: bool = False) -> pb.MergeTaskResponse:
        request = pb.MergeTaskRequest(task_id=task_id, into=into, rebase=rebase)
        return cast(pb.MergeTaskResponse, await self._call("MergeTask", request))

    async def prune_tasks(self, *, dry_run: bool = False, force: bool = False) -> pb.PruneTasksResponse:
        request = pb.PruneTasksRequest(dry_run=dry_run, force=force)
        return cast(pb.PruneTasksResponse, await self._call("PruneTasks", request))

    async def open_pull_request(self, task_id: str) -> pb.OpenPullRequestResponse:
        request = pb.OpenPullRequestRequest(task_id=task_id)
        return cast(pb.OpenPullRequestResponse, await self._call("OpenPullRequest", request))

    # -- the server --------------------------------------------------------

    async def get_system_status(self) -> pb.GetSystemStatusResponse:
        response = await self._call("GetSystemStatus", pb.GetSystemStatusRequest())
        return cast(pb.GetSystemStatusResponse, response)

    async def elaborate(
        self, text: str, *, project: str = "", agent: Optional[AgentTypeLike] = None
    ) -> pb.ElaborateResponse:
        """`Client.elaborate`: not bounded by `call_timeout`."""
        request = pb.ElaborateRequest(
            text=text, project=project, agent=_agent_type(agent) if agent is not None else 0
        )
        return cast(pb.ElaborateResponse, await self._call("Elaborate", request, unbounded=True))

    def watch_tasks(
        self,
        *,
        project: str = "",
        tag: str = "",
        states: Iterable[TaskStateLike] = (),
        task_ids: Iterable[str] = (),
        changes_only: bool = False,
        cursor: str = "",
    ) -> "AsyncWatchStream":
        """`Client.watch_tasks` as an async iterator."""
        request = pb.WatchTasksRequest(
            project=project, tag=tag, states=[_task_state(s) for s in states],
            task_ids=list(_strings(task_ids)), changes_only=changes_only, cursor=cursor,
        )
        return AsyncWatchStream(self.stub.WatchTasks(request, metadata=self._metadata()))

    async def watch(
        self,
        *,
        project: str = "",
        tag: str = "",
        states: Iterable[TaskStateLike] = (),
        task_ids: Iterable[str] = (),
        changes_only: bool = False,
        cursor: str = "",
        reconnect_for: float = RECONNECT_FOR,
        _until: Optional[float] = None,
    ) -> AsyncIterator[pb.WatchTasksResponse]:
        """`Client.watch` (reconnecting with the last cursor) as an async
        generator: `break` out of `async for`, or `await gen.aclose()`."""
        states = [_task_state(s) for s in states]
        task_ids = list(_strings(task_ids))
        pause, down_since = _RECONNECT_FIRST, None
        while True:
            request = pb.WatchTasksRequest(
                project=project, tag=tag, states=states, task_ids=task_ids,
                changes_only=changes_only, cursor=cursor,
            )
            timeout = None if _until is None else max(0.0, _until - time.monotonic())
            call = self.stub.WatchTasks(request, metadata=self._metadata(), timeout=timeout)
            try:
                async for event in call:
                    pause, down_since = _RECONNECT_FIRST, None
                    if event.cursor:
                        cursor = event.cursor
                    yield cast(pb.WatchTasksResponse, event)
                broken: ClaudomatorError = error_for(
                    grpc.StatusCode.UNAVAILABLE, "the watch ended (the server closed it)"
                )
            except grpc.RpcError as e:
                broken = from_rpc_error(e)
                if broken.code != grpc.StatusCode.UNAVAILABLE:
                    raise broken from None
            finally:
                call.cancel()
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since >= reconnect_for:
                raise broken
            if _until is not None and now + pause >= _until:
                raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "wait: the time ran out")
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RECONNECT_MAX)

    async def wait(self, task_id: str, *, max_wait: Optional[float] = None) -> Waited:
        """`Client.wait`: the task where it stopped and its latest execution."""
        until = None if max_wait is None else time.monotonic() + max_wait
        events = self.watch(task_ids=[task_id], _until=until)
        try:
            async for event in events:
                state = _watch_state(event, task_id)
                if state is None and event.WhichOneof("event") == "snapshot_end":
                    state = int((await self.get_task(task_id)).state)
                if state is not None and state not in _GOING_ON:
                    break
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return Waited(task=await self.get_task(task_id), execution=await self._latest_execution(task_id))

    async def _latest_execution(self, task_id: str) -> Optional[task_pb.Execution]:
        latest, token = None, ""
        while True:
            page = await self.list_executions(task_id, page_size=500, page_token=token)
            if page.executions:
                latest = page.executions[-1]
            token = page.next_page_token
            if not token:
                return latest


class _AsyncStream:
    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    async def _next(self) -> Any:
        if self._cancelled:
            raise StopAsyncIteration
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            if self._cancelled:
                raise StopAsyncIteration from None
            raise
        except grpc.RpcError as e:
            if self._cancelled:
                raise StopAsyncIteration from None
            raise from_rpc_error(e) from None
        if response is grpc.aio.EOF:
            raise StopAsyncIteration
        return response

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


class AsyncWatchStream(_AsyncStream, AsyncIterator[pb.WatchTasksResponse]):
    """The events of one WatchTasks call, for `async for`."""

    def __aiter__(self) -> "AsyncWatchStream":
        return self

    async def __anext__(self) -> pb.WatchTasksResponse:
        return cast(pb.WatchTasksResponse, await self._next())

    async def __aenter__(self) -> "AsyncWatchStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncLogStream(_AsyncStream, AsyncIterator[task_pb.LogEvent]):
    """The events of one StreamLogs call (`LogEvent`s), for `async for`."""

    def __aiter__(self) -> "AsyncLogStream":
        return self

    async def __anext__(self) -> task_pb.LogEvent:
        event = cast(pb.StreamLogsResponse, await self._next()).event
        if event.raw_is_payload and not event.raw:
            event.raw = event.payload_json
        return event

    async def __aenter__(self) -> "AsyncLogStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
