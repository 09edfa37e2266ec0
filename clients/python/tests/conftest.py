"""Starts real claudomator servers for the tests.

Each server is the real binary (`CLAUDOMATOR_BIN`, else
`<repo>/target/debug/claudomator`, built with `cargo build` when missing) on
`127.0.0.1:0` with a temporary data dir, started in a fresh git repository
(the default project); the port is read back from its `listening on` line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTING = REPO / "clients" / "testing"
CLAUDE = REPO / ".agents" / "node_modules" / ".bin" / "claude"
TOKEN = "tok-python-" + uuid.uuid4().hex[:8]
_LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")


def server_binary() -> Path:
    explicit = os.environ.get("CLAUDOMATOR_BIN")
    if explicit:
        return Path(explicit)
    binary = REPO / "target" / "debug" / "claudomator"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True)
    return binary


def git_repo(path: Path) -> Path:
    """A git repository with one commit on `trunk`."""
    path.mkdir(parents=True)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@localhost",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@localhost",
    )
    subprocess.run(["git", "init", "-q", "-b", "trunk"], cwd=path, check=True, env=env)
    (path / "README.md").write_text("demo\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=path, check=True, env=env)
    return path


def wait_for_line(path: Path, pattern: re.Pattern[str], proc: subprocess.Popen, what: str,
                  timeout: float = 30.0, after: int = 0) -> re.Match[str]:
    """The first match of `pattern` in the file past its first `after` characters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")[after:] if path.exists() else ""
        m = pattern.search(text)
        if m:
            return m
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening:\n{text}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout}s:\n{text}")


@dataclass
class Server:
    address: str
    proc: subprocess.Popen
    workdir: Path
    log: Path
    token: Optional[str] = None
    children: list[subprocess.Popen] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    cwd: Optional[Path] = None
    env: dict = field(default_factory=dict)

    def _stop_server(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self._stop_server()
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def restart(self, down_for: float = 0.0) -> None:
        """Kills the server and starts it again on the same port and data
        dir (after `down_for` seconds). Killed, not stopped: a server stopping
        gracefully waits for its open WatchTasks streams to end, which they
        do not (the client would have to close them)."""
        self.kill()
        time.sleep(down_for)
        self.start_again()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def start_again(self) -> None:
        """Starts a killed server again on its port and data dir."""
        written = len(self.log.read_text(errors="replace"))
        self.proc = _spawn(self.argv_on(self.address), self.cwd, self.env, self.log)
        m = wait_for_line(self.log, _LISTENING, self.proc, "claudomator serve (restarted)",
                          after=written)
        assert m.group(1) == self.address, (m.group(1), self.address)

    def argv_on(self, listen: str) -> list[str]:
        return [a if a != "LISTEN" else listen for a in self.argv]


def _spawn(argv: list[str], cwd: Optional[Path], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:  # a restart appends
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


def start_server(workdir: Path, config: str = "", env: Optional[dict] = None,
                 token: Optional[str] = None) -> Server:
    project = git_repo(workdir / "demo")
    config_path = workdir / "claudomator.toml"
    config_path.write_text(config)
    log = workdir / "server.log"
    server_env = dict(os.environ)
    for key in list(server_env):
        if key.startswith("CLAUDOMATOR_") and key != "CLAUDOMATOR_BIN":
            del server_env[key]
    server_env.update(env or {})
    if token:
        server_env["CLAUDOMATOR_TOKENS"] = token
    argv = [str(server_binary()), "serve", "--listen", "LISTEN", "--http-listen", "127.0.0.1:0",
            "--data-dir", str(workdir / "data"), "--config", str(config_path)]
    proc = _spawn([a if a != "LISTEN" else "127.0.0.1:0" for a in argv], project, server_env, log)
    m = wait_for_line(log, _LISTENING, proc, "claudomator serve")
    return Server(address=m.group(1), proc=proc, workdir=workdir, log=log, token=token,
                  argv=argv, cwd=project, env=server_env)


QUEUE_ONLY = '[executor]\nenabled = false\n'


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that accepts tasks and runs none (they stay QUEUED)."""
    s = start_server(tmp_path_factory.mktemp("server"), QUEUE_ONLY)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that wants `authorization: Bearer <TOKEN>`."""
    s = start_server(tmp_path_factory.mktemp("auth"), QUEUE_ONLY, token=TOKEN)
    yield s
    s.stop()


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that runs tasks with the real `claude` CLI against a scripted
    Anthropic API (clients/testing/anthropic_mock.py) on loopback."""
    if not CLAUDE.exists():
        message = f"claude CLI not installed at {CLAUDE}; run scripts/install-agents"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set)")
        sys.stderr.write(f"\n==========\nSKIPPED: {message}\n==========\n")
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("agent")
    mock_out = workdir / "mock.out"
    with open(mock_out, "wb") as out, open(workdir / "mock.err", "wb") as err:
        mock = subprocess.Popen([sys.executable, str(TESTING / "anthropic_mock.py")],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        mock_addr = wait_for_line(mock_out, _LISTENING, mock, "anthropic mock").group(1)
        home = workdir / "home"
        (home / ".claude").mkdir(parents=True)
        (home / "tmp").mkdir()
        agent_env = {
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "TMPDIR": str(home / "tmp"),
            "ANTHROPIC_BASE_URL": f"http://{mock_addr}",
            "ANTHROPIC_API_KEY": "sk-ant-mock",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",
        }
        env_toml = ", ".join(f"{k} = {toml_string(v)}" for k, v in agent_env.items())
        config = (
            '[executor]\nenabled = true\npoll_interval = "200ms"\n\n'
            f"[agents.claude]\ncommand = {toml_string(str(CLAUDE))}\nenv = {{ {env_toml} }}\n"
        )
        s = start_server(workdir, config)
    except BaseException:
        mock.kill()
        raise
    s.children.append(mock)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that runs `local` tasks against a scripted OpenAI-compatible
    API (clients/testing/openai_mock.py) on loopback; a task whose
    instructions hold `RATE-LIMIT-ONCE:<word>` is rate limited once, then
    retried 1 s later."""
    workdir = tmp_path_factory.mktemp("local")
    mock_out = workdir / "mock.out"
    with open(mock_out, "wb") as out, open(workdir / "mock.err", "wb") as err:
        mock = subprocess.Popen([sys.executable, str(TESTING / "openai_mock.py")],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        mock_addr = wait_for_line(mock_out, _LISTENING, mock, "openai mock").group(1)
        s = start_server(workdir, local_config(mock_addr))
    except BaseException:
        mock.kill()
        raise
    s.children.append(mock)
    yield s
    s.stop()


def local_config(mock_addr: str) -> str:
    return (
        '[executor]\nenabled = true\npoll_interval = "100ms"\nretry_base = "1s"\n\n'
        f'[local_model]\nendpoint = "http://{mock_addr}/v1"\nmax_retries = 0\n'
    )
