// The board: one column per thing a person does next, the filters, the
// counts, and the agents' status line. Columns are redrawn only when a task
// in them (or the filter) changed, at most once a frame.
import { AgentType, Priority, TaskState, type GetSystemStatusResponse, type Task } from "./api.js";
import { ago, byId, count, date, h, replace } from "./dom.js";

export interface Column {
  key: string;
  title: string;
  hint: string;
  states: TaskState[];
}

export const COLUMNS: Column[] = [
  { key: "queued", title: "Queued", hint: "waiting for a slot or for the tasks they depend on", states: [TaskState.PENDING, TaskState.QUEUED] },
  { key: "running", title: "Running", hint: "an agent works on them", states: [TaskState.RUNNING] },
  { key: "blocked", title: "Needs you", hint: "the agent asked a question", states: [TaskState.BLOCKED] },
  { key: "review", title: "Review", hint: "finished; accept or send back", states: [TaskState.READY] },
  { key: "done", title: "Done", hint: "accepted or completed", states: [TaskState.COMPLETED] },
  {
    key: "failed",
    title: "Failed",
    hint: "failed, timed out, over budget or cancelled",
    states: [TaskState.FAILED, TaskState.TIMED_OUT, TaskState.BUDGET_EXCEEDED, TaskState.CANCELLED],
  },
];

/** Cards drawn per column; the count says how many match. */
const CARDS_PER_COLUMN = 200;

export function columnOf(state: TaskState): Column | undefined {
  return COLUMNS.find((c) => c.states.includes(state));
}

export function stateName(state: TaskState): string {
  return (TaskState[state] ?? "UNSPECIFIED").replace(/_/g, " ").toLowerCase();
}

export function agentName(agent: AgentType | undefined): string {
  return agent ? (AgentType[agent] ?? "auto").toLowerCase() : "auto";
}

export interface Filter {
  project: string;
  tag: string;
  agent: string;
  text: string;
}

export function matches(task: Task, filter: Filter): boolean {
  const spec = task.spec;
  if (filter.project && spec?.project !== filter.project) {
    return false;
  }
  if (filter.tag && !spec?.tags.includes(filter.tag)) {
    return false;
  }
  if (filter.agent && agentName(spec?.agent?.type) !== filter.agent) {
    return false;
  }
  if (filter.text) {
    const needle = filter.text.toLowerCase();
    const haystack = [task.id, spec?.name, spec?.instructions, spec?.project, ...(spec?.tags ?? []), task.stateReason]
      .join(" ")
      .toLowerCase();
    if (!haystack.includes(needle)) {
      return false;
    }
  }
  return true;
}

const millis = (task: Task, field: "createdAt" | "updatedAt") => date(task[field])?.getTime() ?? 0;

/** Queued: as the scheduler takes them (priority, then oldest); the rest: latest change first. */
function order(column: Column): (a: Task, b: Task) => number {
  if (column.key === "queued") {
    return (a, b) =>
      (b.spec?.priority || Priority.NORMAL) - (a.spec?.priority || Priority.NORMAL) ||
      millis(a, "createdAt") - millis(b, "createdAt");
  }
  return (a, b) => millis(b, "updatedAt") - millis(a, "updatedAt");
}

function card(task: Task): HTMLElement {
  const spec = task.spec;
  const priority = spec?.priority === Priority.HIGH ? "high" : spec?.priority === Priority.LOW ? "low" : "";
  return h(
    "a",
    { class: `card state-${TaskState[task.state]?.toLowerCase()}`, href: `#/task/${task.id}`, "data-id": task.id },
    h("span", { class: "card-name" }, spec?.name || task.id),
    task.state === TaskState.BLOCKED && task.question ? h("span", { class: "card-question" }, task.question.text) : null,
    h(
      "span",
      { class: "card-meta" },
      h("span", { class: "badge" }, stateName(task.state)),
      priority ? h("span", { class: `badge priority-${priority}` }, priority) : null,
      h("span", {}, agentName(spec?.agent?.type)),
      spec?.project ? h("span", {}, spec.project) : null,
      task.attempts > 1 ? h("span", {}, `${task.attempts} attempts`) : null,
      h("time", { datetime: date(task.updatedAt)?.toISOString() ?? "" }, ago(task.updatedAt)),
    ),
    spec?.tags.length ? h("span", { class: "card-tags" }, ...spec.tags.map((t) => h("span", { class: "tag" }, t))) : null,
    task.stateReason && task.state !== TaskState.BLOCKED ? h("span", { class: "card-reason" }, task.stateReason) : null,
  );
}

