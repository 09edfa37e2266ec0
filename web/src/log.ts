// A task's log rendered for a person: the agent's text, each tool call
// folded with its input and its result, errors highlighted, system lines
// dimmed. Events are kept as entries in memory; only the newest WINDOW
// entries are in the page (earlier ones on demand), appended at most once a
// frame, so a 50,000-event log opens and follows cheaply. It follows the
// tail while the reader is at the bottom.
import { LogEventKind, type LogEvent } from "./api.js";
import { h, replace } from "./dom.js";

const WINDOW = 400;
const MORE = 1000;
const FLUSH_MS = 100;

interface Entry {
  kind: "text" | "tool" | "system" | "error" | "result" | "question" | "attempt";
  title: string;
  body?: string;
  result?: string;
  failed?: boolean;
  element?: HTMLElement;
}

type Json = Record<string, unknown>;

function parse(payload: string): Json | undefined {
  if (!payload) {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(payload);
    return value && typeof value === "object" ? (value as Json) : undefined;
  } catch {
    return undefined;
  }
}

/** The first content block of a Claude stream-json message. */
function firstBlock(payload: Json | undefined): Json | undefined {
  const message = payload?.message as Json | undefined;
  const content = message?.content;
  return Array.isArray(content) && content[0] && typeof content[0] === "object" ? (content[0] as Json) : undefined;
}

function pretty(value: unknown): string {
  if (typeof value === "string") {
    return value;
  }
  if (Array.isArray(value)) {
    // Tool results: [{type: "text", text}], read as their text.
    const texts = value.map((v) => (v && typeof v === "object" && "text" in v ? String((v as Json).text) : JSON.stringify(v, null, 2)));
    return texts.join("\n");
  }
  return JSON.stringify(value, null, 2);
}

/** A tool's input for a person: `key: value` lines, long text as it is. */
function describeInput(value: unknown): string {
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return pretty(value);
  }
  return Object.entries(value as Json)
    .map(([key, v]) => {
      if (typeof v === "string") {
        return v.includes("\n") ? `${key}:\n${v}` : `${key}: ${v}`;
      }
      return `${key}: ${JSON.stringify(v, null, 2)}`;
    })
    .join("\n");
}

export class LogView {
  readonly element: HTMLElement;
  private list: HTMLElement;
  private entries: Entry[] = [];
  /** Tool calls waiting for their result, by tool_use id. */
  private calls = new Map<string, Entry>();
  /** Index of the first entry in the page. */
  private first = 0;
  /** Entries added since the last frame. */
  private added: Entry[] = [];
  private frame = 0;
  private lastFlush = 0;
  private status: HTMLElement;
  private follow = true;
  events = 0;

  constructor() {
    this.list = h("div", { class: "log-entries", role: "log", "aria-live": "off" });
    this.status = h("p", { class: "log-status" }, "no log yet");
    this.element = h("div", { class: "log" }, this.status, this.list);
    this.list.addEventListener("scroll", () => {
      const bottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight;
      this.follow = bottom < 40;
    });
  }

  /** A heading between attempts. */
  attempt(title: string): void {
    this.push({ kind: "attempt", title });
  }

  add(event: LogEvent): void {
    this.events++;
    if (event.kind === LogEventKind.TEXT) {
      this.push({ kind: "text", title: event.text });
      return; // the text is all it needs: no payload to read
    }
    const payload = parse(event.payloadJson);
    const block = firstBlock(payload);
    switch (event.kind) {
      case LogEventKind.TOOL_CALL: {
        const input = block?.input ?? payload;
        const entry: Entry = { kind: "tool", title: event.text, body: input === undefined ? undefined : describeInput(input) };
        const id = block?.id;
        if (typeof id === "string") {
          this.calls.set(id, entry);
        }
        this.push(entry);
        return;
      }
      case LogEventKind.TOOL_RESULT: {
        const id = block?.tool_use_id;
        const call = typeof id === "string" ? this.calls.get(id) : undefined;
        const failed = block?.is_error === true || event.text.startsWith("tool error");
        const result = block?.content !== undefined ? pretty(block.content) : event.text;
        if (call) {
          this.calls.delete(id as string);
          call.result = result;
          call.failed = failed;
          if (call.element) {
            this.draw(call); // already in the page: redraw it in place
          }
          return;
        }
        this.push({ kind: failed ? "error" : "tool", title: event.text, result });
        return;
      }
      case LogEventKind.RESULT: {
        const failed = /error/i.test(event.text) || payload?.is_error === true;
        this.push({ kind: failed ? "error" : "result", title: event.text });
        return;
      }
      case LogEventKind.STDERR:
        this.push({ kind: "error", title: event.text });
        return;
      case LogEventKind.QUESTION:
        this.push({ kind: "question", title: event.text });
        return;
      default:
        this.push({ kind: /\b(error|failed|refused)\b/i.test(event.text) ? "error" : "system", title: event.text });
    }
  }

