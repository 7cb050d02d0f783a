"""A ``$BROWSER`` command for tests: open the URL in a new tab of the Chromium under test.

``webbrowser`` runs it (without a shell) as ``python open_tab.py URL``; the Chromium's
DevTools port comes from ``MCP_TETHER_DEVTOOLS_PORT``.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request


def main() -> int:
    port = int(os.environ["MCP_TETHER_DEVTOOLS_PORT"])
    # DevTools takes the tab's URL as the (percent-encoded) query of /json/new.
    target = urllib.parse.quote(sys.argv[1], safe="")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{target}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback DevTools only
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
