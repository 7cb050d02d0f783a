"""Where the token directory is, and server names to file names in it, safely.

A server name comes from user configuration and can be anything: ``../x``, an
absolute path, NUL, ``CON``, 300 characters, two Unicode spellings of one
word. The log's file name is therefore never the name itself but
``<slug>-<hash>``:

* ``slug``: a readable hint for people listing the directory: the name
  NFKC-normalised and case-folded, every run of characters outside
  ``[a-z0-9_]`` turned into one ``-``, trimmed of ``-`` and ``_`` at both ends,
  cut to :data:`SLUG_MAX` characters, ``server`` when nothing is left.
* ``hash``: the first 32 hex digits (128 bits) of SHA-256 over the exact name
  (UTF-8, lone surrogates kept), so two distinct names never share a file, even
  when their slugs agree (``Notion`` and ``notion``, NFC and NFD spellings).

The result contains only ``[a-z0-9_-]``, starts with a letter or digit, and is
at most ``SLUG_MAX + 33`` characters: it cannot name a parent directory, a
hidden file, a device, or exceed a file system's name limit with any suffix
used here.

The original tool's ``<server>.json`` used the name literally;
:func:`legacy_file_name` returns that name only when it is a single plain path
component, so a hostile name can never make the legacy import read outside
the directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_TOKEN_DIR",
    "LOG_SUFFIX",
    "SLUG_MAX",
    "TOKEN_DIR_ENV",
    "legacy_file_name",
    "log_file_stem",
    "token_directory",
]

#: Where tokens live unless ``$MCP_TETHER_TOKEN_DIR`` or the caller says otherwise.
DEFAULT_TOKEN_DIR: Final = Path("~/.claude/mcp-tokens")
#: Environment variable naming the token directory.
TOKEN_DIR_ENV: Final = "MCP_TETHER_TOKEN_DIR"

#: Longest readable part of a log file name.
SLUG_MAX: Final = 40
#: Suffix of a server's log file.
LOG_SUFFIX: Final = ".jsonl"
_HASH_HEX: Final = 32
_NOT_SLUG: Final = re.compile(r"[^a-z0-9_]+")
#: Longest legacy file name (bytes) accepted; most file systems allow 255.
_LEGACY_NAME_MAX: Final = 250


def token_directory(token_dir: Path | None = None) -> Path:
    """The token directory, absolute: the given one, else ``$MCP_TETHER_TOKEN_DIR``, else the default.

    Reads the environment only; touches no file (the directory is created on the first write).
    """
    if token_dir is None:
        configured = os.environ.get(TOKEN_DIR_ENV)
        token_dir = Path(configured) if configured else DEFAULT_TOKEN_DIR
    return Path(token_dir).expanduser().absolute()


def log_file_stem(server: str) -> str:
    """The file name stem (without suffix) of a server's log and its companions.

    Args:
        server: the configured server name, exactly as written.

    Returns:
        ``<slug>-<32 hex digits>``, safe as a single file name component.
    """
    slug = _NOT_SLUG.sub("-", unicodedata.normalize("NFKC", server).casefold())
    slug = slug.strip("-_")[:SLUG_MAX].strip("-_") or "server"
    digest = hashlib.sha256(server.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{slug}-{digest}"


def legacy_file_name(server: str) -> str | None:
    """The original tool's file name for a server, if the name can be one safely.

    Args:
        server: the configured server name.

    Returns:
        ``<server>.json``, or None when the name is empty, ``.`` or ``..``,
        contains a path separator, NUL or a lone surrogate, or is too long:
        such a server has no legacy file to import.
    """
    if server in {"", ".", ".."} or any(ch in server for ch in "/\\\0"):
        return None
    try:
        encoded = server.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if len(encoded) + len(".json") > _LEGACY_NAME_MAX:
        return None
    return f"{server}.json"
