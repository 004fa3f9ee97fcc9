"""A minimal OIDC provider for tests: discovery, JWKS, an authorize endpoint that signs in as
``user`` without asking, and a token endpoint that checks the PKCE verifier. Loopback only,
stdlib HTTP server in a thread."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


class FakeOidc:
    def __init__(self, host: str = "127.0.0.1", client_id: str = "tssh-test") -> None:
        self.client_id = client_id
        self.user = "bob@example.com"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.nonce_override: str | None = None
        self.auth_age = 5  # seconds since the user "signed in"; None: no auth_time claim
        self.extra_claims: dict[str, object] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, data: object, status: int = 200) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json({"issuer": provider.issuer,
                                "authorization_endpoint": provider.issuer + "/authorize",
                                "token_endpoint": provider.issuer + "/token",
                                "jwks_uri": provider.issuer + "/jwks"})
                elif url.path == "/jwks":
                    self._json({"keys": [provider.key.as_dict(private=False)]})
                elif url.path == "/authorize":
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = query
                    self.send_response(302)
                    self.send_header("location", query["redirect_uri"] + "?" + urlencode(
                        {"code": code, "state": query["state"]}))
                    self.send_header("content-length", "0")
                    self.end_headers()
                else:
                    self._json({"error": "not found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                provider.token_requests.append(form)
                asked = provider.codes.pop(form.get("code", ""), None)
                challenge = base64.urlsafe_b64encode(hashlib.sha256(
                    form.get("code_verifier", "").encode()).digest()).rstrip(b"=").decode()
                if asked is None or asked.get("code_challenge") != challenge \
                        or asked.get("code_challenge_method") != "S256" \
                        or form.get("redirect_uri") != asked.get("redirect_uri") \
                        or form.get("client_id") != provider.client_id:
                    self._json({"error": "invalid_grant"}, 400)
                    return
                now = int(time.time())
                claims = {"iss": provider.issuer, "aud": provider.client_id, "sub": "u1",
                          "email": provider.user, "email_verified": True,
                          "nonce": provider.nonce_override or asked["nonce"],
                          "iat": now, "exp": now + 300, **provider.extra_claims}
                if provider.auth_age is not None:
                    claims["auth_time"] = now - provider.auth_age
                token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, provider.key)
                self._json({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
                            "id_token": token})

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.issuer = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOidc:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
