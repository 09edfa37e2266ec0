// The browser entry (src/browser.ts, `claudomator-client/browser`) bundles
// for a browser with esbuild and pulls in no Node module: no `node:` import
// and no Node built-in anywhere in its import graph. Prints its size.
import assert from "node:assert/strict";
import { builtinModules } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";

import { build, type Metafile } from "esbuild";

import { PACKAGE_ROOT } from "./harness.js";

const builtins = new Set(builtinModules);

/** Every import in the graph that names a Node module, as "importer -> module". */
function nodeImports(metafile: Metafile): string[] {
  return Object.entries(metafile.inputs).flatMap(([file, input]) =>
    input.imports
      .filter((i) => i.path.startsWith("node:") || builtins.has(i.path.split("/")[0]!))
      .map((i) => `${file} -> ${i.path}`),
  );
}

async function bundle(entry: string, platform: "browser" | "node") {
  return build({
    entryPoints: [join(PACKAGE_ROOT, "src", entry)],
    bundle: true,
    format: "esm",
    platform,
    target: "es2022",
    minify: true,
    write: false,
    metafile: true,
    logLevel: "silent",
  });
}

test("the browser entry bundles for a browser with no Node module in it", async (t) => {
  const result = await bundle("browser.ts", "browser");
  assert.deepEqual(nodeImports(result.metafile), []);
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((f) => f.includes("@connectrpc/connect-web/")), "connect-web is in the bundle");
  assert.ok(!inputs.some((f) => f.includes("@connectrpc/connect-node/")), "connect-node is not");
  const code = result.outputFiles[0]!.contents;
  t.diagnostic(`browser bundle: ${code.length} bytes minified, ${gzipSync(code).length} gzipped, ${inputs.length} modules`);
  // The compiled entry (what `claudomator-client/browser` resolves to) too.
  const compiled = await build({
    entryPoints: [join(PACKAGE_ROOT, "dist", "src", "browser.js")],
    bundle: true,
    platform: "browser",
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  assert.deepEqual(nodeImports(compiled.metafile), []);
});

test("the same check finds the Node entry's node:http2", async () => {
  const result = await bundle("index.ts", "node");
  const found = nodeImports(result.metafile);
  assert.ok(found.some((i) => i.endsWith("-> node:http2")), found.join("\n"));
  // And a browser bundle of the Node entry fails on its Node imports.
  await assert.rejects(bundle("index.ts", "browser"), /node:|http2/);
});
