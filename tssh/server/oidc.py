"""Approving a held login through the identity provider (OIDC), as Tailscale's check mode does.

With ``check_oidc_issuer`` and ``check_oidc_client_id`` configured, the daemon serves
``http://<tailnet address>:<check_port>/check/ID`` (the hold's ``url``, shown in the client's
banner). That page starts the authorization code flow with PKCE (S256) and a fresh ``state``
and ``nonce`` (Authlib's OAuth 2 client); the identity provider sends the browser back to
``/check/callback``, where the code is exchanged, the ID token verified against the
issuer's JWKS (signature, ``iss``, ``aud``, ``exp``, ``nonce``: joserfc, Authlib's JOSE
library), and the hold approved only if the token's verified ``email`` (or the claim named by
``check_oidc_claim``) is the tailnet user of the held login's source node. The approval is a
fresh sign-in, as Tailscale's: the authorization request asks for ``max_age``
(``check_oidc_max_age``), so the provider makes the user sign in again when their session is
older, and a token whose ``auth_time`` is older than that approves nothing. Endpoints come
from OIDC discovery (``<issuer>/.well-known/openid-configuration``), fetched at the first use
and kept.

A flow (state, nonce, verifier) is single-use and lasts ``FLOW_SECONDS``; at most
``MAX_FLOWS`` are open at once (the oldest go first).
"""

from __future__ import annotations

import html
import logging
import secrets
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tssh.errors import TsshError

with warnings.catch_warnings():
    # Authlib 1.9 warns that it would rather have httpx2 than httpx; httpx is what tssh uses.
    # (Importing authlib.deprecate installs an "always" filter: ours must come after it.)
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = logging.getLogger("tssh.oidc")

FLOW_SECONDS = 600.0
MAX_FLOWS = 1024
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
CALLBACK_PATH = "/check/callback"
LEEWAY = 30  # seconds of clock difference allowed between this node and the provider


