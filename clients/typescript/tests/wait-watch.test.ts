// `wait` across a retry (a `local` task rate limited once by the scripted
// OpenAI-compatible API), and `watch` resuming by cursor across a restart.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { AgentType, ClaudomatorError, Client, Code, ExecutionState, TaskState, type TaskChange } from "../src/index.js";
import { QUEUE_ONLY, startLocalServer, startServer, type Server } from "./harness.js";

async function refusedWith(code: Code, promise: Promise<unknown>): Promise<void> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ClaudomatorError, `expected a ClaudomatorError, got ${String(err)}`);
    assert.equal(err.code, code, `${err.codeName}: ${err.message}`);
    return;
  }
  assert.fail(`expected the call to fail with ${Code[code]}`);
}

describe("wait", () => {
  let local: Server;
  let queueOnly: Server;
  before(async () => {
    local = await startLocalServer();
    queueOnly = await startServer({ config: QUEUE_ONLY });
  });
  after(async () => {
    await local?.stop();
    await queueOnly?.stop();
  });

  test("follows a retry to the end", async () => {
    const client = new Client(local.address);
    try {
      const word = randomBytes(6).toString("hex");
      const { task } = await client.submitTask({ instructions: `Say hi. RATE-LIMIT-ONCE:${word}`, agent: { type: AgentType.LOCAL } });
      const waited = await client.wait(task.id, { maxWaitMs: 60_000 });
      assert.equal(waited.task.state, TaskState.COMPLETED, waited.task.stateReason);
      const runs = (await client.listExecutions(task.id)).executions;
      assert.equal(runs.length, 2);
      assert.match(runs[0]!.error, /rate limited/);
      assert.equal(waited.execution?.id, runs[1]!.id);
      assert.equal(waited.execution?.state, ExecutionState.SUCCEEDED);
      // A stopped task answers at once.
      assert.equal((await client.wait(task.id, { maxWaitMs: 5_000 })).task.state, TaskState.COMPLETED);
    } finally {
      client.close();
    }
  });

  test("without an execution, with maxWaitMs, and for no such task", async () => {
    const client = new Client(queueOnly.address);
    try {
      const { task } = await client.submitTask("never runs");
      const started = Date.now();
      await refusedWith(Code.DeadlineExceeded, client.wait(task.id, { maxWaitMs: 500 }));
      assert.ok(Date.now() - started < 5_000);
      await client.cancelTask(task.id);
      const waited = await client.wait(task.id, { maxWaitMs: 10_000 });
      assert.equal(waited.task.state, TaskState.CANCELLED);
      assert.equal(waited.execution, undefined);
      await refusedWith(Code.NotFound, client.wait("01JDZ0Q3W2J9P6V5M4N8K7H6G5", { maxWaitMs: 10_000 }));
    } finally {
      client.close();
    }
  });
});

test("watch resumes by cursor across a restart", async () => {
  const server = await startServer({ config: QUEUE_ONLY });
  const client = new Client(server.address);
  try {
    const tag = `t-${randomBytes(5).toString("hex")}`;
    const events = client.watch({ tag });
    const nextChange = async (): Promise<TaskChange> => {
      for (;;) {
        const { value, done } = await events.next();
        assert.ok(!done);
        assert.ok(["change", "heartbeat"].includes(value.event.case ?? ""), value.event.case); // never a second snapshot
        if (value.event.case === "change") {
          return value.event.value;
        }
      }
    };
    const first = await events.next();
    assert.equal(first.value?.event.case, "snapshotEnd");
    const { task: a } = await client.submitTask({ instructions: "a", tags: [tag] });
    assert.equal((await nextChange()).task?.id, a.id);

    await server.restart({ downForMs: 300, kill: true });
    // While the watch is away, another client: a new task, and a change to the first.
    const other = new Client(server.address);
    const { task: b } = await other.submitTask({ instructions: "b", tags: [tag] });
    await other.cancelTask(a.id, "restarted");
    const seen = [await nextChange(), await nextChange()].map((c) => [c.task?.id, c.toState]);
    assert.deepEqual(seen, [
      [b.id, TaskState.QUEUED],
      [a.id, TaskState.CANCELLED],
    ]);
    // A live change after the reconnect comes too.
    await other.cancelTask(b.id);
    const last = await nextChange();
    assert.deepEqual([last.task?.id, last.toState], [b.id, TaskState.CANCELLED]);
    other.close();
    await events.return(undefined);
  } finally {
    client.close();
    await server.stop();
  }
});
