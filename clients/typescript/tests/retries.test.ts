// Retries on UNAVAILABLE through a server restart (reads, and submits with
// an idempotency key; never a submit without one), per-call deadlines and
// metadata.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import { ClaudomatorError, Client, Code, TaskState } from "../src/index.js";
import { QUEUE_ONLY, TOKEN, startServer, type Server } from "./harness.js";

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

/** Starts the killed server again after `ms`. */
function backIn(server: Server, ms: number): Promise<void> {
  return new Promise<void>((r) => setTimeout(r, ms)).then(() => server.startAgain());
}

test("reads and keyed submits retry through a restart", async () => {
  const server = await startServer({ config: QUEUE_ONLY });
  const client = new Client(server.address);
  let back: Promise<void> = Promise.resolve();
  try {
    const { task } = await client.submitTask("survives a restart");

    await server.kill();
    let started = Date.now();
    // No idempotency key: not retried (it might have been stored).
    await refusedWith(Code.Unavailable, client.submitTask("not retried"));
    assert.ok(Date.now() - started < 1_000);
    await refusedWith(Code.Unavailable, client.getTask(task.id, { retries: 0 }));

    started = Date.now();
    back = backIn(server, 500);
    // A read waits the restart out.
    assert.equal((await client.getTask(task.id)).state, TaskState.QUEUED);
    assert.ok(Date.now() - started >= 500);
    await back;

    await server.kill();
    back = backIn(server, 500);
    const key = `key-${randomBytes(8).toString("hex")}`;
    const again = await client.submitTask("keyed", { idempotencyKey: key });
    await back;
    assert.equal(again.created, true);
    assert.equal((await client.submitTask("keyed", { idempotencyKey: key })).created, false);
  } finally {
    await back.catch(() => undefined);
    client.close();
    await server.stop();
  }
});

test("per-call deadline and metadata", async () => {
  const server = await startServer({ config: QUEUE_ONLY, token: TOKEN });
  const client = new Client(server.address, { timeoutMs: 0 });
  try {
    await refusedWith(Code.Unauthenticated, client.listTasks());
    // Metadata for one call (here the token).
    const headers = { authorization: `Bearer ${TOKEN}` };
    const { task } = await client.submitTask("with call metadata", { headers });
    assert.equal((await client.getTask(task.id, { headers })).id, task.id);
    // A deadline for one call.
    await refusedWith(Code.DeadlineExceeded, client.getTask(task.id, { headers, timeoutMs: 1 }));
  } finally {
    client.close();
    await server.stop();
  }
});
