"""OIDC approval of held logins (tssh.server.oidc) against a fake provider on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_oidc import FakeOidc
from tssh.errors import TsshError
from tssh.server.oidc import OidcApprover, OidcError


@pytest.fixture
def idp() -> Iterator[FakeOidc]:
    with FakeOidc() as provider:
        yield provider


def approver(idp: FakeOidc, approved: list[tuple[str, str]]) -> OidcApprover:
    async def approve(hold_id: str, email: str) -> str:
        if email != "bob@example.com":
            raise TsshError(f"signed in as {email}")
        approved.append((hold_id, email))
        return "approved"

    return OidcApprover(idp.issuer, idp.client_id, None, "http://127.0.0.10:8022",
                        is_held=lambda hold_id: hold_id == "held1", approve=approve)


async def sign_in(a: OidcApprover, hold_id: str = "held1") -> tuple[str, str]:
    """What a browser does: the authorization URL, the provider's redirect back."""
    url = await a.begin(hold_id)
    asked = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["scope"] == "openid email" and asked["nonce"] and asked["state"]
    assert asked["redirect_uri"] == "http://127.0.0.10:8022/check/callback"
    assert "code_verifier" not in asked
    async with httpx.AsyncClient() as http:
        back = await http.get(url)
    assert back.status_code == 302
    query = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
    return query["state"], query["code"]


async def test_code_flow_with_pkce_approves(idp: FakeOidc) -> None:
    approved: list[tuple[str, str]] = []
    a = approver(idp, approved)
    state, code = await sign_in(a)
    assert await a.finish(state, code) == "approved"
    assert approved == [("held1", "bob@example.com")]
    assert idp.token_requests[-1]["grant_type"] == "authorization_code"
    # A state is used once.
    with pytest.raises(OidcError, match="unknown or expired"):
        await a.finish(state, code)


async def test_someone_else_is_not_approved(idp: FakeOidc) -> None:
    approved: list[tuple[str, str]] = []
    a = approver(idp, approved)
    idp.user = "alice@example.com"
    state, code = await sign_in(a)
    with pytest.raises(TsshError, match=r"signed in as alice@example\.com"):
        await a.finish(state, code)
    assert approved == []


async def test_wrong_nonce_and_wrong_audience_refused(idp: FakeOidc) -> None:
    approved: list[tuple[str, str]] = []
    a = approver(idp, approved)
    idp.nonce_override = "replayed"
    state, code = await sign_in(a)
    with pytest.raises(OidcError, match="ID token is not valid"):
        await a.finish(state, code)
    idp.nonce_override = None
    other = OidcApprover(idp.issuer, "another-client", None, "http://127.0.0.10:8022",
                         is_held=lambda _: True, approve=a._approve)
    state, code = await sign_in(other)
    with pytest.raises(OidcError):  # the provider refuses the client id, or aud differs
        await other.finish(state, code)
    assert approved == []


async def test_token_signed_by_another_key_refused(idp: FakeOidc) -> None:
    a = approver(idp, [])
    with FakeOidc() as stranger:
        state, code = await sign_in(approver(stranger, []))
        async with httpx.AsyncClient() as http:
            token = (await http.post(stranger.issuer + "/token", data={
                "grant_type": "authorization_code", "code": code})).json()
    assert "id_token" not in token  # no verifier: the stranger refuses too
    jwks = {"keys": [idp.key.as_dict(private=False)]}
    from joserfc import jwt
    forged = jwt.encode({"alg": "RS256", "kid": "k1"}, {"iss": idp.issuer, "aud": idp.client_id,
                        "nonce": "n", "exp": 2**31, "email": "bob@example.com"},
                        stranger.key)
    with pytest.raises(OidcError, match="not valid"):
        a.verify(forged, jwks, "n")
    assert state


async def test_pages(idp: FakeOidc) -> None:
    a = approver(idp, [])
    transport = httpx.ASGITransport(app=a.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/check/nothere")).status_code == 404
        start = await http.get("/check/held1")
        assert start.status_code == 302
        assert start.headers["location"].startswith(idp.issuer + "/authorize?")
        assert (await http.get("/check/callback?state=x&code=y")).status_code == 403
        assert (await http.post("/check/held1")).status_code == 405


async def test_authorization_asks_for_a_fresh_sign_in(idp: FakeOidc) -> None:
    a = approver(idp, [])
    url = await a.begin("held1")
    assert parse_qs(urlsplit(url).query)["max_age"] == ["300"]


async def test_stale_or_missing_auth_time_refused(idp: FakeOidc) -> None:
    approved: list[tuple[str, str]] = []
    a = approver(idp, approved)
    idp.auth_age = 300 + 31 + 60  # over max_age and the leeway
    state, code = await sign_in(a)
    with pytest.raises(OidcError, match="more than check_oidc_max_age"):
        await a.finish(state, code)
    idp.auth_age = None
    state, code = await sign_in(a)
    with pytest.raises(OidcError, match="auth_time"):
        await a.finish(state, code)
    idp.auth_age = 290  # old, but within max_age
    state, code = await sign_in(a)
    assert await a.finish(state, code) == "approved"
    assert approved == [("held1", "bob@example.com")]


async def test_another_claim_names_the_login(idp: FakeOidc) -> None:
    approved: list[tuple[str, str]] = []

    async def approve(hold_id: str, login: str) -> str:
        approved.append((hold_id, login))
        return "approved"

    a = OidcApprover(idp.issuer, idp.client_id, None, "http://127.0.0.10:8022",
                     is_held=lambda _: True, approve=approve, claim="preferred_username")
    state, code = await sign_in(a)
    with pytest.raises(OidcError, match="no 'preferred_username' claim"):
        await a.finish(state, code)
    idp.extra_claims = {"preferred_username": "bob@corp.example"}
    state, code = await sign_in(a)
    assert await a.finish(state, code) == "approved"
    assert approved == [("held1", "bob@corp.example")]
