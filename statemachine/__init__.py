"""The pure core of mcp-tether: states, events, commands, the transition table,
the token-state fold and the expiry policy.

No IO, no asyncio, no clock reads, no HTTP or MCP imports (``tests/test_purity.py``
enforces it). Time and the outside world enter only as events.
"""
