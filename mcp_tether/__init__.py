"""mcp-tether: lazy, self-refreshing connections from code executors to MCP servers."""

__version__ = "0.1.0"
