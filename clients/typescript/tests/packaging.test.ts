// The package: publishable (not private, ESM with types, dependency
// ranges), its version the claudomator release's (Cargo.toml), with a
// CHANGELOG entry.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { PACKAGE_ROOT, REPO } from "./harness.js";

const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as Record<string, unknown>;

test("the version is the release's and has a CHANGELOG entry", () => {
  const cargo = readFileSync(join(REPO, "Cargo.toml"), "utf8");
  const release = /^\[package\][^[]*?^version = "([^"]+)"/ms.exec(cargo)?.[1];
  assert.ok(release, "no version in Cargo.toml's [package]");
  assert.equal(pkg.version, release);
  const changelog = readFileSync(join(PACKAGE_ROOT, "CHANGELOG.md"), "utf8");
  assert.match(changelog, new RegExp(`^## ${release.replace(/\./g, "\\.")}\\b`, "m"));
  assert.ok((pkg.files as string[]).includes("CHANGELOG.md"));
});

test("publishable: not private, ESM with types, ranges", () => {
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.type, "module");
  const exports = pkg.exports as Record<string, { types?: string; default?: string }>;
  for (const entry of [".", "./browser"]) {
    assert.ok(exports[entry]?.types?.endsWith(".d.ts"), entry);
  }
  for (const [name, range] of Object.entries(pkg.dependencies as Record<string, string>)) {
    assert.match(range, /^\^\d/, `${name}: ${range} is a pin, not a range`);
  }
});
