"""Opening an authorization URL in the user's browser, safely.

A URL an authorization server influenced is validated before anything opens
it: ``https``, or ``http`` only for loopback hosts; no user-info, no control
characters or whitespace, nothing outside the RFC 3986 character set, no
leading ``-`` (which a browser would read as an option, CPython CVE-2026-4519).
It is opened only with the standard :mod:`webbrowser` module, which honours
``$BROWSER`` and never runs a shell (the class of CVE-2025-6514).

Without a display (Linux or BSD with neither ``DISPLAY`` nor
``WAYLAND_DISPLAY``, or an SSH session) nothing is launched; the caller prints
the URL for a person to open elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
import string
import sys
import webbrowser
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["MAX_URL_LENGTH", "UnsafeURLError", "has_display", "open_in_browser", "validate_authorization_url"]

#: Longest URL handed to a browser.
MAX_URL_LENGTH = 8192
# RFC 3986 unreserved + reserved + '%', without the quote character (a URL
# never needs a raw one; some launchers embed the URL in quoted scripts).
_URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&()*+,;=%")


class UnsafeURLError(ValueError):
    """A URL was refused for opening in a browser; the message says why."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_authorization_url(url: object) -> str:
    """Check that ``url`` is safe to hand to a browser.

    Args:
        url: the candidate URL (any value; non-strings are refused).

    Returns:
        The same URL, unchanged.

    Raises:
        UnsafeURLError: the URL is not a plain https (or loopback http) URL.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURLError("the authorization URL is empty or not text")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURLError(f"the authorization URL is longer than {MAX_URL_LENGTH} characters")
    if url.startswith("-"):
        raise UnsafeURLError("the authorization URL starts with '-'")
    bad = sorted({ch for ch in url if ch not in _URL_CHARACTERS})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad[:5])
        raise UnsafeURLError(f"the authorization URL contains characters a URL may not contain ({shown})")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018  # raises ValueError on a malformed port
    except ValueError as exc:
        raise UnsafeURLError("the authorization URL has a malformed host or port") from exc
    if scheme not in ("https", "http"):
        raise UnsafeURLError(f"the authorization URL uses the scheme {scheme!r}; only https is allowed")
    if not host:
        raise UnsafeURLError("the authorization URL has no host")
    if "@" in parts.netloc:
        raise UnsafeURLError("the authorization URL carries user information before the host")
    if scheme == "http" and not _is_loopback(host):
        raise UnsafeURLError("the authorization URL uses plain http for a host that is not loopback")
    return url


def has_display(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether a browser can plausibly be shown to the person running this process.

    An explicit ``$BROWSER`` is trusted. An SSH session has no local display.
    On Linux and the BSDs, a display needs ``DISPLAY`` or ``WAYLAND_DISPLAY``.

    Args:
        environ: the environment (defaults to ``os.environ``).
        platform: the platform name (defaults to ``sys.platform``).

    Returns:
        True when opening a browser is worth trying.
    """
    env = os.environ if environ is None else environ
    system = sys.platform if platform is None else platform
    if env.get("BROWSER"):
        return True
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY") or env.get("SSH_CLIENT"):
        return False
    if system.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def open_in_browser(url: str) -> bool:
    """Validate ``url`` and open it with :mod:`webbrowser` when there is a display.

    Args:
        url: the authorization URL.

    Returns:
        True when a browser was launched; False when there is no display or
        no browser could be started (the caller then prints the URL).

    Raises:
        UnsafeURLError: the URL failed validation; nothing was opened.
    """
    validate_authorization_url(url)
    if not has_display():
        return False
    try:
        return webbrowser.open(url, new=1, autoraise=True)
    except webbrowser.Error:
        return False