  /** The stream's state, under the heading ("following", "ended", an error). */
  setStatus(text: string): void {
    this.status.textContent = text;
  }

  private push(entry: Entry): void {
    this.entries.push(entry);
    this.added.push(entry);
    if (!this.frame) {
      // At most one drawing every FLUSH_MS: a burst (a long log opening) is
      // drawn a few times, not on every frame.
      const wait = Math.max(0, this.lastFlush + FLUSH_MS - performance.now());
      this.frame = window.setTimeout(() => requestAnimationFrame(() => this.flush()), wait);
    }
  }

  private flush(): void {
    this.frame = 0;
    this.lastFlush = performance.now();
    const added = this.added;
    this.added = [];
    const fragment = document.createDocumentFragment();
    if (added.length >= WINDOW && this.follow) {
      // A burst (a long log opening): only its tail goes into the page.
      for (let i = this.first; i < this.entries.length - added.length; i++) {
        this.entries[i]!.element?.remove();
        this.entries[i]!.element = undefined;
      }
      this.first = this.entries.length - WINDOW;
      for (const entry of added.slice(-WINDOW)) {
        fragment.append(this.draw(entry));
      }
    } else {
      for (const entry of added) {
        fragment.append(this.draw(entry));
      }
    }
    this.list.append(fragment);
    // Keep at most WINDOW entries beyond what the reader asked for.
    const inPage = this.entries.length - this.first;
    if (inPage > WINDOW && this.follow) {
      const drop = inPage - WINDOW;
      for (let i = this.first; i < this.first + drop; i++) {
        this.entries[i]!.element?.remove();
        this.entries[i]!.element = undefined;
      }
      this.first += drop;
    }
    this.drawEarlier();
    if (this.follow) {
      this.list.scrollTop = this.list.scrollHeight;
    }
  }

  /** The "show earlier" button when entries are out of the page. */
  private drawEarlier(): void {
    const existing = this.list.querySelector(":scope > .log-earlier");
    existing?.remove();
    if (this.first === 0) {
      return;
    }
    const button = h(
      "button",
      {
        class: "log-earlier",
        type: "button",
        onclick: () => {
          const from = Math.max(0, this.first - MORE);
          const fragment = document.createDocumentFragment();
          for (let i = from; i < this.first; i++) {
            fragment.append(this.draw(this.entries[i]!));
          }
          this.first = from;
          this.follow = false;
          button.after(fragment);
          this.drawEarlier();
        },
      },
      `show ${Math.min(MORE, this.first)} earlier entries (${this.first} not shown)`,
    );
    this.list.prepend(button);
  }

  private draw(entry: Entry): HTMLElement {
    let element: HTMLElement;
    if (entry.kind === "tool") {
      element = h(
        "details",
        { class: `entry entry-tool${entry.failed ? " entry-error" : ""}` },
        h("summary", {}, h("span", { class: "tool-name" }, entry.title), entry.failed ? h("span", { class: "badge badge-error" }, "error") : null),
        entry.body !== undefined ? h("div", { class: "tool-part" }, h("h4", {}, "input"), h("pre", {}, entry.body)) : null,
        entry.result !== undefined
          ? h("div", { class: "tool-part" }, h("h4", {}, "result"), h("pre", {}, entry.result))
          : h("p", { class: "tool-part pending" }, "no result yet"),
      );
    } else if (entry.kind === "attempt") {
      element = h("h3", { class: "entry entry-attempt" }, entry.title);
    } else {
      element = h("div", { class: `entry entry-${entry.kind}` }, entry.title);
    }
    if (entry.element) {
      const open = entry.element instanceof HTMLDetailsElement && entry.element.open;
      entry.element.replaceWith(element);
      if (open) {
        (element as HTMLDetailsElement).open = true;
      }
    }
    entry.element = element;
    return element;
  }

  clear(): void {
    this.entries = [];
    this.added = [];
    this.calls.clear();
    this.first = 0;
    this.events = 0;
    replace(this.list);
  }
}
