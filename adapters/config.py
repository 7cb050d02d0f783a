"""The configuration edge: the MCP servers a pool is built from.

Theory of operation
-------------------
:func:`load_config` finds and reads the file; :func:`parse_config` is a pure
function from its text to a :class:`PoolConfig` (no file system, no process
environment: both come in as arguments), so every rule below is testable
without touching disk. The format is Claude Code's ``~/.claude.json``; the
reference is ``specs/config.md``.

* **The file** must be a JSON object. A missing file is an error when it was
  named explicitly (argument or ``$MCP_CONFIG_PATH``), and an empty
  configuration (``found`` False) when it is the default ``~/.claude.json``.
  Unreadable bytes, malformed JSON or a wrong shape of the parts read here
  (``mcpServers``, ``projects``, ``projects[<cwd>]``, its ``mcpServers``) is a
  :class:`ConfigError` naming the file, the line and column when known, and
  what to do. Everything else in the file is ignored.
* **Servers**: the top-level ``mcpServers`` in file order, then
  ``projects[<cwd>].mcpServers``, where ``<cwd>`` is the absolute working
  directory compared as an exact string (as Claude Code stores it; parent
  directories are not searched). A project entry replaces a top-level entry of
  the same name (even when the project entry is the bad one) and keeps the
  top-level entry's position.
* **Entries**: every problem in one entry (wrong type, bad URL, unset
  ``${VAR}``, ...) becomes that server's :attr:`ServerConfig.problem` and its
  ``transport`` is None; no entry can make the file fail or disable another.
* **Eager servers**: the names in ``CONNECTED_SERVERS`` (or the argument) that
  are configured without a problem; names that are not configured are kept in
  ``unknown_eager`` for the pool to warn about. Listing a server there connects
  it at start even when its entry says ``disabled: true``.

Secrets (environment and header values, client secrets, URL credentials and
queries) never appear in a ``repr`` or in a message.
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

import attrs

from mcp_tether.adapters.oauth_settings import SIGNING_ALGORITHMS, SUPPORTED_AUTH_METHODS, OAuthSettings

__all__ = [
    "CONFIG_PATH_ENV",
    "CONNECTED_SERVERS_ENV",
    "DEFAULT_CONFIG_NAME",
    "ConfigError",
    "HttpServer",
    "PoolConfig",
    "ServerConfig",
    "StdioServer",
    "load_config",
    "parse_config",
]

#: Environment variable naming the configuration file (default ``~/.claude.json``).
CONFIG_PATH_ENV: Final = "MCP_CONFIG_PATH"
#: Environment variable listing the servers connected at start, comma-separated.
CONNECTED_SERVERS_ENV: Final = "CONNECTED_SERVERS"
#: The default configuration file, in the home directory.
DEFAULT_CONFIG_NAME: Final = ".claude.json"

_VARIABLE: Final = re.compile(r"\$\{([^}]+)\}")
# RFC 9110 token characters; a header value is visible ASCII, space or tab.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
_HTTP_TYPES: Final[Mapping[str, Literal["http", "sse"]]] = types.MappingProxyType(
    {"http": "http", "streamable-http": "http", "streamable_http": "http", "sse": "sse"}
)
_TYPES_ACCEPTED: Final = "stdio, http, streamable-http, sse"
_ABSENT: Final = object()


class ConfigError(Exception):
    """The configuration file cannot be used at all (missing, unreadable, malformed).

    A bad server entry is not a ``ConfigError``: it disables only that server
    (see :attr:`ServerConfig.problem`).

    Attributes:
        path: the file.
        line: 1-based line of the problem, when known.
        column: 1-based column of the problem, when known.
    """

    def __init__(self, message: str, *, path: Path, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column


def _masked(mapping: Mapping[str, str]) -> str:
    """Repr of a secret-valued mapping: its keys, never its values."""
    return "{" + ", ".join(f"{key!r}: '***'" for key in mapping) + "}"


def _display_url(url: str) -> str:
    """``url`` without user information, query or fragment (they can carry keys)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "'<invalid url>'"
    query = "?***" if parts.query else ""
    fragment = "#***" if parts.fragment else ""
    return repr(urlunsplit(SplitResult(parts.scheme, host, parts.path, "", "")) + query + fragment)


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


