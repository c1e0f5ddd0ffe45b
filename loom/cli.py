"""The ``loom`` command. Subcommands grow with the runtime (bridge, mcp, replay, bench)."""

from __future__ import annotations

import argparse
import sys

from loom._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loom", description="Loom for Python: event-driven agent runtime.")
    p.add_argument("--version", action="version", version=f"loom {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a short scenario in the terminal")
    demo.add_argument("--ticks", type=int, default=2000, help="price ticks to publish (default 2000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.ticks < 1:
            print("loom demo: --ticks must be >= 1", file=sys.stderr)
            return 2
        from loom.demo import run_demo

        run_demo(ticks=args.ticks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
