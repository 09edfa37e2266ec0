"""Every RPC of the service has a `Client` method, and each one is called
here against a real server (its executor off, so tasks stay QUEUED)."""

from __future__ import annotations

import re
import uuid

import pytest

from claudomator_client import (
    Client,
    ElaborateSource,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    TaskState,
)
from claudomator_client.v1 import service_pb2

from conftest import Server

MISSING_ID = "01JDZ0Q3W2J9P6V5M4N8K7H6G5"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def rpc_names() -> list[str]:
    service = service_pb2.DESCRIPTOR.services_by_name["ClaudomatorService"]
    return [m.name for m in service.methods]


def test_every_rpc_of_the_proto_has_a_method() -> None:
    # Read from the generated descriptor: an RPC added to proto/ without a
    # wrapper here fails this test.
    names = rpc_names()
    assert len(names) >= 16, names
    missing = [n for n in names if not callable(getattr(Client, snake(n), None))]
    assert missing == [], f"RPCs without a Client method: {missing}"


@pytest.fixture
def client(server: Server):
    with Client(server.address) as c:
        yield c


def test_review_calls_map_their_errors(client: Client) -> None:
    task = client.submit_task("review me", tags=["t-" + uuid.uuid4().hex[:8]]).task
    # A QUEUED task is not READY, not BLOCKED, and has no branch yet.
    with pytest.raises(FailedPreconditionError):
        client.accept_task(task.id)
    with pytest.raises(FailedPreconditionError):
        client.reject_task(task.id, "do it again")
    with pytest.raises(InvalidArgumentError, match="feedback"):
        client.reject_task(task.id, "")
    with pytest.raises(FailedPreconditionError):
        client.answer_question(task.id, "yes")
    with pytest.raises(InvalidArgumentError, match="answer"):
        client.answer_question(task.id, "")
    with pytest.raises(FailedPreconditionError):
        client.get_task_diff(task.id)
    with pytest.raises(FailedPreconditionError):
        client.merge_task(task.id, into="trunk")
    # No project of a queue-only server opens pull requests.
    with pytest.raises(FailedPreconditionError, match="pull requests"):
        client.open_pull_request(task.id)
    for call in (client.accept_task, client.get_task_diff, client.merge_task):
        with pytest.raises(NotFoundError):
            call(MISSING_ID)
    assert client.get_task(task.id).state == TaskState.TASK_STATE_QUEUED


def test_prune_status_elaborate(client: Client) -> None:
    pruned = client.prune_tasks(dry_run=True)
    assert all(not item.removed for item in pruned.items)

    status = client.get_system_status()
    assert status.server_version
    assert status.executor_enabled is False
    assert status.database.ok and status.git.ok

    # No local model and no agent CLI answers here: the template path.
    elaborated = client.elaborate("Add a CONTRIBUTING.md")
    assert elaborated.source in (
        ElaborateSource.ELABORATE_SOURCE_TEMPLATE,
        ElaborateSource.ELABORATE_SOURCE_CLAUDE,
        ElaborateSource.ELABORATE_SOURCE_GEMINI,
    )
    assert "CONTRIBUTING" in elaborated.spec.instructions
    # The spec is one SubmitTask accepts unchanged.
    assert client.submit_task(spec=elaborated.spec).created
    with pytest.raises(InvalidArgumentError):
        client.elaborate("")


def test_watch_tasks_snapshot_then_changes(client: Client) -> None:
    tag = "t-" + uuid.uuid4().hex[:8]
    task = client.submit_task("watch me", tags=[tag]).task
    with client.watch_tasks(tag=tag) as watch:
        first = next(watch)
        assert first.WhichOneof("event") == "snapshot" and first.snapshot.id == task.id
        assert next(watch).WhichOneof("event") == "snapshot_end"
        client.cancel_task(task.id, reason="watched")
        # The task's creation may come after the snapshot too (it raced it).
        change = next(watch)
        while change.WhichOneof("event") == "heartbeat" or (
            change.change.to_state == TaskState.TASK_STATE_QUEUED
        ):
            change = next(watch)
        assert change.WhichOneof("event") == "change"
        assert change.change.task.id == task.id
        assert change.change.from_state == TaskState.TASK_STATE_QUEUED
        assert change.change.to_state == TaskState.TASK_STATE_CANCELLED
        assert change.cursor
        cursor = change.cursor
    # A cursor resumes after its event, with no snapshot.
    other = client.submit_task("after the cursor", tags=[tag]).task
    with client.watch_tasks(tag=tag, cursor=cursor) as watch:
        event = next(watch)
        assert event.WhichOneof("event") == "change" and event.change.task.id == other.id


def test_a_bare_string_is_one_tag(client: Client) -> None:
    task = client.submit_task("one tag", tags="docs").task  # type: ignore[arg-type]
    assert list(task.spec.tags) == ["docs"]


def test_require_agent_on_a_server_that_runs_nothing(client: Client) -> None:
    # The executor is off: no live server runs any agent.
    accepted = client.submit_task("no agent here", agent="claude")
    assert accepted.created and accepted.agent_unavailable
    with pytest.raises(FailedPreconditionError):
        client.submit_task("no agent here", agent="claude", require_agent=True)
