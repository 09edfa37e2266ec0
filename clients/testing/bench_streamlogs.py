"""StreamLogs throughput: the Rust CLI, the Python client and the TypeScript
client reading the same execution's log, in the same run.

Run through clients/bench-streamlogs (it installs, generates and builds
first). A benchmark: it prints figures and asserts nothing.

One server (CLAUDOMATOR_BIN, else target/release when at least as new as
target/debug, else target/debug) runs one task whose agent is
clients/testing/fake_claude.py, so that the execution's log holds
--events + a few events. Once it has ended, each client reads the whole log
(StreamLogs from offset 0, no follow) --rounds times, interleaved:

- rust: `claudomator logs EXEC --json` (one process per round: connection,
  decoding, one JSON line per event to a pipe), timed from spawn to exit;
- python: `Client.stream_logs(EXEC)`, timed from the call to the last event;
- typescript: `Client.streamLogs({executionId})`, the same.

The median round is reported, as events per second and as a ratio to rust.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

from claudomator_client import Client, TaskState  # noqa: E402

LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")


def server_binary() -> Path:
    if os.environ.get("CLAUDOMATOR_BIN"):
        return Path(os.environ["CLAUDOMATOR_BIN"])
    debug, release = REPO / "target/debug/claudomator", REPO / "target/release/claudomator"
    if release.exists() and (not debug.exists() or release.stat().st_mtime >= debug.stat().st_mtime):
        return release
    if not debug.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True)
    return debug


def start_server(binary: Path, work: Path, events: int) -> tuple[subprocess.Popen, str]:
    project = work / "demo"
    project.mkdir()
    git_env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@localhost",
                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@localhost")
    for args in (["init", "-q", "-b", "trunk"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=project, check=True, env=git_env)
    config = work / "claudomator.toml"
    config.write_text(
        '[executor]\nenabled = true\npoll_interval = "200ms"\n\n'
        f'[agents.claude]\ncommand = {json.dumps(str(HERE / "fake_claude.py"))}\n'
        f'env = {{ FAKE_CLAUDE_EVENTS = "{events}" }}\n'
    )
    log = work / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDOMATOR_")}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
             "--config", str(config)],
            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = LISTENING.search(log.read_text(errors="replace"))
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start:\n" + log.read_text(errors="replace"))


def rust_round(binary: Path, address: str, execution: str) -> tuple[int, float]:
    start = time.perf_counter()
    out = subprocess.run([str(binary), "logs", execution, "--json", "--server", f"http://{address}"],
                         capture_output=True, check=True)
    seconds = time.perf_counter() - start
    return out.stdout.count(b"\n"), seconds


def python_round(client: Client, execution: str) -> tuple[int, float]:
    start = time.perf_counter()
    events = 0
    for event in client.stream_logs(execution):
        events += 1
    seconds = time.perf_counter() - start
    assert event.offset == events - 1
    return events, seconds


def typescript_round(address: str, execution: str) -> tuple[int, float]:
    out = subprocess.run(["node", str(HERE / "streamlogs_ts.mjs"), address, execution],
                         capture_output=True, check=True, text=True)
    result = json.loads(out.stdout)
    return result["events"], result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description="StreamLogs events/s per client, same execution, same run")
    parser.add_argument("--events", type=int, default=20000, help="text events the fake agent prints")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    binary = server_binary()
    has_logs = subprocess.run([str(binary), "logs", "--help"], capture_output=True).returncode == 0
    with tempfile.TemporaryDirectory(prefix="claudomator-bench-") as tmp:
        server, address = start_server(binary, Path(tmp), args.events)
        try:
            client = Client(address, call_timeout=None)
            task = client.submit_task("Print a long log", agent="claude").task
            deadline = time.monotonic() + 300
            while client.get_task(task.id).state not in (
                TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED
            ) and time.monotonic() < deadline:
                time.sleep(0.2)
            final = client.get_task(task.id)
            execution = client.list_executions(task.id).executions[0].id
            print(f"server and CLI: {binary}")
            print(f"execution {execution}: task {TaskState.Name(final.state)}, "
                  f"{args.rounds} rounds per client, median reported")

            readers = {}
            if has_logs:
                readers["rust CLI (logs --json)"] = lambda: rust_round(binary, address, execution)
            else:
                print("(this binary has no `logs` subcommand: no rust column)")
            readers["python (grpcio)"] = lambda: python_round(client, execution)
            readers["typescript (connect-node)"] = lambda: typescript_round(address, execution)

            python_round(client, execution)  # warm the server's page cache and the channel
            samples: dict[str, list[tuple[int, float]]] = {name: [] for name in readers}
            for _ in range(args.rounds):
                for name, read in readers.items():
                    samples[name].append(read())
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=30)

    rates = {}
    print(f"\n{'client':<28}{'events':>8}{'median s':>11}{'events/s':>12}{'ratio':>8}")
    for name, rounds in samples.items():
        counts = {n for n, _ in rounds}
        seconds = statistics.median(s for _, s in rounds)
        events = max(counts)
        rates[name] = events / seconds
        base = next(iter(rates.values()))
        note = "" if len(counts) == 1 else f"  (counts differ: {sorted(counts)})"
        print(f"{name:<28}{events:>8}{seconds:>11.3f}{rates[name]:>12,.0f}{rates[name] / base:>8.2f}{note}")
    first = next(iter(rates))
    print(f"\nratio = events/s / {first} events/s")


if __name__ == "__main__":
    main()
