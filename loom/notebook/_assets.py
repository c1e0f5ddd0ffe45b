"""Where the front-end files are: ``loom/_widgets`` in a wheel, the repository's ``widgets/`` in a checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["asset"]

_PACKAGE = Path(__file__).resolve().parents[1]


def asset(name: str) -> Path:
    """The path of front-end file ``name`` (e.g. ``bus_inspector.js``).

    Raises:
        FileNotFoundError: the file is in neither place (a broken install).
    """
    for folder in (_PACKAGE / "_widgets", _PACKAGE.parent / "widgets"):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"Loom widget asset {name!r} not found next to {_PACKAGE}")
