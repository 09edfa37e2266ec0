// StreamLogs through a real agent run: the real `claude` CLI driven by a
// scripted Anthropic API, run by the server's executor.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { AgentType, Client, ExecutionState, LogEventKind, TaskState, type LogEvent, type Task } from "../src/index.js";
import { startAgentServer, type Server } from "./harness.js";

const FINAL = new Set([
  TaskState.COMPLETED,
  TaskState.FAILED,
  TaskState.TIMED_OUT,
  TaskState.CANCELLED,
  TaskState.BUDGET_EXCEEDED,
]);

async function waitFinal(client: Client, id: string, timeoutMs = 60_000): Promise<Task> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const task = await client.getTask(id);
    if (FINAL.has(task.state) || Date.now() > deadline) {
      return task;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

let server: Server | undefined;

before(async () => {
  server = await startAgentServer();
});
after(async () => {
  await server?.stop();
});

test("streamLogs follows a real run to the end", async (t) => {
  if (!server) {
    t.skip("claude CLI not installed (scripts/install-agents)");
    return;
  }
  const client = new Client(server.address);
  try {
    const { task } = await client.submitTask({ instructions: "Create hello.txt containing hi", agent: { type: AgentType.CLAUDE }, tags: ["stream"] });

    // By task id, following: waits for the first execution, then reads every
    // event live until the execution ends.
    const started = Date.now();
    const events: LogEvent[] = [];
    for await (const event of client.streamLogs({ taskId: task.id, follow: true })) {
      events.push(event);
    }
    assert.ok(Date.now() - started < 60_000);

    assert.deepEqual(events.map((e) => e.offset), events.map((_, i) => BigInt(i)));
    assert.equal(new Set(events.map((e) => e.executionId)).size, 1);
    const kinds = new Set(events.map((e) => e.kind));
    for (const kind of [LogEventKind.TEXT, LogEventKind.TOOL_CALL, LogEventKind.TOOL_RESULT, LogEventKind.RESULT]) {
      assert.ok(kinds.has(kind), `${LogEventKind[kind]} missing from ${JSON.stringify(events.map((e) => e.text))}`);
    }
    const toolCall = events.find((e) => e.kind === LogEventKind.TOOL_CALL)!;
    assert.match(toolCall.text, /Write .*hello\.txt/);
    assert.ok(toolCall.raw && toolCall.payloadJson);
    // Sent once (it is the payload), filled back in by the client.
    assert.ok(toolCall.rawIsPayload && toolCall.raw === toolCall.payloadJson);
    assert.ok(events.some((e) => e.text.includes("## Summary")));

    const executionId = events[0]!.executionId;
    // The stream ended because the execution did.
    assert.notEqual((await client.getExecution(executionId)).state, ExecutionState.RUNNING);

    const final = await waitFinal(client, task.id);
    assert.equal(final.state, TaskState.COMPLETED, final.stateReason);
    assert.match(final.summary, /hello\.txt/);
    const execution = await client.getExecution(executionId);
    assert.equal(execution.state, ExecutionState.SUCCEEDED);
    assert.deepEqual(execution.changedFiles, ["hello.txt"]);
    assert.equal(execution.turns, 2);
    assert.deepEqual((await client.listExecutions(task.id)).executions.map((e) => e.id), [executionId]);

    // The same log again, by execution id, from an offset, without follow.
    const again: LogEvent[] = [];
    for await (const event of client.streamLogs({ executionId, fromOffset: 2 })) {
      again.push(event);
    }
    const summary = (es: LogEvent[]) => es.map((e) => [e.offset, e.kind, e.text]);
    assert.deepEqual(summary(again), summary(events.slice(2)));

    // Leaving the loop early cancels the stream; the client goes on working.
    for await (const event of client.streamLogs({ executionId })) {
      assert.equal(event.offset, 0n);
      break;
    }
    assert.equal((await client.getTask(task.id)).id, task.id);
  } finally {
    client.close();
  }
});
