// One task, opened from the board (#/task/ID): what a person decides (the
// question and its answer, accept, reject with feedback, cancel, retry), the
// summary, the attempts, the spec and the live log.
import {
  describe,
  ExecutionState,
  Priority,
  TaskState,
  type Client,
  type Execution,
  type Task,
} from "./api.js";
import { agentName, stateName } from "./board.js";
import { byId, count, date, duration, h, plural, replace, usd } from "./dom.js";
import { DiffView } from "./diff.js";
import { LogView } from "./log.js";

export interface TaskApp {
  client(): Client;
  /** The task as the board's watch knows it (without instructions). */
  known(id: string): Task | undefined;
  toast(text: string): void;
}

const FINAL = [TaskState.COMPLETED, TaskState.CANCELLED, TaskState.BUDGET_EXCEEDED, TaskState.FAILED, TaskState.TIMED_OUT];
/** States in which the work is not settled yet. */
const RUNS = [TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING];
const FAILED_ATTEMPTS = [ExecutionState.FAILED, ExecutionState.TIMED_OUT, ExecutionState.BUDGET_EXCEEDED, ExecutionState.INTERRUPTED];
const RETRYABLE = [TaskState.FAILED, TaskState.TIMED_OUT, TaskState.BUDGET_EXCEEDED, TaskState.CANCELLED];

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

export class TaskView {
  private panel = byId("task");
  private id = "";
  private task: Task | undefined;
  private abort: AbortController | undefined;
  private log = new LogView();
  private diff = new DiffView(() => this.commented());
  private actions = h("div", { class: "actions" });
  private header = h("header", { class: "task-header" });
  private summary = h("section", { class: "summary" });
  private attempts = h("section", { class: "attempts" });
  private spec = h("section", { class: "spec" });
  /** Kept while the task is open, so a redraw (a change, a line comment) keeps what was typed. */
  private answerBox = h("textarea");
  private feedbackBox = h("textarea");
  private error = h("p", { class: "error", id: "task-error", role: "alert" });
  /** Bumped on each change of the open task; `changed` resolves then. */
  private version = 0;
  private wake: (() => void) | undefined;

  constructor(private app: TaskApp) {}

  get openId(): string {
    return this.id;
  }

  open(id: string): void {
    if (this.id === id) {
      return;
    }
    this.close();
    this.id = id;
    this.task = this.app.known(id);
    this.log = new LogView();
    this.diff = new DiffView(() => this.commented());
    this.answerBox = h("textarea", { id: "answer", rows: 3, placeholder: "Your answer", "aria-label": "your answer" });
    this.feedbackBox = h("textarea", { id: "feedback", rows: 3, placeholder: "What to change", "aria-label": "feedback" });
    replace(
      this.panel,
      this.header,
      this.error,
      this.actions,
      this.summary,
      h("h3", {}, "Attempts"),
      this.attempts,
      h("h3", {}, "Changes"),
      this.diff.element,
      h("details", { class: "spec-details" }, h("summary", {}, "Spec"), this.spec),
      h("h3", {}, "Log"),
      this.log.element,
    );
    this.panel.hidden = false;
    document.body.classList.add("task-open");
    this.error.textContent = "";
    replace(this.attempts, h("p", { class: "empty" }, "loading"));
    this.draw();
    const abort = new AbortController();
    this.abort = abort;
    void this.load(id, abort.signal);
    void this.diff.load(this.app.client(), id, abort.signal);
    void this.follow(id, abort.signal);
    this.panel.focus();
  }

  close(): void {
    this.abort?.abort();
    this.abort = undefined;
    this.id = "";
    this.task = undefined;
    // A long log is tens of thousands of entries: let it go with the view.
    this.log = new LogView();
    this.diff = new DiffView();
    this.panel.replaceChildren();
    this.panel.hidden = true;
    document.body.classList.remove("task-open");
  }

