// Every RPC of the service has a Client method, and each one is called here
// against a real server whose executor is off (tasks stay QUEUED).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import {
  AgentType,
  ClaudomatorError,
  ClaudomatorService,
  Client,
  ClientBase,
  Code,
  ElaborateSource,
  TaskState,
  type TaskSpecInit,
} from "../src/index.js";
import { QUEUE_ONLY, startServer, type Server } from "./harness.js";

const MISSING_ID = "01JDZ0Q3W2J9P6V5M4N8K7H6G5";
const uniqueTag = () => `t-${randomBytes(5).toString("hex")}`;

async function refusedWith(code: Code, promise: Promise<unknown>): Promise<ClaudomatorError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ClaudomatorError, `expected a ClaudomatorError, got ${String(err)}`);
    assert.equal(err.code, code, `${err.codeName}: ${err.message}`);
    return err;
  }
  assert.fail(`expected the call to fail with ${Code[code]}`);
}

test("every RPC of the proto has a Client method", () => {
  // Read from the generated service descriptor: an RPC added to proto/
  // without a wrapper fails this test.
  const names = ClaudomatorService.methods.map((m) => m.localName);
  assert.ok(names.length >= 16, names.join(", "));
  const proto = ClientBase.prototype as unknown as Record<string, unknown>;
  const missing = names.filter((name) => typeof proto[name] !== "function");
  assert.deepEqual(missing, [], `RPCs without a Client method: ${missing.join(", ")}`);
});

describe("every RPC against a queue-only server", () => {
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

  test("review calls map their errors", async () => {
    const { task } = await client.submitTask({ instructions: "review me", tags: [uniqueTag()] });
    // A QUEUED task is not READY, not BLOCKED, and has no branch yet.
    await refusedWith(Code.FailedPrecondition, client.acceptTask(task.id));
    await refusedWith(Code.FailedPrecondition, client.rejectTask(task.id, "do it again"));
    assert.match((await refusedWith(Code.InvalidArgument, client.rejectTask(task.id, ""))).message, /feedback/);
    await refusedWith(Code.FailedPrecondition, client.answerQuestion(task.id, "yes"));
    assert.match((await refusedWith(Code.InvalidArgument, client.answerQuestion(task.id, ""))).message, /answer/);
    await refusedWith(Code.FailedPrecondition, client.getTaskDiff(task.id));
    await refusedWith(Code.FailedPrecondition, client.mergeTask(task.id, { into: "trunk" }));
    // No project of a queue-only server opens pull requests.
    assert.match((await refusedWith(Code.FailedPrecondition, client.openPullRequest(task.id))).message, /pull requests/);
    await refusedWith(Code.NotFound, client.acceptTask(MISSING_ID));
    await refusedWith(Code.NotFound, client.getTaskDiff(MISSING_ID));
    await refusedWith(Code.NotFound, client.mergeTask(MISSING_ID));
    assert.equal((await client.getTask(task.id)).state, TaskState.QUEUED);
  });

  test("prune, system status, elaborate", async () => {
    const pruned = await client.pruneTasks({ dryRun: true });
    assert.ok(pruned.items.every((item) => !item.removed));

    const status = await client.getSystemStatus();
    assert.ok(status.serverVersion);
    assert.equal(status.executorEnabled, false);
    assert.equal(status.database?.ok, true);

    // No local model and no agent CLI answers here: the template path.
    const elaborated = await client.elaborate("Add a CONTRIBUTING.md");
    assert.ok(
      [ElaborateSource.TEMPLATE, ElaborateSource.CLAUDE, ElaborateSource.GEMINI].includes(elaborated.source),
      ElaborateSource[elaborated.source],
    );
    assert.match(elaborated.spec?.instructions ?? "", /CONTRIBUTING/);
    // The spec is one SubmitTask accepts unchanged.
    assert.equal((await client.submitTask(elaborated.spec!)).created, true);
    await refusedWith(Code.InvalidArgument, client.elaborate(""));
  });

  test("requireAgent on a server that runs nothing", async () => {
    // The executor is off: no live server runs any agent.
    const accepted = await client.submitTask({ instructions: "no agent here", agent: { type: AgentType.CLAUDE } });
    assert.ok(accepted.created && accepted.agentUnavailable);
    await refusedWith(
      Code.FailedPrecondition,
      client.submitTask({ instructions: "no agent here", agent: { type: AgentType.CLAUDE } }, { requireAgent: true }),
    );
  });

  test("a bare string for tags (from JavaScript) is one tag", async () => {
    const spec = { instructions: "one tag", tags: "docs" } as unknown as TaskSpecInit;
    const { task } = await client.submitTask(spec);
    assert.deepEqual(task.spec?.tags, ["docs"]);
  });
});
