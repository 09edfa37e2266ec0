// What the Node client (client.ts, gRPC over HTTP/2) and the browser client
// (browser.ts, gRPC-Web over fetch) share: the call wrappers over a Connect
// transport, and the types they take. Nothing here may import a Node module
// (tests/browser-bundle.test.ts checks it).
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  createClient,
  type CallOptions,
  type Client as ConnectClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";

import { ClaudomatorError } from "./errors.js";
import {
  ClaudomatorService,
  ListTasksRequestSchema,
  WatchTasksRequestSchema,
  type ElaborateResponse,
  type GetSystemStatusResponse,
  type GetTaskDiffResponse,
  type ListExecutionsResponse,
  type ListTasksResponse,
  type MergeTaskResponse,
  type OpenPullRequestResponse,
  type PruneTasksResponse,
  type WatchTasksResponse,
} from "./gen/claudomator/v1/service_pb.js";
import {
  TaskSpecSchema,
  TaskState,
  type AgentType,
  type Execution,
  type LogEvent,
  type Task,
} from "./gen/claudomator/v1/task_pb.js";

/** A task spec as a plain object: `{ instructions: "...", tags: ["ci"], priority: Priority.HIGH }`. */
export type TaskSpecInit = MessageInitShape<typeof TaskSpecSchema>;
/** A ListTasks filter: `{ states: [TaskState.QUEUED], tag: "ci", pageSize: 50 }`. */
export type ListTasksInit = Omit<MessageInitShape<typeof ListTasksRequestSchema>, "$typeName">;
/** A WatchTasks filter: `{ tag: "ci", states: [TaskState.FAILED] }`, `{ taskIds: [id] }`, `{ cursor }`. */
export type WatchTasksInit = Omit<MessageInitShape<typeof WatchTasksRequestSchema>, "$typeName">;

export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Deadline of every unary call in milliseconds (default 30 000; 0: none). Streams are not bounded. */
  timeoutMs?: number;
  /** Extra Connect interceptors, run after the token is set. */
  interceptors?: Interceptor[];
  /**
   * How many times a read, or a submit with an idempotency key, that meets
   * UNAVAILABLE (a restarting server, a dropped connection) is tried again
   * (default 5; pauses from 100 ms doubling to 2 s, within the deadline).
   */
  retries?: number;
}

/**
 * Connect's `CallOptions` (`timeoutMs`: this call's deadline, retries
 * included; `headers`: its metadata; `signal`), and `retries` for this call.
 */
export interface CallOpts extends CallOptions {
  retries?: number;
}

const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2_000;

export interface SubmitOptions extends CallOpts {
  /** A second submit with the same key returns the first task (`created: false`). */
  idempotencyKey?: string;
  /** A client-chosen id (a ULID); empty lets the server assign one. */
  taskId?: string;
  /**
   * Refuse the task (FAILED_PRECONDITION, nothing stored) when no live
   * server can run its agent now; by default it is accepted anyway and
   * `agentUnavailable` says why.
   */
  requireAgent?: boolean;
}

/** What SubmitTask answered: the task, and whether this call created it. */
export interface Submitted {
  task: Task;
  /** False when the idempotency key matched an existing task (which is `task`). */
  created: boolean;
  /** Empty when a live server can run the task's agent; else why none can (the task was still accepted). */
  agentUnavailable: string;
}

export interface StreamLogsRequestInit {
  /** The execution to read; or give `taskId` for the task's latest execution. */
  executionId?: string;
  taskId?: string;
  /** The first event wanted (0 = from the start); pass the last `offset + 1` to resume. */
  fromOffset?: number | bigint;
  /** Keep the stream open for live events until the execution ends. */
  follow?: boolean;
  /** Also send DEBUG events (the agent CLI's stderr chatter), left out by default; offsets count them either way. */
  includeDebug?: boolean;
}

export interface WatchOptions extends CallOptions {
  /**
   * How long `watch` keeps trying to reconnect to an unreachable server
   * (milliseconds; default 60 000) before it throws UNAVAILABLE.
   */
  reconnectForMs?: number;
}

export interface WaitOptions extends CallOptions {
  /** Give up after this long (milliseconds) with DEADLINE_EXCEEDED; default: no limit. */
  maxWaitMs?: number;
}

