"""The package: its version is the claudomator release's (Cargo.toml), with
a CHANGELOG entry; built from pyproject.toml alone."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import claudomator_client

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parents[1]


def test_version_is_the_release_and_has_a_changelog_entry() -> None:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
    assert project["version"] == cargo["version"] == claudomator_client.__version__
    changelog = (HERE / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(project['version'])}\b", changelog, re.MULTILINE)


def test_built_from_pyproject_alone_with_ranges() -> None:
    assert not (HERE / "setup.py").exists()
    pyproject = tomllib.loads((HERE / "pyproject.toml").read_text())
    for dep in pyproject["project"]["dependencies"]:
        assert ">=" in dep and "<" in dep, dep  # a range, not a pin
    assert any(d.startswith("types-protobuf") for d in pyproject["project"]["optional-dependencies"]["typing"])