  /** The board's watch saw this task change. */
  changed(task: Task): void {
    if (task.id !== this.id) {
      return;
    }
    const instructions = this.task?.spec?.instructions;
    const before = this.task?.state;
    this.task = task;
    // An attempt ended: its work may have changed the branch.
    if (before !== task.state && !RUNS.includes(task.state) && this.abort) {
      void this.diff.load(this.app.client(), task.id, this.abort.signal);
    }
    if (task.spec && !task.spec.instructions && instructions) {
      task.spec.instructions = instructions;
    }
    this.version++;
    this.wake?.();
    this.draw();
  }

  private async load(id: string, signal: AbortSignal): Promise<void> {
    try {
      const task = await this.app.client().getTask(id, { signal });
      if (this.id === id) {
        this.task = task;
        this.draw();
      }
    } catch (err) {
      if (!signal.aborted) {
        this.error.textContent = `Cannot read task ${id}: ${describe(err)}`;
      }
    }
  }

  private draw(): void {
    const task = this.task;
    if (!task) {
      replace(this.header, h("h2", {}, this.id), this.closeButton());
      return;
    }
    const spec = task.spec;
    replace(
      this.header,
      h("h2", { id: "task-title" }, spec?.name || task.id),
      this.closeButton(),
      h(
        "p",
        { class: "task-state" },
        h("span", { class: `badge state-${TaskState[task.state]?.toLowerCase()}` }, stateName(task.state)),
        " ",
        h("code", {}, task.id),
        task.stateReason ? h("span", { class: "reason" }, ` ${task.stateReason}`) : null,
        pullLink(task.pullRequest),
      ),
    );
    this.drawActions(task);
    replace(this.summary, task.summary ? h("div", {}, h("h3", {}, "Summary"), h("p", { class: "summary-text" }, task.summary)) : null);
    const dl = h("dl", {});
    const row = (name: string, value: string | undefined) => {
      if (value) {
        dl.append(h("dt", {}, name), h("dd", {}, value));
      }
    };
    row("project", spec?.project);
    row("agent", agentName(spec?.agent?.type) + (spec?.agent?.model ? ` (${spec.agent.model})` : ""));
    row("budget", spec?.agent?.maxBudgetUsd ? usd(spec.agent.maxBudgetUsd) : "no cap");
    row("timeout", task.timeoutSeconds ? duration(Number(task.timeoutSeconds)) : spec?.timeout);
    row("priority", Priority[spec?.priority || Priority.NORMAL]?.toLowerCase());
    row("tags", spec?.tags.join(", "));
    row("depends on", spec?.dependsOn.join(", "));
    row("review", spec?.reviewRequired ? "required" : "no");
    row("base", spec?.baseRef);
    row("created", date(task.createdAt)?.toLocaleString());
    replace(this.spec, h("pre", { class: "instructions" }, spec?.instructions || "(loading the instructions)"), dl);
  }

  private closeButton(): HTMLElement {
    return h("a", { class: "close", href: "#/", "aria-label": "close the task", title: "close (Esc)" }, "×");
  }