/** What `wait` resolves to: the task where it stopped, and its latest execution (none when it never ran). */
export interface Waited {
  task: Task;
  execution: Execution | undefined;
}

/** The states a task leaves by itself; `wait` stops at any other. */
const GOING_ON = new Set<TaskState>([TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING]);
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 2_000;

/** The state `event` says task `taskId` is in, if it says. */
function watchedState(event: WatchTasksResponse, taskId: string): TaskState | undefined {
  if (event.event.case === "snapshot" && event.event.value.id === taskId) {
    return event.event.value.state;
  }
  if (event.event.case === "change" && event.event.value.task?.id === taskId) {
    return event.event.value.toState;
  }
  return undefined;
}

/**
 * A connection that drops under a call (the server killed or restarted)
 * surfaces from Node's HTTP/2 as CANCELLED ("stream closed with error code
 * CANCEL") though nobody cancelled: that is UNAVAILABLE, as gRPC says it.
 */
function dropped(error: ClaudomatorError, signal: AbortSignal | undefined): ClaudomatorError {
  if (error.code === Code.Canceled && !signal?.aborted) {
    return new ClaudomatorError(Code.Unavailable, error.message, { cause: error.cause });
  }
  return error;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `127.0.0.1:7070` or a URL (`http://` plain, `https://` TLS), like the CLI's --server. */
export function baseUrl(address: string): string {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  return url.replace(/\/+$/, "");
}

/** The token's interceptor (when there is a token), then the caller's. */
export function interceptorsFor(options: ClientOptions): Interceptor[] {
  const interceptors: Interceptor[] = [];
  const token = options.token;
  if (token) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  interceptors.push(...(options.interceptors ?? []));
  return interceptors;
}

/**
 * The calls of a claudomator client over any Connect transport; `Client`
 * (Node, gRPC) and the browser's `Client` (gRPC-Web) build the transport.
 *
 * Every method returns the generated message types (`Task`, `Execution`,
 * `LogEvent`, ...). A call whose response only wraps one message resolves to
 * that message (`getTask` -> `Task`); one that says more resolves to the
 * response (`submitTask` -> `{ task, created }`, `listTasks` ->
 * `{ tasks, nextPageToken }`). Failures reject with a `ClaudomatorError`
 * carrying the gRPC code and the server's message.
 */
export class ClientBase {
  /** The generated Connect client, for anything this class does not wrap. */
  readonly raw: ConnectClient<typeof ClaudomatorService>;
  readonly baseUrl: string;
  private readonly timeoutMs: number | undefined;
  private readonly retries: number;

  protected constructor(baseUrl: string, transport: Transport, options: ClientOptions) {
    this.baseUrl = baseUrl;
    this.timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs || undefined;
    this.retries = options.retries ?? 5;
    this.raw = createClient(ClaudomatorService, transport);
  }

  /**
   * Runs a unary call; a read (or `retry`) that meets UNAVAILABLE is tried
   * again with backoff, within the call's deadline (`timeoutMs`, else the
   * client's), up to `retries` times (the call's, else the client's).
   */
  private async call<T>(run: (options: CallOptions) => Promise<T>, options: CallOpts = {}, retry = false): Promise<T> {
    const { retries = this.retries, ...callOptions } = options;
    const budget = callOptions.timeoutMs === undefined ? this.timeoutMs : callOptions.timeoutMs || undefined;
    const deadline = budget === undefined ? undefined : Date.now() + budget;
    for (let attempt = 0; ; attempt++) {
      const timeoutMs = deadline === undefined ? undefined : Math.max(1, deadline - Date.now());
      let error: ClaudomatorError;
      try {
        return await run({ ...callOptions, timeoutMs });
      } catch (err) {
        error = dropped(ClaudomatorError.from(err), callOptions.signal);
      }
      const pause = Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS) * (0.8 + 0.4 * Math.random());
      const giveUp =
        !retry ||
        error.code !== Code.Unavailable ||
        attempt >= retries ||
        callOptions.signal?.aborted ||
        (deadline !== undefined && Date.now() + pause >= deadline);
      if (giveUp) {
        throw error;
      }
      await sleep(pause, callOptions.signal).catch((err: unknown) => {
        throw ClaudomatorError.from(err);
      });
    }
  }

  /**
   * Submits a task: a spec object, or just its instructions. `timeout` in the
   * spec is the task's limit per attempt ("45m"), not a deadline for this call.
   */
  async submitTask(spec: TaskSpecInit | string, options: SubmitOptions = {}): Promise<Submitted> {
    const { idempotencyKey = "", taskId = "", requireAgent = false, ...callOptions } = options;
    const init: TaskSpecInit = typeof spec === "string" ? { instructions: spec } : oneTagPerString(spec);
    const request = { spec: create(TaskSpecSchema, init), idempotencyKey, taskId, requireAgent };
    // Only a keyed submit is retried: a retry then cannot create a second task.
    const response = await this.call((o) => this.raw.submitTask(request, o), callOptions, idempotencyKey !== "");
    return {
      task: required(response.task, "SubmitTask"),
      created: response.created,
      agentUnavailable: response.agentUnavailable,
    };
  }

  async getTask(id: string, options?: CallOpts): Promise<Task> {
    const response = await this.call((o) => this.raw.getTask({ id }, o), options, true);
    return required(response.task, "GetTask");
  }

  /** One page of tasks, newest first; `nextPageToken` is empty on the last page. */
  listTasks(filter: ListTasksInit = {}, options?: CallOpts): Promise<ListTasksResponse> {
    return this.call((o) => this.raw.listTasks(filter, o), options, true);
  }

  /** Every matching task, newest first, fetching page after page. */
  async *iterTasks(filter: Omit<ListTasksInit, "pageToken"> = {}, options?: CallOpts): AsyncGenerator<Task> {
    let pageToken = "";
    do {
      const page = await this.listTasks({ ...filter, pageToken }, options);
      yield* page.tasks;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Cancels a task in any non-final state (FAILED_PRECONDITION otherwise). */
  async cancelTask(id: string, reason = "", options?: CallOpts): Promise<Task> {
    const response = await this.call((o) => this.raw.cancelTask({ id, reason }, o), options);
    return required(response.task, "CancelTask");
  }

  async getExecution(id: string, options?: CallOpts): Promise<Execution> {
    const response = await this.call((o) => this.raw.getExecution({ id }, o), options, true);
    return required(response.execution, "GetExecution");
  }

  /** A task's executions (attempts), oldest first. */
  listExecutions(
    taskId: string,
    page: { pageSize?: number; pageToken?: string } = {},
    options?: CallOpts,
  ): Promise<ListExecutionsResponse> {
    return this.call((o) => this.raw.listExecutions({ taskId, ...page }, o), options, true);
  }

  /**
   * An execution's log events, as an async iterator: history from
   * `fromOffset`, then (with `follow`) live events until the execution ends.
   * Leaving the loop early (`break`) cancels the stream; so does aborting
   * `options.signal` (which rejects with code CANCELLED).
   */
  async *streamLogs(request: StreamLogsRequestInit, options?: CallOptions): AsyncGenerator<LogEvent> {
    if (!request.executionId && !request.taskId) {
      throw new TypeError("streamLogs needs an executionId or a taskId");
    }
    const stream = this.raw.streamLogs(
      {
        executionId: request.executionId ?? "",
        taskId: request.taskId ?? "",
        fromOffset: BigInt(request.fromOffset ?? 0),
        follow: request.follow ?? false,
        includeDebug: request.includeDebug ?? false,
      },
      options,
    );
    try {
      for await (const response of stream) {
        const event = response.event;
        if (event) {
          // The agent's line is sent once, as the payload: fill `raw` back in.
          if (event.rawIsPayload && !event.raw) {
            event.raw = event.payloadJson;
          }
          yield event;
        }
      }
    } catch (err) {
      throw ClaudomatorError.from(err);
    }
  }

  /**
   * Matching tasks and their changes, as an async iterator that runs until
   * it is left (`break`) or `options.signal` aborts: first a snapshot (each
   * matching task, `event.case === "snapshot"`, newest first) and
   * `"snapshotEnd"`, then every `"change"` as it is committed, and
   * `"heartbeat"` while nothing matches. Pass the last event's `cursor` as
   * `{ cursor }` to resume after a break without a snapshot.
   */
  async *watchTasks(filter: WatchTasksInit = {}, options?: CallOptions): AsyncGenerator<WatchTasksResponse> {
    try {
      yield* this.raw.watchTasks(filter, options);
    } catch (err) {
      throw ClaudomatorError.from(err);
    }
  }
  /**
   * `watchTasks` that survives its connection: when the stream breaks
   * (UNAVAILABLE: a restart, a dropped connection) it reconnects with the
   * last event's cursor, so every change comes exactly once and in order,
   * with no second snapshot. Before the first cursor (in the snapshot) it
   * starts over, snapshot included. It keeps trying for `reconnectForMs`
   * (backing off from 100 ms to 2 s), then throws UNAVAILABLE; any other
   * error is thrown at once (OUT_OF_RANGE: the cursor is older than the
   * server keeps; watch again without it). Runs until `break` or `signal`.
   */
  async *watch(filter: WatchTasksInit = {}, options: WatchOptions = {}): AsyncGenerator<WatchTasksResponse> {
    const { reconnectForMs = 60_000, ...callOptions } = options;
    let cursor = filter.cursor ?? "";
    let pause = RECONNECT_FIRST_MS;
    let downSince: number | undefined;
    for (;;) {
      let broken: ClaudomatorError;
      try {
        for await (const event of this.raw.watchTasks({ ...filter, cursor }, callOptions)) {
          pause = RECONNECT_FIRST_MS;
          downSince = undefined;
          if (event.cursor) {
            cursor = event.cursor;
          }
          yield event;
        }
        broken = new ClaudomatorError(Code.Unavailable, "the watch ended (the server closed it)");
      } catch (err) {
        broken = dropped(ClaudomatorError.from(err), callOptions.signal);
        if (broken.code !== Code.Unavailable) {
          throw broken;
        }
      }
      const now = Date.now();
      downSince ??= now;
      if (now - downSince >= reconnectForMs) {
        throw broken;
      }
      try {
        await sleep(pause, callOptions.signal);
      } catch (err) {
        throw ClaudomatorError.from(err);
      }
      pause = Math.min(pause * 2, RECONNECT_MAX_MS);
    }
  }

  /**
   * Waits until the task stops going on by itself, across every retry (like
   * the CLI's `submit --wait`): a final state, BLOCKED (waiting for an
   * answer) or READY (waiting for a review). Resolves to the task and its
   * latest execution. Follows `watch`, so it survives a server restart.
   * `maxWaitMs` gives up with DEADLINE_EXCEEDED; NOT_FOUND for no such task.
   */
  async wait(taskId: string, options: WaitOptions = {}): Promise<Waited> {
    const { maxWaitMs, ...callOptions } = options;
    const timer = new AbortController();
    const timeout = maxWaitMs === undefined ? undefined : setTimeout(() => timer.abort(), maxWaitMs);
    const signal = callOptions.signal ? AbortSignal.any([callOptions.signal, timer.signal]) : timer.signal;
    try {
      for await (const event of this.watch({ taskIds: [taskId] }, { ...callOptions, signal })) {
        let state = watchedState(event, taskId);
        if (state === undefined && event.event.case === "snapshotEnd") {
          state = (await this.getTask(taskId, callOptions)).state; // not in the snapshot: NOT_FOUND
        }
        if (state !== undefined && !GOING_ON.has(state)) {
          break;
        }
      }
    } catch (err) {
      if (timer.signal.aborted && !callOptions.signal?.aborted) {
        throw new ClaudomatorError(Code.DeadlineExceeded, `wait: task ${taskId} still going after ${maxWaitMs} ms`, { cause: err });
      }
      throw err;
    } finally {
      clearTimeout(timeout);
    }
    return { task: await this.getTask(taskId, callOptions), execution: await this.latestExecution(taskId, callOptions) };
  }

  private async latestExecution(taskId: string, options?: CallOpts): Promise<Execution | undefined> {
    let latest: Execution | undefined;
    let pageToken = "";
    do {
      const page = await this.listExecutions(taskId, { pageSize: 500, pageToken }, options);
      latest = page.executions.at(-1) ?? latest;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return latest;
  }

  /** Answers a BLOCKED task's question: it is queued again and resumes its session with the answer. */
  async answerQuestion(taskId: string, answer: string, options?: CallOpts): Promise<Task> {
    const response = await this.call((o) => this.raw.answerQuestion({ taskId, answer }, o), options);
    return required(response.task, "AnswerQuestion");
  }

  /** Accepts a READY task's work: the task is COMPLETED. */
  async acceptTask(taskId: string, options?: CallOpts): Promise<Task> {
    const response = await this.call((o) => this.raw.acceptTask({ taskId }, o), options);
    return required(response.task, "AcceptTask");
  }

  /** Sends a READY task's work back with `feedback`: it is queued again and resumes its session. */
  async rejectTask(taskId: string, feedback: string, options?: CallOpts): Promise<Task> {
    const response = await this.call((o) => this.raw.rejectTask({ taskId, feedback }, o), options);
    return required(response.task, "RejectTask");
  }

  /**
   * A task's work for review: `branch`, `baseCommit`, `headCommit`, `files`
   * (path, status, line counts, patch), `truncated`. FAILED_PRECONDITION
   * while the task has no branch.
   */
  getTaskDiff(taskId: string, diff: { contextLines?: number } = {}, options?: CallOpts): Promise<GetTaskDiffResponse> {
    return this.call((o) => this.raw.getTaskDiff({ taskId, ...diff }, o), options, true);
  }

  /**
   * Takes a READY or COMPLETED task's work into a branch of its project
   * (`into`; empty: its default branch), merged or with `rebase` rebased. A
   * conflict changes nothing (FAILED_PRECONDITION naming the files).
   */
  mergeTask(taskId: string, merge: { into?: string; rebase?: boolean } = {}, options?: CallOpts): Promise<MergeTaskResponse> {
    return this.call((o) => this.raw.mergeTask({ taskId, ...merge }, o), options);
  }

  /**
   * Removes the sandboxes and branches ended tasks left (`force`: also
   * COMPLETED tasks' unmerged branches); `items` says what was done or why it
   * was kept. `dryRun` removes nothing.
   */
  pruneTasks(prune: { dryRun?: boolean; force?: boolean } = {}, options?: CallOpts): Promise<PruneTasksResponse> {
    return this.call((o) => this.raw.pruneTasks(prune, o), options);
  }

  /**
   * A task's pull request on its project's GitHub repository
   * (`pullRequest`: repository, number, url, state, head, base, automatic
   * resumes): the one it has, or for READY or COMPLETED work without one,
   * opened now (`opened`). FAILED_PRECONDITION when the project cannot open
   * pull requests or the task has no work to show.
   */
  openPullRequest(taskId: string, options?: CallOpts): Promise<OpenPullRequestResponse> {
    return this.call((o) => this.raw.openPullRequest({ taskId }, o), options);
  }

  /** What will work before you submit: each agent, counts, git, the data dir, the database... */
  getSystemStatus(options?: CallOpts): Promise<GetSystemStatusResponse> {
    return this.call((o) => this.raw.getSystemStatus({}, o), options, true);
  }

  /**
   * Turns a one-line request into a full task spec (`spec`) that
   * `submitTask` accepts, with `source`, `model` and `notes`. Can take
   * minutes when the models are slow: not bounded by the client's default
   * deadline (pass `{ timeoutMs }` to bound it).
   */
  elaborate(
    text: string,
    request: { project?: string; agent?: AgentType } = {},
    options?: CallOpts,
  ): Promise<ElaborateResponse> {
    return this.call((o) => this.raw.elaborate({ text, ...request }, o), { timeoutMs: 0, ...options });
  }
}

/** A bare string for `tags` or `dependsOn` (from JavaScript) is one element, not its characters. */
function oneTagPerString(spec: TaskSpecInit): TaskSpecInit {
  const loose = spec as { tags?: unknown; dependsOn?: unknown };
  if (typeof loose.tags !== "string" && typeof loose.dependsOn !== "string") {
    return spec;
  }
  const fixed: Record<string, unknown> = { ...spec };
  for (const key of ["tags", "dependsOn"] as const) {
    if (typeof loose[key] === "string") {
      fixed[key] = [loose[key]];
    }
  }
  return fixed as TaskSpecInit;
}

function required<T>(value: T | undefined, rpc: string): T {
  if (value === undefined) {
    throw new ClaudomatorError(Code.Unknown, `${rpc}: the server's response carries no message`);
  }
  return value;
}
