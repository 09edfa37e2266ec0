// The page of the browser test (tests/browser/browser.spec.ts bundles it
// with esbuild and serves it): uses the browser client over gRPC-Web against
// the server named in `?server=`, writing each step into the page, where the
// test reads it. Type-checked with the DOM (tsconfig.browser.json).
import { ClaudomatorError, Client, TaskState, type WatchTasksResponse } from "../../src/browser.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") ?? "";
const token = params.get("token") ?? "";

function step(name: string, text: string): void {
  const item = document.createElement("li");
  item.dataset.step = name;
  item.textContent = text;
  document.getElementById("steps")!.append(item);
}

function failure(err: unknown): string {
  return err instanceof ClaudomatorError ? `${err.codeName} ${err.message}` : String(err);
}

/** Watch, submit, list, get, see the changes live, cancel; then a call without the token. */
async function scenario(): Promise<void> {
  const tag = `web-${Math.random().toString(16).slice(2, 10)}`;
  const client = new Client(server, { token });
  const watch = client.watchTasks({ tag });
  const next = async (): Promise<WatchTasksResponse> => {
    for (;;) {
      const item = await watch.next();
      if (item.done) {
        throw new Error("the watch ended");
      }
      if (item.value.event.case !== "heartbeat") {
        return item.value;
      }
    }
  };
  const change = (event: WatchTasksResponse): string =>
    event.event.case === "change"
      ? `change ${TaskState[event.event.value.toState]} ${event.event.value.task?.id}`
      : `unexpected ${event.event.case}`;

  step("watch", (await next()).event.case ?? "none"); // no task has the tag yet
  const { task, created } = await client.submitTask({
    instructions: "Fix the flaky test, from a browser",
    tags: [tag],
  });
  step("submit", `${created} ${TaskState[task.state]} ${task.id}`);
  const listed = await client.listTasks({ tag });
  step("list", listed.tasks.map((t) => t.id).join(","));
  const got = await client.getTask(task.id);
  step("get", `${got.id} ${got.spec?.instructions}`);
  step("watch-created", change(await next()));
  const cancelled = await client.cancelTask(task.id, "done in the browser");
  step("cancel", TaskState[cancelled.state]);
  step("watch-cancelled", change(await next()));
  await watch.return(undefined);

  try {
    await new Client(server).listTasks({ tag });
    step("no-token", "accepted");
  } catch (err) {
    step("no-token", failure(err));
  }
}

/** One ListTasks call, to see whether the server lets this page call. */
async function listOnly(): Promise<void> {
  const page = await new Client(server, { token }).listTasks({ pageSize: 1 });
  step("list", `${page.tasks.length} tasks`);
}

const status = document.getElementById("status")!;
(params.get("mode") === "list" ? listOnly() : scenario()).then(
  () => {
    status.textContent = "done";
  },
  (err: unknown) => {
    status.textContent = `failed: ${failure(err)}`;
  },
);
