"""Regenerate ``loom/bridge/_pb`` from ``proto/loom/v1/*.proto`` (``make proto``).

protoc writes ``from loom.v1 import x_pb2``, which would resolve inside our own ``loom`` package;
the imports are rewritten to ``loom.bridge._pb.loom.v1``. The descriptors keep the file names
``loom/v1/*.proto`` and the package ``loom.v1``, so the wire names match upstream.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["PB_DIR", "PROTO_DIR", "generate"]

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PB_DIR = Path(__file__).resolve().parent / "_pb"
_IMPORT = re.compile(r"^from loom\.v1 import ", re.MULTILINE)


def generate(out_dir: Path = PB_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Compile every ``loom/v1/*.proto`` under ``proto_dir`` into ``out_dir``. Returns the files written."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools)

    protos = sorted((proto_dir / "loom" / "v1").glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_dir / 'loom' / 'v1'}")
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(proto_dir)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        target = out_dir / "loom" / "v1"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        written = []
        for src in sorted((Path(tmp) / "loom" / "v1").iterdir()):
            text = _IMPORT.sub("from loom.bridge._pb.loom.v1 import ", src.read_text())
            dst = target / src.name
            dst.write_text(text)
            written.append(dst)
    for pkg in (out_dir, out_dir / "loom", target):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by loom.bridge.protogen: do not edit."""\n')
    return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT), file=sys.stderr)