def _frozen_servers(value: Mapping[str, ServerConfig]) -> Mapping[str, ServerConfig]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class StdioServer:
    """A server started as a subprocess speaking MCP over stdin/stdout.

    Attributes:
        command: the program to run (looked up on ``PATH`` when not a path).
        args: its arguments.
        env: extra environment variables for it; values are hidden in the repr.
        cwd: its working directory, or None for the pool's own.
    """

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, repr=_masked)
    cwd: str | None = None


@attrs.frozen(kw_only=True)
class HttpServer:
    """A remote server over streamable HTTP (``kind="http"``) or SSE (``kind="sse"``).

    Attributes:
        url: the MCP endpoint, ``http`` or ``https`` with a host; the repr shows
            it without credentials, query or fragment.
        kind: ``http`` (streamable HTTP) or ``sse``.
        headers: extra request headers; values are hidden in the repr.
        requires_auth: True when the entry has ``oauth`` settings; False means
            unknown until the server answers 401.
    """

    url: str = attrs.field(repr=_display_url)
    kind: Literal["http", "sse"] = "http"
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, repr=_masked)
    requires_auth: bool = False


@attrs.frozen(kw_only=True)
class ServerConfig:
    """One configured server.

    Attributes:
        name: the name it is configured under (any non-empty string).
        transport: how to reach it; None exactly when ``problem`` is set.
        lazy: the entry says ``disabled: true`` (connect on first use only).
        problem: why the entry cannot be used: names the server, the field and
            the fix; None for a good entry.
        oauth: OAuth settings from the entry's ``oauth`` object (HTTP and SSE only).
    """

    name: str
    transport: StdioServer | HttpServer | None
    lazy: bool = False
    problem: str | None = None
    oauth: OAuthSettings | None = None


@attrs.frozen(kw_only=True)
class PoolConfig:
    """Everything a pool is built from.

    Attributes:
        path: the configuration file (absolute).
        servers: the servers by name, in precedence order (see module docs).
        eager: configured, usable servers named in ``CONNECTED_SERVERS``.
        unknown_eager: names in ``CONNECTED_SERVERS`` that are not configured,
            in the order given.
        found: False when the default file did not exist (then ``servers`` is empty).
    """

    path: Path
    servers: Mapping[str, ServerConfig] = attrs.field(converter=_frozen_servers)
    eager: frozenset[str] = frozenset()
    unknown_eager: tuple[str, ...] = ()
    found: bool = True


class _BadEntry(Exception):
    """One entry is unusable; the message is the detail after the server's name."""


