// The web board's benchmark (clients/bench-board): a real server, the board
// it serves, headless Chromium (Debian's). Prints figures, asserts nothing.
//
// 1. With the executor on and clients/testing/fake_claude.py as `claude`,
//    one task runs and logs EVENTS events (a tool call and its result every
//    10th pair, the rest text).
// 2. The server restarts with the executor off; TASKS tasks are submitted
//    (a quarter then cancelled), so the store holds TASKS + 1 tasks.
// 3. First meaningful paint: a fresh page load until every column's count
//    is right (the WatchTasks snapshot read and drawn), ROUNDS times; and
//    the snapshot alone as a gRPC client in Node reads it (the server's share).
// 4. Opening the big task: from the route change until the log says it
//    read every event (the tail drawn), ROUNDS times; and the log alone as a
//    gRPC client in Node reads it.
// 5. Card moves: CHANGES queued tasks cancelled one after another over gRPC
//    from here; each latency is from before the call to the moment the card
//    is in the "failed" column of the page (MutationObserver, same clock);
//    beside it, the same change as a WatchTasks client in Node receives it
//    (the server's and the network's share of the latency).
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "../typescript/node_modules/playwright-core/index.mjs";
import { Client, TaskState } from "../typescript/dist/src/index.js";
import { REPO, startServer } from "../typescript/dist/tests/harness.js";

const TASKS = Number(process.env.BENCH_TASKS ?? 10_000);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000);
const CHANGES = Number(process.env.BENCH_CHANGES ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const root = typeof process.getuid === "function" && process.getuid() === 0;

const ms = (x) => `${x.toFixed(0)} ms`;
function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return `p50 ${ms(quantile(sorted, 0.5))}, p99 ${ms(quantile(sorted, 0.99))}, max ${ms(sorted.at(-1))} (${values.length} samples)`;
}

const agentConfig =
  `[agents.claude]\ncommand = ${JSON.stringify(join(REPO, "clients", "testing", "fake_claude.py"))}\n` +
  `env = { FAKE_CLAUDE_EVENTS = "${EVENTS}", FAKE_CLAUDE_TOOL_EVERY = "10" }\n`;
