// The structured details of a refused call against a real server: every bad
// field of an INVALID_ARGUMENT (google.rpc.BadRequest), the task state of a
// FAILED_PRECONDITION (google.rpc.PreconditionFailure); and `baseRef` /
// `startFrom` in a submitted spec.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { ConnectError } from "@connectrpc/connect";

import {
  AgentType,
  BadRequestSchema,
  Client,
  Code,
  fieldViolations,
  PreconditionFailureSchema,
  preconditionViolations,
  StartFrom,
  TASK_STATE,
  TaskState,
} from "../src/index.js";
import { QUEUE_ONLY, refused, startLocalServer, startServer, type Server } from "./harness.js";

const THREE_BAD = ["spec.agent.max_budget_usd", "spec.timeout", "spec.max_attempts"];
const CANCELLABLE = "PENDING, QUEUED, RUNNING, READY, FAILED, TIMED_OUT, BLOCKED";


describe("status details", () => {
  let queueOnly: Server;
  let local: Server;
  let client: Client;
  before(async () => {
    queueOnly = await startServer({ config: QUEUE_ONLY });
    local = await startLocalServer();
    client = new Client(queueOnly.address);
  });
  after(async () => {
    client?.close();
    await queueOnly?.stop();
    await local?.stop();
  });

  test("a submit with three bad fields lists all three", async () => {
    const tag = `t-${randomBytes(5).toString("hex")}`;
    const err = await refused(
      client.submitTask({
        instructions: "three things wrong",
        tags: [tag],
        agent: { maxBudgetUsd: -5 },
        timeout: "soon",
        maxAttempts: 1000,
      }),
    );
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.message, /^spec\.agent\.max_budget_usd: .*; and 2 more \(spec\.timeout, spec\.max_attempts\)$/);
    // The typed convenience, as a property and as a function.
    assert.deepEqual(err.fieldViolations.map((v) => v.field), THREE_BAD);
    assert.deepEqual(fieldViolations(err), err.fieldViolations);
    assert.match(err.fieldViolations[1]!.description, /`soon`/);
    assert.ok(err.fieldViolations.every((v) => v.description.length > 0));
    assert.deepEqual(err.preconditionViolations, []);
    // Connect's own: findDetails on the error and on its ConnectError cause.
    const [badRequest] = err.findDetails(BadRequestSchema);
    assert.deepEqual(badRequest?.fieldViolations.map((v) => v.field), THREE_BAD);
    assert.ok(err.cause instanceof ConnectError);
    assert.equal(err.cause.findDetails(BadRequestSchema).length, 1);
    assert.deepEqual(fieldViolations(err.cause), err.fieldViolations);
    assert.deepEqual((await client.listTasks({ tag })).tasks, []);

    const several = await refused(client.answerQuestion("nonsense", " "));
    assert.deepEqual(several.fieldViolations.map((v) => v.field), ["task_id", "answer"]);
    const missing = await refused(client.getTask("01JDZ0Q3W2J9P6V5M4N8K7H6G5"));
    assert.equal(missing.code, Code.NotFound);
    assert.deepEqual([missing.fieldViolations, missing.preconditionViolations], [[], []]);
  });

  test("cancelling a completed task is FAILED_PRECONDITION naming the states", async () => {
    const c = new Client(local.address);
    try {
      const { task } = await c.submitTask({ instructions: "Say hi.", agent: { type: AgentType.LOCAL } });
      const waited = await c.wait(task.id, { maxWaitMs: 60_000 });
      assert.equal(waited.task.state, TaskState.COMPLETED, waited.task.stateReason);
      const err = await refused(c.cancelTask(task.id));
      assert.equal(err.code, Code.FailedPrecondition);
      assert.equal(err.message, "cannot move a task from COMPLETED to CANCELLED");
      assert.deepEqual(err.preconditionViolations, [
        { type: TASK_STATE, subject: task.id, description: `current COMPLETED; wanted one of ${CANCELLABLE}` },
      ]);
      assert.deepEqual(preconditionViolations(err), err.preconditionViolations);
      assert.equal(err.findDetails(PreconditionFailureSchema)[0]?.violations[0]?.subject, task.id);
      assert.deepEqual(err.fieldViolations, []);
      const rejected = await refused(c.rejectTask(task.id, "again"));
      assert.deepEqual(rejected.preconditionViolations, [
        { type: TASK_STATE, subject: task.id, description: "current COMPLETED; wanted READY" },
      ]);
    } finally {
      c.close();
    }
  });

  test("baseRef and startFrom reach the task", async () => {
    const fromRef = await client.submitTask({ instructions: "from a ref", baseRef: "trunk" });
    assert.equal(fromRef.task.spec?.baseRef, "trunk");
    const fromHead = await client.submitTask({ instructions: "from head", startFrom: StartFrom.HEAD });
    assert.equal(fromHead.task.spec?.startFrom, StartFrom.HEAD);
    const both = await refused(client.submitTask({ instructions: "both", baseRef: "trunk", startFrom: StartFrom.HEAD }));
    assert.deepEqual(both.fieldViolations.map((v) => v.field), ["spec.start_from"]);
  });
});
