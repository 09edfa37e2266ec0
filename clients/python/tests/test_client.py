"""The client against a real server whose executor is off (tasks stay QUEUED)."""

from __future__ import annotations

import datetime
import uuid

import grpc
import pytest

from claudomator_client import (
    AgentSettings,
    AgentType,
    ClaudomatorError,
    Client,
    InvalidArgumentError,
    NotFoundError,
    Priority,
    TaskSpec,
    TaskState,
    UnauthenticatedError,
    UnavailableError,
)

from conftest import TOKEN, Server


@pytest.fixture
def client(server: Server):
    with Client(server.address) as c:
        yield c


def unique_tag() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def test_submit_get_list_with_filter_cancel(client: Client) -> None:
    tag, other = unique_tag(), unique_tag()
    submitted = client.submit_task(
        "Fix the flaky test in tests/api.rs",
        tags=[tag],
        priority="high",
        agent=AgentSettings(type=AgentType.AGENT_TYPE_CLAUDE, model="claude-sonnet-4-5", max_turns=7),
        timeout=datetime.timedelta(minutes=45),
    )
    assert submitted.created
    task = submitted.task
    assert len(task.id) == 26
    assert task.state == TaskState.TASK_STATE_QUEUED
    assert task.spec.priority == Priority.PRIORITY_HIGH
    assert task.spec.agent.model == "claude-sonnet-4-5"
    assert task.timeout_seconds == 45 * 60
    assert task.spec.project == "demo"  # the repository the server started in

    client.submit_task("Something else", tags=[other])

    got = client.get_task(task.id)
    assert got.id == task.id
    assert got.spec.instructions == "Fix the flaky test in tests/api.rs"
    assert list(got.spec.tags) == [tag]
    assert got.created_at.ToDatetime() <= datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    listed = client.list_tasks(tag=tag)
    assert [t.id for t in listed.tasks] == [task.id]
    assert listed.next_page_token == ""
    assert [t.id for t in client.list_tasks(tag=tag, states=["queued"]).tasks] == [task.id]
    assert client.list_tasks(tag=tag, states=[TaskState.TASK_STATE_CANCELLED]).tasks == []

    cancelled = client.cancel_task(task.id, reason="not needed")
    assert cancelled.state == TaskState.TASK_STATE_CANCELLED
    assert "not needed" in cancelled.state_reason
    assert client.get_task(task.id).state == TaskState.TASK_STATE_CANCELLED
    assert [t.id for t in client.list_tasks(tag=tag, states=["cancelled"]).tasks] == [task.id]
    assert client.list_tasks(tag=tag, states=["QUEUED", "TASK_STATE_PENDING"]).tasks == []
    # Nothing ran, so there is no execution.
    assert list(client.list_executions(task.id).executions) == []


def test_pages_newest_first(client: Client) -> None:
    tag = unique_tag()
    ids = [client.submit_task(f"task {i}", tags=[tag]).task.id for i in range(5)]
    first = client.list_tasks(tag=tag, page_size=2)
    assert [t.id for t in first.tasks] == ids[::-1][:2]
    assert first.next_page_token
    assert [t.id for t in client.iter_tasks(tag=tag, page_size=2)] == ids[::-1]


def test_spec_and_idempotency_key(client: Client) -> None:
    spec = TaskSpec(name="docs", instructions="Write the docs", tags=[unique_tag()])
    key = "key-" + uuid.uuid4().hex
    first = client.submit_task(spec=spec, idempotency_key=key, priority="low")
    again = client.submit_task(spec=spec, idempotency_key=key)
    assert first.created and not again.created
    assert again.task.id == first.task.id
    assert first.task.spec.name == "docs"
    assert first.task.spec.priority == Priority.PRIORITY_LOW


def test_bad_request_is_invalid_argument(client: Client) -> None:
    tag = unique_tag()
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_task("Fix the build", timeout="soon", tags=[tag])
    err = caught.value
    assert isinstance(err, ClaudomatorError)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.code_name == "INVALID_ARGUMENT"
    assert err.message.startswith("spec.timeout:"), err.message
    assert "soon" in err.message
    # A rejected request writes nothing.
    assert client.list_tasks(tag=tag).tasks == []

    with pytest.raises(InvalidArgumentError, match="spec.instructions"):
        client.submit_task("")


def test_unknown_ids_and_forbidden_moves(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_task("01JDZ0Q3W2J9P6V5M4N8K7H6G5")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(InvalidArgumentError):
        client.get_task("not-an-id")
    with pytest.raises(NotFoundError):
        client.get_execution("01JDZ0Q3W2J9P6V5M4N8K7H6G5")
    with pytest.raises(NotFoundError):
        list(client.stream_logs("01JDZ0Q3W2J9P6V5M4N8K7H6G5"))

    # Cancelling twice (a retried call) is not an error: the task comes
    # back as the first cancel left it.
    task = client.submit_task("cancel me twice").task
    first = client.cancel_task(task.id, reason="first")
    again = client.cancel_task(task.id, reason="second")
    assert again.state == first.state
    assert again.state_reason == "first"


def test_client_side_argument_errors(client: Client) -> None:
    with pytest.raises(ValueError, match="one of: low, normal, high"):
        client.submit_task("x", priority="urgent")
    with pytest.raises(ValueError):
        client.stream_logs()


def test_auth_with_and_without_token(auth_server: Server) -> None:
    with Client(auth_server.address) as anonymous:
        with pytest.raises(UnauthenticatedError) as caught:
            anonymous.submit_task("no token")
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(UnauthenticatedError):
            anonymous.list_tasks()
        with pytest.raises(UnauthenticatedError):
            list(anonymous.stream_logs("01JDZ0Q3W2J9P6V5M4N8K7H6G5"))
    with Client(auth_server.address, token="wrong-token") as wrong:
        with pytest.raises(UnauthenticatedError):
            wrong.list_tasks()
    with Client(f"http://{auth_server.address}", token=TOKEN) as authed:
        task = authed.submit_task("with a token", tags=["auth"]).task
        assert authed.get_task(task.id).id == task.id
        assert task.id in [t.id for t in authed.list_tasks(tag="auth").tasks]
        assert authed.cancel_task(task.id).state == TaskState.TASK_STATE_CANCELLED


def test_unreachable_server_is_unavailable(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # retries=0: a read retries UNAVAILABLE for about 3 s first (test_retries.py)
    with Client(f"127.0.0.1:{port}", call_timeout=5, retries=0) as c:
        with pytest.raises(UnavailableError) as caught:
            c.list_tasks()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_following_a_task_that_ended_without_an_execution(client: Client) -> None:
    task = client.submit_task("cancelled while queued").task
    client.cancel_task(task.id)
    with pytest.raises(NotFoundError):
        list(client.stream_logs(task_id=task.id))
    # Following it ends at once, with no events.
    assert list(client.stream_logs(task_id=task.id, follow=True)) == []
