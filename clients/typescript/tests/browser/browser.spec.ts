// The browser client in a real headless Chromium (Debian's, at
// /usr/bin/chromium: scripts/install-chromium), driven by @playwright/test
// (playwright.config.ts): a real server with a token and this page's origin
// in cors_origins; a page (page.ts, bundled here with esbuild) served from
// another origin calls it over gRPC-Web.
import { expect, test } from "@playwright/test";
import { build } from "esbuild";
import { createServer, type Server as HttpServer } from "node:http";
import { join } from "node:path";

import { Client, TaskState } from "../../src/index.js";
import { PACKAGE_ROOT, QUEUE_ONLY, TOKEN, startServer, type Server } from "../harness.js";

const HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>claudomator browser client</title></head>
<body><h1>claudomator</h1><output id="status">running</output><ol id="steps"></ol>
<script type="module" src="/page.js"></script></body></html>`;

let pages: HttpServer;
let pagePort: number;
let server: Server;

test.beforeAll(async () => {
  const bundle = await build({
    entryPoints: [join(PACKAGE_ROOT, "tests", "browser", "page.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0]!.text;
  pages = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/page.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(HTML);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => pages.listen(0, "127.0.0.1", resolve));
  pagePort = (pages.address() as { port: number }).port;
  server = await startServer({
    token: TOKEN,
    config: `cors_origins = ["http://127.0.0.1:${pagePort}"]\n${QUEUE_ONLY}`,
  });
});

test.afterAll(async () => {
  await server?.stop();
  await new Promise((resolve) => pages?.close(resolve));
});

function pageUrl(host: string, query: Record<string, string>): string {
  const params = new URLSearchParams({ server: `http://${server.address}`, ...query });
  return `http://${host}:${pagePort}/?${params}`;
}

test("a page submits, lists and gets a task, and watches it change, over gRPC-Web", async ({ page }) => {
  await page.goto(pageUrl("127.0.0.1", { token: TOKEN }));
  await expect(page.locator("#status")).toHaveText("done", { timeout: 20_000 });
  const step = (name: string) => page.locator(`[data-step="${name}"]`);

  await expect(step("watch")).toHaveText("snapshotEnd");
  const submitted = (await step("submit").textContent()) ?? "";
  expect(submitted).toMatch(/^true QUEUED [0-9A-Z]{26}$/);
  const id = submitted.split(" ")[2]!;
  await expect(step("list")).toHaveText(id);
  await expect(step("get")).toHaveText(`${id} Fix the flaky test, from a browser`);
  await expect(step("watch-created")).toHaveText(`change QUEUED ${id}`);
  await expect(step("cancel")).toHaveText("CANCELLED");
  await expect(step("watch-cancelled")).toHaveText(`change CANCELLED ${id}`);
  // The status of a refused call is read from the exposed grpc-* headers.
  await expect(step("no-token")).toHaveText(/^UNAUTHENTICATED missing `authorization: Bearer <token>`/);

  // The same task, over gRPC from Node.
  const node = new Client(server.address, { token: TOKEN });
  try {
    const task = await node.getTask(id);
    expect(TaskState[task.state]).toBe("CANCELLED");
    expect(task.spec?.instructions).toBe("Fix the flaky test, from a browser");
  } finally {
    node.close();
  }
});

test("a page from an origin not in cors_origins cannot call", async ({ page }) => {
  const refused: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") {
      refused.push(message.text());
    }
  });
  // localhost is not 127.0.0.1: another origin, the same page server.
  await page.goto(pageUrl("localhost", { token: TOKEN, mode: "list" }));
  // fetch fails (Chromium: "Failed to fetch"), which Connect calls UNKNOWN.
  await expect(page.locator("#status")).toHaveText(/^failed: UNKNOWN /, { timeout: 20_000 });
  await expect(page.locator('[data-step="list"]')).toHaveCount(0);
  expect(refused.join("\n")).toMatch(/CORS policy/);
  // From the listed origin the same call goes through.
  await page.goto(pageUrl("127.0.0.1", { token: TOKEN, mode: "list" }));
  await expect(page.locator("#status")).toHaveText("done", { timeout: 20_000 });
  await expect(page.locator('[data-step="list"]')).toHaveText(/^[01] tasks$/);
});
