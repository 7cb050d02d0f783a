"""Pieces for running the mcp SDK's own OAuth client next to mcp-tether (baselines, interoperability)."""

from __future__ import annotations

from mcp.client.auth.oauth2 import TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

__all__ = ["MemoryTokenStorage"]


class MemoryTokenStorage(TokenStorage):
    """The SDK's token storage, in memory (what survives a 'restart' of an SDK client)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
