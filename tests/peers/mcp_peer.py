"""A real MCP server (mcp's MCPServer over stdio or HTTP) for the fault tests.

    python tests/peers/mcp_peer.py [--garbage] [--http PORT]

Tools: add(a, b); sleep(seconds) (hangs as long as asked); die() (the process exits mid-call);
fail() (an isError result); grow() (adds a tool `extra` and notifies tools/list_changed).
--garbage prints non-JSON lines on stdout before serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer(name="loom-test-peer", instructions="a peer for Loom's tests")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def die() -> str:
    """Exit the server process in the middle of the call."""
    sys.stderr.write("peer: dying on purpose\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def fail() -> str:
    """Report a tool error."""
    from mcp.server.mcpserver.exceptions import ToolError

    raise ToolError("the peer refuses")


def extra(text: str) -> str:
    """Echo back, added at run time by grow()."""
    return text[::-1]


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `extra` and tell the client the tool list changed."""
    server.add_tool(extra)
    await ctx.notify_tools_changed()  # 2026-07-28 clients listen on subscriptions/listen
    await ctx.session.send_tool_list_changed()  # earlier protocols get the notification
    return "grown"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--http", type=int, default=0)
    ap.add_argument("--sse", type=int, default=0)
    opts = ap.parse_args()
    if opts.garbage:
        print("this is not JSON-RPC\n{broken json", flush=True)
    if opts.http:
        server.run("streamable-http", host="127.0.0.1", port=opts.http)
    elif opts.sse:
        server.run("sse", host="127.0.0.1", port=opts.sse)
    else:
        server.run()
