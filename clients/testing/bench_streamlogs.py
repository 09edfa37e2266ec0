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

Then WatchTasks throughput, on a second server whose executor is off (the
tasks stay QUEUED): --changes tasks are submitted with one tag, that many
task changes (their creations). Four watchers follow that tag from the
cursor taken just before the first submit, each in its own process, so
none waits on another:

- rust: `claudomator watch --tag T --cursor C --json`, its lines read as
  they come (the time includes the process start, like the logs column);
- python (sync): `Client.watch_tasks(tag=T, cursor=C)`;
- python (async): `AsyncClient.watch_tasks(...)`;
- typescript: `Client.watchTasks({tag, cursor})`.

live: all four follow while the tasks are submitted (from 4 threads);
each one's time to its last change is counted from the first submit, and
its lag from the last submit. replay: once every change is committed, each
watcher reads them all again from the cursor, --rounds times interleaved,
the median reported as changes per second with the ratio to rust.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

from claudomator_client import Client, TaskState  # noqa: E402

LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")


def server_binary() -> Path:
    if os.environ.get("CLAUDOMATOR_BIN"):
        return Path(os.environ["CLAUDOMATOR_BIN"]).resolve()
    debug, release = REPO / "target/debug/claudomator", REPO / "target/release/claudomator"
    if release.exists() and (not debug.exists() or release.stat().st_mtime >= debug.stat().st_mtime):
        return release
    if not debug.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True)
    return debug


def start_server(binary: Path, work: Path, events: int, queue_only: bool = False) -> tuple[subprocess.Popen, str]:
    work.mkdir(exist_ok=True)
    project = work / "demo"
    project.mkdir()
    git_env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@localhost",
                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@localhost")
    for args in (["init", "-q", "-b", "trunk"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=project, check=True, env=git_env)
    config = work / "claudomator.toml"
    if queue_only:
        config.write_text('[executor]\nenabled = false\n')
    else:
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


# -- WatchTasks -------------------------------------------------------------

class Watcher:
    """One watcher process following TAG from CURSOR until COUNT changes."""

    def __init__(self, name: str, argv: list[str], count: int, rust: bool) -> None:
        self.name = name
        self.count = count
        self.rust = rust
        self.start = time.time()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        if not self.rust:
            out = self.proc.stdout.read()
            self.proc.wait()
            if self.proc.returncode == 0:
                self.result = json.loads(out)
            return
        # The CLI runs until stopped: count its change lines as they come.
        events = 0
        for raw in self.proc.stdout:
            if b'"to":' in raw:
                events += 1
                if events == self.count:
                    break
        self.result = {"events": events, "start": self.start, "last": time.time()}
        self.proc.terminate()
        self.proc.wait()

    def wait(self, timeout: float) -> dict:
        self.thread.join(timeout)
        if self.thread.is_alive() or not self.result:
            self.proc.kill()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise SystemExit(f"{self.name}: no result ({err.strip()[-500:]})")
        return self.result


def watchers(binary: Path, address: str, tag: str, cursor: str, count: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "rust CLI (watch --json)": [str(binary), "watch", "--tag", tag, "--cursor", cursor, "--json",
                                    "--server", f"http://{address}"],
        "python sync (grpcio)": [py, str(HERE / "watch_py.py"), "sync", address, tag, cursor, str(count)],
        "python async (grpc.aio)": [py, str(HERE / "watch_py.py"), "async", address, tag, cursor, str(count)],
        "typescript (connect-node)": ["node", str(HERE / "watch_ts.mjs"), address, tag, cursor, str(count)],
    }


def watch_bench(binary: Path, work: Path, count: int, rounds: int) -> None:
    server, address = start_server(binary, work, 0, queue_only=True)
    try:
        client = Client(address, call_timeout=None)
        tag = "bench-" + uuid.uuid4().hex[:8]
        # The cursor before any change: a watch of the (empty) tag ends its
        # snapshot with it.
        stream = client.watch_tasks(tag=tag)
        cursor = next(e.cursor for e in stream if e.WhichOneof("event") == "snapshot_end")
        stream.cancel()
        argvs = watchers(binary, address, tag, cursor, count)

        print(f"\nWatchTasks: {count} task changes (submits with one tag, executor off), "
              f"one process per watcher")
        live = {name: Watcher(name, argv, count, name.startswith("rust")) for name, argv in argvs.items()}
        time.sleep(1.0)  # every watcher connected and waiting
        first_submit = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.submit_task(f"bench task {i}", tags=[tag]), range(count)))
        last_submit = time.time()
        results = {name: w.wait(300) for name, w in live.items()}
        print(f"live: {count} submits took {last_submit - first_submit:.2f} s "
              f"({count / (last_submit - first_submit):,.0f}/s)")
        print(f"{'watcher':<28}{'changes':>8}{'to last s':>11}{'lag s':>8}{'changes/s':>11}")
        for name, r in results.items():
            to_last = r["last"] - first_submit
            print(f"{name:<28}{r['events']:>8}{to_last:>11.3f}{r['last'] - last_submit:>8.3f}"
                  f"{r['events'] / to_last:>11,.0f}")

        samples: dict[str, list[dict]] = {name: [] for name in argvs}
        for _ in range(rounds):
            for name, argv in argvs.items():
                samples[name].append(Watcher(name, argv, count, name.startswith("rust")).wait(300))
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"replay: every change again from the cursor, {rounds} rounds per watcher, median")
    print(f"{'watcher':<28}{'changes':>8}{'median s':>11}{'changes/s':>12}{'ratio':>8}")
    base = None
    for name, rs in samples.items():
        seconds = statistics.median(r["last"] - r["start"] for r in rs)
        events = max(r["events"] for r in rs)
        rate = events / seconds
        base = base or rate
        print(f"{name:<28}{events:>8}{seconds:>11.3f}{rate:>12,.0f}{rate / base:>8.2f}")
    print(f"ratio = changes/s / {next(iter(samples))} changes/s (rust includes its process start)")


