// Starts real claudomator servers for the tests: the real binary
// (CLAUDOMATOR_BIN, else <repo>/target/debug/claudomator, built with
// `cargo build` when missing) on 127.0.0.1:0 with a temporary data dir,
// started in a fresh git repository (the default project); the port is read
// back from its `listening on` line.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";

import { ClaudomatorError } from "../src/index.js";

// dist/tests/harness.js -> the package root, then the repository root.
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO = resolve(PACKAGE_ROOT, "..", "..");
export const CLAUDE = join(REPO, ".agents", "node_modules", ".bin", "claude");
export const TOKEN = `tok-ts-${randomBytes(4).toString("hex")}`;
export const QUEUE_ONLY = "[executor]\nenabled = false\n";
const LISTENING = /listening on (127\.0\.0\.1:\d+)/;

export function serverBinary(): string {
  if (process.env.CLAUDOMATOR_BIN) {
    return process.env.CLAUDOMATOR_BIN;
  }
  const binary = join(REPO, "target", "debug", "claudomator");
  if (!existsSync(binary)) {
    execFileSync("cargo", ["build", "--quiet"], { cwd: REPO, stdio: "inherit" });
  }
  return binary;
}

function gitRepo(path: string): string {
  mkdirSync(path, { recursive: true });
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: "test",
    GIT_AUTHOR_EMAIL: "test@localhost",
    GIT_COMMITTER_NAME: "test",
    GIT_COMMITTER_EMAIL: "test@localhost",
  };
  execFileSync("git", ["init", "-q", "-b", "trunk"], { cwd: path, env });
  writeFileSync(join(path, "README.md"), "demo\n");
  execFileSync("git", ["add", "."], { cwd: path, env });
  execFileSync("git", ["commit", "-q", "-m", "init"], { cwd: path, env });
  return path;
}

