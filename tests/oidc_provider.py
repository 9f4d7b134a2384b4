"""A small OpenID Connect provider for the tests, on 127.0.0.1 (a thread of the test process).

It does what a real provider does for the authorization-code flow, and no more: ``/authorize``
signs in its one configured person at once (no page) and sends the browser back with a code;
``/token`` trades the code (once, with the right client secret and redirect URI) for an ID
token signed with RS256 and an access token; ``/userinfo`` answers the access token with the
person's claims; ``/jwks`` publishes the public key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CLIENT_ID = "anyjob-test"
CLIENT_SECRET = "provider-secret-" + "s" * 20


class Provider:
    def __init__(self, claims: dict) -> None:
        self.claims = claims  # the person who "signs in" at the provider
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def settings(self) -> dict[str, str]:
        """What anyjob's environment says about this provider (the OIDC_* variables)."""
        return {
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": self.url + "/authorize",
            "OIDC_OP_TOKEN_ENDPOINT": self.url + "/token",
            "OIDC_OP_USER_ENDPOINT": self.url + "/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": self.url + "/jwks",
        }

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "sub": self.claims["sub"],
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": self.claims.get("email"),
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                provider.requests.append(parts.path)
                if parts.path == "/authorize":
                    if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
                        return self.send(400, {"error": "invalid_request"})
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {
                        "nonce": query.get("nonce", ""),
                        "redirect_uri": query["redirect_uri"],
                    }
                    back = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
                    return self.send(302, None, {"Location": back})
                if parts.path == "/jwks":
                    jwk = RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)
                    return self.send(
                        200, {"keys": [{**jwk, "kid": provider.kid, "alg": "RS256", "use": "sig"}]}
                    )
                if parts.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token not in provider.tokens:
                        return self.send(401, {"error": "invalid_token"})
                    return self.send(200, provider.claims)
                return self.send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                provider.requests.append(self.path)
                if self.path != "/token":
                    return self.send(404, {"error": "not_found"})
                form = {
                    k: v[0]
                    for k, v in parse_qs(
                        self.rfile.read(int(self.headers["Content-Length"])).decode()
                    ).items()
                }
                client_id, secret = form.get("client_id"), form.get("client_secret")
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                grant = provider.codes.pop(form.get("code", ""), None)  # a code works once
                if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET) or grant is None:
                    return self.send(400, {"error": "invalid_grant"})
                if form.get("redirect_uri") != grant["redirect_uri"]:
                    return self.send(400, {"error": "invalid_grant"})
                access = secrets.token_urlsafe(16)
                provider.tokens[access] = grant
                return self.send(
                    200,
                    {
                        "access_token": access,
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": provider.id_token(grant["nonce"]),
                    },
                )

        return Handler


@contextlib.contextmanager
def oidc_provider(claims: dict) -> Iterator[Provider]:
    provider = Provider(claims)
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()
        thread.join(5)
