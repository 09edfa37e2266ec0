// A task's changes (GetTaskDiff): its branch against the commit it started
// from, file by file with +/- counts, each file's unified diff folded and
// drawn when opened (the first few open at once). Clicking a line opens a
// comment box under it; the comments go with the review's feedback.
import { Code, FileDiffStatus, asError, describe, type Client, type FileDiff } from "./api.js";
import { count, h, plural, replace } from "./dom.js";

/** Files shown open when the diff loads. */
const OPEN_AT_ONCE = 5;

function lineClass(line: string): string {
  if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff --git") || line.startsWith("index ")) {
    return "meta";
  }
  if (line.startsWith("@@")) {
    return "hunk";
  }
  if (line.startsWith("+")) {
    return "add";
  }
  if (line.startsWith("-")) {
    return "del";
  }
  return "";
}

/** A comment on one line of the diff, for the feedback. */
export interface LineComment {
  /** `path:12` (a line of the new file) or `path:-7` (a removed line of the old one). */
  where: string;
  text: string;
}

function patch(file: FileDiff, comment: (line: HTMLElement, where: string) => void): HTMLElement {
  if (file.binary) {
    return h("p", { class: "empty" }, "binary file");
  }
  if (!file.patch) {
    return h("p", { class: "empty" }, file.patchTruncated ? "too large to show" : "no text change");
  }
  const pre = h("pre", { class: "diff", title: "click a line to comment on it" });
  const fragment = document.createDocumentFragment();
  let oldLine = 0;
  let newLine = 0;
  for (const line of file.patch.replace(/\n$/, "").split("\n")) {
    const cls = lineClass(line);
    const span = h("span", { class: `diff-${cls || "context"}` }, line);
    const hunk = cls === "hunk" ? /^@@ -(\d+)(?:,\d+)? \+(\d+)/.exec(line) : null;
    if (hunk) {
      oldLine = Number(hunk[1]);
      newLine = Number(hunk[2]);
    } else if (cls === "add") {
      span.dataset.where = `${file.path}:${newLine++}`;
    } else if (cls === "del") {
      span.dataset.where = `${file.oldPath || file.path}:-${oldLine++}`;
    } else if (cls === "" && newLine > 0 && !line.startsWith("\\")) {
      span.dataset.where = `${file.path}:${newLine++}`;
      oldLine++;
    }
    fragment.append(span, "\n");
  }
  pre.append(fragment);
  pre.addEventListener("click", (event) => {
    const line = (event.target as HTMLElement).closest<HTMLElement>("span[data-where]");
    if (line) {
      comment(line, line.dataset.where!);
    }
  });
  return h("div", {}, pre, file.patchTruncated ? h("p", { class: "empty" }, "cut for the size limit") : null);
}

function fileEntry(file: FileDiff, open: boolean, comment: (line: HTMLElement, where: string) => void): HTMLElement {
  const status = (FileDiffStatus[file.status] ?? "").toLowerCase();
  const name = file.oldPath ? `${file.oldPath} → ${file.path}` : file.path;
  const details = h(
    "details",
    { class: "diff-file", "data-path": file.path },
    h(
      "summary",
      {},
      h("span", { class: `badge diff-status-${status}` }, status),
      " ",
      h("code", {}, name),
      " ",
      h("span", { class: "diff-added" }, `+${count(file.added)}`),
      " ",
      h("span", { class: "diff-removed" }, `−${count(file.removed)}`),
    ),
  );
  let drawn = false;
  const draw = () => {
    if (details.open && !drawn) {
      drawn = true;
      details.append(patch(file, comment));
    }
  };
  details.addEventListener("toggle", draw);
  details.open = open;
  draw();
  return details;
}

function commentText(comment: LineComment): HTMLElement {
  return h("span", { class: "line-comment-text" }, `${comment.where}: ${comment.text}`);
}

export class DiffView {
  readonly element = h("section", { class: "changes" }, h("p", { class: "empty" }, "loading"));
  /** Line comments not sent yet. */
  readonly comments: LineComment[] = [];

  /** `changed` is told each time a comment is added. */
  constructor(private changed: () => void = () => {}) {}

  /** A box under `line`; Enter adds its comment, Esc closes it. */
  private commentOn(line: HTMLElement, where: string): void {
    if (line.nextElementSibling?.classList.contains("line-comment")) {
      return;
    }
    const input = h("input", { class: "line-comment-input", "aria-label": `comment on ${where}`, placeholder: `comment on ${where}, Enter to add` });
    const box = h("span", { class: "line-comment" }, input);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && input.value.trim()) {
        this.comments.push({ where, text: input.value.trim() });
        box.replaceChildren(commentText(this.comments.at(-1)!));
        box.closest("pre")?.scrollTo({ left: 0 });
        this.changed();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        box.remove();
      }
    });
    line.after(box);
    input.focus({ preventScroll: true }); // the diff keeps its place
  }

  async load(client: Client, taskId: string, signal: AbortSignal): Promise<void> {
    try {
      const diff = await client.raw.getTaskDiff({ taskId }, { signal });
      if (signal.aborted) {
        return;
      }
      if (!diff.files.length) {
        replace(this.element, h("p", { class: "empty" }, `no changes on ${diff.branch}`));
        return;
      }
      const added = diff.files.reduce((n, f) => n + Number(f.added), 0);
      const removed = diff.files.reduce((n, f) => n + Number(f.removed), 0);
      replace(
        this.element,
        h(
          "p",
          { class: "diff-summary" },
          `${plural(diff.files.length, "file")}, `,
          h("span", { class: "diff-added" }, `+${count(added)}`),
          " ",
          h("span", { class: "diff-removed" }, `−${count(removed)}`),
          ` on ${diff.branch} (${diff.baseCommit.slice(0, 10)}..${diff.headCommit.slice(0, 10)})`,
          diff.truncated ? "; some text was left out for the size limits" : "",
        ),
        ...diff.files.map((file, i) => fileEntry(file, i < OPEN_AT_ONCE, (line, where) => this.commentOn(line, where))),
      );
      // Comments made before a reload stay under their lines.
      for (const comment of this.comments) {
        const line = [...this.element.querySelectorAll<HTMLElement>("span[data-where]")].find((s) => s.dataset.where === comment.where);
        line?.after(h("span", { class: "line-comment" }, commentText(comment)));
      }
    } catch (err) {
      if (signal.aborted) {
        return;
      }
      // No branch yet (nothing committed, or not run): not an error to shout about.
      const quiet = asError(err).code === Code.FailedPrecondition || asError(err).code === Code.NotFound;
      replace(this.element, h("p", { class: quiet ? "empty" : "error" }, quiet ? `no changes to show: ${asError(err).message}` : describe(err)));
    }
  }
}
