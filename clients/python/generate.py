#!/usr/bin/env python3
"""Generates claudomator_client/v1/ from the repository's proto/ tree.

    python generate.py [--proto DIR] [--out DIR]

grpcio-tools (which bundles protoc) writes the messages (`*_pb2.py`), their
type stubs (`*_pb2.pyi`) and the gRPC stubs (`*_pb2_grpc.py`). protoc names
modules after the proto path (`from claudomator.v1 import task_pb2`); they are
rewritten to relative imports so that the generated code lives inside the
`claudomator_client` package instead of claiming a top-level `claudomator`
package. The output is a build artifact: it is not committed (see
.gitignore). `build_backend.py` runs this at build time, `clients/generate` runs it
for development and CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO = HERE.parent.parent / "proto"
DEFAULT_OUT = HERE / "claudomator_client" / "v1"
# The API's proto package; proto/bench/ is not API and is not generated.
API_DIR = Path("claudomator") / "v1"

_ABSOLUTE_IMPORT = re.compile(r"^from claudomator\.v1 import ", re.MULTILINE)
_OTHER_IMPORT = re.compile(r"^(from|import) claudomator\b", re.MULTILINE)


def proto_dir() -> Path:
    return Path(os.environ.get("CLAUDOMATOR_PROTO_DIR", DEFAULT_PROTO))


def generate(proto: Path, out: Path) -> list[Path]:
    """Writes the generated modules into `out` (replacing what was there)."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - a setup problem
        raise SystemExit(
            "generate.py needs grpcio-tools (pip install grpcio-tools); " + str(e)
        ) from e

    sources = sorted((proto / API_DIR).glob("*.proto"))
    if not sources:
        raise SystemExit(f"generate.py: no .proto files under {proto / API_DIR}")
    # google/protobuf/*.proto (timestamp.proto) ship inside grpcio-tools.
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"

    with tempfile.TemporaryDirectory(prefix="claudomator-gen-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(s.relative_to(proto)) for s in sources],
        ]
        # protoc resolves the relative source names against -I.
        cwd = os.getcwd()
        os.chdir(proto)
        try:
            rc = protoc.main(args)
        finally:
            os.chdir(cwd)
        if rc != 0:
            raise SystemExit(f"generate.py: protoc failed (exit {rc})")

        generated = Path(tmp) / API_DIR
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        written = []
        for src in sorted(generated.iterdir()):
            text = src.read_text()
            text = _ABSOLUTE_IMPORT.sub("from . import ", text)
            leftover = _OTHER_IMPORT.search(text)
            if leftover:
                raise SystemExit(
                    f"generate.py: {src.name} imports another claudomator package "
                    f"({leftover.group(0)!r}); teach generate.py where it lives"
                )
            dest = out / src.name
            dest.write_text(text)
            written.append(dest)
        (out / "__init__.py").write_text(
            '"""Generated from proto/claudomator/v1 by generate.py. Do not edit."""\n'
        )
        written.append(out / "__init__.py")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=Path, default=proto_dir())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    written = generate(args.proto.resolve(), args.out.resolve())
    print(f"generated {len(written)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