class OidcError(TsshError):
    """The identity provider's answer cannot approve anything."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class Flow:
    hold_id: str
    nonce: str
    verifier: str
    started: float


# approve(hold_id, email) -> a line for the page; raises TsshError when it may not approve.
Approve = Callable[[str, str], Awaitable[str]]


class OidcApprover:
    """The approval pages and the OIDC client behind them."""

    def __init__(self, issuer: str, client_id: str, client_secret: str | None, base_url: str,
                 *, is_held: Callable[[str], bool], approve: Approve, claim: str = "email",
                 max_age: int = 300, clock: Callable[[], float] = time.time,
                 timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.base_url = base_url.rstrip("/")
        self._is_held = is_held
        self._approve = approve
        self.claim = claim
        self.max_age = max_age
        self._clock = clock
        self._timeout = timeout
        self._provider: Provider | None = None
        self._flows: OrderedDict[str, Flow] = OrderedDict()

    def url_for(self, hold_id: str) -> str:
        return f"{self.base_url}/check/{hold_id}"

    @property
    def redirect_uri(self) -> str:
        return self.base_url + CALLBACK_PATH

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id, client_secret=self.client_secret,
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            scope="openid email", redirect_uri=self.redirect_uri,
            code_challenge_method="S256", timeout=self._timeout)

    async def provider(self) -> Provider:
        """The issuer's endpoints (discovery), fetched once."""
        if self._provider is not None:
            return self._provider
        url = self.issuer + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(url)
                response.raise_for_status()
                meta = response.json()
            provider = Provider(issuer=str(meta["issuer"]),
                                authorization_endpoint=str(meta["authorization_endpoint"]),
                                token_endpoint=str(meta["token_endpoint"]),
                                jwks_uri=str(meta["jwks_uri"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise OidcError(f"OIDC discovery at {url} failed: {e}") from None
        if provider.issuer.rstrip("/") != self.issuer:
            raise OidcError(f"OIDC discovery at {url} names issuer {provider.issuer!r}, "
                            f"not {self.issuer!r}")
        self._provider = provider
        return provider

    async def begin(self, hold_id: str) -> str:
        """The identity provider's authorization URL for approving ``hold_id``."""
        provider = await self.provider()
        now = self._clock()
        self._prune(now)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # 64 characters: RFC 7636 allows 43-128
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                provider.authorization_endpoint, state=state, code_verifier=verifier,
                nonce=nonce, max_age=str(self.max_age))
        self._flows[state] = Flow(hold_id, nonce, verifier, now)
        while len(self._flows) > MAX_FLOWS:
            self._flows.popitem(last=False)
        return str(url)

    def _prune(self, now: float) -> None:
        for state, flow in list(self._flows.items()):
            if now - flow.started > FLOW_SECONDS:
                del self._flows[state]

    async def finish(self, state: str, code: str) -> str:
        """Exchange ``code``, verify the ID token, approve; the page's line. Raises
        TsshError when nothing is approved."""
        flow = self._flows.pop(state, None)
        if flow is None or self._clock() - flow.started > FLOW_SECONDS:
            raise OidcError("this sign-in is unknown or expired; open the approval link again")
        provider = await self.provider()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    provider.token_endpoint, grant_type="authorization_code", code=code,
                    code_verifier=flow.verifier)
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(provider.jwks_uri)
                response.raise_for_status()
                jwks = response.json()
        except Exception as e:  # Authlib raises its own errors, httpx its own
            raise OidcError(f"the identity provider refused the sign-in: {e}") from None
        email = self.verify(token.get("id_token"), jwks, flow.nonce)
        return await self._approve(flow.hold_id, email)

    def verify(self, id_token: object, jwks: Any, nonce: str) -> str:
        """The verified login (``email`` or ``claim``) of a valid, fresh ID token for this
        client and flow."""
        if not isinstance(id_token, str):
            raise OidcError("the identity provider sent no ID token")
        try:
            decoded = jwt.decode(id_token, KeySet.import_key_set(jwks),
                                 algorithms=list(ALGORITHMS))
            now = int(self._clock())
            jwt.JWTClaimsRegistry(
                now=now, leeway=LEEWAY,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                nonce={"essential": True, "value": nonce},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError, KeyError) as e:
            raise OidcError(f"the ID token is not valid: {e}") from None
        claims = decoded.claims
        auth_time = claims.get("auth_time")
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            raise OidcError("the ID token does not say when the user signed in (auth_time); "
                            "the provider must honour max_age")
        if now - auth_time > self.max_age + LEEWAY:
            raise OidcError(f"the sign-in is {int(now - auth_time)} s old, more than "
                            f"check_oidc_max_age ({self.max_age} s): sign in again")
        login = claims.get(self.claim)
        if not isinstance(login, str) or not login:
            raise OidcError(f"the ID token carries no {self.claim!r} claim")
        if self.claim == "email" and claims.get("email_verified") is False:
            raise OidcError("the ID token's email is not verified")
        return login

    # --- the pages (ASGI, served by hypercorn) ---

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, text, location = await self._page(scope)
        headers = [(b"content-type", b"text/html; charset=utf-8"),
                   (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
        if location is not None:
            headers.append((b"location", location.encode()))
        body = (f"<!doctype html><title>tssh check</title><p>{html.escape(text)}</p>\n"
                ).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _page(self, scope: dict[str, Any]) -> tuple[int, str, str | None]:
        if scope.get("method") != "GET":
            return 405, "only GET", None
        path = str(scope.get("path", ""))
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))

        def arg(name: str) -> str:
            values = query.get(name) or [""]
            return values[0]

        try:
            if path == CALLBACK_PATH:
                if arg("error"):
                    return 403, f"the identity provider said: {arg('error')}", None
                return 200, await self.finish(arg("state"), arg("code")), None
            if path.startswith("/check/") and path.count("/") == 2:
                hold_id = path.removeprefix("/check/")
                if not self._is_held(hold_id):
                    return 404, "no login is held with this link (decided, timed out, or " \
                        "its client left)", None
                return 302, "sign in to approve", await self.begin(hold_id)
        except TsshError as e:
            log.warning("check approval page refused", extra={"path": path, "error": str(e)})
            return 403, str(e), None
        return 404, "not found", None
