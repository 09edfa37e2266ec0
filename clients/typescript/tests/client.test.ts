// The client against a real server whose executor is off (tasks stay QUEUED).
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { randomBytes } from "node:crypto";

import {
  AgentType,
  Client,
  Code,
  Priority,
  TaskState,
  timestampDate,
} from "../src/index.js";
import { QUEUE_ONLY, TOKEN, refused, startServer, type Server } from "./harness.js";

const uniqueTag = () => `t-${randomBytes(5).toString("hex")}`;


describe("a queue-only server", () => {
  let server: Server;
  let client: Client;

  before(async () => {
    server = await startServer({ config: QUEUE_ONLY });
    client = new Client(server.address);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("submit, get, list with a filter, cancel", async () => {
    const tag = uniqueTag();
    const { task, created } = await client.submitTask({
      instructions: "Fix the flaky test in tests/api.rs",
      tags: [tag],
      priority: Priority.HIGH,
      agent: { type: AgentType.CLAUDE, model: "claude-sonnet-4-5", maxTurns: 7 },
      timeout: "45m",
    });
    assert.equal(created, true);
    assert.equal(task.id.length, 26);
    assert.equal(task.state, TaskState.QUEUED);
    assert.equal(task.spec?.priority, Priority.HIGH);
    assert.equal(task.spec?.agent?.model, "claude-sonnet-4-5");
    assert.equal(task.timeoutSeconds, 45n * 60n);
    assert.equal(task.spec?.project, "demo"); // the repository the server started in

    await client.submitTask({ instructions: "Something else", tags: [uniqueTag()] });

    const got = await client.getTask(task.id);
    assert.equal(got.id, task.id);
    assert.equal(got.spec?.instructions, "Fix the flaky test in tests/api.rs");
    assert.deepEqual(got.spec?.tags, [tag]);
    assert.ok(timestampDate(got.createdAt!).getTime() <= Date.now());

    const listed = await client.listTasks({ tag });
    assert.deepEqual(listed.tasks.map((t) => t.id), [task.id]);
    assert.equal(listed.nextPageToken, "");
    assert.deepEqual((await client.listTasks({ tag, states: [TaskState.QUEUED] })).tasks.map((t) => t.id), [task.id]);
    assert.deepEqual((await client.listTasks({ tag, states: [TaskState.CANCELLED] })).tasks, []);

    const cancelled = await client.cancelTask(task.id, "not needed");
    assert.equal(cancelled.state, TaskState.CANCELLED);
    assert.match(cancelled.stateReason, /not needed/);
    assert.equal((await client.getTask(task.id)).state, TaskState.CANCELLED);
    assert.deepEqual((await client.listTasks({ tag, states: [TaskState.CANCELLED] })).tasks.map((t) => t.id), [task.id]);
    assert.deepEqual((await client.listTasks({ tag, states: [TaskState.QUEUED, TaskState.PENDING] })).tasks, []);
    assert.deepEqual((await client.listExecutions(task.id)).executions, []);
  });

  test("pages, newest first", async () => {
    const tag = uniqueTag();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await client.submitTask({ instructions: `task ${i}`, tags: [tag] })).task.id);
    }
    const first = await client.listTasks({ tag, pageSize: 2 });
    assert.deepEqual(first.tasks.map((t) => t.id), ids.slice().reverse().slice(0, 2));
    assert.notEqual(first.nextPageToken, "");
    const all: string[] = [];
    for await (const t of client.iterTasks({ tag, pageSize: 2 })) {
      all.push(t.id);
    }
    assert.deepEqual(all, ids.slice().reverse());
  });

  test("watchTasks: the snapshot, then each change as it commits", async () => {
    const tag = uniqueTag();
    const { task: first } = await client.submitTask({ instructions: "watched", tags: [tag] });
    const watch = client.watchTasks({ tag });
    const next = async () => {
      for (;;) {
        const item = await watch.next();
        assert.ok(!item.done, "the watch ended");
        if (item.value.event.case !== "heartbeat") {
          return item.value;
        }
      }
    };
    const snapshot = await next();
    assert.equal(snapshot.event.case, "snapshot");
    assert.equal(snapshot.event.value?.id, first.id);
    assert.equal((await next()).event.case, "snapshotEnd");
    await client.cancelTask(first.id);
    // The task's creation may come after the snapshot too (it raced it).
    let change = await next();
    while (change.event.case === "change" && change.event.value.toState === TaskState.QUEUED) {
      change = await next();
    }
    assert.equal(change.event.case, "change");
    if (change.event.case === "change") {
      assert.equal(change.event.value.task?.id, first.id);
      assert.equal(change.event.value.fromState, TaskState.QUEUED);
      assert.equal(change.event.value.toState, TaskState.CANCELLED);
    }
    assert.notEqual(change.cursor, "");
    await watch.return(undefined);

    // Resuming after the cursor: no snapshot, the next change only.
    const resumed = client.watchTasks({ tag, cursor: change.cursor });
    const { task: second } = await client.submitTask({ instructions: "watched too", tags: [tag] });
    for await (const event of resumed) {
      if (event.event.case === "heartbeat") {
        continue;
      }
      assert.equal(event.event.case, "change");
      assert.equal(event.event.value?.task?.id, second.id);
      break;
    }
    const bad = await refused(client.watchTasks({ cursor: "not-a-cursor" }).next());
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.message, /^cursor/);
  });

  test("an idempotency key returns the first task", async () => {
    const idempotencyKey = `key-${randomBytes(8).toString("hex")}`;
    const spec = { name: "docs", instructions: "Write the docs", tags: [uniqueTag()] };
    const first = await client.submitTask(spec, { idempotencyKey });
    const again = await client.submitTask(spec, { idempotencyKey });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.equal(again.task.id, first.task.id);
    assert.equal(first.task.spec?.name, "docs");
    // Plain instructions work too.
    assert.equal((await client.submitTask("just instructions")).task.spec?.instructions, "just instructions");
  });

  test("a bad request is INVALID_ARGUMENT, names the field and writes nothing", async () => {
    const tag = uniqueTag();
    const err = await refused(client.submitTask({ instructions: "Fix the build", timeout: "soon", tags: [tag] }));
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.code, 3); // the gRPC number
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.match(err.message, /^spec\.timeout: .*soon/);
    assert.deepEqual((await client.listTasks({ tag })).tasks, []);

    const empty = await refused(client.submitTask({ instructions: "" }));
    assert.equal(empty.codeName, "INVALID_ARGUMENT");
    assert.match(empty.message, /^spec\.instructions/);
  });

  test("unknown ids and forbidden moves", async () => {
    const missing = "01JDZ0Q3W2J9P6V5M4N8K7H6G5";
    assert.equal((await refused(client.getTask(missing))).code, Code.NotFound);
    assert.equal((await refused(client.getTask("not-an-id"))).code, Code.InvalidArgument);
    assert.equal((await refused(client.getExecution(missing))).code, Code.NotFound);
    const drain = async () => {
      for await (const _ of client.streamLogs({ executionId: missing })) {
        // nothing
      }
    };
    assert.equal((await refused(drain())).codeName, "NOT_FOUND");

    // Cancelling twice (a retried call) is not an error: the task comes
    // back as the first cancel left it.
    const { task } = await client.submitTask("cancel me twice");
    const first = await client.cancelTask(task.id, "first");
    const again = await client.cancelTask(task.id, "second");
    assert.equal(again.state, first.state);
    assert.equal(again.stateReason, "first");
  });
});

