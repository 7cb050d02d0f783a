"""A headless stand-in for a person at a browser: follows an authorization URL to
the loopback callback, approving whatever the authorization server asks."""

from __future__ import annotations

import threading

import httpx2

__all__ = ["HeadlessBrowser"]


class HeadlessBrowser:
    """Pass as ``open_url``; counts launches and records the URLs (tokens never appear in them).

    It follows redirects (the simulated authorization server approves with a
    302 to the callback). A consent page with a form is not clicked: use a real
    browser for that (``tests/browser``).
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.urls: list[str] = []
        self.final_pages: list[str] = []
        self._lock = threading.Lock()

    @property
    def launches(self) -> int:
        with self._lock:
            return len(self.urls)

    def __call__(self, url: str) -> bool:
        with self._lock:
            self.urls.append(url)
        with httpx2.Client(follow_redirects=True, timeout=self.timeout) as client:
            response = client.get(url)
        with self._lock:
            self.final_pages.append(response.text)
        return True
