"""`Client`: the claudomator API as Python methods over the generated stubs."""

from __future__ import annotations

import copy
import datetime
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union, cast

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from .errors import ClaudomatorError, DeadlineExceededError, error_for, from_rpc_error
from .v1 import service_pb2 as pb
from .v1 import service_pb2_grpc as pb_grpc
from .v1 import task_pb2 as task_pb

# An enum value, or its name: "queued", "QUEUED" or "TASK_STATE_QUEUED".
TaskStateLike = Union[int, str]
PriorityLike = Union[int, str]
AgentTypeLike = Union[int, str]
StartFromLike = Union[int, str]
AgentLike = Union[task_pb.AgentSettings, Mapping[str, Any], AgentTypeLike]
# A task's wall-clock limit: "30m", "1h 30m", or a timedelta.
TimeoutLike = Union[str, datetime.timedelta]


def enum_value(wrapper: EnumTypeWrapper, prefix: str, value: Union[int, str]) -> int:
    """`value` as a number of the enum: a number, or a name with or without
    its prefix, in any case ("high", "PRIORITY_HIGH")."""
    if isinstance(value, bool):
        raise TypeError(f"expected a {wrapper.DESCRIPTOR.name} value, got {value!r}")
    if isinstance(value, int):
        if value not in wrapper.values():
            raise ValueError(f"{value} is not a {wrapper.DESCRIPTOR.name} value")
        return value
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    try:
        return wrapper.Value(name)
    except ValueError:
        choices = ", ".join(
            n[len(prefix):].lower() for n in wrapper.keys() if not n.endswith("_UNSPECIFIED")
        )
        raise ValueError(
            f"{value!r} is not a {wrapper.DESCRIPTOR.name} (one of: {choices})"
        ) from None


def _priority(value: PriorityLike) -> "task_pb.Priority":
    return cast("task_pb.Priority", enum_value(task_pb.Priority, "PRIORITY_", value))


def _task_state(value: TaskStateLike) -> "task_pb.TaskState":
    return cast("task_pb.TaskState", enum_value(task_pb.TaskState, "TASK_STATE_", value))


def _agent_type(value: AgentTypeLike) -> "task_pb.AgentType":
    return cast("task_pb.AgentType", enum_value(task_pb.AgentType, "AGENT_TYPE_", value))


def _start_from(value: StartFromLike) -> "task_pb.StartFrom":
    return cast("task_pb.StartFrom", enum_value(task_pb.StartFrom, "START_FROM_", value))


def enum_name(wrapper: EnumTypeWrapper, prefix: str, value: int) -> str:
    """The short lower-case name of an enum value: `"queued"`."""
    try:
        return wrapper.Name(value)[len(prefix):].lower()
    except ValueError:
        return str(value)


# The states a task leaves by itself; any other (final, BLOCKED waiting for
# an answer, READY waiting for a review) is where `wait` stops.
_GOING_ON = frozenset(
    {task_pb.TASK_STATE_PENDING, task_pb.TASK_STATE_QUEUED, task_pb.TASK_STATE_RUNNING}
)

# How long `watch` keeps trying to reconnect to an unreachable server, and
# its first and longest pause between two tries (seconds).
RECONNECT_FOR = 60.0
_RECONNECT_FIRST = 0.1
_RECONNECT_MAX = 2.0


# The calls that only read: retried on UNAVAILABLE (a SubmitTask only when
# it carries an idempotency key, so that a retry cannot create a second task).
READS = frozenset(
    {"GetTask", "ListTasks", "GetExecution", "ListExecutions", "GetTaskDiff", "GetSystemStatus"}
)
#: How many times a call is retried by default (pauses 0.1, 0.2, 0.4, 0.8, 1.6 s).
RETRIES = 5
_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0

_UNSET: Any = object()


def _retry_pause(
    err: ClaudomatorError, retry: bool, attempt: int, retries: int, deadline: Optional[float]
) -> Optional[float]:
    """How long to pause before trying a failed call again, or None to give up."""
    if not retry or err.code != grpc.StatusCode.UNAVAILABLE or attempt >= retries:
        return None
    pause = min(_RETRY_FIRST * 2**attempt, _RETRY_MAX) * random.uniform(0.8, 1.2)
    if deadline is not None and time.monotonic() + pause >= deadline:
        return None
    return pause


_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True)
class Waited:
    """What `wait` returns: the task where it stopped, and its latest
    execution (`None` when it never ran, e.g. cancelled while queued)."""

    task: task_pb.Task
    execution: Optional[task_pb.Execution]