describe("a server with tokens", () => {
  let server: Server;

  before(async () => {
    server = await startServer({ config: QUEUE_ONLY, token: TOKEN });
  });
  after(async () => {
    await server?.stop();
  });

  test("without a token, with a wrong one, with the right one", async () => {
    const anonymous = new Client(server.address);
    const wrong = new Client(server.address, { token: "wrong-token" });
    const authed = new Client(`http://${server.address}`, { token: TOKEN });
    try {
      const err = await refused(anonymous.submitTask("no token"));
      assert.equal(err.code, Code.Unauthenticated);
      assert.equal(err.codeName, "UNAUTHENTICATED");
      assert.equal((await refused(anonymous.listTasks())).code, Code.Unauthenticated);
      const drain = async () => {
        for await (const _ of anonymous.streamLogs({ executionId: "01JDZ0Q3W2J9P6V5M4N8K7H6G5" })) {
          // nothing
        }
      };
      assert.equal((await refused(drain())).code, Code.Unauthenticated);
      assert.equal((await refused(wrong.listTasks())).code, Code.Unauthenticated);

      const { task } = await authed.submitTask({ instructions: "with a token", tags: ["auth"] });
      assert.equal((await authed.getTask(task.id)).id, task.id);
      assert.ok((await authed.listTasks({ tag: "auth" })).tasks.some((t) => t.id === task.id));
      assert.equal((await authed.cancelTask(task.id)).state, TaskState.CANCELLED);
    } finally {
      anonymous.close();
      wrong.close();
      authed.close();
    }
  });
});

test("an unreachable server is UNAVAILABLE", async () => {
  const port = await new Promise<number>((resolvePort) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
  // retries: 0: a read retries UNAVAILABLE for about 3 s first (retries.test.ts)
  const client = new Client(`127.0.0.1:${port}`, { timeoutMs: 5_000, retries: 0 });
  try {
    const err = await refused(client.listTasks());
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.codeName, "UNAVAILABLE");
  } finally {
    client.close();
  }
});