def _kind_of(value: object) -> str:
    """A JSON type name for messages (never the value: it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


@attrs.define
class _EntryReader:
    """Reads the fields of one server entry, expanding ``${VAR}`` and collecting unset variables."""

    entry: Mapping[str, object]
    environ: Mapping[str, str]
    unset: list[str] = attrs.field(factory=list)
    prefix: str = ""  # where the fields sit, for messages: "" or "oauth."

    def field(self, *names: str) -> object:
        """The value under the first of ``names`` present (they are spellings of one field), or _ABSENT."""
        present = [name for name in names if name in self.entry]
        if len(present) > 1:
            first, second = (f"`{self.prefix}{name}`" for name in present[:2])
            raise _BadEntry(f"{first} and {second} are the same setting; keep only one")
        return self.entry[present[0]] if present else _ABSENT

    def expand(self, value: str, label: str) -> str:
        """``${VAR}`` and ``${VAR:-default}`` replaced as Claude Code does; unset ones are recorded."""

        def substitute(match: re.Match[str]) -> str:
            name, has_default, default = match.group(1).partition(":-")
            if name in self.environ:
                return self.environ[name]
            if has_default:
                return default
            self.unset.append(f"{name} (in `{label}`)")
            return match.group(0)

        return _VARIABLE.sub(substitute, value)

    def text(self, value: object, label: str, *, expand: bool = True, nul_free: bool = False) -> str:
        """A string field, checked and expanded."""
        if not isinstance(value, str):
            raise _BadEntry(f"`{label}` must be a string, not {_kind_of(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadEntry(f"`{label}` contains an invalid \\u escape (a lone surrogate); fix the text") from None
        if nul_free and "\0" in value:
            raise _BadEntry(f"`{label}` contains a NUL character, which no process accepts")
        return self.expand(value, label) if expand else value

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.field(name)
        if value is _ABSENT:
            return ()
        if not isinstance(value, list):
            raise _BadEntry(f"`{name}` must be a list of strings, not {_kind_of(value)}")
        return tuple(self.text(item, f"{name}[{index}]", nul_free=True) for index, item in enumerate(value))

    def string_map(
        self, name: str, check_key: Callable[[str], str | None], check_value: Callable[[str], bool]
    ) -> dict[str, str]:
        """An object of string to string; ``check_key`` returns why a key is bad, ``check_value`` if a value is good."""
        value = self.field(name)
        if value is _ABSENT:
            return {}
        if not isinstance(value, dict):
            raise _BadEntry(f"`{name}` must be an object of strings, not {_kind_of(value)}")
        result: dict[str, str] = {}
        for key, item in value.items():
            label = f"{name}.{key}"
            why = check_key(key)
            if why is not None:
                raise _BadEntry(f"`{name}` has the key {key!r}, which {why}")
            expanded = self.text(item, label)
            if not check_value(expanded):
                raise _BadEntry(f"`{label}` contains characters not allowed there")
            result[key] = expanded
        return result

    def flag(self, *names: str) -> bool:
        value = self.field(*names)
        if value is _ABSENT:
            return False
        if not isinstance(value, bool):
            raise _BadEntry(f"`{self.prefix}{names[0]}` must be true or false, not {_kind_of(value)}")
        return value


def _env_key_problem(key: str) -> str | None:
    if not key or "=" in key or "\0" in key:
        return "is not a valid environment variable name (empty, or contains '=' or NUL)"
    return None


def _header_name_problem(key: str) -> str | None:
    return None if _HEADER_NAME.fullmatch(key) else "is not a valid HTTP header name"


def _env_value_ok(value: str) -> bool:
    return "\0" not in value


def _header_value_ok(value: str) -> bool:
    return _HEADER_VALUE.fullmatch(value) is not None


def _stdio(reader: _EntryReader) -> StdioServer:
    command = reader.field("command")
    if command is _ABSENT:
        raise _BadEntry("a stdio server needs `command` (the program to run)")
    command_text = reader.text(command, "command", nul_free=True)
    if not command_text.strip():
        raise _BadEntry("`command` is empty; name the program to run")
    cwd = reader.field("cwd")
    cwd_text = None if cwd is _ABSENT else reader.text(cwd, "cwd", nul_free=True)
    if cwd_text == "":
        raise _BadEntry("`cwd` is empty; remove it or name a directory")
    return StdioServer(
        command=command_text,
        args=reader.string_list("args"),
        env=reader.string_map("env", _env_key_problem, _env_value_ok),
        cwd=cwd_text,
    )


def _checked_url(url: str) -> str:
    """``url`` when it is a usable http(s) URL; the problem never quotes it (it may hold a key)."""
    if not url or any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in url):
        raise _BadEntry("`url` is empty or contains spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise _BadEntry("`url` is not a valid URL (bad host or port)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _BadEntry("`url` must start with https:// (or http://)")
    if not parts.hostname:
        raise _BadEntry("`url` has no host; write it as https://host/path")
    return url


def _http(reader: _EntryReader, kind: Literal["http", "sse"], oauth: OAuthSettings | None) -> HttpServer:
    url = reader.field("url")
    if url is _ABSENT:
        raise _BadEntry(f"an {kind} server needs `url` (its MCP endpoint)")
    return HttpServer(
        url=_checked_url(reader.text(url, "url")),
        kind=kind,
        headers=reader.string_map("headers", _header_name_problem, _header_value_ok),
        requires_auth=oauth is not None,
    )


def _scopes(reader: _EntryReader, value: object) -> str:
    if isinstance(value, list):
        items = [reader.text(item, f"oauth.scopes[{index}]") for index, item in enumerate(value)]
        if any(not item or item != "".join(item.split()) for item in items):
            raise _BadEntry("every item of `oauth.scopes` must be one scope, without spaces")
    else:
        items = reader.text(value, "oauth.scopes").split()
    if not items:
        raise _BadEntry("`oauth.scopes` is empty; list the scopes to request, or remove it")
    return " ".join(items)


def _callback_port(value: object) -> int:
    if value is _ABSENT:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise _BadEntry("`oauth.callbackPort` must be a whole number from 0 to 65535 (0: any free port)")
    return value


def _oauth(entry: _EntryReader) -> OAuthSettings | None:
    value = entry.field("oauth")
    if value is _ABSENT:
        return None
    if not isinstance(value, dict):
        raise _BadEntry(f"`oauth` must be an object, not {_kind_of(value)}")
    reader = _EntryReader(value, entry.environ, entry.unset, prefix="oauth.")

    def optional_text(camel: str, snake: str) -> str | None:
        found = reader.field(camel, snake)
        if found is _ABSENT:
            return None
        text = reader.text(found, f"oauth.{camel}")
        if not text:
            raise _BadEntry(f"`oauth.{camel}` is empty; fill it in or remove it")
        return text

    client_id = optional_text("clientId", "client_id")
    client_credentials = reader.flag("clientCredentials", "client_credentials")
    if client_credentials and client_id is None:
        raise _BadEntry("`oauth.clientCredentials` needs `oauth.clientId` (and usually `oauth.clientSecret`)")
    method = optional_text("tokenEndpointAuthMethod", "token_endpoint_auth_method")
    if method is not None and method not in SUPPORTED_AUTH_METHODS:
        raise _BadEntry(f"`oauth.tokenEndpointAuthMethod` must be one of {', '.join(SUPPORTED_AUTH_METHODS)}")
    metadata_url = optional_text("clientMetadataUrl", "client_metadata_url")
    if metadata_url is not None and not _valid_client_metadata_url(metadata_url):
        raise _BadEntry("`oauth.clientMetadataUrl` must be an https URL with a path")
    private_key = optional_text("privateKey", "private_key")
    if method == "private_key_jwt" and private_key is None:
        raise _BadEntry("`oauth.tokenEndpointAuthMethod` private_key_jwt needs `oauth.privateKey` (a PEM private key)")
    algorithm = optional_text("signingAlgorithm", "signing_algorithm")
    if algorithm is not None and algorithm not in SIGNING_ALGORITHMS:
        raise _BadEntry(f"`oauth.signingAlgorithm` must be one of {', '.join(SIGNING_ALGORITHMS)}")
    idp_token_endpoint = optional_text("idpTokenEndpoint", "idp_token_endpoint")
    idp_id_token = optional_text("idpIdToken", "idp_id_token")
    if idp_token_endpoint is not None:
        parts = urlsplit(idp_token_endpoint)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise _BadEntry("`oauth.idpTokenEndpoint` must be an https URL (http only on loopback)")
        if idp_id_token is None or client_id is None:
            raise _BadEntry(
                "`oauth.idpTokenEndpoint` (cross-app access) needs `oauth.idpIdToken` and `oauth.clientId` "
                "(and usually `oauth.clientSecret`)"
            )
    scopes = reader.field("scopes")
    return OAuthSettings(
        client_id=client_id,
        client_secret=optional_text("clientSecret", "client_secret"),
        token_endpoint_auth_method=method,
        scopes=None if scopes is _ABSENT else _scopes(reader, scopes),
        client_credentials=client_credentials,
        client_metadata_url=metadata_url,
        callback_port=_callback_port(reader.field("callbackPort", "callback_port")),
        private_key=private_key,
        signing_algorithm=algorithm,
        idp_token_endpoint=idp_token_endpoint,
        idp_client_id=optional_text("idpClientId", "idp_client_id"),
        idp_client_secret=optional_text("idpClientSecret", "idp_client_secret"),
        idp_id_token=idp_id_token,
    )


def _transport_kind(reader: _EntryReader) -> Literal["stdio", "http", "sse"]:
    declared = reader.field("type")
    if declared is _ABSENT:
        has_command, has_url = "command" in reader.entry, "url" in reader.entry
        if has_command and has_url:
            raise _BadEntry('it has both `command` and `url`; add "type": "stdio" or "type": "http"')
        if has_command:
            return "stdio"
        if has_url:
            return "http"
        raise _BadEntry("it needs `command` (a stdio server) or `url` (an HTTP server)")
    if declared == "stdio":
        return "stdio"
    if isinstance(declared, str) and declared in _HTTP_TYPES:
        return _HTTP_TYPES[declared]
    shown = repr(declared) if isinstance(declared, str) else _kind_of(declared)
    raise _BadEntry(f"`type` {shown} is not supported; use one of {_TYPES_ACCEPTED}")


def _server(name: str, entry: object, *, where: str, environ: Mapping[str, str]) -> ServerConfig:
    """One entry to a ServerConfig; every problem stays inside it."""
    lazy = False
    reader = _EntryReader(entry if isinstance(entry, dict) else {}, environ)
    try:
        if not name:
            raise _BadEntry("the server name is empty; give the entry a name")
        if not isinstance(entry, dict):
            raise _BadEntry(f"the entry must be an object, not {_kind_of(entry)}")
        lazy = reader.flag("disabled")
        kind = _transport_kind(reader)
        oauth = _oauth(reader)
        transport: StdioServer | HttpServer
        if kind == "stdio":
            if oauth is not None:
                raise _BadEntry("`oauth` applies only to http and sse servers; remove it from this stdio entry")
            transport = _stdio(reader)
        else:
            transport = _http(reader, kind, oauth)
        if reader.unset:
            raise _BadEntry
    except _BadEntry as bad:
        # An unset variable usually causes the other complaints (a URL that is still "${URL}"): report it first.
        detail = (
            f"environment variable(s) not set: {', '.join(reader.unset)}; set them, or give a default "
            "as ${VAR:-default}"
            if reader.unset
            else str(bad)
        )
        return ServerConfig(
            name=name,
            transport=None,
            lazy=lazy,
            problem=f"Server '{name}' is misconfigured ({where}): {detail}. "
            "Fix the entry; the other servers are unaffected.",
        )
    return ServerConfig(name=name, transport=transport, lazy=lazy, oauth=oauth)


def _decode(text: str | bytes, path: Path) -> object:
    """The JSON document in ``text``, or a ConfigError with the position."""
    advice = "fix the file (it must be JSON), or point $MCP_CONFIG_PATH at another one"
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + 1
            column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
            raise ConfigError(
                f"MCP configuration {path} is not UTF-8 text (line {line} column {column}); {advice}.",
                path=path,
                line=line,
                column=column,
            ) from None
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"MCP configuration {path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}; "
            f"{advice}.",
            path=path,
            line=error.lineno,
            column=error.colno,
        ) from None
    except (ValueError, RecursionError):
        # ValueError: a number with more digits than int() allows; RecursionError: absurd nesting.
        raise ConfigError(
            f"MCP configuration {path} is not usable JSON (a number too long or nesting too deep); {advice}.",
            path=path,
        ) from None


def _object_at(value: object, where: str, path: Path) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"MCP configuration {path}: {where} must be a JSON object, not {_kind_of(value)}; fix it in the file.",
            path=path,
        )
    return value


def _names(connected_servers: Iterable[str] | str) -> tuple[str, ...]:
    """Server names from a comma-separated string or an iterable: trimmed, empties dropped, first occurrence kept."""
    items = connected_servers.split(",") if isinstance(connected_servers, str) else connected_servers
    return tuple(dict.fromkeys(stripped for item in items if (stripped := item.strip())))


def parse_config(
    text: str | bytes,
    *,
    path: Path,
    cwd: Path | str,
    environ: Mapping[str, str],
    connected_servers: Iterable[str] | str = (),
) -> PoolConfig:
    """Parse the text of a configuration file. Pure: reads no file and no process state.

    Args:
        text: the file's contents (bytes are decoded as UTF-8; a BOM is ignored).
        path: the file it came from, for messages and ``PoolConfig.path``.
        cwd: the working directory whose ``projects`` entry applies; made
            absolute, then compared as an exact string.
        environ: the variables ``${VAR}`` expands from.
        connected_servers: the eager server names, comma-separated or as an iterable.

    Returns:
        The configuration; bad entries are servers with a ``problem``.

    Raises:
        ConfigError: the text is not JSON, or the parts read here have the wrong shape.
    """
    document = _object_at(_decode(text, path), "the top level", path)
    project_key = str(Path(cwd).absolute())
    sections: list[tuple[str, dict[str, object]]] = []
    if "mcpServers" in document:
        sections.append(("mcpServers", _object_at(document["mcpServers"], "`mcpServers`", path)))
    if "projects" in document:
        projects = _object_at(document["projects"], "`projects`", path)
        if project_key in projects:
            where = f"projects[{json.dumps(project_key)}]"
            project = _object_at(projects[project_key], f"`{where}`", path)
            if "mcpServers" in project:
                where = f"{where}.mcpServers"
                sections.append((where, _object_at(project["mcpServers"], f"`{where}`", path)))
    servers: dict[str, ServerConfig] = {}
    for section, entries in sections:
        for name, entry in entries.items():
            servers[name] = _server(name, entry, where=f"{section} in {path}", environ=environ)
    names = _names(connected_servers)
    return PoolConfig(
        path=path,
        servers=servers,
        eager=frozenset(name for name in names if name in servers and servers[name].problem is None),
        unknown_eager=tuple(name for name in names if name not in servers),
    )


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME")
    if home:
        return Path(home)
    try:
        return Path.home()
    except RuntimeError:
        raise ConfigError(
            f"Cannot find the home directory for ~/{DEFAULT_CONFIG_NAME}; set ${CONFIG_PATH_ENV} or HOME.",
            path=Path("~") / DEFAULT_CONFIG_NAME,
        ) from None


def load_config(
    config_path: Path | None = None,
    *,
    connected_servers: Iterable[str] | str | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> PoolConfig:
    """Read and parse the MCP server configuration.

    Args:
        config_path: the file; default ``$MCP_CONFIG_PATH``, else ``~/.claude.json``
            (a leading ``~`` is expanded in both).
        connected_servers: the eager server names; default ``$CONNECTED_SERVERS``
            (comma-separated, whitespace trimmed, empty items ignored).
        cwd: the directory whose ``projects`` entry applies; default the
            process's working directory.
        environ: the environment for the two variables above, ``HOME`` and
            ``${VAR}`` expansion; default ``os.environ``.

    Returns:
        The configuration. When the default file does not exist, an empty one
        with ``found`` False.

    Raises:
        ConfigError: an explicitly named file does not exist, or the file
            cannot be read, is not JSON, or has the wrong shape.
    """
    environ = os.environ if environ is None else environ
    explicit = config_path if config_path is not None else environ.get(CONFIG_PATH_ENV) or None
    if explicit is None:
        path = _home(environ) / DEFAULT_CONFIG_NAME
    else:
        text = str(explicit)
        path = _home(environ) / text[2:] if text == "~" or text.startswith("~/") else Path(text)
    path = path.absolute()
    if connected_servers is None:
        connected_servers = environ.get(CONNECTED_SERVERS_ENV, "")
    where = Path.cwd() if cwd is None else cwd
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit is None:
            empty = parse_config("{}", path=path, cwd=where, environ=environ, connected_servers=connected_servers)
            return attrs.evolve(empty, found=False)
        raise ConfigError(
            f"MCP configuration {path} does not exist; create it, or pass another path "
            f"(config_path, or ${CONFIG_PATH_ENV}).",
            path=path,
        ) from None
    except OSError as error:
        raise ConfigError(
            f"Cannot read MCP configuration {path}: {error.strerror or error}; check that it is a readable file, "
            f"or point ${CONFIG_PATH_ENV} at another one.",
            path=path,
        ) from None
    return parse_config(data, path=path, cwd=where, environ=environ, connected_servers=connected_servers)


def _valid_client_metadata_url(url: str) -> bool:
    # The mcp SDK's rule, imported here so that reading a configuration without
    # a metadata document URL does not load the SDK.
    from mcp.client.auth.utils import is_valid_client_metadata_url

    return is_valid_client_metadata_url(url)