  private drawActions(task: Task): void {
    const parts: HTMLElement[] = [];
    if (task.state === TaskState.BLOCKED && task.question) {
      const q = task.question;
      const answer = this.answerBox;
      const send = (text: string) =>
        this.act("answered", () => this.app.client().raw.answerQuestion({ taskId: task.id, answer: text }));
      parts.push(
        h(
          "form",
          {
            class: "question",
            onsubmit: (event: Event) => {
              event.preventDefault();
              if (answer.value.trim()) {
                void send(answer.value);
              }
            },
          },
          h("h3", {}, "The agent asks"),
          h("p", { class: "question-text" }, q.text),
          q.context ? h("p", { class: "question-context" }, q.context) : null,
          q.choices.length
            ? h("div", { class: "choices" }, ...q.choices.map((c) => h("button", { type: "button", class: "choice", onclick: () => void send(c) }, c)))
            : null,
          answer,
          h("button", { type: "submit", class: "primary" }, "Send answer"),
        ),
      );
    }
    if (task.state === TaskState.READY) {
      const feedback = this.feedbackBox;
      parts.push(
        h(
          "div",
          { class: "review" },
          h("h3", {}, "Review"),
          h(
            "button",
            { type: "button", class: "primary", id: "accept", onclick: () => void this.act("accepted", () => this.app.client().raw.acceptTask({ taskId: task.id })) },
            "Accept",
          ),
          feedback,
          this.diff.comments.length
            ? h(
                "div",
                { class: "line-comments" },
                h("p", {}, `With ${plural(this.diff.comments.length, "line comment")}:`),
                h("ul", {}, ...this.diff.comments.map((c) => h("li", {}, h("code", {}, c.where), ` ${c.text}`))),
              )
            : null,
          h(
            "button",
            {
              type: "button",
              id: "reject",
              onclick: () => {
                const text = this.feedback(feedback.value);
                if (!text) {
                  this.error.textContent = "Say what to change (or comment on lines of the diff) before sending it back.";
                  feedback.focus();
                  return;
                }
                void this.act("sent back", async () => {
                  await this.app.client().raw.rejectTask({ taskId: task.id, feedback: text });
                  this.diff.comments.length = 0;
                });
              },
            },
            "Reject with feedback",
          ),
        ),
      );
    }
    const buttons = h("div", { class: "buttons" });
    if (!FINAL.includes(task.state)) {
      buttons.append(
        h(
          "button",
          {
            type: "button",
            id: "cancel",
            class: "danger",
            onclick: () => {
              if (confirm(`Cancel "${task.spec?.name || task.id}"?`)) {
                void this.act("cancelled", () => this.app.client().cancelTask(task.id, "cancelled from the board"));
              }
            },
          },
          "Cancel task",
        ),
      );
    }
    if (RETRYABLE.includes(task.state)) {
      buttons.append(h("button", { type: "button", id: "retry", onclick: () => void this.retry(task.id) }, "Retry as a new task"));
    }
    replace(this.actions, ...parts, buttons.childElementCount ? buttons : null);
  }

  /** A line comment was added: the review lists it. */
  private commented(): void {
    this.error.textContent = "";
    if (this.task) {
      this.drawActions(this.task);
    }
  }

  /** The feedback: what the reviewer wrote, then the diff's line comments. */
  private feedback(written: string): string {
    const lines = this.diff.comments.map((c) => `- ${c.where}: ${c.text}`);
    const parts = [written.trim(), lines.length ? `On the diff:\n${lines.join("\n")}` : ""];
    return parts.filter(Boolean).join("\n\n");
  }

  private async act(done: string, call: () => Promise<unknown>): Promise<void> {
    this.error.textContent = "";
    for (const b of this.actions.querySelectorAll("button")) {
      b.disabled = true;
    }
    try {
      await call();
      this.app.toast(`Task ${done}.`);
    } catch (err) {
      this.error.textContent = describe(err);
      for (const b of this.actions.querySelectorAll("button")) {
        b.disabled = false;
      }
    }
  }

  /** Submits the same spec again (there is no retry of a final task). */
  private async retry(id: string): Promise<void> {
    await this.act("submitted again", async () => {
      const old = await this.app.client().getTask(id);
      const { task } = await this.app.client().submitTask({ ...old.spec! });
      location.hash = `#/task/${task.id}`;
    });
  }

