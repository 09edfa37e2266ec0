// The README's five-line example type-checks and runs as written against a new server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

import { PACKAGE_ROOT, QUEUE_ONLY, startServer } from "./harness.js";

const run = promisify(execFile);

function example(): string {
  const readme = readFileSync(join(PACKAGE_ROOT, "README.md"), "utf8");
  const section = readme.split("## Example")[1]!;
  return /```ts\n([\s\S]*?)```/.exec(section)![1]!;
}

test("the README example runs against a fresh server", async () => {
  const code = example();
  assert.equal(code.trim().split("\n").length, 5, code);
  assert.ok(code.includes('"127.0.0.1:7070"'));

  // Inside the package, so that `import ... from "claudomator-client"`
  // resolves to this package (a self-reference through its "exports").
  const dir = join(PACKAGE_ROOT, "dist", "readme-example");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const server = await startServer({ config: QUEUE_ONLY });
  try {
    // As written, but for the port the new server got.
    writeFileSync(join(dir, "example.mts"), code.replace("127.0.0.1:7070", server.address));
    const tsc = join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc");
    await run(process.execPath, [
      tsc, "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
      "--types", "node", "--skipLibCheck", join(dir, "example.mts"),
    ], { cwd: PACKAGE_ROOT });
    const { stdout } = await run(process.execPath, [join(dir, "example.mjs")], { cwd: dir, timeout: 60_000 });
    const lines = stdout.trim().split("\n");
    assert.match(lines[0]!, /^[0-9A-Z]{26} QUEUED$/, stdout);
    assert.equal(lines[1], "[ 'Add a CONTRIBUTING.md' ]", stdout);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
