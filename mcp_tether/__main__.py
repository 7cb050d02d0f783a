"""``python -m mcp_tether``: the same as the ``mcp-tether`` command."""

from mcp_tether.cli import main

raise SystemExit(main())
