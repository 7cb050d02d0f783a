"""Edges of mcp-tether: each module turns one part of the outside world (clock,
config, token files, OAuth HTTP, browser, MCP transports) into events for the
state machine and executes the commands it returns."""