def _watch_state(event: pb.WatchTasksResponse, task_id: str) -> Optional[int]:
    """The state `event` says task `task_id` is in, if it says."""
    kind = event.WhichOneof("event")
    if kind == "snapshot" and event.snapshot.id == task_id:
        return int(event.snapshot.state)
    if kind == "change" and event.change.task.id == task_id:
        return int(event.change.to_state)
    return None


def _target(address: str) -> tuple[str, bool]:
    """A gRPC target and whether it wants TLS, from `host:port` or a URL."""
    for scheme, tls in (("http://", False), ("https://", True)):
        if address.startswith(scheme):
            rest = address[len(scheme):].rstrip("/")
            if "/" in rest:
                raise ValueError(f"a server address has no path: {address!r}")
            return rest, tls
    return address, False


class Client:
    """A connection to a claudomator server.

    >>> client = Client("127.0.0.1:7070")                       # doctest: +SKIP
    >>> client = Client("http://127.0.0.1:7070", token="tok")   # doctest: +SKIP

    `address` is `host:port` or a URL (`http://` plain, `https://` TLS), the
    same as the CLI's `--server`. `token` is sent as `authorization: Bearer
    <token>` on every call, with `metadata`. `call_timeout` (seconds) bounds
    every unary call, retries included; streams are not bounded. A read, or a
    submit with an idempotency key, that meets UNAVAILABLE (a restarting
    server) is tried again up to `retries` times, backing off from 0.1 to 2 s.
    `with_options(...)` changes these for one call. Every method raises a `ClaudomatorError`
    subclass carrying the gRPC code and the server's message.

    Responses are the generated protobuf messages (`Task`, `Execution`,
    `LogEvent`...). A call whose response only wraps one message returns that
    message (`get_task` returns the `Task`); one that says more returns the
    response (`submit_task` -> `.task`, `.created`; `list_tasks` -> `.tasks`,
    `.next_page_token`).
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
        # Try a restarted server again soon (grpcio's own backoff grows to
        # 120 s); the caller's options win.
        given = {name for name, _ in options}
        options = [*options, *(
            (name, value) for name, value in _RECONNECT_OPTIONS if name not in given
        )]
        if tls or credentials is not None:
            self.channel = grpc.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), options=options
            )
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        #: The generated stub, for anything this class does not wrap.
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
    ) -> "Client":
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

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, rpc: str, request: Any, *, retry: bool = False, unbounded: bool = False) -> Any:
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
                return method(request, metadata=self._metadata(), timeout=timeout)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
            pause = _retry_pause(err, retry, attempt, self.retries, deadline)
            if pause is None:
                raise err
            time.sleep(pause)
            attempt += 1

    # -- tasks -------------------------------------------------------------

    def submit_task(
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
        """Submits a task; returns `.task` and `.created` (False when the
        idempotency key matched an existing task, which is returned).

        Give the fields as arguments, or a whole `spec` (a `TaskSpec`, e.g.
        from a file); arguments given beside a spec override its fields.
        `agent` is an `AgentSettings` (or a dict of its fields) or just the
        agent type (`"claude"`, `AgentType.AGENT_TYPE_CLAUDE`). `timeout` is
        the task's wall-clock limit per attempt ("45m" or a timedelta), not a
        deadline for this call. `.agent_unavailable` says why no live server
        can run the task's agent now (the task is accepted anyway, unless
        `require_agent`: then it is FailedPreconditionError and nothing is
        stored). `base_ref` is the branch, tag or commit the agent starts
        from; else `start_from` says where (`"dependencies"`, the default,
        `"head"` or `"working_tree"`, or a `StartFrom` value); not both.
        """
        request = submit_request(
            instructions, spec=spec, name=name, project=project, agent=agent, timeout=timeout,
            priority=priority, tags=tags, depends_on=depends_on, parent_task_id=parent_task_id,
            max_attempts=max_attempts, review_required=review_required,
            base_ref=base_ref, start_from=start_from, idempotency_key=idempotency_key, task_id=task_id, require_agent=require_agent,
        )
        return cast(pb.SubmitTaskResponse, self._call("SubmitTask", request, retry=bool(idempotency_key)))

    def get_task(self, task_id: str) -> task_pb.Task:
        response = cast(pb.GetTaskResponse, self._call("GetTask", pb.GetTaskRequest(id=task_id)))
        return response.task

    def list_tasks(
        self,
        *,
        states: Iterable[TaskStateLike] = (),
        project: str = "",
        tag: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListTasksResponse:
        """One page of tasks, newest first: `.tasks`, `.next_page_token`
        (empty on the last page). `states` are any of these states
        (`"queued"`, `TaskState.TASK_STATE_QUEUED`); empty means all."""
        request = pb.ListTasksRequest(
            states=[_task_state(s) for s in states],
            project=project,
            tag=tag,
            page_size=page_size,
            page_token=page_token,
        )
        return cast(pb.ListTasksResponse, self._call("ListTasks", request))

    def iter_tasks(
        self,
        *,
        states: Iterable[TaskStateLike] = (),
        project: str = "",
        tag: str = "",
        page_size: int = 0,
    ) -> Iterator[task_pb.Task]:
        """Every matching task, newest first, fetching page after page."""
        states = list(states)
        token = ""
        while True:
            page = self.list_tasks(
                states=states, project=project, tag=tag, page_size=page_size, page_token=token
            )
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def cancel_task(self, task_id: str, reason: str = "") -> task_pb.Task:
        """Cancels a task in any non-final state; FailedPreconditionError
        otherwise. Returns the task as it now is."""
        request = pb.CancelTaskRequest(id=task_id, reason=reason)
        return cast(pb.CancelTaskResponse, self._call("CancelTask", request)).task

    # -- executions --------------------------------------------------------

    def get_execution(self, execution_id: str) -> task_pb.Execution:
        request = pb.GetExecutionRequest(id=execution_id)
        return cast(pb.GetExecutionResponse, self._call("GetExecution", request)).execution

    def list_executions(
        self, task_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListExecutionsResponse:
        """A task's executions (attempts), oldest first: `.executions`,
        `.next_page_token`."""
        request = pb.ListExecutionsRequest(task_id=task_id, page_size=page_size, page_token=page_token)
        return cast(pb.ListExecutionsResponse, self._call("ListExecutions", request))

    def stream_logs(
        self,
        execution_id: str = "",
        *,
        task_id: str = "",
        from_offset: int = 0,
        follow: bool = False,
        include_debug: bool = False,
    ) -> "LogStream":
        """An execution's log events from `from_offset`, as an iterator.

        Give an `execution_id`, or a `task_id` for the task's latest
        execution (with `follow`, waiting for its first one to start). With
        `follow` the iterator goes on with live events until the execution
        ends; without it, it stops at the end of what is written.
        `include_debug` also sends DEBUG events (the agent CLI's stderr
        chatter, left out by default; offsets count them either way). Stop early
        with `.cancel()` (or `with client.stream_logs(...) as events:`).
        """
        if not execution_id and not task_id:
            raise ValueError("stream_logs needs an execution_id or a task_id")
        request = pb.StreamLogsRequest(
            execution_id=execution_id, task_id=task_id, from_offset=from_offset, follow=follow,
            include_debug=include_debug,
        )
        try:
            call = self.stub.StreamLogs(request, metadata=self._metadata())
        except grpc.RpcError as e:  # pragma: no cover - grpcio raises lazily
            raise from_rpc_error(e) from None
        return LogStream(call)

    # -- review ------------------------------------------------------------

    def answer_question(self, task_id: str, answer: str) -> task_pb.Task:
        """Answers a BLOCKED task's question: the task is queued again and its
        next run resumes the agent's session with the answer."""
        request = pb.AnswerQuestionRequest(task_id=task_id, answer=answer)
        return cast(pb.AnswerQuestionResponse, self._call("AnswerQuestion", request)).task

    def accept_task(self, task_id: str) -> task_pb.Task:
        """Accepts a READY task's work: the task is COMPLETED."""
        request = pb.AcceptTaskRequest(task_id=task_id)
        return cast(pb.AcceptTaskResponse, self._call("AcceptTask", request)).task

    def reject_task(self, task_id: str, feedback: str) -> task_pb.Task:
        """Sends a READY task's work back with `feedback`: the task is queued
        again and its next run resumes the agent's session."""
        request = pb.RejectTaskRequest(task_id=task_id, feedback=feedback)
        return cast(pb.RejectTaskResponse, self._call("RejectTask", request)).task

    def get_task_diff(self, task_id: str, *, context_lines: int = 0) -> pb.GetTaskDiffResponse:
        """A task's work for review: `.branch`, `.base_commit`,
        `.head_commit`, `.files` (path, status, line counts, patch),
        `.truncated`. FailedPreconditionError while the task has no branch."""
        request = pb.GetTaskDiffRequest(task_id=task_id, context_lines=context_lines)
        return cast(pb.GetTaskDiffResponse, self._call("GetTaskDiff", request))

    def merge_task(self, task_id: str, *, into: str = "", rebase: bool = False) -> pb.MergeTaskResponse:
        """Takes a READY or COMPLETED task's work into a branch of its project
        (`into`; empty: its default branch), merged or with `rebase` rebased.
        A conflict changes nothing (FailedPreconditionError naming the files)."""
        request = pb.MergeTaskRequest(task_id=task_id, into=into, rebase=rebase)
        return cast(pb.MergeTaskResponse, self._call("MergeTask", request))

    def prune_tasks(self, *, dry_run: bool = False, force: bool = False) -> pb.PruneTasksResponse:
        """Removes the sandboxes and branches ended tasks left (`force`: also
        COMPLETED tasks' unmerged branches); `.items` says what was done or
        why it was kept. `dry_run` removes nothing."""
        request = pb.PruneTasksRequest(dry_run=dry_run, force=force)
        return cast(pb.PruneTasksResponse, self._call("PruneTasks", request))

    def open_pull_request(self, task_id: str) -> pb.OpenPullRequestResponse:
        """A task's pull request on its project's GitHub repository
        (`.pull_request`: repository, number, url, state, head, base,
        automatic resumes): the one it has, or for READY or COMPLETED work
        without one, opened now (`.opened`). FailedPreconditionError when the
        project cannot open pull requests or the task has no work to show."""
        request = pb.OpenPullRequestRequest(task_id=task_id)
        return cast(pb.OpenPullRequestResponse, self._call("OpenPullRequest", request))

    # -- the server --------------------------------------------------------

    def get_system_status(self) -> pb.GetSystemStatusResponse:
        """What will work before you submit: each agent, counts, git, the
        data dir, the database, the local model..."""
        return cast(
            pb.GetSystemStatusResponse,
            self._call("GetSystemStatus", pb.GetSystemStatusRequest()),
        )

    def elaborate(
        self, text: str, *, project: str = "", agent: Optional[AgentTypeLike] = None
    ) -> pb.ElaborateResponse:
        """Turns a one-line request into a full `TaskSpec` (`.spec`) that
        `submit_task(spec=...)` accepts, with `.source`, `.model` and `.notes`.
        Can take minutes when the models are slow: this call is not bounded by
        the client's `call_timeout`."""
        request = pb.ElaborateRequest(
            text=text, project=project, agent=_agent_type(agent) if agent is not None else 0
        )
        return cast(pb.ElaborateResponse, self._call("Elaborate", request, unbounded=True))

    def watch_tasks(
        self,
        *,
        project: str = "",
        tag: str = "",
        states: Iterable[TaskStateLike] = (),
        task_ids: Iterable[str] = (),
        changes_only: bool = False,
        cursor: str = "",
    ) -> "WatchStream":
        """Matching tasks and their changes, as an iterator that runs until
        `.cancel()`: first (unless `changes_only` or `cursor`) a snapshot
        (`WatchTasksResponse`s whose `WhichOneof("event") == "snapshot"`,
        newest first) and `"snapshot_end"`, then every `"change"` as it is
        committed, and `"heartbeat"` while nothing matches. Each event's
        `.cursor` resumes after it (`cursor=`)."""
        request = pb.WatchTasksRequest(
            project=project,
            tag=tag,
            states=[_task_state(s) for s in states],
            task_ids=list(_strings(task_ids)),
            changes_only=changes_only,
            cursor=cursor,
        )
        return WatchStream(self.stub.WatchTasks(request, metadata=self._metadata()))

    def watch(
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
    ) -> Iterator[pb.WatchTasksResponse]:
        """`watch_tasks` that survives its connection: when the stream breaks
        (UNAVAILABLE: a restart, a dropped connection) it reconnects with the
        last event's cursor, so every change comes exactly once and in order,
        with no second snapshot. Before the first cursor (in the snapshot) it
        starts over, snapshot included. It keeps trying for `reconnect_for`
        seconds (backing off from 0.1 to 2 s), then raises `UnavailableError`;
        any other error is raised at once (OUT_OF_RANGE: the cursor is older
        than the server keeps; watch again without it). A generator: leave
        the loop (or `.close()` it) to stop."""
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
                for event in call:
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
            time.sleep(pause)
            pause = min(pause * 2, _RECONNECT_MAX)

    def wait(self, task_id: str, *, max_wait: Optional[float] = None) -> Waited:
        """Waits until the task stops going on by itself, across every retry
        (like the CLI's `submit --wait`): a final state, BLOCKED (waiting
        for an answer) or READY (waiting for a review). Returns the task and
        its latest execution (`Waited`). Follows `watch`, so it survives a
        server restart. `max_wait` (seconds) gives up with
        `DeadlineExceededError`; NotFoundError for no such task."""
        until = None if max_wait is None else time.monotonic() + max_wait
        events = self.watch(task_ids=[task_id], _until=until)
        try:
            for event in events:
                state = _watch_state(event, task_id)
                if state is None and event.WhichOneof("event") == "snapshot_end":
                    state = int(self.get_task(task_id).state)  # not in the snapshot: NotFound
                if state is not None and state not in _GOING_ON:
                    break
        finally:
            events.close()  # type: ignore[attr-defined]
        return Waited(task=self.get_task(task_id), execution=self._latest_execution(task_id))

    def _latest_execution(self, task_id: str) -> Optional[task_pb.Execution]:
        latest, token = None, ""
        while True:
            page = self.list_executions(task_id, page_size=500, page_token=token)
            if page.executions:
                latest = page.executions[-1]
            token = page.next_page_token
            if not token:
                return latest


