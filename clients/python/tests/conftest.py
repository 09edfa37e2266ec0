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
                  timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
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

    def stop(self) -> None:
        for proc in [self.proc, *self.children]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


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
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(server_binary()), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--data-dir", str(workdir / "data"), "--config", str(config_path)],
            cwd=project, env=server_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err,
        )
    m = wait_for_line(log, _LISTENING, proc, "claudomator serve")
    return Server(address=m.group(1), proc=proc, workdir=workdir, log=log, token=token)


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
