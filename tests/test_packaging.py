"""Packaging and house rules: wheel contents, public exports, cheap imports, module sizes, gencode."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import loom

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_widgets_and_generated_protobuf(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("loom_notebook-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    widget_files = [p.relative_to(ROOT / "widgets").as_posix() for p in (ROOT / "widgets").rglob("*") if p.is_file()]
    assert widget_files, "widgets/ is empty"
    for rel in widget_files:
        assert f"loom/_widgets/{rel}" in names
    pb = [n for n in names if n.startswith("loom/bridge/_pb/loom/v1/")]
    assert "loom/bridge/_pb/loom/v1/event_pb2.py" in pb
    assert any(n.endswith("entry_points.txt") for n in names)


def test_every_public_name_resolves_once():
    assert len(loom.__all__) == len(set(loom.__all__))
    for name in loom.__all__:
        assert getattr(loom, name) is not None, name


def test_every_module_declares_all_and_stays_under_400_lines():
    for path in (ROOT / "loom").rglob("*.py"):
        if "_pb" in path.parts:
            continue
        lines = path.read_text().count("\n")
        assert lines <= 400, f"{path.relative_to(ROOT)} has {lines} lines (limit 400)"
        if path.name not in ("__init__.py", "_version.py") and not path.name.startswith("__"):
            assert "__all__" in path.read_text(), f"{path.relative_to(ROOT)} lacks __all__"


def test_import_loom_is_cheap():
    code = (
        "import sys, loom\n"
        "heavy = ['IPython', 'grpc', 'sounddevice', 'faster_whisper', 'openai', 'mcp', 'matplotlib', "
        "'networkx', 'google.protobuf', 'rich', 'ipywidgets', 'anywidget', 'opentelemetry']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_library_code_never_nests_or_starts_a_loop_except_in_run():
    offenders = []
    for path in (ROOT / "loom").rglob("*.py"):
        text = path.read_text()
        for needle in ("nest_asyncio.apply", "run_until_complete(", "asyncio.run("):
            for line in text.splitlines():
                if needle in line and not line.lstrip().startswith(("#", '"', "`")):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    allowed = {
        "loom/launch.py: return asyncio.run(_main())",  # only when no loop is running
        "loom/launch.py: return loop.run_until_complete(_main())",  # only with run(nest=True)
        "loom/bridge/cli.py: asyncio.run(main())",  # `loom bridge`, a process entry point
    }
    offenders = [o for o in offenders if not o.startswith("loom/cli.py:")]  # the process entry point
    assert set(offenders) <= allowed, set(offenders) - allowed


def test_generated_protobuf_code_is_current(tmp_path):
    from loom.bridge import protogen

    protogen.generate(out_dir=tmp_path)
    fresh = sorted(p.name for p in (tmp_path / "loom" / "v1").glob("*_pb2*.py*"))
    committed = sorted(p.name for p in (protogen.PB_DIR / "loom" / "v1").glob("*_pb2*.py*"))
    assert fresh == committed, "run `make proto`: the set of generated files changed"
    for name in fresh:
        if not name.endswith("_pb2.py"):
            continue
        mod = importlib.import_module(f"loom.bridge._pb.loom.v1.{name[:-3]}")
        fresh_src = (tmp_path / "loom" / "v1" / name).read_text()
        # Compare the schema itself, not the text: immune to the protoc version banner.
        assert _descriptor_of(fresh_src) == mod.DESCRIPTOR.serialized_pb, f"{name} is stale: run `make proto`"


def _descriptor_of(source: str) -> bytes:
    start = source.index("AddSerializedFile(") + len("AddSerializedFile(")
    end = source.index(")\n", start)
    return ast.literal_eval(source[start:end])  # the bytes literal protoc wrote


def test_every_package_the_library_imports_is_declared():
    """A package that only arrives through another one can vanish with its next release."""
    import importlib.metadata as md
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set()
    for req in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]:
        declared.add(re.split(r"[<>=!\[;~ ]", req, maxsplit=1)[0].lower().replace("_", "-"))
    owners = md.packages_distributions()
    missing = {}
    for path in (ROOT / "loom").rglob("*.py"):
        if "_pb" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("loom", "__future__"):
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                if not dists & declared:
                    missing.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
