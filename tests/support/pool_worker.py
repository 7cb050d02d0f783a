"""A second executor process for tests: calls a tool in a loop through its own ServerPool.

Usage: python pool_worker.py CONFIG TOKEN_DIR SECONDS  -> prints one JSON line of counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from mcp_tether import ServerPool, TetherError


async def main(config: Path, token_dir: Path, seconds: float) -> None:
    calls = failures = 0
    async with ServerPool.from_config(config, token_dir, connected_servers="", interactive=False) as pool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                await pool.call_tool("notion", "echo", {"text": str(calls)})
                calls += 1
            except TetherError as error:
                failures += 1
                print(f"call failed: {error}", file=sys.stderr)
            await asyncio.sleep(0.03)
        counters = pool.connection("notion").counters
    print(json.dumps({"calls": calls, "failures": failures, **counters}))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])))
