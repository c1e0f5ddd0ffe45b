"""The common part of every inspector: an anywidget whose state is refreshed by a throttled
task the runtime owns, with a static HTML fallback for front-ends without widgets.

Throttling (see docs/notebooks.md): the bus never talks to the widget directly. Observers
collect into Python structures; a flush task syncs at most ``1 / interval`` times per second
(default 10/s), one comm message per flush (``hold_sync``), only when something changed, and
only the last N rows. Whatever the event rate, the browser sees ≤ 10 messages per second.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from loom.notebook._assets import asset

if TYPE_CHECKING:
    from loom.runtime import Loom

__all__ = ["Inspector"]

log = logging.getLogger("loom.notebook")


class Inspector(anywidget.AnyWidget):
    """Base class: subclasses implement :meth:`_collect` (cheap, called every tick) and
    :meth:`_static_html` (the fallback view)."""

    _css = asset("loom.css")
    title = traitlets.Unicode("").tag(sync=True)
    flushes = traitlets.Int(0).tag(sync=True)  # comm updates sent (observable by tests and docs)

    def __init__(self, rt: Loom | None = None, *, interval: float = 0.1, **kwargs: Any) -> None:
        from loom.runtime import current

        super().__init__(**kwargs)
        if interval < 0.05:
            from loom.errors import UsageError

            raise UsageError(f"interval must be >= 0.05 s (at most 20 updates per second), got {interval}")
        self.rt = rt or current()
        self.interval = interval
        self._closed = False
        self._setup()
        self.flush(force=True)  # the first view is complete before the widget is displayed
        self._task = self.rt.spawn(self._loop(), name=f"loom.notebook.{type(self).__name__}:{id(self):x}")

    # -- subclass hooks ------------------------------------------------------------------
    def _setup(self) -> None:
        """Subscribe to what the inspector observes (called once, before the first collect)."""

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        """Return trait changes to sync now, or ``None`` when nothing changed."""
        raise NotImplementedError

    def _teardown(self) -> None:
        """Release what :meth:`_setup` took."""

    def _static_html(self) -> str:
        raise NotImplementedError

    # -- machinery -----------------------------------------------------------------------
    async def _loop(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(self.interval)
                self.flush()
        finally:
            self._teardown()

    def flush(self, force: bool = False) -> bool:
        """Collect and sync now if anything changed (one comm message). Returns whether it synced."""
        changes = self._collect(force=force)
        if not changes:
            return False
        with self.hold_sync():
            for name, value in changes.items():
                setattr(self, name, value)
            self.flushes = self.flushes + 1
        return True

    def snapshot(self) -> None:
        """Flush and re-send the whole state from this cell, so a saved or exported notebook
        keeps the latest view (nbconvert drops updates sent by background tasks)."""
        self.flush(force=True)
        self.send_state()

    def close(self) -> None:
        """Stop observing and close the widget. Idempotent."""
        if not self._closed:
            self._closed = True
            self._task.cancel()
            self._teardown()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/html"] = self._static_html()  # for front-ends without the widget manager
        return bundle

    def _repr_html_(self) -> str:
        return self._static_html()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.title!r}: {self.flushes} updates{' (closed)' if self._closed else ''}>"


def table_html(title: str, head: list[str], rows: list[list[Any]], note: str = "") -> str:
    """A small escaped HTML table in the inspectors' style (static fallbacks, exports)."""
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    extra = f"<div class='loom-note'>{html.escape(note)}</div>" if note else ""
    return (
        f"<div class='loom-widget'><div class='loom-head'>{html.escape(title)}</div>"
        f"<table class='loom-table'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{extra}</div>"
    )
