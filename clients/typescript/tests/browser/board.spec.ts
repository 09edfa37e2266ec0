// The web board (web/, served by the server itself at /) in a real headless
// Chromium against real servers: one running the real `claude` CLI against
// the scripted Anthropic API (clients/testing/anthropic_mock.py), for the
// whole life of a task from the form to Done, its diff included; queue-only ones for the token,
// cancel and retry, filters, and a restart under the page. Screenshots of the
// main views go to dist/board-shots/ (not committed).
import { expect, test, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { Client, TaskState } from "../../src/index.js";
import { PACKAGE_ROOT, QUEUE_ONLY, TOKEN, startAgentServer, startServer, type Server } from "../harness.js";

const SHOTS = join(PACKAGE_ROOT, "dist", "board-shots");
mkdirSync(SHOTS, { recursive: true });

/** Console errors and uncaught exceptions of the page, except those `allowed` matches. */
function consoleErrors(page: Page, allowed?: RegExp): string[] {
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error" && !allowed?.test(message.text())) {
      errors.push(message.text());
    }
  });
  page.on("pageerror", (err) => errors.push(`uncaught: ${err.message}`));
  return errors;
}

/**
 * Records, in the page, each column a card enters (`column id`), to see
 * cards move live. Page code as text: this file is compiled without the DOM.
 */
const RECORD_MOVES = `(() => {
  const moves = (window.moves = []);
  const last = new Map();
  new MutationObserver(() => {
    for (const card of document.querySelectorAll("#board .card")) {
      const column = card.closest("[data-column]")?.dataset.column ?? "";
      if (last.get(card.dataset.id) !== column) {
        last.set(card.dataset.id, column);
        moves.push(column + " " + card.dataset.id);
      }
    }
  }).observe(document.getElementById("board"), { childList: true, subtree: true });
})()`;

async function movesOf(page: Page, id: string): Promise<string[]> {
  const moves = (await page.evaluate("window.moves")) as string[];
  return moves.filter((m) => m.endsWith(` ${id}`)).map((m) => m.split(" ")[0]!);
}

const card = (page: Page, column: string, name: string) => page.locator(`[data-column="${column}"] .card`, { hasText: name });

