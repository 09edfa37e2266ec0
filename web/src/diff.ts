// A task's changes (GetTaskDiff): its branch against the commit it started
// from, file by file with +/- counts, each file's unified diff folded and
// drawn when opened (the first few open at once).
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

function patch(file: FileDiff): HTMLElement {
  if (file.binary) {
    return h("p", { class: "empty" }, "binary file");
  }
  if (!file.patch) {
    return h("p", { class: "empty" }, file.patchTruncated ? "too large to show" : "no text change");
  }
  const pre = h("pre", { class: "diff" });
  const fragment = document.createDocumentFragment();
  for (const line of file.patch.split("\n")) {
    const cls = lineClass(line);
    fragment.append(h("span", { class: `diff-${cls || "context"}` }, line), "\n");
  }
  pre.append(fragment);
  return h("div", {}, pre, file.patchTruncated ? h("p", { class: "empty" }, "cut for the size limit") : null);
}

function fileEntry(file: FileDiff, open: boolean): HTMLElement {
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
      details.append(patch(file));
    }
  };
  details.addEventListener("toggle", draw);
  details.open = open;
  draw();
  return details;
}

export class DiffView {
  readonly element = h("section", { class: "changes" }, h("p", { class: "empty" }, "loading"));

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
        ...diff.files.map((file, i) => fileEntry(file, i < OPEN_AT_ONCE)),
      );
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
