// Every task the board shows, kept live by one WatchTasks stream: the
// snapshot, then each change; after a disconnect it watches again from the
// last cursor (no snapshot, nothing missed), or from a new snapshot when the
// server no longer keeps that cursor. No polling.
import { asError, Code, type Client, type Task, type TaskChange } from "./api.js";

export type Connection =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "unreachable"; detail: string; retryInMs: number }
  | { state: "unauthorized"; detail: string };

export interface TaskStoreEvents {
  /** Tasks changed (ids given), or everything when `ids` is undefined. */
  changed(ids: string[] | undefined): void;
  connection(connection: Connection): void;
  /** One committed change, as it arrived (for the open task view). */
  change?(change: TaskChange): void;
}

export class TaskStore {
  readonly tasks = new Map<string, Task>();
  private cursor = "";
  private abort: AbortController | undefined;
  /** Bumped by `restart()` and `stop()`: an older loop ends. */
  private generation = 0;

  constructor(
    private client: () => Client,
    private events: TaskStoreEvents,
  ) {}

  /** Watches until `stop()`, reconnecting by itself. */
  async run(): Promise<void> {
    const generation = this.generation;
    const current = () => generation === this.generation;
    let delay = 500;
    while (current()) {
      this.events.connection({ state: "connecting" });
      try {
        await this.watchOnce(() => {
          delay = 500;
          this.events.connection({ state: "live" });
        });
        // The server closed the stream (it is shutting down): watch again.
      } catch (err) {
        if (!current()) {
          return;
        }
        const e = asError(err);
        if (e.code === Code.Unauthenticated || e.code === Code.PermissionDenied) {
          this.events.connection({ state: "unauthorized", detail: e.message });
          return; // restarted by `restart()` once there is a token
        }
        if (e.code === Code.OutOfRange) {
          this.cursor = ""; // too old: a new snapshot
          continue;
        }
        this.events.connection({ state: "unreachable", detail: `${e.codeName}: ${e.message}`, retryInMs: delay });
      }
      if (!current()) {
        return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  /** Drops the stream and watches again (a new token, a retry now). */
  restart(): void {
    this.generation++;
    this.abort?.abort();
    void this.run();
  }

  stop(): void {
    this.generation++;
    this.abort?.abort();
  }

  private async watchOnce(live: () => void): Promise<void> {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    const resuming = this.cursor !== "";
    const stream = this.client().watchTasks(resuming ? { cursor: this.cursor } : {}, { signal: abort.signal });
    const snapshot = new Map<string, Task>();
    let pending: string[] = [];
    let flush = 0;
    const schedule = () => {
      if (!flush) {
        flush = requestAnimationFrame(() => {
          flush = 0;
          const ids = pending;
          pending = [];
          this.events.changed(ids);
        });
      }
    };
    if (resuming) {
      live();
    }
    try {
      for await (const { event, cursor } of stream) {
        if (abort.signal.aborted) {
          return;
        }
        if (cursor) {
          this.cursor = cursor;
        }
        switch (event.case) {
          case "snapshot":
            snapshot.set(event.value.id, event.value);
            break;
          case "snapshotEnd":
            this.tasks.clear();
            for (const [id, task] of snapshot) {
              this.tasks.set(id, task);
            }
            snapshot.clear();
            live();
            this.events.changed(undefined);
            break;
          case "change": {
            const task = event.value.task;
            if (task) {
              const known = this.tasks.get(task.id);
              // A change carries no instructions; keep the ones we have.
              if (known?.spec && task.spec && !task.spec.instructions) {
                task.spec.instructions = known.spec.instructions;
              }
              this.tasks.set(task.id, task);
              pending.push(task.id);
              schedule();
            }
            this.events.change?.(event.value);
            break;
          }
          case "heartbeat":
            break;
        }
      }
    } finally {
      if (flush) {
        cancelAnimationFrame(flush);
        if (pending.length) {
          this.events.changed(pending);
        }
      }
    }
  }
}