test.describe("the board with the real claude CLI", () => {
  let server: Server | undefined;

  test.beforeAll(async () => {
    server = await startAgentServer();
  });

  test.afterAll(async () => {
    await server?.stop();
  });

  test("submit from the form, watch it move, answer its question, reject with feedback, accept", async ({ page }) => {
    test.skip(!server, "the claude CLI is not installed (scripts/install-agents)");
    test.setTimeout(240_000);
    const errors = consoleErrors(page);
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.goto(`http://${server!.address}/`);
    await expect(page.locator(".live-text")).toHaveText("live");
    await expect(page.locator("#agents")).toContainText("claude");
    await page.evaluate(RECORD_MOVES);

    // The form, from the keyboard; Elaborate fills it from one line (no local
    // model here, and the scripted model answers no spec: the template).
    await page.keyboard.press("n");
    const form = page.locator("dialog#submit");
    await expect(form).toBeVisible();
    await form.locator('textarea[name="instructions"]').fill("Create hello.txt with a greeting [ask]");
    await form.locator("#elaborate").click();
    await expect(form.locator(".source")).toContainText("Written by template", { timeout: 120_000 });
    await expect(form.locator('textarea[name="instructions"]')).toHaveValue(/Create hello\.txt with a greeting \[ask\]/);
    await form.locator('input[name="name"]').fill("Greeting file");
    await form.locator('select[name="agent"]').selectOption("claude");
    await form.locator('input[name="tags"]').fill("web, greeting");
    await form.locator('input[name="review"]').check();
    await page.screenshot({ path: join(SHOTS, "submit-form.png") });
    await form.locator('button[type="submit"]').click();
    await expect(form).toBeHidden();

    // It moves across the board by itself, to "needs you" with its question.
    const blocked = card(page, "blocked", "Greeting file");
    await expect(blocked).toBeVisible({ timeout: 90_000 });
    await expect(blocked).toContainText("Which greeting should hello.txt hold?");
    const id = (await blocked.getAttribute("data-id"))!;
    const moves = await movesOf(page, id);
    // Queued may last less than a frame: the executor claims it at once.
    expect(["queued", "running"]).toContain(moves[0]);
    expect(moves).toContain("running");
    expect(moves.at(-1)).toBe("blocked");
    await expect(page.locator('[data-column="blocked"] .count')).toHaveText("1");
    await page.screenshot({ path: join(SHOTS, "board.png") });

    // Open it: the question, the attempt, the log with the tool call folded.
    await blocked.focus();
    await page.keyboard.press("Enter");
    const view = page.locator("#task");
    await expect(view).toBeVisible();
    await expect(view.locator(".question-text")).toHaveText("Which greeting should hello.txt hold?");
    await expect(view.locator(".choice")).toHaveText(["hi", "hello"]);
    await expect(view.locator(".entry-text", { hasText: "I need to ask which greeting you want." })).toBeVisible();
    const tool = view.locator("details.entry-tool", { hasText: "question.json" });
    await expect(tool).toBeVisible();
    await tool.locator("summary").click();
    await expect(tool.locator("pre").first()).toContainText('content: {"question": "Which greeting should hello.txt hold?"');
    await expect(view.locator(".attempts tbody tr")).toHaveCount(1);
    await expect(view.locator(".attempts tbody tr").first()).toContainText("claude");
    await page.screenshot({ path: join(SHOTS, "task-question.png") });

    // Answer with a choice: the same session resumes and the work waits for review.
    await view.locator(".choice", { hasText: "hello" }).click();
    await expect(view.locator(".task-state .badge")).toHaveText("ready", { timeout: 90_000 });
    await expect(card(page, "review", "Greeting file")).toBeVisible();
    await expect(view.locator(".attempts tbody tr")).toHaveCount(2);
    await expect(view.locator(".entry-attempt", { hasText: "attempt 2" })).toBeVisible();
    await expect(view.locator(".entry-text", { hasText: "I'll create the file." }).first()).toBeVisible();
    await expect(view.locator(".summary-text")).toContainText("Created hello.txt");
    await page.screenshot({ path: join(SHOTS, "task-review.png") });

    // The diff of its branch: hello.txt added, one line, shown unified.
    const changed = view.locator('.diff-file[data-path="hello.txt"]');
    await expect(changed).toContainText("added");
    await expect(changed.locator("summary")).toContainText("+1 −0");
    await expect(changed.locator(".diff-add").last()).toHaveText("+hi");
    await expect(view.locator(".diff-summary")).toContainText(`1 file, +1 −0 on claudomator/${id}`);
    await view.locator(".changes").scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(SHOTS, "task-diff.png") });

    // Reject with feedback: back to work, again in the same session, then review again.
    await view.locator("#reject").click();
    await expect(view.locator("#task-error")).toHaveText(/^Say what to change/);
    // A comment on a line of the diff goes with the feedback.
    await view.locator("#feedback").fill("Add a newline at the end.");
    await changed.locator(".diff-add", { hasText: "+hi" }).click();
    await page.keyboard.type("Say hello instead");
    await page.keyboard.press("Enter");
    await expect(view.locator(".line-comments li")).toHaveText(["hello.txt:1 Say hello instead"]);
    await expect(view.locator("#feedback")).toHaveValue("Add a newline at the end.");
    await page.screenshot({ path: join(SHOTS, "task-line-comment.png") });

    const sent = page.waitForRequest((r) => r.url().endsWith("/claudomator.v1.ClaudomatorService/RejectTask"));
    await view.locator("#reject").click();
    const body = (await sent).postDataBuffer()?.toString("utf8") ?? "";
    expect(body).toContain("Add a newline at the end.\n\nOn the diff:\n- hello.txt:1: Say hello instead");
    await expect(view.locator(".attempts tbody tr")).toHaveCount(3, { timeout: 90_000 });
    await expect(view.locator(".task-state .badge")).toHaveText("ready", { timeout: 90_000 });
    const node = new Client(server!.address);
    try {
      const { executions } = await node.listExecutions(id);
      expect(executions.map((e) => e.sessionId)).toEqual(Array(3).fill(executions[0]!.sessionId));
      expect(executions[0]!.sessionId).not.toBe("");
    } finally {
      node.close();
    }

    // Accept: done.
    await view.locator("#accept").click();
    await expect(view.locator(".task-state .badge")).toHaveText("completed");
    await page.keyboard.press("Escape");
    await expect(view).toBeHidden();
    await expect(card(page, "done", "Greeting file")).toBeVisible();
    const all = await movesOf(page, id);
    expect(all).toContain("review");
    expect(all.at(-1)).toBe("done");
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(SHOTS, "board-phone.png"), fullPage: true });
    expect(errors).toEqual([]);
  });
});

