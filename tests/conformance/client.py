"""The MCP conformance client, built on mcp_tether's pool.

The suite runs it as ``client.py <server-url>`` with the scenario name in
``MCP_CONFORMANCE_SCENARIO`` and, for a few scenarios, credentials as JSON in
``MCP_CONFORMANCE_CONTEXT``. It writes a configuration with one HTTP server at
the URL (OAuth settings from the context when given) and a token directory,
both temporary; builds a :class:`mcp_tether.ServerPool` whose browser step is
:class:`mcp_tether.testing.browser.HeadlessBrowser` (the suite's authorization
server approves at once) and :func:`mcp_tether.elicitation.accept_defaults`
as its elicitation handler; and does what the scenario needs. Everything OAuth
is the library's: discovery, registration, PKCE, the loopback callback, the
state machine and the token log.

Exit status: 0 on success; 1 with a message naming the scenario and what
failed; 2 on a usage error. The context's secrets are never printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp import types as mcp_types

from mcp_tether import ServerPool, TetherError, TransitionRecord
from mcp_tether.elicitation import accept_defaults
from mcp_tether.testing.browser import HeadlessBrowser

__all__ = ["main", "oauth_entry", "run"]

#: The name of the one configured server.
SERVER = "conformance"
#: The Client ID Metadata Document URL the `auth/basic-cimd` scenario expects as `client_id`.
CIMD_URL = "https://conformance-test.local/client-metadata.json"
#: Seconds the whole run may take: under the suite's default 30 s, so a stuck step fails here, clearly.
RUN_TIMEOUT = 25.0
#: Seconds the headless browser step may take.
AUTHORIZATION_TIMEOUT = 15.0

#: The tool each scenario calls, with its arguments; other scenarios list tools and call `test-tool` if offered.
SCENARIO_CALLS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
    "sse-retry": ("test_reconnection", {}),
}
#: The tool the `auth/*` scenarios' resource server offers.
AUTH_TOOL = "test-tool"

_log = logging.getLogger("conformance-client")


class ScenarioFailed(Exception):
    """The scenario's steps did not succeed; the message says which and why."""


def oauth_entry(scenario: str, context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The configuration's ``oauth`` object for a scenario, or None for a server without OAuth settings.

    Args:
        scenario: The scenario name.
        context: The parsed ``MCP_CONFORMANCE_CONTEXT`` (empty when the suite gave none).

    Returns:
        The ``oauth`` object in the configuration file's format.
    """
    entry: dict[str, Any] = {}
    if "client_id" in context:
        entry["clientId"] = context["client_id"]
    if "client_secret" in context:
        entry["clientSecret"] = context["client_secret"]
    if "private_key_pem" in context:
        entry["privateKey"] = context["private_key_pem"]
        entry["tokenEndpointAuthMethod"] = "private_key_jwt"
    if "signing_algorithm" in context:
        entry["signingAlgorithm"] = context["signing_algorithm"]
    if "idp_token_endpoint" in context:
        entry["idpTokenEndpoint"] = context["idp_token_endpoint"]
        entry["idpIdToken"] = context["idp_id_token"]
        if "idp_client_id" in context:
            entry["idpClientId"] = context["idp_client_id"]
    elif scenario.startswith("auth/client-credentials"):
        entry["clientCredentials"] = True
    if scenario == "auth/basic-cimd":
        entry["clientMetadataUrl"] = CIMD_URL
    return entry or None


def _write_config(directory: Path, url: str, oauth: dict[str, Any] | None) -> Path:
    server: dict[str, Any] = {"type": "http", "url": url}
    if oauth is not None:
        server["oauth"] = oauth
    path = directory / "config.json"
    path.write_text(json.dumps({"mcpServers": {SERVER: server}}), encoding="utf-8")
    path.chmod(0o600)
    return path


def _text(result: mcp_types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))


def _on_transition(record: TransitionRecord) -> None:
    note = f" ({record.note})" if record.note else ""
    _log.info("%s: %s --%s--> %s%s", record.server, record.before, record.event, record.after, note)


async def run(scenario: str, url: str, context: Mapping[str, Any], workdir: Path) -> None:
    """Do what the scenario needs through a pool with one server at ``url``.

    Args:
        scenario: The scenario name.
        url: The MCP server's URL.
        context: The parsed ``MCP_CONFORMANCE_CONTEXT``.
        workdir: A private directory for the configuration and the token log.

    Raises:
        ScenarioFailed: A step failed; the message says which.
        TetherError: The library refused or failed; its message names the server and the cause.
    """
    config = _write_config(workdir, url, oauth_entry(scenario, context))
    browser = HeadlessBrowser(timeout=AUTHORIZATION_TIMEOUT)
    pool = ServerPool.from_config(
        config,
        workdir / "tokens",
        connected_servers=(),
        open_url=browser,
        authorization_timeout=AUTHORIZATION_TIMEOUT,
        on_transition=_on_transition,
        elicitation=accept_defaults,
    )
    async with pool:
        tools = await pool.list_tools(SERVER)
        names = [tool.name for tool in tools]
        _log.info("tools: %s", ", ".join(names) or "(none)")
        call = SCENARIO_CALLS.get(scenario)
        if call is None and AUTH_TOOL in names:
            call = (AUTH_TOOL, {})
        if call is None:
            return
        tool, arguments = call
        if tool not in names:
            raise ScenarioFailed(f"the server offers no tool {tool!r} (it offers: {', '.join(names) or 'none'})")
        result = await pool.call_tool(SERVER, tool, arguments)
        if result.is_error:
            raise ScenarioFailed(f"tool {tool!r} reported an error: {_text(result)}")
        _log.info("%s returned: %s", tool, _text(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario named in ``MCP_CONFORMANCE_SCENARIO`` against the URL in ``argv``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``): the server URL.

    Returns:
        The exit status: 0 on success, 1 on failure, 2 on a usage error.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(args) != 1 or not scenario:
        print("usage: MCP_CONFORMANCE_SCENARIO=<name> client.py <server-url>", file=sys.stderr)
        return 2
    try:
        context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    except json.JSONDecodeError as exc:
        print(f"conformance client: MCP_CONFORMANCE_CONTEXT is not JSON ({exc.msg}); fix the harness", file=sys.stderr)
        return 2
    if not isinstance(context, dict):
        print("conformance client: MCP_CONFORMANCE_CONTEXT must be a JSON object", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mcp-tether-conformance-") as workdir:

        async def bounded() -> None:
            async with asyncio.timeout(RUN_TIMEOUT):
                await run(scenario, args[0], context, Path(workdir))

        try:
            asyncio.run(bounded())
        except TimeoutError:
            print(f"conformance client: scenario {scenario} did not finish within {RUN_TIMEOUT:g} s", file=sys.stderr)
            return 1
        except (ScenarioFailed, TetherError) as exc:
            print(f"conformance client: scenario {scenario} failed: {exc}", file=sys.stderr)
            return 1
    print(f"conformance client: scenario {scenario} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
