"""Tests for the configuration edge: entry forms, precedence, eager names,
malformed files, bad entries, ``${VAR}`` expansion and secret redaction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_tether.adapters.config import (
    CONFIG_PATH_ENV,
    CONNECTED_SERVERS_ENV,
    ConfigError,
    HttpServer,
    PoolConfig,
    ServerConfig,
    StdioServer,
    load_config,
    parse_config,
)
from mcp_tether.adapters.oauth import OAuthSettings

PATH = Path("/home/user/.claude.json")
CWD = "/home/user/project"
SECRET = "s3cr3t-value-never-shown"


def parse(
    document: Any,
    *,
    environ: Mapping[str, str] | None = None,
    connected: str | list[str] = "",
    cwd: str = CWD,
) -> PoolConfig:
    return parse_config(json.dumps(document), path=PATH, cwd=cwd, environ=environ or {}, connected_servers=connected)


def server(entry: Any, *, environ: Mapping[str, str] | None = None) -> ServerConfig:
    return parse({"mcpServers": {"s": entry}}, environ=environ).servers["s"]


def problem(entry: Any, *, environ: Mapping[str, str] | None = None) -> str:
    config = server(entry, environ=environ)
    assert config.transport is None
    assert config.problem is not None
    return config.problem


# ---------------------------------------------------------------------------
# entry forms


def test_stdio_with_type() -> None:
    config = server({"type": "stdio", "command": "npx", "args": ["-y", "pkg"], "env": {"A": "1"}, "cwd": "/tmp"})
    assert config.problem is None
    assert config.transport == StdioServer(command="npx", args=("-y", "pkg"), env={"A": "1"}, cwd="/tmp")
    assert config.oauth is None
    assert config.lazy is False


def test_stdio_without_type_and_defaults() -> None:
    assert server({"command": "srv"}).transport == StdioServer(command="srv")


@pytest.mark.parametrize("declared", ["http", "streamable-http", "streamable_http", None])
def test_http_forms(declared: str | None) -> None:
    entry: dict[str, Any] = {"url": "https://mcp.example.com/mcp", "headers": {"X-Team": "a"}}
    if declared is not None:
        entry["type"] = declared
    assert server(entry).transport == HttpServer(
        url="https://mcp.example.com/mcp", kind="http", headers={"X-Team": "a"}, requires_auth=False
    )


def test_sse() -> None:
    transport = server({"type": "sse", "url": "http://127.0.0.1:8000/sse"}).transport
    assert transport == HttpServer(url="http://127.0.0.1:8000/sse", kind="sse")


def test_disabled_means_lazy() -> None:
    assert server({"command": "x", "disabled": True}).lazy is True
    assert server({"command": "x", "disabled": False}).lazy is False


def test_unknown_keys_are_ignored() -> None:
    config = server({"command": "x", "alwaysAllow": ["t"], "url": None, "type": "stdio"})
    assert config.transport == StdioServer(command="x")


def test_oauth_camel_case() -> None:
    config = server(
        {
            "type": "http",
            "url": "https://mcp.notion.com/mcp",
            "oauth": {
                "clientId": "cid",
                "clientSecret": "csecret",
                "scopes": ["read", "write"],
                "clientCredentials": True,
                "clientMetadataUrl": "https://client.example/meta.json",
                "callbackPort": 8123,
                "tokenEndpointAuthMethod": "client_secret_basic",
            },
        }
    )
    assert config.oauth == OAuthSettings(
        client_id="cid",
        client_secret="csecret",
        scopes="read write",
        client_credentials=True,
        client_metadata_url="https://client.example/meta.json",
        callback_port=8123,
        token_endpoint_auth_method="client_secret_basic",
    )
    assert isinstance(config.transport, HttpServer)
    assert config.transport.requires_auth is True


def test_oauth_snake_case_and_string_scopes() -> None:
    config = server(
        {
            "type": "sse",
            "url": "https://x.example/sse",
            "oauth": {
                "client_id": "cid",
                "client_secret": "cs",
                "scopes": "  a   b ",
                "client_credentials": False,
                "client_metadata_url": "https://client.example/m",
                "callback_port": 0,
                "token_endpoint_auth_method": "none",
            },
        }
    )
    assert config.oauth == OAuthSettings(
        client_id="cid",
        client_secret="cs",
        scopes="a b",
        client_metadata_url="https://client.example/m",
        token_endpoint_auth_method="none",
    )


def test_empty_oauth_object_means_oauth_expected() -> None:
    config = server({"url": "https://x.example/mcp", "oauth": {}})
    assert config.oauth == OAuthSettings()
    assert isinstance(config.transport, HttpServer)
    assert config.transport.requires_auth is True


def test_any_non_empty_name_is_kept() -> None:
    names = ["../etc/passwd", "CON", "with space", "é" * 300, "a/b"]
    config = parse({"mcpServers": {name: {"command": "x"} for name in names}})
    assert list(config.servers) == names
    assert all(config.servers[name].name == name and config.servers[name].problem is None for name in names)


# ---------------------------------------------------------------------------
# precedence


def test_project_entries_follow_and_override_top_level() -> None:
    document = {
        "mcpServers": {"a": {"command": "top-a"}, "b": {"command": "top-b"}},
        "projects": {
            CWD: {"mcpServers": {"b": {"command": "project-b"}, "c": {"command": "project-c"}}},
            "/elsewhere": {"mcpServers": {"d": {"command": "other"}}},
        },
    }
    config = parse(document)
    assert list(config.servers) == ["a", "b", "c"]
    assert config.servers["b"].transport == StdioServer(command="project-b")
    assert parse(document, cwd="/elsewhere").servers.keys() == {"a", "b", "d"}


def test_project_match_is_exact_no_parent_search() -> None:
    document = {"projects": {CWD: {"mcpServers": {"p": {"command": "x"}}}}}
    assert parse(document, cwd=CWD + "/sub").servers == {}
    assert list(parse(document, cwd=CWD + "/").servers) == ["p"]  # the same directory


def test_bad_project_entry_still_overrides() -> None:
    document = {"mcpServers": {"a": {"command": "ok"}}, "projects": {CWD: {"mcpServers": {"a": {"command": 3}}}}}
    message = parse(document).servers["a"].problem
    assert message is not None
    assert f'projects["{CWD}"].mcpServers' in message


def test_project_without_servers_and_file_without_sections() -> None:
    assert parse({"projects": {CWD: {"allowedTools": []}}}).servers == {}
    assert parse({"numStartups": 3}).servers == {}


# ---------------------------------------------------------------------------
# CONNECTED_SERVERS


def test_connected_servers_parsing() -> None:
    document = {"mcpServers": {"a": {"command": "x"}, "b": {"command": "x"}, "bad": {"command": ""}}}
    config = parse(document, connected=" a ,, nope ,b,a, bad ,  ,other")
    assert config.eager == {"a", "b"}
    assert config.unknown_eager == ("nope", "other")


def test_connected_servers_as_iterable_and_lazy_listed_is_eager() -> None:
    config = parse({"mcpServers": {"a": {"command": "x", "disabled": True}}}, connected=[" a", "", "z"])
    assert config.eager == {"a"}
    assert config.unknown_eager == ("z",)
    assert config.servers["a"].lazy is True


# ---------------------------------------------------------------------------
# malformed files


def config_error(text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path=PATH, cwd=CWD, environ={})
    assert caught.value.path == PATH
    assert str(PATH) in str(caught.value)
    return caught.value


def test_invalid_json_names_line_and_column() -> None:
    error = config_error('{\n  "mcpServers": {\n    "a": {"command": "x",}\n  }\n}')
    assert (error.line, error.column) == (3, 26)
    assert "line 3 column 26" in str(error)
    assert "MCP_CONFIG_PATH" in str(error)


def test_empty_file() -> None:
    error = config_error("")
    assert (error.line, error.column) == (1, 1)


def test_not_utf8_names_position() -> None:
    error = config_error(b'{\n "a": "\xff"}')
    assert (error.line, error.column) == (2, 8)
    assert "UTF-8" in str(error)


def test_bom_is_accepted() -> None:
    config = parse_config(b'\xef\xbb\xbf{"mcpServers": {"a": {"command": "x"}}}', path=PATH, cwd=CWD, environ={})
    assert list(config.servers) == ["a"]


def test_absurd_nesting_and_huge_numbers() -> None:
    assert "nesting" in str(config_error("[" * 100_000 + "]" * 100_000))
    assert "too long" in str(config_error('{"n": ' + "9" * 5000 + "}"))


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ([], "the top level"),
        ("text", "the top level"),
        ({"mcpServers": []}, "`mcpServers`"),
        ({"mcpServers": None}, "`mcpServers`"),
        ({"projects": "x"}, "`projects`"),
        ({"projects": {CWD: []}}, f'`projects["{CWD}"]`'),
        ({"projects": {CWD: {"mcpServers": 1}}}, f'`projects["{CWD}"].mcpServers`'),
    ],
)
def test_wrong_shapes(document: Any, where: str) -> None:
    assert where in str(config_error(json.dumps(document)))


def test_wrong_shape_of_other_projects_is_ignored() -> None:
    assert parse({"projects": {"/other": {"mcpServers": 5}}}).servers == {}


# ---------------------------------------------------------------------------
# bad entries disable only themselves


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("npx", "the entry must be an object"),
        ({}, "`command`"),
        ({"command": "x", "url": "https://h/"}, '"type": "stdio"'),
        ({"type": "ws", "url": "wss://h/"}, "`type` 'ws'"),
        ({"type": 3, "command": "x"}, "`type` a number"),
        ({"type": "stdio"}, "`command`"),
        ({"command": ""}, "`command`"),
        ({"command": "   "}, "`command`"),
        ({"command": ["npx"]}, "`command` must be a string, not a list"),
        ({"command": "a\u0000b"}, "`command` contains a NUL"),
        ({"command": "\ud800"}, "`command` contains an invalid"),
        ({"command": "x", "args": "-y pkg"}, "`args` must be a list"),
        ({"command": "x", "args": ["ok", 2]}, "`args[1]` must be a string"),
        ({"command": "x", "env": ["A=1"]}, "`env` must be an object"),
        ({"command": "x", "env": {"A": 1}}, "`env.A` must be a string"),
        ({"command": "x", "env": {"A=B": "1"}}, "'A=B'"),
        ({"command": "x", "env": {"": "1"}}, "`env` has the key ''"),
        ({"command": "x", "cwd": 5}, "`cwd`"),
        ({"command": "x", "cwd": ""}, "`cwd`"),
        ({"command": "x", "disabled": "yes"}, "`disabled` must be true or false"),
        ({"command": "x", "oauth": {}}, "`oauth` applies only to http and sse"),
        ({"type": "http"}, "`url`"),
        ({"url": 5}, "`url` must be a string"),
        ({"url": "ftp://h/x"}, "`url` must start with https://"),
        ({"url": "mcp.example.com/mcp"}, "`url` must start with https://"),
        ({"url": "https:///path"}, "`url` has no host"),
        ({"url": "https://h:99999/"}, "`url` is not a valid URL"),
        ({"url": "https://[::1/"}, "`url` is not a valid URL"),
        ({"url": "https://h/ x"}, "`url` is empty or contains spaces"),
        ({"url": ""}, "`url` is empty"),
        ({"url": "https://h/", "headers": {"Bad Name": "v"}}, "'Bad Name'"),
        ({"url": "https://h/", "headers": {"X": "a\r\nInjected: 1"}}, "`headers.X` contains characters"),
        ({"url": "https://h/", "headers": {"X": "caf\u00e9"}}, "`headers.X` contains characters"),
        ({"url": "https://h/", "headers": {"X": None}}, "`headers.X` must be a string, not null"),
        ({"url": "https://h/", "oauth": "yes"}, "`oauth` must be an object"),
        ({"url": "https://h/", "oauth": {"clientId": 1}}, "`oauth.clientId` must be a string"),
        ({"url": "https://h/", "oauth": {"clientId": ""}}, "`oauth.clientId` is empty"),
        ({"url": "https://h/", "oauth": {"clientId": "a", "client_id": "a"}}, "`oauth.clientId` and `oauth.client_id`"),
        ({"url": "https://h/", "oauth": {"scopes": []}}, "`oauth.scopes` is empty"),
        ({"url": "https://h/", "oauth": {"scopes": "  "}}, "`oauth.scopes` is empty"),
        ({"url": "https://h/", "oauth": {"scopes": ["a b"]}}, "without spaces"),
        ({"url": "https://h/", "oauth": {"scopes": [1]}}, "`oauth.scopes[0]` must be a string"),
        ({"url": "https://h/", "oauth": {"callbackPort": 70000}}, "`oauth.callbackPort`"),
        ({"url": "https://h/", "oauth": {"callbackPort": -1}}, "`oauth.callbackPort`"),
        ({"url": "https://h/", "oauth": {"callbackPort": True}}, "`oauth.callbackPort`"),
        ({"url": "https://h/", "oauth": {"callbackPort": "8080"}}, "`oauth.callbackPort`"),
        (
            {"url": "https://h/", "oauth": {"clientCredentials": "true"}},
            "`oauth.clientCredentials` must be true or false",
        ),
        ({"url": "https://h/", "oauth": {"clientCredentials": True}}, "needs `oauth.clientId`"),
        ({"url": "https://h/", "oauth": {"tokenEndpointAuthMethod": "tls_client_auth"}}, "must be one of"),
        ({"url": "https://h/", "oauth": {"clientMetadataUrl": "http://c.example/m"}}, "https URL with a path"),
        ({"url": "https://h/", "oauth": {"clientMetadataUrl": "https://c.example/"}}, "https URL with a path"),
    ],
)
def test_bad_entry_disables_only_that_server(entry: Any, field: str) -> None:
    config = parse({"mcpServers": {"before": {"command": "x"}, "bad": entry, "after": {"url": "https://ok.example/"}}})
    bad = config.servers["bad"]
    assert bad.transport is None
    assert bad.oauth is None
    assert bad.problem is not None
    assert bad.problem.startswith("Server 'bad' is misconfigured (mcpServers in /home/user/.claude.json): ")
    assert field in bad.problem
    assert "Fix the entry" in bad.problem
    assert config.servers["before"].problem is None
    assert config.servers["after"].problem is None


def test_problem_keeps_disabled_flag() -> None:
    assert server({"disabled": True, "type": "nope"}).lazy is True


def test_empty_name_is_a_problem_not_a_crash() -> None:
    message = parse({"mcpServers": {"": {"command": "x"}, "ok": {"command": "x"}}}, connected="ok").servers[""]
    assert message.problem is not None
    assert "name is empty" in message.problem


def test_misconfigured_server_in_connected_servers_is_neither_eager_nor_unknown() -> None:
    config = parse({"mcpServers": {"bad": {"url": "nope"}}}, connected="bad")
    assert config.eager == frozenset()
    assert config.unknown_eager == ()


# ---------------------------------------------------------------------------
# ${VAR} expansion


def test_expansion_everywhere_it_applies() -> None:
    environ = {"HOME_DIR": "/h", "TOKEN": "tok", "HOST": "mcp.example", "EMPTY": ""}
    stdio = server(
        {
            "command": "${HOME_DIR}/bin/srv",
            "args": ["--dir=${HOME_DIR}", "${MISSING:-fallback}", "$HOME_DIR", "${EMPTY:-unused}"],
            "env": {"KEY": "${TOKEN}", "PLAIN": "x${TOKEN}y${TOKEN}"},
            "cwd": "${HOME_DIR}/work",
        },
        environ=environ,
    )
    assert stdio.transport == StdioServer(
        command="/h/bin/srv",
        args=("--dir=/h", "fallback", "$HOME_DIR", ""),  # no braces: literal; set but empty: empty
        env={"KEY": "tok", "PLAIN": "xtokytok"},
        cwd="/h/work",
    )
    http = server(
        {
            "url": "https://${HOST}/mcp",
            "headers": {"Authorization": "Bearer ${TOKEN}"},
            "oauth": {"clientId": "${CID:-client}", "clientSecret": "${TOKEN}"},
        },
        environ=environ,
    )
    assert http.transport == HttpServer(
        url="https://mcp.example/mcp", headers={"Authorization": "Bearer tok"}, requires_auth=True
    )
    assert http.oauth == OAuthSettings(client_id="client", client_secret="tok")


def test_default_keeps_everything_after_the_first_separator() -> None:
    assert server({"command": "${NOPE:-a:-b}"}).transport == StdioServer(command="a:-b")


def test_unset_variable_disables_only_that_server() -> None:
    config = parse(
        {
            "mcpServers": {
                "remote": {"url": "${REMOTE_URL}", "headers": {"X": "${ALSO_MISSING}"}},
                "local": {"command": "x", "args": ["${A}", "${B}"]},
                "fine": {"command": "${SET}"},
            }
        },
        environ={"SET": "ok"},
    )
    remote = config.servers["remote"].problem
    assert remote is not None
    assert "REMOTE_URL (in `url`)" in remote  # reported instead of the URL complaint it causes
    assert "${VAR:-default}" in remote
    local = config.servers["local"].problem
    assert local is not None
    assert "A (in `args[0]`), B (in `args[1]`)" in local
    assert config.servers["fine"].transport == StdioServer(command="ok")


def test_expanded_values_are_validated() -> None:
    assert "`url` must start with https://" in problem({"url": "${U}"}, environ={"U": "file:///etc/passwd"})
    assert "`headers.X` contains characters" in problem(
        {"url": "https://h/", "headers": {"X": "${V}"}}, environ={"V": "a\nb"}
    )
    assert "`command` is empty" in problem({"command": "${C}"}, environ={"C": ""})


# ---------------------------------------------------------------------------
# secrets


def test_reprs_hide_secret_values() -> None:
    stdio = StdioServer(command="srv", env={"API_KEY": SECRET})
    assert "API_KEY" in repr(stdio)
    assert SECRET not in repr(stdio)
    http = HttpServer(
        url=f"https://user:{SECRET}@h.example/mcp?key={SECRET}#{SECRET}", headers={"Authorization": SECRET}
    )
    text = repr(http)
    assert SECRET not in text
    assert "https://h.example/mcp?***#***" in text
    assert "Authorization" in text
    config = server({"url": "https://h/", "headers": {"A": SECRET}, "oauth": {"clientId": "c", "clientSecret": SECRET}})
    assert SECRET not in repr(config)
    assert SECRET not in repr(parse({"mcpServers": {"s": {"command": "x", "env": {"K": SECRET}}}}))


def test_repr_of_invalid_url_does_not_raise() -> None:
    assert "<invalid url>" in repr(HttpServer(url="https://[::1/"))


@pytest.mark.parametrize(
    "entry",
    [
        {"command": "x", "env": {"K": SECRET, "BAD": 1}},
        {"command": "x", "env": {"K": SECRET, "B=": "v"}},
        {"url": "https://h/", "headers": {"Authorization": SECRET + "\n"}},
        {"url": "https://h/", "headers": {"Authorization": SECRET, "Bad Name": "v"}},
        {"url": f"https://h/?k={SECRET}", "headers": {"A": SECRET}, "oauth": {"clientSecret": SECRET, "scopes": []}},
        {"url": f"ftp://u:{SECRET}@h/"},
        {"url": f"https://h/ {SECRET}"},
        {"url": f"https://h:{SECRET}/"},
        {"url": "https://h/", "oauth": {"clientSecret": SECRET, "callbackPort": SECRET}},
        {"url": "https://h/", "oauth": {"clientSecret": 1}},
        {"command": "x", "type": 1, "env": {"K": SECRET}},
    ],
)
def test_problems_never_quote_secret_values(entry: Any) -> None:
    message = problem(entry, environ={"TOKEN": SECRET})
    assert SECRET not in message
    assert SECRET not in repr(server(entry))


def test_file_errors_never_quote_content() -> None:
    assert SECRET not in str(config_error('{"mcpServers": {"a": {"env": {"K": "' + SECRET + '"}}}'))
    assert SECRET not in str(config_error('{"k": "' + SECRET + '" "x": 1}'))


# ---------------------------------------------------------------------------
# load_config: finding and reading the file


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_load_explicit_path(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"mcpServers": {"a": {"command": "${C}"}}})
    config = load_config(path, connected_servers="a", cwd=tmp_path, environ={"C": "run"})
    assert config.path == path
    assert config.found is True
    assert config.servers["a"].transport == StdioServer(command="run")
    assert config.eager == {"a"}


def test_load_from_environment_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path / "env.json",
        {"mcpServers": {"a": {"command": "x"}}, "projects": {str(tmp_path): {"mcpServers": {"b": {"command": "y"}}}}},
    )
    environ = {CONFIG_PATH_ENV: str(path), CONNECTED_SERVERS_ENV: "b, ghost", "HOME": "/nonexistent"}
    config = load_config(cwd=tmp_path, environ=environ)
    assert config.path == path
    assert list(config.servers) == ["a", "b"]
    assert config.eager == {"b"}
    assert config.unknown_eager == ("ghost",)


def test_argument_beats_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "arg.json", {"mcpServers": {"arg": {"command": "x"}}})
    environ = {CONFIG_PATH_ENV: str(tmp_path / "missing.json"), CONNECTED_SERVERS_ENV: "env"}
    config = load_config(path, connected_servers=["arg"], cwd=tmp_path, environ=environ)
    assert list(config.servers) == ["arg"]
    assert config.eager == {"arg"}
    assert config.unknown_eager == ()


def test_default_path_and_tilde(tmp_path: Path) -> None:
    write(tmp_path / ".claude.json", {"mcpServers": {"home": {"command": "x"}}})
    config = load_config(cwd=tmp_path, environ={"HOME": str(tmp_path)})
    assert config.path == tmp_path / ".claude.json"
    assert list(config.servers) == ["home"]
    write(tmp_path / "other.json", {"mcpServers": {"tilde": {"command": "x"}}})
    config = load_config(cwd=tmp_path, environ={"HOME": str(tmp_path), CONFIG_PATH_ENV: "~/other.json"})
    assert list(config.servers) == ["tilde"]


def test_default_file_absent_is_an_empty_configuration(tmp_path: Path) -> None:
    config = load_config(cwd=tmp_path, environ={"HOME": str(tmp_path), CONFIG_PATH_ENV: "", CONNECTED_SERVERS_ENV: "a"})
    assert config.found is False
    assert config.path == tmp_path / ".claude.json"
    assert config.servers == {}
    assert config.unknown_eager == ("a",)


@pytest.mark.parametrize("via_environment", [False, True])
def test_explicit_file_absent_is_an_error(tmp_path: Path, via_environment: bool) -> None:
    missing = tmp_path / "nope.json"
    argument = None if via_environment else missing
    environ = {CONFIG_PATH_ENV: str(missing)} if via_environment else {}
    with pytest.raises(ConfigError) as caught:
        load_config(argument, cwd=tmp_path, environ=environ)
    assert caught.value.path == missing
    assert f"{missing} does not exist" in str(caught.value)
    assert CONFIG_PATH_ENV in str(caught.value)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, cwd=tmp_path, environ={})  # a directory
    assert f"Cannot read MCP configuration {tmp_path}" in str(caught.value)


def test_malformed_file_is_an_error_with_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"mcpServers": {\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, cwd=tmp_path, environ={})
    assert caught.value.path == path
    assert caught.value.line == 3
    assert str(path) in str(caught.value)


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "rel.json", {})
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("rel.json"), environ={})
    assert config.path == tmp_path / "rel.json"


def test_cwd_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "c.json", {"projects": {str(tmp_path): {"mcpServers": {"here": {"command": "x"}}}}})
    monkeypatch.chdir(tmp_path)
    assert list(load_config(path, environ={}).servers) == ["here"]


def test_configuration_values_are_read_only() -> None:
    config = parse({"mcpServers": {"a": {"command": "x", "env": {"K": "v"}}}})
    with pytest.raises(TypeError):
        config.servers["b"] = config.servers["a"]  # type: ignore[index]
    transport = config.servers["a"].transport
    assert isinstance(transport, StdioServer)
    with pytest.raises(TypeError):
        transport.env["K"] = "w"  # type: ignore[index]


# ---------------------------------------------------------------------------
# property: nothing the file can say escapes as anything but ConfigError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` values, or now and then any JSON value in their place."""
    return st.integers(0, 3).flatmap(lambda pick: good if pick else json_values)