class _Stream:
    """One server-streaming call: iterate it; errors raise
    `ClaudomatorError`; `cancel()` ends it early (iteration then stops)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def _next(self) -> Any:
        if self._cancelled:
            raise StopIteration
        try:
            return next(self._call)
        except grpc.RpcError as e:
            if self._cancelled:
                raise StopIteration from None
            raise from_rpc_error(e) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


class WatchStream(_Stream, Iterator[pb.WatchTasksResponse]):
    """The events of one WatchTasks call (`WatchTasksResponse`s)."""

    def __iter__(self) -> "WatchStream":
        return self

    def __next__(self) -> pb.WatchTasksResponse:
        return cast(pb.WatchTasksResponse, self._next())

    def __enter__(self) -> "WatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class LogStream(_Stream, Iterator[task_pb.LogEvent]):
    """The events of one StreamLogs call (`LogEvent`s)."""

    def __iter__(self) -> "LogStream":
        return self

    def __next__(self) -> task_pb.LogEvent:
        event = cast(pb.StreamLogsResponse, self._next()).event
        # The agent's line is sent once, as the payload: fill `raw` back in.
        if event.raw_is_payload and not event.raw:
            event.raw = event.payload_json
        return event

    def __enter__(self) -> "LogStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def submit_request(
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
) -> pb.SubmitTaskRequest:
    """The SubmitTaskRequest `submit_task` sends (both clients')."""
    s = task_pb.TaskSpec()
    if spec is not None:
        s.CopyFrom(spec)
    if instructions:
        s.instructions = instructions
    if name:
        s.name = name
    if project:
        s.project = project
    if agent is not None:
        s.agent.CopyFrom(_agent_settings(agent))
    if timeout is not None:
        s.timeout = _duration(timeout)
    if priority is not None:
        s.priority = _priority(priority)
    if tags:
        s.ClearField("tags")
        s.tags.extend(_strings(tags))
    if depends_on:
        s.ClearField("depends_on")
        s.depends_on.extend(_strings(depends_on))
    if parent_task_id:
        s.parent_task_id = parent_task_id
    if max_attempts:
        s.max_attempts = max_attempts
    if review_required:
        s.review_required = True
    if base_ref:
        s.base_ref = base_ref
    if start_from is not None:
        s.start_from = _start_from(start_from)
    request = pb.SubmitTaskRequest(
        spec=s, idempotency_key=idempotency_key, task_id=task_id, require_agent=require_agent
    )
    return request


def _agent_settings(agent: AgentLike) -> task_pb.AgentSettings:
    if isinstance(agent, task_pb.AgentSettings):
        return agent
    if isinstance(agent, Mapping):
        fields = dict(agent)
        if "type" in fields:
            fields["type"] = _agent_type(fields["type"])
        return task_pb.AgentSettings(**fields)
    return task_pb.AgentSettings(type=_agent_type(agent))


def _strings(values: Iterable[str]) -> Iterable[str]:
    """A list of strings; a bare string is one element, not its characters."""
    if isinstance(values, str):
        return [values]
    return values


def _duration(timeout: TimeoutLike) -> str:
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
        if seconds != int(seconds):
            raise ValueError(f"a task timeout is whole seconds, not {timeout}")
        return f"{int(seconds)}s"
    return timeout
