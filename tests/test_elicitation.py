"""The ready elicitation handler: accept a form with its schema defaults (SEP-1034)."""

from __future__ import annotations

from typing import Any

from mcp import types as mcp_types

from mcp_tether.elicitation import accept_defaults


def _form(schema: dict[str, Any]) -> mcp_types.ElicitRequestFormParams:
    return mcp_types.ElicitRequestFormParams(message="Please confirm", requested_schema=schema)


async def test_every_default_is_filled_in_with_its_json_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
            "verified": {"type": "boolean", "default": True},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
            "note": {"type": "string"},
        },
    }
    result = await accept_defaults(_form(schema))
    assert result.action == "accept"
    assert result.content == {
        "name": "John Doe",
        "age": 30,
        "score": 95.5,
        "status": "active",
        "verified": True,
        "tags": ["a", "b"],
    }
    assert isinstance(result.content["age"], int)


async def test_a_required_field_without_a_default_is_declined() -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    result = await accept_defaults(_form(schema))
    assert result.action == "decline"
    assert result.content is None


async def test_url_mode_needs_a_person_and_is_declined() -> None:
    params = mcp_types.ElicitRequestURLParams(message="Sign in", url="https://example.com/login", elicitation_id="e1")
    assert (await accept_defaults(params)).action == "decline"


async def test_a_form_without_properties_is_accepted_empty() -> None:
    result = await accept_defaults(_form({"type": "object"}))
    assert result.action == "accept"
    assert result.content == {}
