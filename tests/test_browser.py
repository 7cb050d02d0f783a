"""Authorization URL validation, opening only through webbrowser, and display detection."""

from __future__ import annotations

import os
import subprocess
import webbrowser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_tether.adapters import browser
from mcp_tether.adapters.browser import (
    UnsafeURLError,
    has_display,
    open_in_browser,
    validate_authorization_url,
)

GOOD = "https://as.example/authorize?response_type=code&client_id=abc&state=x%20y"


@pytest.mark.parametrize(
    "url",
    [
        GOOD,
        "http://127.0.0.1:8080/authorize?x=1",
        "http://localhost/authorize",
        "http://[::1]:9/a",
        "https://h/",
    ],
)
def test_safe_urls_pass_unchanged(url: str) -> None:
    assert validate_authorization_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "-https://as.example/",
        "--renderer-cmd-prefix=calc",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "JavaScript:alert(1)//https://as.example",
        "data:text/html,hi",
        "http://as.example/authorize",  # plain http, not loopback
        "https://as.example/a b",
        "https://as.example/a\nb",
        "https://as.example/\x00",
        "https://as.example/\x7f",
        "https://as.example/\u202e",
        "https://as.example/`id`",
        'https://as.example/"quoted"',
        "https://as.example/'quoted'",
        "https://as.example/<script>",
        "https://as.example/a|b",
        "https://as.example/a\\b",
        "https://user@as.example/",
        "https://as.example:99999/",
        "https:///path",
        "https:as.example",
        "https://as.example/" + "a" * 9000,
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        validate_authorization_url(url)


def test_non_text_is_refused() -> None:
    with pytest.raises(UnsafeURLError):
        validate_authorization_url(b"https://as.example/")


class _Launches:
    """Records every way a process could be started while a test runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[str] = []
        self.shells: list[Any] = []
        monkeypatch.setattr(webbrowser, "open", self._open)
        monkeypatch.setattr(subprocess, "Popen", self._shell)
        monkeypatch.setattr(os, "system", self._shell)
        monkeypatch.setattr(os, "popen", self._shell)
        monkeypatch.setattr(browser, "has_display", lambda: True)

    def _open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        self.opened.append(url)
        return True

    def _shell(self, *args: Any, **kwargs: Any) -> None:
        self.shells.append(args)
        raise AssertionError("a process was started")


hostile_pieces = st.sampled_from(
    [
        "$(touch /tmp/pwned)",
        "`id`",
        "&calc",
        ";rm -rf ~",
        "|sh",
        "--renderer-cmd-prefix=",
        "-",
        "file:",
        "javascript:",
        "data:",
        "\x00",
        "\n",
        "\r",
        "\t",
        " ",
        "\x1b[31m",
        "\u2028",
        "'",
        '"',
        "<",
        "%0a",
        "http://",
        "https://",
        "127.0.0.1",
        "@",
        "evil.example",
        "as.example",
        "/",
        "?",
        "#",
    ]
)
hostile_urls = st.one_of(
    st.lists(hostile_pieces, min_size=1, max_size=6).map("".join),
    st.builds(lambda a, b: f"https://as.example/{a}{b}", hostile_pieces, st.text(max_size=10)),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(url=hostile_urls)
def test_hostile_urls_never_reach_a_shell_and_only_valid_ones_open(url: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        launches = _Launches(monkeypatch)
        try:
            valid = validate_authorization_url(url) == url
        except UnsafeURLError:
            valid = False
        try:
            opened = open_in_browser(url)
        except UnsafeURLError:
            opened = False
        assert launches.shells == []
        assert launches.opened == ([url] if valid else [])
        assert opened is valid
        if valid:
            assert url.startswith(("https://", "http://"))
            assert all(ch.isascii() and ch.isprintable() and ch not in " '\"`" for ch in url)


def test_no_display_means_nothing_is_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    launches = _Launches(monkeypatch)
    monkeypatch.setattr(browser, "has_display", lambda: False)
    assert open_in_browser(GOOD) is False
    assert launches.opened == []


def test_browser_failure_is_reported_as_not_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str, new: int = 0, autoraise: bool = True) -> bool:
        raise webbrowser.Error("no runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    monkeypatch.setattr(browser, "has_display", lambda: True)
    assert open_in_browser(GOOD) is False


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({}, "linux", False),
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({"DISPLAY": ":0", "SSH_CONNECTION": "1 2 3 4"}, "linux", False),
        ({"SSH_TTY": "/dev/pts/1"}, "darwin", False),
        ({}, "darwin", True),
        ({}, "win32", True),
        ({}, "freebsd14", False),
        ({"BROWSER": "lynx", "SSH_TTY": "/dev/pts/1"}, "linux", True),
    ],
)
def test_display_detection(environ: dict[str, str], platform: str, expected: bool) -> None:
    assert has_display(environ, platform) is expected
