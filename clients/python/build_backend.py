"""The package's build backend: setuptools' (`setuptools.build_meta`), after
generating claudomator_client/v1 from ../../proto with grpcio-tools.

Everything about the package is in pyproject.toml, which names this module
(`build-backend`, `backend-path = ["."]`). When ../../proto is not there (a
build from an sdist, which carries the generated modules), the modules
already in the package are used as they are.
"""

from __future__ import annotations

from typing import Any, Optional

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the hooks that need nothing generated
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

import generate


def _ensure_generated() -> None:
    out = generate.DEFAULT_OUT
    if (generate.proto_dir() / generate.API_DIR).is_dir():
        generate.generate(generate.proto_dir().resolve(), out)
    elif not (out / "service_pb2.py").exists():
        raise SystemExit(
            f"cannot generate the client: no proto/ at {generate.proto_dir()} "
            "(set CLAUDOMATOR_PROTO_DIR) and no generated modules in the package"
        )


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[dict[str, Any]] = None) -> str:
    _ensure_generated()  # egg_info already wants the package directory to exist
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory: str, config_settings: Optional[dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    _ensure_generated()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: Optional[dict[str, Any]] = None) -> str:
    _ensure_generated()
    return _setuptools.build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: Optional[dict[str, Any]] = None) -> str:
    _ensure_generated()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(wheel_directory: str, config_settings: Optional[dict[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    _ensure_generated()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
