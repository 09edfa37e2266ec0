// The board: one column per thing a person does next, the filters, the
// counts, and the agents' status line. Columns are redrawn only when a task
// in them (or the filter) changed, at most once a frame.
import { AgentType, Priority, TaskState, type GetSystemStatusResponse, type Task } from "./api.js";
import { ago, byId, count, date, h, replace, shortTime } from "./dom.js";

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

/** A timestamp in milliseconds, without making a Date (sorting compares thousands). */
const millis = (task: Task, field: "createdAt" | "updatedAt") => {
  const ts = task[field];
  return ts ? Number(ts.seconds) * 1000 + ts.nanos / 1e6 : 0;
};

/**
 * A task's place in its column, smaller first. Queued: as the scheduler
 * takes them (priority, then oldest); the rest: latest change first.
 */
function sortKey(column: Column, task: Task): number {
  if (column.key === "queued") {
    return -(task.spec?.priority || Priority.NORMAL) * 1e13 + millis(task, "createdAt");
  }
  return -millis(task, "updatedAt");
}

/** A column's tasks in order, kept sorted as tasks come and go (no re-sort per change). */
class SortedTasks {
  private keys: number[] = [];
  /** Read only outside. */
  tasks: Task[] = [];

  /** The first index whose key is above `key`. */
  private after(key: number): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.keys[mid]! <= key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  insert(task: Task, key: number): void {
    const at = this.after(key);
    this.keys.splice(at, 0, key);
    this.tasks.splice(at, 0, task);
  }

  remove(id: string, key: number): void {
    for (let i = this.after(key) - 1; i >= 0 && this.keys[i] === key; i--) {
      if (this.tasks[i]!.id === id) {
        this.keys.splice(i, 1);
        this.tasks.splice(i, 1);
        return;
      }
    }
  }

  /** All at once (a snapshot): one sort. */
  reset(entries: [Task, number][]): void {
    entries.sort((a, b) => a[1] - b[1]);
    this.keys = entries.map((e) => e[1]);
    this.tasks = entries.map((e) => e[0]);
  }
}

/** Each task's card, drawn once per version of the task (a change brings a new object). */
const cards = new WeakMap<Task, HTMLElement>();

function card(task: Task): HTMLElement {
  let element = cards.get(task);
  if (!element) {
    element = drawCard(task);
    cards.set(task, element);
  }
  return element;
}

function drawCard(task: Task): HTMLElement {
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
      h("time", { datetime: date(task.updatedAt)?.toISOString() ?? "", title: ago(task.updatedAt) }, shortTime(task.updatedAt)),
    ),
    spec?.tags.length ? h("span", { class: "card-tags" }, ...spec.tags.map((t) => h("span", { class: "tag" }, t))) : null,
    task.stateReason && task.state !== TaskState.BLOCKED ? h("span", { class: "card-reason" }, task.stateReason) : null,
  );
}

export class BoardView {
  private bodies = new Map<string, HTMLElement>();
  private counts = new Map<string, HTMLElement>();
  filter: Filter = { project: "", tag: "", agent: "", text: "" };
  private projects = new Set<string>();
  private tags = new Set<string>();
  /** Each column's tasks, sorted. */
  private lists = new Map<string, SortedTasks>(COLUMNS.map((c) => [c.key, new SortedTasks()]));
  /** Where each task is: its column and sort key. */
  private placed = new Map<string, { column: string; key: number }>();

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
  render(ids?: string[]): void {
    if (ids === undefined) {
      this.placed.clear();
      const entries = new Map<string, [Task, number][]>(COLUMNS.map((c) => [c.key, []]));
      for (const task of this.tasks.values()) {
        const column = columnOf(task.state);
        if (column) {
          const key = sortKey(column, task);
          entries.get(column.key)!.push([task, key]);
          this.placed.set(task.id, { column: column.key, key });
        }
      }
      for (const [key, list] of this.lists) {
        list.reset(entries.get(key)!);
      }
      this.redraw();
      return;
    }
    const dirty = new Set<string>();
    for (const id of ids) {
      const was = this.placed.get(id);
      if (was) {
        this.lists.get(was.column)!.remove(id, was.key);
        this.placed.delete(id);
        dirty.add(was.column);
      }
      const task = this.tasks.get(id);
      const column = task && columnOf(task.state);
      if (task && column) {
        const key = sortKey(column, task);
        this.lists.get(column.key)!.insert(task, key);
        this.placed.set(id, { column: column.key, key });
        dirty.add(column.key);
      }
    }
    for (const key of dirty) {
      this.draw(key);
    }
  }

  /** Redraws every column (the filter changed). */
  redraw(): void {
    COLUMNS.forEach((c) => this.draw(c.key));
  }

  private draw(key: string): void {
    const all = this.lists.get(key)!.tasks;
    const unfiltered = !this.filter.project && !this.filter.tag && !this.filter.agent && !this.filter.text;
    const shown: HTMLElement[] = [];
    let matching = 0;
    for (const task of all) {
      if (unfiltered || matches(task, this.filter)) {
        matching++;
        if (shown.length < CARDS_PER_COLUMN) {
          shown.push(card(task));
        } else if (unfiltered) {
          matching = all.length;
          break;
        }
      }
    }
    const more = matching - shown.length;
    replace(
      this.bodies.get(key)!,
      ...shown,
      more > 0 ? h("p", { class: "more" }, `and ${count(more)} more: narrow the filter`) : null,
      matching === 0 ? h("p", { class: "empty" }, "nothing here") : null,
    );
    this.counts.get(key)!.textContent = count(matching);
  }

  /** The filter choices from the tasks known (projects, tags); `ids` changed (all when undefined). */
  choices(ids?: string[]): { projects: string[]; tags: string[] } {
    if (ids === undefined) {
      this.projects.clear();
      this.tags.clear();
    }
    const tasks = ids === undefined ? this.tasks.values() : ids.map((id) => this.tasks.get(id));
    for (const task of tasks) {
      if (task?.spec?.project) {
        this.projects.add(task.spec.project);
      }
      for (const tag of task?.spec?.tags ?? []) {
        this.tags.add(tag);
      }
    }
    return { projects: [...this.projects].sort(), tags: [...this.tags].sort() };
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

