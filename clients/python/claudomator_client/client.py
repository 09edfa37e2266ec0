"""`Client`: the claudomator API as Python methods over the generated stubs."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional, Sequence, Union, cast

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from .errors import from_rpc_error
from .v1 import service_pb2 as pb
from .v1 import service_pb2_grpc as pb_grpc
from .v1 import task_pb2 as task_pb

# An enum value, or its name: "queued", "QUEUED" or "TASK_STATE_QUEUED".
TaskStateLike = Union[int, str]
PriorityLike = Union[int, str]
AgentTypeLike = Union[int, str]
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


def enum_name(wrapper: EnumTypeWrapper, prefix: str, value: int) -> str:
    """The short lower-case name of an enum value: `"queued"`."""
    try:
        return wrapper.Name(value)[len(prefix):].lower()
    except ValueError:
        return str(value)


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
    <token>` on every call. `call_timeout` (seconds) bounds every unary call;
    streams are not bounded. Every method raises a `ClaudomatorError`
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
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        target, tls = _target(address)
        self.address = target
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

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=self.call_timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

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
        idempotency_key: str = "",
        task_id: str = "",
    ) -> pb.SubmitTaskResponse:
        """Submits a task; returns `.task` and `.created` (False when the
        idempotency key matched an existing task, which is returned).

        Give the fields as arguments, or a whole `spec` (a `TaskSpec`, e.g.
        from a file); arguments given beside a spec override its fields.
        `agent` is an `AgentSettings` (or a dict of its fields) or just the
        agent type (`"claude"`, `AgentType.AGENT_TYPE_CLAUDE`). `timeout` is
        the task's wall-clock limit per attempt ("45m" or a timedelta), not a
        deadline for this call.
        """
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
            s.tags.extend(tags)
        if depends_on:
            s.ClearField("depends_on")
            s.depends_on.extend(depends_on)
        if parent_task_id:
            s.parent_task_id = parent_task_id
        if max_attempts:
            s.max_attempts = max_attempts
        if review_required:
            s.review_required = True
        request = pb.SubmitTaskRequest(spec=s, idempotency_key=idempotency_key, task_id=task_id)
        return cast(pb.SubmitTaskResponse, self._call(self.stub.SubmitTask, request))

    def get_task(self, task_id: str) -> task_pb.Task:
        response = cast(pb.GetTaskResponse, self._call(self.stub.GetTask, pb.GetTaskRequest(id=task_id)))
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
        return cast(pb.ListTasksResponse, self._call(self.stub.ListTasks, request))

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
        return cast(pb.CancelTaskResponse, self._call(self.stub.CancelTask, request)).task

    # -- executions --------------------------------------------------------

    def get_execution(self, execution_id: str) -> task_pb.Execution:
        request = pb.GetExecutionRequest(id=execution_id)
        return cast(pb.GetExecutionResponse, self._call(self.stub.GetExecution, request)).execution

    def list_executions(
        self, task_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListExecutionsResponse:
        """A task's executions (attempts), oldest first: `.executions`,
        `.next_page_token`."""
        request = pb.ListExecutionsRequest(task_id=task_id, page_size=page_size, page_token=page_token)
        return cast(pb.ListExecutionsResponse, self._call(self.stub.ListExecutions, request))

    def stream_logs(
        self,
        execution_id: str = "",
        *,
        task_id: str = "",
        from_offset: int = 0,
        follow: bool = False,
    ) -> "LogStream":
        """An execution's log events from `from_offset`, as an iterator.

        Give an `execution_id`, or a `task_id` for the task's latest
        execution (with `follow`, waiting for its first one to start). With
        `follow` the iterator goes on with live events until the execution
        ends; without it, it stops at the end of what is written. Stop early
        with `.cancel()` (or `with client.stream_logs(...) as events:`).
        """
        if not execution_id and not task_id:
            raise ValueError("stream_logs needs an execution_id or a task_id")
        request = pb.StreamLogsRequest(
            execution_id=execution_id, task_id=task_id, from_offset=from_offset, follow=follow
        )
        try:
            call = self.stub.StreamLogs(request, metadata=self.metadata)
        except grpc.RpcError as e:  # pragma: no cover - grpcio raises lazily
            raise from_rpc_error(e) from None
        return LogStream(call)


class LogStream(Iterator[task_pb.LogEvent]):
    """The events of one StreamLogs call. Iterate it; errors raise
    `ClaudomatorError`; `cancel()` ends it early (iteration then stops)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> "LogStream":
        return self

    def __next__(self) -> task_pb.LogEvent:
        if self._cancelled:
            raise StopIteration
        try:
            event = cast(pb.StreamLogsResponse, next(self._call)).event
        except grpc.RpcError as e:
            if self._cancelled:
                raise StopIteration from None
            raise from_rpc_error(e) from None
        # The agent's line is sent once, as the payload: fill `raw` back in.
        if event.raw_is_payload and not event.raw:
            event.raw = event.payload_json
        return event

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "LogStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _agent_settings(agent: AgentLike) -> task_pb.AgentSettings:
    if isinstance(agent, task_pb.AgentSettings):
        return agent
    if isinstance(agent, Mapping):
        fields = dict(agent)
        if "type" in fields:
            fields["type"] = _agent_type(fields["type"])
        return task_pb.AgentSettings(**fields)
    return task_pb.AgentSettings(type=_agent_type(agent))


def _duration(timeout: TimeoutLike) -> str:
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
        if seconds != int(seconds):
            raise ValueError(f"a task timeout is whole seconds, not {timeout}")
        return f"{int(seconds)}s"
    return timeout
