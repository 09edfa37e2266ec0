"""The README's five-line example runs as written against a new server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import QUEUE_ONLY, start_server

README = Path(__file__).resolve().parents[1] / "README.md"
PACKAGE_ROOT = README.parent


def example() -> str:
    text = README.read_text()
    section = text.split("## Example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_against_a_fresh_server(tmp_path: Path) -> None:
    code = example()
    assert len(code.strip().splitlines()) == 5, code
    assert '"127.0.0.1:7070"' in code
    server = start_server(tmp_path, QUEUE_ONLY)
    try:
        # As written, but for the port the new server got.
        code = code.replace("127.0.0.1:7070", server.address)
        env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"[0-9A-Z]{26} TASK_STATE_QUEUED", lines[0]), out.stdout
    assert lines[1] == "['Add a CONTRIBUTING.md']", out.stdout