export class BoardView {
  private bodies = new Map<string, HTMLElement>();
  private counts = new Map<string, HTMLElement>();
  filter: Filter = { project: "", tag: "", agent: "", text: "" };

  constructor(private tasks: Map<string, Task>) {
    const board = byId("board");
    for (const column of COLUMNS) {
      const counter = h("span", { class: "count" }, "0");
      const body = h("div", { class: "cards" });
      board.append(
        h(
          "section",
          { class: `column column-${column.key}`, "data-column": column.key, "aria-label": column.title },
          h("h2", { title: column.hint }, column.title, " ", counter),
          body,
        ),
      );
      this.bodies.set(column.key, body);
      this.counts.set(column.key, counter);
    }
  }

  /** Redraws the columns `ids` are in now or were in before (all when undefined). */
  render(ids?: string[], previous?: Map<string, TaskState>): void {
    let dirty: Set<string>;
    if (ids === undefined) {
      dirty = new Set(COLUMNS.map((c) => c.key));
    } else {
      dirty = new Set();
      for (const id of ids) {
        const now = this.tasks.get(id);
        const before = previous?.get(id);
        for (const state of [now?.state, before]) {
          const column = state === undefined ? undefined : columnOf(state);
          if (column) {
            dirty.add(column.key);
          }
        }
      }
    }
    if (dirty.size === 0) {
      return;
    }
    const byColumn = new Map<string, Task[]>(COLUMNS.filter((c) => dirty.has(c.key)).map((c) => [c.key, []]));
    for (const task of this.tasks.values()) {
      const column = columnOf(task.state);
      const list = column && byColumn.get(column.key);
      if (list && matches(task, this.filter)) {
        list.push(task);
      }
    }
    for (const column of COLUMNS) {
      const list = byColumn.get(column.key);
      if (!list) {
        continue;
      }
      list.sort(order(column));
      const shown = list.slice(0, CARDS_PER_COLUMN).map(card);
      const more = list.length - shown.length;
      replace(
        this.bodies.get(column.key)!,
        ...shown,
        more > 0 ? h("p", { class: "more" }, `and ${count(more)} more: narrow the filter`) : null,
        list.length === 0 ? h("p", { class: "empty" }, "nothing here") : null,
      );
      this.counts.get(column.key)!.textContent = count(list.length);
    }
  }

  /** The filter choices from the tasks known (projects, tags). */
  choices(): { projects: string[]; tags: string[] } {
    const projects = new Set<string>();
    const tags = new Set<string>();
    for (const task of this.tasks.values()) {
      if (task.spec?.project) {
        projects.add(task.spec.project);
      }
      for (const tag of task.spec?.tags ?? []) {
        tags.add(tag);
      }
    }
    return { projects: [...projects].sort(), tags: [...tags].sort() };
  }
}

/** The agents line: each agent's running/limit, queue, set aside until when, or why it cannot run. */
export function renderAgents(status: GetSystemStatusResponse): HTMLElement[] {
  const items = status.agents.map((agent) => {
    const name = agentName(agent.agent);
    const until = date(agent.rateLimitedUntil);
    let state: string;
    let cls: string;
    if (!agent.available) {
      state = "not installed";
      cls = "off";
    } else if (until && until.getTime() > Date.now()) {
      state = `set aside until ${until.toLocaleTimeString()}`;
      cls = "limited";
    } else {
      state = `${agent.running}/${agent.maxConcurrent || "∞"} running, ${count(agent.queued)} queued`;
      cls = agent.running > 0 ? "busy" : "idle";
    }
    return h("li", { class: `agent agent-${cls}`, title: agent.detail || agent.credentials }, h("strong", {}, name), " ", state);
  });
  const executor = status.executorEnabled
    ? `${status.running}/${status.maxConcurrent} running, ${count(status.queued)} queued`
    : "executor off: tasks are accepted, not run";
  return [h("li", { class: "agent" }, h("strong", {}, "server"), ` ${status.serverVersion}: ${executor}`), ...items];
}