/** Waits for `pattern` in a file a child writes to, past its first `after` characters. */
async function waitForLine(file: string, child: ChildProcess, what: string, timeoutMs = 30_000, after = 0): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  while (Date.now() < deadline) {
    text = existsSync(file) ? readFileSync(file, "utf8").slice(after) : "";
    const m = LISTENING.exec(text);
    if (m) {
      return m[1]!;
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not start within ${timeoutMs} ms:\n${text}`);
}

function spawnLogged(command: string, args: string[], log: string, options: { cwd?: string; env?: NodeJS.ProcessEnv }): ChildProcess {
  const fd = openSync(log, "a"); // a restarted server appends
  try {
    return spawn(command, args, { ...options, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

export interface Server {
  address: string;
  workdir: string;
  log: string;
  stop(): Promise<void>;
  /**
   * Stops the server and starts it again on the same port and data dir:
   * gracefully (SIGTERM), or killed (SIGKILL) with `kill`. `down` runs, and
   * `downForMs` passes, while it is away.
   */
  restart(options?: { down?: () => Promise<void>; downForMs?: number; kill?: boolean }): Promise<void>;
  /** Kills the server (`startAgain` brings it back on its port and data dir). */
  kill(): Promise<void>;
  startAgain(): Promise<void>;
}

export interface ServerOptions {
  config?: string;
  token?: string;
  /** Started before the server, stopped after it. */
  children?: ChildProcess[];
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const workdir = mkdtempSync(join(tmpdir(), "claudomator-ts-"));
  const project = gitRepo(join(workdir, "demo"));
  const configPath = join(workdir, "claudomator.toml");
  writeFileSync(configPath, options.config ?? "");
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("CLAUDOMATOR_") || k === "CLAUDOMATOR_BIN") {
      env[k] = v;
    }
  }
  if (options.token) {
    env.CLAUDOMATOR_TOKENS = options.token;
  }
  const log = join(workdir, "server.log");
  const args = (listen: string) => ["serve", "--listen", listen, "--http-listen", "127.0.0.1:0", "--data-dir", join(workdir, "data"), "--config", configPath];
  let child = spawnLogged(serverBinary(), args("127.0.0.1:0"), log, { cwd: project, env });
  const children = options.children ?? [];
  const stop = async () => {
    await stopProcess(child);
    for (const c of children) {
      await stopProcess(c);
    }
    rmSync(workdir, { recursive: true, force: true });
  };
  try {
    const address = await waitForLine(log, child, "claudomator serve");
    const kill = async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        return;
      }
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGKILL");
      await exited;
    };
    const startAgain = async () => {
      const written = readFileSync(log, "utf8").length;
      child = spawnLogged(serverBinary(), args(address), log, { cwd: project, env });
      const again = await waitForLine(log, child, "claudomator serve (restarted)", 30_000, written);
      assert.equal(again, address);
    };
    const restart = async (how: { down?: () => Promise<void>; downForMs?: number; kill?: boolean } = {}) => {
      if (how.kill) {
        await kill();
      } else {
        await stopProcess(child);
      }
      await how.down?.();
      await new Promise((r) => setTimeout(r, how.downForMs ?? 0));
      await startAgain();
    };
    return { address, workdir, log, stop, restart, kill, startAgain };
  } catch (err) {
    await stop();
    throw err;
  }
}

function tomlString(value: string): string {
  return JSON.stringify(value); // a JSON string is a valid TOML basic string
}

/**
 * A server that runs tasks with the real `claude` CLI against the scripted
 * Anthropic API (clients/testing/anthropic_mock.py) on loopback, or
 * `undefined` (after a loud SKIPPED line) when the CLI is not installed. With
 * CI set a missing CLI throws.
 */
export async function startAgentServer(options: { token?: string } = {}): Promise<Server | undefined> {
  if (!existsSync(CLAUDE)) {
    const message = `claude CLI not installed at ${CLAUDE}; run scripts/install-agents`;
    if (process.env.CI) {
      throw new Error(`${message} (CI is set)`);
    }
    process.stderr.write(`\n==========\nSKIPPED: ${message}\n==========\n`);
    return undefined;
  }
  const home = mkdtempSync(join(tmpdir(), "claudomator-ts-home-"));
  mkdirSync(join(home, ".claude"));
  mkdirSync(join(home, "tmp"));
  const mockLog = join(home, "mock.log");
  const mockOut = join(home, "mock.out");
  const fdOut = openSync(mockOut, "w");
  const fdErr = openSync(mockLog, "w");
  const mock = spawn("python3", [join(REPO, "clients", "testing", "anthropic_mock.py")], {
    stdio: ["ignore", fdOut, fdErr],
  });
  closeSync(fdOut);
  closeSync(fdErr);
  let mockAddress: string;
  try {
    mockAddress = await waitForLine(mockOut, mock, "anthropic mock");
  } catch (err) {
    await stopProcess(mock);
    throw err;
  }
  const agentEnv: Record<string, string> = {
    HOME: home,
    CLAUDE_CONFIG_DIR: join(home, ".claude"),
    TMPDIR: join(home, "tmp"),
    ANTHROPIC_BASE_URL: `http://${mockAddress}`,
    ANTHROPIC_API_KEY: "sk-ant-mock",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    DISABLE_TELEMETRY: "1",
    DISABLE_ERROR_REPORTING: "1",
    DISABLE_AUTOUPDATER: "1",
    CLAUDE_CODE_MAX_RETRIES: "1",
  };
  const envToml = Object.entries(agentEnv)
    .map(([k, v]) => `${k} = ${tomlString(v)}`)
    .join(", ");
  const config =
    `[executor]\nenabled = true\npoll_interval = "200ms"\n\n` +
    `[agents.claude]\ncommand = ${tomlString(CLAUDE)}\nenv = { ${envToml} }\n`;
  const server = await startServer({ config, children: [mock], token: options.token });
  return {
    ...server,
    stop: async () => {
      await server.stop();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

/**
 * A server that runs `local` tasks against the scripted OpenAI-compatible
 * API (clients/testing/openai_mock.py, so it needs `python3`) on loopback;
 * a task whose instructions hold `RATE-LIMIT-ONCE:<word>` is rate limited
 * once, then retried 1 s later.
 */
export async function startLocalServer(): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "claudomator-ts-mock-"));
  const mockOut = join(dir, "mock.out");
  const fdOut = openSync(mockOut, "w");
  const fdErr = openSync(join(dir, "mock.err"), "w");
  const mock = spawn("python3", [join(REPO, "clients", "testing", "openai_mock.py")], {
    stdio: ["ignore", fdOut, fdErr],
  });
  closeSync(fdOut);
  closeSync(fdErr);
  let mockAddress: string;
  try {
    mockAddress = await waitForLine(mockOut, mock, "openai mock");
  } catch (err) {
    await stopProcess(mock);
    throw err;
  }
  const config =
    `[executor]\nenabled = true\npoll_interval = "100ms"\nretry_base = "1s"\n\n` +
    `[local_model]\nendpoint = "http://${mockAddress}/v1"\nmax_retries = 0\n`;
  const server = await startServer({ config, children: [mock] });
  return {
    ...server,
    stop: async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Awaits `promise`, which must reject with a ClaudomatorError. */
export async function refused(promise: Promise<unknown>): Promise<ClaudomatorError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ClaudomatorError, `expected a ClaudomatorError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the call to fail");
}