const server = await startServer({ config: `[executor]\nenabled = true\npoll_interval = "100ms"\n\n${agentConfig}` });
const browser = await chromium.launch({
  executablePath: process.env.CLAUDOMATOR_CHROMIUM || "/usr/bin/chromium",
  args: root ? ["--no-sandbox"] : [],
});
try {
  console.log(`server ${server.address} (${process.env.CLAUDOMATOR_BIN ?? "target/debug/claudomator"})`);
  let client = new Client(server.address);
  let started = Date.now();
  const { task: big } = await client.submitTask({ name: "A long run", instructions: "Print a long log", agent: { type: 2 } });
  for (;;) {
    const task = await client.getTask(big.id);
    if (task.state === TaskState.COMPLETED || task.state === TaskState.FAILED) {
      console.log(`big task ${big.id}: ${TaskState[task.state]} in ${ms(Date.now() - started)}`);
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const { executions } = await client.listExecutions(big.id);
  let logged = 0;
  for await (const _ of client.streamLogs({ executionId: executions[0].id })) {
    logged++;
  }
  console.log(`its log: ${logged} events`);
  client.close();

  // The executor off: the tasks stay where they are put.
  writeFileSync(join(server.workdir, "claudomator.toml"), `[executor]\nenabled = false\n\n${agentConfig}`);
  await server.restart();
  client = new Client(server.address);
  started = Date.now();
  const ids = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < TASKS) {
        const i = next++;
        const { task } = await client.submitTask({
          name: `Task ${i}: tidy module ${i % 97}`,
          instructions: `Tidy src/module_${i % 97}.rs`,
          tags: [`batch-${i % 10}`],
          priority: 1 + (i % 3),
        });
        ids[i] = task.id;
      }
    }),
  );
  const cancelled = ids.filter((_, i) => i % 4 === 3);
  next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < cancelled.length) {
        await client.cancelTask(cancelled[next++], "bench");
      }
    }),
  );
  const queued = ids.filter((_, i) => i % 4 !== 3);
  console.log(`store: ${TASKS + 1} tasks (${queued.length} queued, ${cancelled.length} cancelled, 1 completed) in ${ms(Date.now() - started)}`);

  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  const url = `http://${server.address}/`;

  // First meaningful paint: every count right.
  const paints = [];
  for (let round = 0; round < ROUNDS; round++) {
    await page.goto("about:blank");
    await page.goto(url, { waitUntil: "commit" });
    await page.waitForFunction(
      ([q, f]) => {
        const count = (key) => document.querySelector(`[data-column="${key}"] .count`)?.textContent;
        const ok = count("queued") === q && count("failed") === f && count("done") === "1";
        if (ok) {
          window.painted ??= performance.now();
        }
        return ok;
      },
      [queued.length.toLocaleString("en"), cancelled.length.toLocaleString("en")],
      { polling: "raf", timeout: 120_000 },
    );
    paints.push(await page.evaluate(() => window.painted));
  }
  console.log(`first meaningful paint, ${TASKS + 1} tasks: ${paints.map(ms).join(", ")} (target < 1 s)`);
  // The server's share: the same snapshot read by a gRPC client in Node.
  const reads = [];
  for (let round = 0; round < ROUNDS; round++) {
    const start = performance.now();
    for await (const { event } of client.watchTasks({})) {
      if (event.case === "snapshotEnd") {
        break;
      }
    }
    reads.push(performance.now() - start);
  }
  console.log(`  the WatchTasks snapshot alone, read by a gRPC client in Node: ${reads.map(ms).join(", ")}`);

  // Opening the big task.
  const opens = [];
  for (let round = 0; round < ROUNDS; round++) {
    await page.evaluate(() => (location.hash = "#/"));
    const elapsed = await page.evaluate(
      ([id, events]) =>
        new Promise((resolve) => {
          const start = performance.now();
          location.hash = `#/task/${id}`;
          const check = () => {
            const status = document.querySelector("#task .log-status")?.textContent ?? "";
            const read = Number((/^([\d,]+) events/.exec(status)?.[1] ?? "0").replace(/,/g, ""));
            if (read >= events && document.querySelector("#task .entry-result")) {
              resolve(performance.now() - start);
            } else {
              requestAnimationFrame(check);
            }
          };
          requestAnimationFrame(check);
        }),
      [big.id, logged],
    );
    opens.push(elapsed);
  }
  const inPage = await page.evaluate(() => document.querySelectorAll("#task .entry").length);
  console.log(`open a task with a ${logged}-event log: ${opens.map(ms).join(", ")} (${inPage} entries in the page)`);
  const streams = [];
  for (let round = 0; round < ROUNDS; round++) {
    const start = performance.now();
    for await (const _ of client.streamLogs({ executionId: executions[0].id })) {
      // read only
    }
    streams.push(performance.now() - start);
  }
  console.log(`  the same log alone, read by a gRPC client in Node: ${streams.map(ms).join(", ")}`);
  await page.screenshot({ path: join(REPO, "clients", "typescript", "dist", "bench-board-task.png") });
  await page.evaluate(() => (location.hash = "#/"));

  // Card moves: cancel one queued task at a time.
  await page.evaluate(() => {
    window.arrived = new Map();
    const failed = document.querySelector('[data-column="failed"]');
    new MutationObserver(() => {
      for (const card of failed.querySelectorAll(".card")) {
        if (!window.arrived.has(card.dataset.id)) {
          window.arrived.set(card.dataset.id, performance.timeOrigin + performance.now());
        }
      }
    }).observe(failed, { childList: true, subtree: true });
  });
  const watcher = new Client(server.address);
  const seen = new Map();
  const abort = new AbortController();
  const watching = (async () => {
    try {
      for await (const { event } of watcher.watchTasks({ changesOnly: true }, { signal: abort.signal })) {
        if (event.case === "change") {
          seen.set(event.value.task.id, performance.timeOrigin + performance.now());
        }
      }
    } catch {
      // aborted at the end
    }
  })();
  const latencies = [];
  const baseline = [];
  for (const id of queued.slice(0, CHANGES)) {
    const before = performance.timeOrigin + performance.now();
    await client.cancelTask(id, "bench");
    const at = await page.waitForFunction((id) => window.arrived.get(id), id, { polling: "raf", timeout: 30_000 });
    latencies.push((await at.jsonValue()) - before);
    if (seen.has(id)) {
      baseline.push(seen.get(id) - before);
    }
  }
  abort.abort();
  await watching;
  watcher.close();
  console.log(`state change to card move: ${summary(latencies)} (target p99 < 250 ms)`);
  console.log(`the same change to a WatchTasks client in Node: ${summary(baseline)}`);
  if (errors.length) {
    console.log(`page errors: ${errors.join("; ")}`);
  }
  client.close();
} finally {
  await browser.close();
  await server.stop();
}