test.describe("the board with a token", () => {
  let server: Server;

  test.beforeAll(async () => {
    server = await startServer({ token: TOKEN, config: QUEUE_ONLY });
  });

  test.afterAll(async () => {
    await server?.stop();
  });

  test("asks for the token, says when it is wrong, then cancels and retries a task", async ({ page }) => {
    const errors = consoleErrors(page);
    await page.goto(`http://${server.address}/`);
    const dialog = page.locator("dialog#token");
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText("A token is needed");
    await expect(page.locator("#banner")).toContainText("This server needs a token");
    await dialog.locator("#token-input").fill("not-the-token");
    await dialog.locator('button[type="submit"]').click();
    await expect(dialog).toContainText("The token was refused");
    await expect(page.locator("#banner")).toContainText("The token was refused");
    await page.screenshot({ path: join(SHOTS, "token-refused.png") });
    await dialog.locator("#token-input").fill(TOKEN);
    await dialog.locator('button[type="submit"]').click();
    await expect(page.locator(".live-text")).toHaveText("live");
    await expect(page.locator("#banner")).toBeHidden();

    // Submit (the executor is off: it stays queued), cancel it, retry it.
    await page.locator("#new-task").click();
    const form = page.locator("dialog#submit");
    await form.locator('textarea[name="instructions"]').fill("Tidy the changelog");
    await form.locator('input[name="tags"]').fill("docs");
    await form.locator('select[name="priority"]').selectOption("high");
    await form.locator('button[type="submit"]').click();
    const queued = card(page, "queued", "Tidy the changelog");
    await expect(queued).toBeVisible();
    await expect(queued).toContainText("high");
    await queued.click();
    const view = page.locator("#task");
    await expect(view.locator(".log-status")).toContainText("waiting for the next attempt");
    page.once("dialog", (confirm) => void confirm.accept());
    await view.locator("#cancel").click();
    await expect(view.locator(".task-state .badge")).toHaveText("cancelled");
    await expect(card(page, "failed", "Tidy the changelog")).toBeVisible();
    const first = page.url();
    await view.locator("#retry").click();
    await expect(page).not.toHaveURL(first);
    await expect(view.locator(".task-state .badge")).toHaveText("queued");
    await expect(card(page, "queued", "Tidy the changelog")).toBeVisible();
    await expect(page.locator('[data-column="failed"] .count')).toHaveText("1");

    // A reload keeps the token for this tab.
    await page.reload();
    await expect(page.locator(".live-text")).toHaveText("live");
    await expect(dialog).toBeHidden();
    expect(errors).toEqual([]);
  });
});

test.describe("the board without a token", () => {
  let server: Server;

  test.beforeAll(async () => {
    server = await startServer({ config: QUEUE_ONLY });
  });

  test.afterAll(async () => {
    await server?.stop();
  });

  test("filters, and reconnects by itself when the server restarts under it", async ({ page }) => {
    // While the server is down the browser logs the refused connections.
    const errors = consoleErrors(page, /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|Failed to load resource/);
    const node = new Client(server.address);
    try {
      await node.submitTask({ instructions: "Fix the login page", tags: ["web"], project: "" });
      await node.submitTask({ instructions: "Speed up the importer", tags: ["perf"] });
      await page.goto(`http://${server.address}/`);
      await expect(page.locator(".live-text")).toHaveText("live");
      await expect(page.locator('[data-column="queued"] .count')).toHaveText("2");

      // Filters: text, then tag.
      await page.keyboard.press("/");
      await page.keyboard.type("importer");
      await expect(page.locator('[data-column="queued"] .card')).toHaveText([/Speed up the importer/]);
      await page.locator("#filter-text").fill("");
      await page.locator("#filter-tag").selectOption("web");
      await expect(page.locator('[data-column="queued"] .card')).toHaveText([/Fix the login page/]);
      await page.locator("#filter-tag").selectOption("");

      // The server goes away: the page says so; it comes back: live again,
      // and a change made after the restart arrives without a reload.
      await server.restart({
        down: async () => {
          await expect(page.locator("#banner")).toContainText("The server cannot be reached", { timeout: 20_000 });
          await page.screenshot({ path: join(SHOTS, "server-unreachable.png") });
        },
      });
      await expect(page.locator(".live-text")).toHaveText("live", { timeout: 20_000 });
      await expect(page.locator("#banner")).toBeHidden();
      const node2 = new Client(server.address);
      try {
        const { task } = await node2.submitTask({ instructions: "Written after the restart" });
        await expect(card(page, "queued", "Written after the restart")).toBeVisible();
        await node2.cancelTask(task.id, "not needed");
        await expect(card(page, "failed", "Written after the restart")).toBeVisible();
        expect(TaskState[(await node2.getTask(task.id)).state]).toBe("CANCELLED");
      } finally {
        node2.close();
      }
      await expect(page.locator('[data-column="queued"] .count')).toHaveText("2");
    } finally {
      node.close();
    }
    expect(errors).toEqual([]);
  });
});
