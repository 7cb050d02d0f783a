"""Shared test setup.

respx intercepts httpx2 only when ``import httpx`` resolves to httpx2, so the
alias is installed here, before any test module imports respx. The library
itself never calls ``alias_httpx``.
"""

import httpx2

httpx2.alias_httpx()
