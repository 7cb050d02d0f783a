"""The simulated MCP tools served over stdio: ``python -m mcp_tether.testing.stdio_server``.

The same tools as the simulated resource server's (``echo``, ``add``,
``sleep``, ``whoami``, ``needs_scope``; see
:func:`mcp_tether.testing.resource_server.build_tool_server`), for tests and
benchmarks of stdio connections. Over stdio there is no bearer token, so
``whoami`` answers ``{"client_id": null, "scopes": null}``.

Usage::

    python -m mcp_tether.testing.stdio_server [--name NAME]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mcp_tether.testing.resource_server import build_tool_server

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the simulated tools on stdin/stdout until the client closes the pipe.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m mcp_tether.testing.stdio_server",
        description="Serve mcp-tether's simulated MCP tools (echo, add, sleep, whoami, needs_scope) over stdio.",
    )
    parser.add_argument("--name", default="mcp-tether-simulated", help="server name reported at initialization")
    args = parser.parse_args(argv)
    build_tool_server(args.name).run("stdio")


if __name__ == "__main__":
    main()
