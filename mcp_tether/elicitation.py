"""Elicitation: answering a server that asks the user for input during a call.

A pool given an :data:`ElicitationHandler` advertises the ``elicitation``
capability at ``initialize`` and hands every ``elicitation/create`` request to
it; without one the capability is not advertised and servers do not ask.
:func:`accept_defaults` is a ready handler for unattended use: it accepts a form
with every field that has a schema ``default`` set to it (SEP-1034), and
declines what it cannot answer without a person.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from mcp import types as mcp_types

__all__ = ["ElicitationHandler", "accept_defaults"]

#: Answers one ``elicitation/create`` request (form or URL mode).
ElicitationHandler: TypeAlias = Callable[[mcp_types.ElicitRequestParams], Awaitable[mcp_types.ElicitResult]]

_PRIMITIVES = (str, int, float, bool)


def _default_of(schema: object) -> tuple[bool, Any]:
    if not isinstance(schema, dict) or "default" not in schema:
        return False, None
    value = schema["default"]
    if isinstance(value, _PRIMITIVES) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return True, value
    return False, None


async def accept_defaults(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
    """Accept a form with every schema default filled in; decline anything else.

    Args:
        params: The server's request.

    Returns:
        ``accept`` with the defaults (fields without a default are left out) when
        the form has no required field lacking a default; otherwise ``decline``,
        as for URL mode, which needs a person.
    """
    if not isinstance(params, mcp_types.ElicitRequestFormParams):
        return mcp_types.ElicitResult(action="decline")
    schema = params.requested_schema
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    content: dict[str, Any] = {}
    for name, field in properties.items():
        present, value = _default_of(field)
        if present:
            content[name] = value
    required = schema.get("required")
    if isinstance(required, list) and any(name not in content for name in required):
        return mcp_types.ElicitResult(action="decline")
    return mcp_types.ElicitResult(action="accept", content=content)