def main() -> None:
    parser = argparse.ArgumentParser(description="StreamLogs events/s per client, same execution, same run")
    parser.add_argument("--events", type=int, default=20000, help="text events the fake agent prints")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changes", type=int, default=2000,
                        help="task changes for the WatchTasks part (0: skip it)")
    parser.add_argument("--no-logs", action="store_true", help="skip the StreamLogs part")
    args = parser.parse_args()

    binary = server_binary()
    print(f"server and CLI: {binary}")
    if not args.no_logs:
        logs_bench(binary, args.events, args.rounds)
    if args.changes > 0:
        with tempfile.TemporaryDirectory(prefix="claudomator-bench-watch-") as tmp:
            watch_bench(binary, Path(tmp), args.changes, args.rounds)


def logs_bench(binary: Path, event_count: int, rounds: int) -> None:
    """StreamLogs: see the module's docstring."""
    has_logs = subprocess.run([str(binary), "logs", "--help"], capture_output=True).returncode == 0
    with tempfile.TemporaryDirectory(prefix="claudomator-bench-") as tmp:
        server, address = start_server(binary, Path(tmp), event_count)
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
            print(f"execution {execution}: task {TaskState.Name(final.state)}, "
                  f"{rounds} rounds per client, median reported")

            readers = {}
            if has_logs:
                readers["rust CLI (logs --json)"] = lambda: rust_round(binary, address, execution)
            else:
                print("(this binary has no `logs` subcommand: no rust column)")
            readers["python (grpcio)"] = lambda: python_round(client, execution)
            readers["typescript (connect-node)"] = lambda: typescript_round(address, execution)

            python_round(client, execution)  # warm the server's page cache and the channel
            samples: dict[str, list[tuple[int, float]]] = {name: [] for name in readers}
            for _ in range(rounds):
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
