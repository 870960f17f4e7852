"""Attacks on authentication and authorisation over REST, and credentials kept out of logs.

The forged tokens here are shared with ``test_ws_errors.py``, which throws the same matrix at the
WebSocket handshake. Every attack must fail with 401 (not authenticated) or 403 (authenticated
but not allowed), never reach a document, and never leave the token in a log line.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote_plus

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from collab.app import create_app
from collab.settings import Settings
from tests.support import SECRET, ServerProcess, recv_json, token

AUDIENCE = "collab-tests"
ISSUER = "https://issuer.example"
OTHER_SECRET = "another-secret-9876543210fedcba-9876543210fedcba"


# -- forging tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def claims(sub: str = "mallory", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl, **extra}


def forge(
    header: dict[str, Any],
    payload: dict[str, Any],
    key: bytes = SECRET.encode(),
    digest: str = "sha256",
) -> str:
    """A JWT with any header, HMAC-signed with ``key`` whatever the header claims."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{_b64(signature)}"


def rsa_signed(payload: dict[str, Any]) -> str:
    """A genuine RS256 token; without ``cryptography`` its header is crafted instead."""
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        return forge({"alg": "RS256", "typ": "JWT"}, payload, key=b"not-an-rsa-key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(payload, key, algorithm="RS256")


def rsa_public_key_as_hmac_secret(payload: dict[str, Any]) -> str:
    """The classic confusion: HS256 "signed" with an RSA public key, as if the server held one."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        return forge({"alg": "HS256", "typ": "JWT"}, payload, key=b"-----BEGIN PUBLIC KEY-----")
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return forge({"alg": "HS256", "typ": "JWT"}, payload, key=pem)


def _scoped(payload: dict[str, Any], audience: str | None, issuer: str | None) -> dict[str, Any]:
    if audience is not None:
        payload.setdefault("aud", audience)
    if issuer is not None:
        payload.setdefault("iss", issuer)
    return payload


@functools.cache
def bad_tokens(audience: str | None = None, issuer: str | None = None) -> dict[str, str]:
    """Tokens a server must refuse as unauthenticated; each otherwise grants every document.

    With ``audience``/``issuer`` given, each token carries the right ones, so only the attack
    named by its key makes it unacceptable.
    """

    def scoped(**extra: Any) -> dict[str, Any]:
        return _scoped(claims(**extra), audience, issuer)

    hs256 = {"alg": "HS256", "typ": "JWT"}
    valid = forge(hs256, scoped())
    head, body, signature = valid.split(".")
    tokens = {
        "malformed": "not-a-jwt",
        "malformed_three_parts": "a.b.c",
        "malformed_bad_json": f"{_b64(b'{')}.{_b64(b'{}')}.{_b64(b'x')}",
        "truncated_signature": valid[:-6],
        "tampered_payload": f"{head}.{_segment(scoped(sub='admin'))}.{signature}",
        "wrong_key": forge(hs256, scoped(), key=OTHER_SECRET.encode()),
        "alg_none": f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "alg_none_signed": forge({"alg": "none", "typ": "JWT"}, scoped()),
        "alg_None_case": f"{_segment({'alg': 'None', 'typ': 'JWT'})}.{body}.",
        "alg_hs512": forge({"alg": "HS512", "typ": "JWT"}, scoped(), digest="sha512"),
        "alg_rs256_hmac_signed": forge({"alg": "RS256", "typ": "JWT"}, scoped()),
        "alg_rs256_rsa_signed": rsa_signed(scoped()),
        "hs256_rsa_public_key": rsa_public_key_as_hmac_secret(scoped()),
        "expired": forge(hs256, scoped(ttl=-30)),
        "not_yet_valid": forge(hs256, scoped(nbf=int(time.time()) + 3600)),
        "no_exp": forge(hs256, _scoped({"sub": "mallory"}, audience, issuer)),
        "no_sub": forge(hs256, {k: v for k, v in scoped().items() if k != "sub"}),
        "sub_not_string": forge(hs256, scoped(sub=42)),
        "docs_bad_grant": forge(hs256, scoped(docs={"*": "admin"})),
    }
    if audience is not None:
        tokens["wrong_audience"] = forge(hs256, scoped(aud="someone-else"))
        tokens["no_audience"] = forge(hs256, _scoped(claims(), None, issuer))
    if issuer is not None:
        tokens["wrong_issuer"] = forge(hs256, scoped(iss="https://evil.example"))
        tokens["no_issuer"] = forge(hs256, _scoped(claims(), audience, None))
    return tokens


def good_token(audience: str | None = None, issuer: str | None = None, **kwargs: Any) -> str:
    return token(audience=audience, issuer=issuer, **kwargs)


# -- REST -------------------------------------------------------------------------------------


@pytest.fixture
async def guarded_client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process app with an audience and an issuer configured."""
    settings = Settings(
        _env_file=None, database_url=sqlite_url, jwt_secret=SECRET,
        jwt_audience=AUDIENCE, jwt_issuer=ISSUER,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            admin = good_token(AUDIENCE, ISSUER)
            created = await client.post(
                "/documents", json={"id": "target", "content": "secret text"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert created.status_code == 201
            yield client


Call = tuple[str, str, dict[str, Any] | None]

# Every call a token can make, on the document "target" that exists.
CALLS: list[Call] = [
    ("GET", "/documents", None),
    ("POST", "/documents", {"id": "planted", "content": "x"}),
    ("GET", "/documents/target", None),
    ("GET", "/documents/target/history", None),
    ("GET", "/documents/target/content?rev=0", None),
    ("GET", "/documents/target/snapshots", None),
    ("POST", "/documents/target/ops", {"rev": 0, "op": ["pwned "]}),
    ("DELETE", "/documents/target", None),
    ("POST", "/tickets", {"doc": "target"}),
]
WRITES = [c for c in CALLS if c[0] in ("POST", "DELETE") and c[1] != "/tickets"]


async def _call(
    client: httpx.AsyncClient, call: Call, headers: dict[str, str]
) -> httpx.Response:
    method, path, body = call
    return await client.request(method, path, json=body, headers=headers)


async def _assert_target_untouched(client: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {good_token(AUDIENCE, ISSUER)}"}
    document = (await client.get("/documents/target", headers=admin)).json()
    assert (document["content"], document["rev"]) == ("secret text", 0)
    planted = await client.get("/documents/planted", headers=admin)
    assert planted.status_code == 404


@pytest.mark.parametrize("name", sorted(bad_tokens(AUDIENCE, ISSUER)))
async def test_rest_refuses_bad_token_with_401(
    guarded_client: httpx.AsyncClient, name: str
) -> None:
    bad = bad_tokens(AUDIENCE, ISSUER)[name]
    for call in CALLS:
        response = await _call(guarded_client, call, {"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, (call, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "detail" in response.json()
    await _assert_target_untouched(guarded_client)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer"},
     {"Authorization": "bearer "}, {"Authorization": "Token abc"}],
    ids=["none", "basic", "bearer_empty", "bearer_blank", "other_scheme"],
)
async def test_rest_refuses_missing_token_with_401(
    guarded_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for call in CALLS:
        response = await _call(guarded_client, call, headers)
        assert response.status_code == 401, (call, response.text)
    await _assert_target_untouched(guarded_client)


async def test_rest_refuses_token_for_another_document_with_403(
    guarded_client: httpx.AsyncClient,
) -> None:
    other = good_token(AUDIENCE, ISSUER, docs={"elsewhere": "write"})
    headers = {"Authorization": f"Bearer {other}"}
    for call in CALLS:
        response = await _call(guarded_client, call, headers)
        if call[1] == "/documents" and call[0] == "GET":
            # Listing is allowed, and shows only what the token may read.
            assert response.status_code == 200
            assert response.json()["items"] == []
        else:
            assert response.status_code == 403, (call, response.text)
    await _assert_target_untouched(guarded_client)


async def test_rest_read_only_token_may_read_but_not_write(
    guarded_client: httpx.AsyncClient,
) -> None:
    reader = good_token(AUDIENCE, ISSUER, docs={"*": "read"})
    headers = {"Authorization": f"Bearer {reader}"}
    for call in CALLS:
        response = await _call(guarded_client, call, headers)
        if call in WRITES:
            assert response.status_code == 403, (call, response.text)
        else:
            assert response.status_code in (200, 201), (call, response.text)
    await _assert_target_untouched(guarded_client)


async def test_rest_specific_read_grant_beats_wildcard_write(
    guarded_client: httpx.AsyncClient,
) -> None:
    narrowed = good_token(AUDIENCE, ISSUER, docs={"*": "write", "target": "read"})
    headers = {"Authorization": f"Bearer {narrowed}"}
    response = await guarded_client.post(
        "/documents/target/ops", json={"rev": 0, "op": ["x"]}, headers=headers
    )
    assert response.status_code == 403
    assert (await guarded_client.get("/documents/target", headers=headers)).status_code == 200
    await _assert_target_untouched(guarded_client)


async def test_rest_accepts_the_valid_token(guarded_client: httpx.AsyncClient) -> None:
    """The control: the same calls succeed with a proper token, so the 401s above are earned."""
    headers = {"Authorization": f"Bearer {good_token(AUDIENCE, ISSUER)}"}
    response = await guarded_client.post(
        "/documents/target/ops", json={"rev": 0, "op": ["ok "]}, headers=headers
    )
    assert response.status_code == 200
    assert response.json() == {"rev": 1}


# -- credentials never logged -----------------------------------------------------------------


async def test_tokens_and_tickets_never_appear_in_logs(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    secret_token = token("logger", name="Logger")
    headers = {"Authorization": f"Bearer {secret_token}"}
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        created = await client.post("/documents", json={"id": "logged"}, headers=headers)
        assert created.status_code == 201
        ticket = (await client.post("/tickets", json={"doc": "logged"}, headers=headers)).json()[
            "ticket"
        ]
        # Credentials in a REST query string are not how REST works, but must not leak either.
        response = await client.get(
            f"/documents/logged?token={secret_token}&x=1", headers=headers
        )
        assert response.status_code == 200

    async with connect(server.ws_url("logged", token=secret_token)) as ws:
        assert (await recv_json(ws))["type"] == "init"
    async with connect(server.ws_url("logged", ticket=ticket)) as ws:
        assert (await recv_json(ws))["type"] == "init"
    # Refused handshakes are logged too: the reused ticket and a wrong token.
    wrong = token("logger", secret=OTHER_SECRET)
    for query in ({"ticket": ticket}, {"token": wrong}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url("logged", **query)):
                pass
        assert refused.value.response.status_code == 403

    server.stop()  # flushes the log and ends the process's writes
    logs = server.logs()
    assert "/ws/documents/logged" in logs, logs  # the access log did record the calls
    for credential in (secret_token, ticket, wrong):
        assert credential not in logs
        # Nor a part of one, e.g. a log line cut short or split at a dot.
        assert credential[-20:] not in logs
    assert "[redacted]" in logs


def _percent_encoded(text: str) -> str:
    return "".join(f"%{ord(ch):02X}" for ch in text)


def _spellings(credential: str) -> list[str]:
    """Query strings that carry ``credential`` as a token, spelled every way we could think of;
    some of them authenticate (the server percent-decodes names and values)."""
    c = credential
    return [
        f"token={c}",
        f"%74oken={c}",
        f"t%6Fken={c}",
        f"to%6ben={c}",
        f"{_percent_encoded('token')}={c}",
        f"token={_percent_encoded(c)}",
        f"%74oken={_percent_encoded(c)}",
        f"TOKEN={c}",
        f"Token={c}",
        f"x=1&token={c}",
        f"x=1&&token={c}",
        f"x=1;token={c}",
        f"token+={c}",
        f"+token={c}",
        f"%20token={c}",
        f"token%00={c}",
        f"%2574oken={c}",
        f"access_token={c}",
        f"token=x&token={c}",
    ]


async def test_no_spelling_of_a_credential_reaches_the_log(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """The redaction works on the query as the server reads it: whatever spelling is used, the
    credential never appears in a log line, decoded or not, and the spellings that do
    authenticate are among those redacted."""
    server = server_factory()
    secret_token = token("spelling")
    authenticated = []
    for query in _spellings(secret_token):
        url = f"ws://127.0.0.1:{server.port}/ws/documents/spelled?{query}"
        try:
            async with connect(url) as ws:
                assert (await recv_json(ws))["type"] == "init"
            authenticated.append(query)
        except InvalidStatus as error:
            assert error.response.status_code in (400, 403)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            await client.get(f"/documents/spelled?{query}")
    assert f"%74oken={secret_token}" in authenticated  # a percent-encoded name authenticates

    server.stop()
    lines = server.logs().splitlines()
    assert sum("/ws/documents/spelled" in line for line in lines) >= len(_spellings("x"))
    for line in lines:
        decoded = line
        for _ in range(4):
            decoded = unquote_plus(decoded)
        assert secret_token not in decoded, line
        assert secret_token[-20:] not in decoded, line