  private drawAttempts(executions: Execution[]): void {
    if (!executions.length) {
      replace(this.attempts, h("p", { class: "empty" }, "no attempt yet"));
      return;
    }
    const rows = executions.map((e) => {
      const started = date(e.startedAt)?.getTime();
      const ended = date(e.endedAt)?.getTime() ?? Date.now();
      const exit = e.error || (e.exitCode !== undefined ? `exit ${e.exitCode}` : "");
      const files = e.fileChanges.map((f) => `${f.path} +${f.added} −${f.removed}`).join("\n");
      return h(
        "tr",
        {},
        h("td", {}, String(e.attempt)),
        h("td", {}, (ExecutionState[e.state] ?? "").toLowerCase().replace(/_/g, " ")),
        h("td", {}, agentName(e.agent), e.model ? h("small", {}, ` ${e.model}`) : null),
        h("td", {}, usd(e.costUsd) + (e.costEstimated ? " (est.)" : "")),
        h("td", {}, `${count(e.inputTokens)} / ${count(e.outputTokens)}`),
        h("td", {}, String(e.turns)),
        h("td", {}, started ? duration((ended - started) / 1000) : ""),
        h("td", { class: FAILED_ATTEMPTS.includes(e.state) ? "error" : "" }, exit),
        h("td", { class: "files", title: files }, e.fileChanges.length ? plural(e.fileChanges.length, "file") : ""),
      );
    });
    replace(
      this.attempts,
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ...["#", "state", "agent", "cost", "tokens in / out", "turns", "time", "exit", "changes"].map((t) => h("th", {}, t)))),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }

  /** Reads every attempt's log in order and follows the running one, until the view closes. */
  private async follow(id: string, signal: AbortSignal): Promise<void> {
    const next = new Map<string, bigint>();
    const ended = new Set<string>();
    while (!signal.aborted) {
      const version = this.version;
      let executions: Execution[];
      try {
        executions = (await this.app.client().listExecutions(id, { pageSize: 500 }, { signal })).executions;
      } catch (err) {
        if (signal.aborted) {
          return;
        }
        this.log.setStatus(`cannot read the attempts (${describe(err)}); trying again`);
        await sleep(2000, signal);
        continue;
      }
      this.drawAttempts(executions);
      let failed = false;
      for (const execution of executions) {
        if (ended.has(execution.id) || signal.aborted) {
          continue;
        }
        if (!next.has(execution.id)) {
          next.set(execution.id, 0n);
          this.log.attempt(`attempt ${execution.attempt}: ${agentName(execution.agent)}${execution.model ? ` ${execution.model}` : ""}`);
        }
        const running = execution.state === ExecutionState.RUNNING;
        this.log.setStatus(running ? "following the running attempt" : "reading");
        try {
          const stream = this.app.client().streamLogs({ executionId: execution.id, fromOffset: next.get(execution.id), follow: running }, { signal });
          for await (const event of stream) {
            this.log.add(event);
            next.set(execution.id, event.offset + 1n);
          }
          if (!running) {
            ended.add(execution.id);
          }
        } catch (err) {
          if (signal.aborted) {
            return;
          }
          this.log.setStatus(`the log stream stopped (${describe(err)}); resuming`);
          failed = true;
          break;
        }
      }
      if (failed) {
        await sleep(1000, signal);
        continue;
      }
      const task = this.task;
      this.log.setStatus(`${count(this.log.events)} events${task && FINAL.includes(task.state) ? "" : "; waiting for the next attempt"}`);
      if (this.version !== version) {
        continue;
      }
      const running = task?.state === TaskState.RUNNING;
      if (running && !executions.some((e) => e.state === ExecutionState.RUNNING)) {
        await sleep(300, signal); // the attempt's row lands just after the task moves
        continue;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        signal.addEventListener("abort", () => resolve());
      });
      this.wake = undefined;
    }
  }
}

/** A link to the task's pull request (only an http(s) URL is a link). */
function pullLink(pull: { number: bigint; url: string; state: string } | undefined): HTMLElement | null {
  if (!pull || pull.number === 0n) {
    return null;
  }
  const text = ` PR #${pull.number} (${pull.state})`;
  if (!/^https?:\/\//.test(pull.url)) {
    return h("span", { class: "pull" }, text);
  }
  return h("a", { class: "pull", href: pull.url, target: "_blank", rel: "noopener noreferrer" }, text);
}
