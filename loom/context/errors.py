"""The error a context store raises when its file cannot be used as it is."""

from __future__ import annotations

from loom._sqlite import UnusableFile

__all__ = ["ContextStoreError"]


class ContextStoreError(UnusableFile):
    """A context store file is unusable: not a database, corrupt, another application's, or written
    by a newer Loom. The file is left exactly as it was; the message names it and what to do.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    what = "context store"
