"""Generates claudomator_client/v1 from ../../proto while the package builds.

Everything else is in pyproject.toml. When ../../proto is not there (a build
from an sdist, which carries the generated modules), the existing modules are
used as they are.
"""

import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate  # noqa: E402


def ensure_generated() -> None:
    out = generate.DEFAULT_OUT
    if (generate.proto_dir() / generate.API_DIR).is_dir():
        generate.generate(generate.proto_dir().resolve(), out)
    elif not (out / "service_pb2.py").exists():
        raise SystemExit(
            f"cannot generate the client: no proto/ at {generate.proto_dir()} "
            "(set CLAUDOMATOR_PROTO_DIR) and no generated modules in the package"
        )


# Before setup(): egg_info already wants the package directory to exist.
ensure_generated()

setup()
