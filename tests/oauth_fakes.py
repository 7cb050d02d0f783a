"""A respx-mounted authorization server and a test browser for the OAuth adapter tests.

The fake answers discovery, registration, authorization (auto-approving with a
302 to the redirect URI), token and revocation requests the way a well-behaved
server does; tests override single routes to make it misbehave, and inspect
``router.calls`` to prove where credentials went.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import respx

SERVER_URL = "https://mcp.example/mcp"
ISSUER = "https://as.example"
PRM_URL = "https://mcp.example/.well-known/oauth-protected-resource/mcp"
AS_METADATA_URL = "https://as.example/.well-known/oauth-authorization-server"
TOKEN_URL = "https://as.example/token"
WWW_AUTHENTICATE = f'Bearer resource_metadata="{PRM_URL}", scope="read"'


def prm_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": SERVER_URL,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["read", "write"],
    }
    document.update(overrides)
    return document


def as_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": TOKEN_URL,
        "registration_endpoint": f"{ISSUER}/register",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "scopes_supported": ["read", "write", "offline_access"],
    }
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not None}


def form_of(request: object) -> dict[str, str]:
    """The form fields of a recorded request (respx types it as httpx's; it is httpx2's)."""
    content = cast(httpx2.Request, request).content
    return {key: values[0] for key, values in parse_qs(content.decode()).items()}


def handler(function: Callable[[httpx2.Request], httpx2.Response | Awaitable[httpx2.Response]]) -> Any:
    """A respx side effect (respx is typed against httpx; after ``alias_httpx()`` those are httpx2's)."""
    return function


class FakeAuthorizationServer:
    """Routes for a resource server and its authorization server on a respx router.

    Args:
        router: the respx router (inside ``respx.mock``).
        iss: what the authorization response carries as ``iss`` (None: omitted).
    """

    def __init__(self, router: respx.Router, *, iss: str | None = ISSUER) -> None:
        self.router = router
        self.iss = iss
        self.codes: dict[str, dict[str, str]] = {}
        self.refresh_tokens: set[str] = set()
        self.revoked: list[str] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.prm = router.get(PRM_URL).respond(200, json=prm_document())
        router.get("https://mcp.example/.well-known/oauth-protected-resource").respond(404)
        self.metadata = router.get(AS_METADATA_URL).respond(200, json=as_document())
        router.get(f"{ISSUER}/.well-known/openid-configuration").respond(404)
        self.register = router.post(f"{ISSUER}/register").mock(side_effect=handler(self._register))
        self.authorize = router.get(url__startswith=f"{ISSUER}/authorize").mock(side_effect=handler(self._authorize))
        self.token = router.post(TOKEN_URL).mock(side_effect=handler(self._token))
        self.revoke = router.post(f"{ISSUER}/revoke").mock(side_effect=handler(self._revoke))

    def _next(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._counter)}-secret"

    def _register(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        return httpx2.Response(201, json={**body, "client_id": self._next("client")})

    def _authorize(self, request: httpx2.Request) -> httpx2.Response:
        params = {key: values[0] for key, values in parse_qs(urlsplit(str(request.url)).query).items()}
        code = self._next("code")
        self.codes[code] = params
        answer = {"code": code, "state": params["state"]}
        if self.iss is not None:
            answer["iss"] = self.iss
        return httpx2.Response(302, headers={"Location": f"{params['redirect_uri']}?{urlencode(answer)}"})

    def issue(self, scope: str | None = "read") -> dict[str, Any]:
        refresh = self._next("rt")
        self.refresh_tokens.add(refresh)
        payload: dict[str, Any] = {
            "access_token": self._next("at"),
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
        }
        if scope is not None:
            payload["scope"] = scope
        return payload

    def _token(self, request: httpx2.Request) -> httpx2.Response:
        form = form_of(request)
        if form["grant_type"] == "authorization_code":
            params = self.codes.pop(form["code"], None)
            if params is None:
                return httpx2.Response(400, json={"error": "invalid_grant"})
            digest = hashlib.sha256(form["code_verifier"].encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if challenge != params["code_challenge"] or form["redirect_uri"] != params["redirect_uri"]:
                return httpx2.Response(400, json={"error": "invalid_grant"})
            return httpx2.Response(200, json=self.issue(params.get("scope")))
        if form["grant_type"] == "refresh_token":
            if form["refresh_token"] not in self.refresh_tokens:
                return httpx2.Response(400, json={"error": "invalid_grant"})
            self.refresh_tokens.discard(form["refresh_token"])
            return httpx2.Response(200, json=self.issue())
        return httpx2.Response(400, json={"error": "unsupported_grant_type"})

    def _revoke(self, request: httpx2.Request) -> httpx2.Response:
        self.revoked.append(form_of(request)["token"])
        return httpx2.Response(200)


class Browser:
    """A test browser: records every URL it is asked to open and follows it.

    It requests the authorization URL and delivers the authorization server's
    redirect to the loopback callback, like a person clicking "approve".
    """

    def __init__(self, *, follow: bool = True) -> None:
        self.opened: list[str] = []
        self.callback_pages: list[httpx2.Response] = []
        self.follow = follow

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        if self.follow:
            with httpx2.Client(follow_redirects=False, timeout=10) as client:
                answer = client.get(url)
                if answer.status_code in (302, 303):
                    self.callback_pages.append(client.get(answer.headers["location"]))
        return True


def assert_secrets_only_sent_to(calls: Iterable[Any], secrets: Iterable[str], allowed: str | None = TOKEN_URL) -> None:
    """No recorded request carries any of ``secrets`` except those sent to ``allowed``."""
    needles = [secret for secret in secrets if secret]
    for call in calls:
        request: httpx2.Request = call.request
        if allowed is not None and str(request.url).split("?")[0] == allowed:
            continue
        if request.url.host == "127.0.0.1":
            continue  # the browser delivering the code to the loopback callback, by design
        assert "authorization" not in request.headers, f"client credentials were sent to {request.url}"
        haystack = str(request.url) + str(dict(request.headers)) + request.content.decode(errors="replace")
        for secret in needles:
            assert secret not in haystack, f"a credential was sent to {request.url}"
