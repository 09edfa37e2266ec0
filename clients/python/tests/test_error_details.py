"""The structured details of a refused call, decoded from the
`grpc-status-details-bin` trailer by both clients: every bad field of an
INVALID_ARGUMENT, the task state of a FAILED_PRECONDITION; and `base_ref` /
`start_from` through the shared submit-request builder."""

from __future__ import annotations

import asyncio
import pickle
import uuid

import pytest

from claudomator_client import (
    TASK_STATE,
    AsyncClient,
    Client,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PreconditionViolation,
    StartFrom,
    TaskState,
)
from claudomator_client.client import submit_request

from conftest import Server

MISSING_ID = "01JDZ0Q3W2J9P6V5M4N8K7H6G5"
THREE_BAD = ["spec.agent.max_budget_usd", "spec.timeout", "spec.max_attempts"]
# A final state can be cancelled from none; cancel wants one of these.
CANCELLABLE = "PENDING, QUEUED, RUNNING, READY, FAILED, TIMED_OUT, BLOCKED"


def three_bad_fields() -> dict:
    return dict(agent={"max_budget_usd": -5.0}, timeout="soon", max_attempts=1000)


def check_three_bad(err: InvalidArgumentError) -> None:
    assert err.fields == THREE_BAD
    assert all(isinstance(v, FieldViolation) for v in err.field_violations)
    by_field = dict(err.field_violations)
    assert "soon" in by_field["spec.timeout"]
    assert all(v.description for v in err.field_violations)
    # The message stays a sentence naming the first, then how many more.
    assert err.message.startswith("spec.agent.max_budget_usd: "), err.message
    assert err.message.endswith("; and 2 more (spec.timeout, spec.max_attempts)"), err.message
    assert err.precondition_violations == ()


def completed_task(client: Client) -> str:
    task = client.submit_task("Say hi.", agent="local").task
    waited = client.wait(task.id, max_wait=60)
    assert waited.task.state == TaskState.TASK_STATE_COMPLETED, waited.task.state_reason
    return task.id


def check_cancel_refused(err: FailedPreconditionError, task_id: str) -> None:
    assert err.message == "cannot move a task from COMPLETED to CANCELLED"
    assert err.precondition_violations == (
        PreconditionViolation(TASK_STATE, task_id, f"current COMPLETED; wanted one of {CANCELLABLE}"),
    )
    assert err.field_violations == ()


def test_three_bad_fields_are_all_listed(server: Server) -> None:
    tag = "t-" + uuid.uuid4().hex[:8]
    with Client(server.address) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            client.submit_task("three things wrong", tags=[tag], **three_bad_fields())
        check_three_bad(caught.value)
        assert client.list_tasks(tag=tag).tasks == []
        # The details survive pickling (errors cross process pools).
        again = pickle.loads(pickle.dumps(caught.value))
        assert type(again) is InvalidArgumentError
        assert again.field_violations == caught.value.field_violations
        # Any request with several fields: each bad one is there.
        with pytest.raises(InvalidArgumentError) as caught:
            client.answer_question("nonsense", " ")
        assert caught.value.fields == ["task_id", "answer"]
        # A code without details has none.
        with pytest.raises(NotFoundError) as missing:
            client.get_task(MISSING_ID)
        assert missing.value.field_violations == () and missing.value.precondition_violations == ()


def test_cancelling_a_completed_task_names_the_states(local_server: Server) -> None:
    with Client(local_server.address) as client:
        task_id = completed_task(client)
        with pytest.raises(FailedPreconditionError) as caught:
            client.cancel_task(task_id)
        check_cancel_refused(caught.value, task_id)
        with pytest.raises(FailedPreconditionError) as caught:
            client.reject_task(task_id, "again")
        assert caught.value.precondition_violations == (
            PreconditionViolation(TASK_STATE, task_id, "current COMPLETED; wanted READY"),
        )


def test_async_client_decodes_the_same_details(local_server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(local_server.address) as client:
            with pytest.raises(InvalidArgumentError) as caught:
                await client.submit_task("three things wrong", **three_bad_fields())
            check_three_bad(caught.value)
            task = (await client.submit_task("Say hi.", agent="local")).task
            waited = await client.wait(task.id, max_wait=60)
            assert waited.task.state == TaskState.TASK_STATE_COMPLETED, waited.task.state_reason
            with pytest.raises(FailedPreconditionError) as refused:
                await client.cancel_task(task.id)
            check_cancel_refused(refused.value, task.id)

    asyncio.run(main())


def test_base_ref_and_start_from_reach_the_task(server: Server) -> None:
    request = submit_request("x", base_ref="trunk")
    assert request.spec.base_ref == "trunk"
    assert submit_request("x", start_from="working-tree").spec.start_from == (
        StartFrom.START_FROM_WORKING_TREE
    )
    assert submit_request("x").spec.start_from == StartFrom.START_FROM_UNSPECIFIED
    with pytest.raises(ValueError, match="dependencies, head, working_tree"):
        submit_request("x", start_from="tomorrow")

    with Client(server.address) as client:
        task = client.submit_task("from a ref", base_ref="trunk").task
        assert task.spec.base_ref == "trunk"
        task = client.submit_task("from head", start_from="head").task
        assert task.spec.start_from == StartFrom.START_FROM_HEAD
        with pytest.raises(InvalidArgumentError) as caught:
            client.submit_task("both", base_ref="trunk", start_from="head")
        assert caught.value.fields == ["spec.start_from"]

    async def main() -> None:
        async with AsyncClient(server.address) as client:
            task = (await client.submit_task("async from head", start_from=StartFrom.START_FROM_HEAD)).task
            assert task.spec.start_from == StartFrom.START_FROM_HEAD
            task = (await client.submit_task("async from a ref", base_ref="trunk")).task
            assert task.spec.base_ref == "trunk"

    asyncio.run(main())