texts = st.sampled_from(["a", "npx", "${V}", "${X}", "${X:-d}", "", "a b", "\n", "caf\u00e9"])
urls = st.sampled_from(["https://h.example/mcp", "http://127.0.0.1:1/sse", "${V}", "https://${X:-h}/", "ftp://h/", "x"])
string_maps = st.dictionaries(st.sampled_from(["K", "Authorization", "A=B", "", "X Y"]), mostly(texts), max_size=3)
oauth_settings = st.fixed_dictionaries(
    {},
    optional={
        "clientId": mostly(texts),
        "client_secret": mostly(texts),
        "scopes": mostly(texts | st.lists(texts, max_size=3)),
        "callbackPort": mostly(st.integers(-1, 70000)),
        "clientCredentials": mostly(st.booleans()),
        "clientMetadataUrl": mostly(urls),
        "tokenEndpointAuthMethod": mostly(st.sampled_from(["none", "client_secret_post", "private_key_jwt"])),
    },
)
common = {"disabled": mostly(st.booleans()), "oauth": mostly(oauth_settings)}
entries = st.one_of(
    st.fixed_dictionaries(
        {"command": mostly(texts)},
        optional={
            "type": mostly(st.just("stdio")),
            "args": mostly(st.lists(mostly(texts), max_size=3)),
            "env": mostly(string_maps),
            "cwd": mostly(texts),
            **common,
        },
    ),
    st.fixed_dictionaries(
        {"url": mostly(urls)},
        optional={
            "type": mostly(st.sampled_from(["http", "sse", "streamable-http", "streamable_http", "ws"])),
            "headers": mostly(string_maps),
            **common,
        },
    ),
)
names = st.sampled_from(["a", "b", "c"]) | st.text(max_size=6)
claude_files = st.fixed_dictionaries(
    {},
    optional={
        "mcpServers": mostly(st.dictionaries(names, mostly(entries), max_size=4)),
        "projects": mostly(
            st.dictionaries(
                st.sampled_from([CWD, "/other"]),
                mostly(st.fixed_dictionaries({"mcpServers": st.dictionaries(names, entries, max_size=3)})),
                max_size=2,
            )
        ),
    },
)
# File-shaped documents, sometimes any JSON value.
documents = mostly(claude_files)


def check_config(config: PoolConfig) -> None:
    for name, entry in config.servers.items():
        assert entry.name == name
        assert (entry.transport is None) == (entry.problem is not None)
        assert entry.problem is None or entry.problem.startswith(f"Server '{name}'")
    assert config.eager <= config.servers.keys()
    assert not set(config.unknown_eager) & config.servers.keys()


def outcome(text: str | bytes, connected: list[str]) -> PoolConfig | ConfigError:
    try:
        return parse_config(text, path=PATH, cwd=CWD, environ={"V": "v"}, connected_servers=connected)
    except ConfigError as error:
        return error


@given(documents, st.lists(names, max_size=4))
def test_arbitrary_documents_parse_or_raise_config_error(document: Any, connected: list[str]) -> None:
    result = outcome(json.dumps(document), connected)
    if isinstance(result, ConfigError):
        assert str(PATH) in str(result)
    else:
        check_config(result)


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_arbitrary_bytes_parse_or_raise_config_error(data: bytes) -> None:
    result = outcome(data, [])
    if isinstance(result, ConfigError):
        assert str(PATH) in str(result)
    else:
        check_config(result)
