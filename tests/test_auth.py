"""Tokens (SPEC §2): what ``collab.auth`` accepts, refuses and grants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from collab.auth import AuthError, Principal, decode_token, mint_token
from tests.support import SECRET


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None,
           digest: Any = hashlib.sha256, signature: bytes | None = None) -> str:
    """A token built by hand, so the header can claim any algorithm whatever signed it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if signature is None:
        signature = b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def test_minted_token_round_trips() -> None:
    token = mint_token(SECRET, "alice", name="Alice", docs={"a": "write", "*": "read"}, ttl=120)
    principal = decode_token(token, SECRET)
    assert principal.sub == "alice"
    assert principal.name == "Alice"
    assert principal.docs == {"a": "write", "*": "read"}
    assert time.time() + 100 < principal.expires_at <= time.time() + 121


def test_name_defaults_to_sub() -> None:
    assert decode_token(mint_token(SECRET, "bob"), SECRET).name == "bob"


def test_specific_document_wins_over_star() -> None:
    principal = Principal("u", "u", {"*": "write", "ro": "read", "rw": "write"}, 0)
    assert principal.access("ro") == "read"
    assert principal.access("rw") == "write"
    assert principal.access("other") == "write"
    assert not principal.may("ro", "write")
    assert principal.may("ro", "read")

    narrower = Principal("u", "u", {"*": "read", "mine": "write"}, 0)
    assert narrower.access("mine") == "write"
    assert narrower.access("theirs") == "read"
    assert narrower.may("mine", "write")
    assert not narrower.may("theirs", "write")


def test_no_docs_claim_writes_everything() -> None:
    principal = decode_token(mint_token(SECRET, "u"), SECRET)
    assert principal.docs is None
    assert principal.access("anything") == "write"
    assert principal.may("anything", "write")
    assert principal.readable_ids() is None


def test_unlisted_document_has_no_access() -> None:
    principal = Principal("u", "u", {"a": "read"}, 0)
    assert principal.access("b") is None
    assert not principal.may("b", "read")
    assert not principal.may("b", "write")


def test_readable_ids() -> None:
    assert Principal("u", "u", {"a": "read", "b": "write"}, 0).readable_ids() == {"a", "b"}
    assert Principal("u", "u", {"a": "read", "*": "read"}, 0).readable_ids() is None
    assert Principal("u", "u", {}, 0).readable_ids() == set()


def test_empty_docs_grants_nothing() -> None:
    # An empty object is not "no docs claim": it lists zero documents.
    principal = decode_token(mint_token(SECRET, "u", docs={}), SECRET)
    assert principal.access("a") is None


def test_wrong_secret_refused() -> None:
    with pytest.raises(AuthError):
        decode_token(mint_token("another-secret-0123456789abcdef-0123456789", "u"), SECRET)


def test_tampered_payload_refused() -> None:
    header, _, signature = mint_token(SECRET, "alice").split(".")
    payload = _b64(json.dumps(_claims(sub="mallory")).encode())
    with pytest.raises(AuthError):
        decode_token(f"{header}.{payload}.{signature}", SECRET)


def test_alg_none_refused() -> None:
    token = _forge({"alg": "none", "typ": "JWT"}, _claims())
    with pytest.raises(AuthError):
        decode_token(token, SECRET)
    # Some libraries accept "None" or "NONE" spellings; ours must not.
    with pytest.raises(AuthError):
        decode_token(_forge({"alg": "None", "typ": "JWT"}, _claims()), SECRET)


def test_rs256_header_refused_even_when_hmac_signed_with_the_secret() -> None:
    """The HS/RS confusion: a token whose header claims RS256 must not be checked as HMAC."""
    token = _forge({"alg": "RS256", "typ": "JWT"}, _claims(), key=SECRET.encode())
    with pytest.raises(AuthError):
        decode_token(token, SECRET)


def test_rs256_signature_refused() -> None:
    # A 2048-bit RSA signature's shape; the server holds no public key and must not look for one.
    token = _forge({"alg": "RS256", "typ": "JWT"}, _claims(), signature=bytes(range(256)))
    with pytest.raises(AuthError):
        decode_token(token, SECRET)


def test_other_hmac_algorithms_refused() -> None:
    # Correctly signed with the secret, but the server accepts HS256 only.
    token = _forge({"alg": "HS512", "typ": "JWT"}, _claims(), key=SECRET.encode(),
                   digest=hashlib.sha512)
    with pytest.raises(AuthError):
        decode_token(token, SECRET)
    # The same forging, with HS256, is accepted: the refusals above are about the algorithm.
    good = _forge({"alg": "HS256", "typ": "JWT"}, _claims(), key=SECRET.encode())
    assert decode_token(good, SECRET).sub == "alice"


def test_expired_refused() -> None:
    with pytest.raises(AuthError, match="expired"):
        decode_token(mint_token(SECRET, "u", ttl=-10), SECRET)


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_required_claims(missing: str) -> None:
    claims = _claims()
    del claims[missing]
    with pytest.raises(AuthError):
        decode_token(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": ""},
        {"sub": 42},
        {"sub": "x" * 257},
        {"name": 5},
        {"docs": ["a"]},
        {"docs": {"a": "admin"}},
        {"docs": {"a": True}},
        {"exp": "tomorrow"},
    ],
    ids=["empty-sub", "int-sub", "long-sub", "int-name", "docs-list", "docs-admin",
         "docs-bool", "exp-string"],
)
def test_malformed_claims_refused(claims: dict[str, Any]) -> None:
    token = jwt.encode(_claims(**claims), SECRET, algorithm="HS256")
    with pytest.raises(AuthError):
        decode_token(token, SECRET)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "....", "Bearer x.y.z"])
def test_garbage_refused(garbage: str) -> None:
    with pytest.raises(AuthError):
        decode_token(garbage, SECRET)


def test_audience_checked_when_configured() -> None:
    good = mint_token(SECRET, "u", audience="collab")
    assert decode_token(good, SECRET, audience="collab").sub == "u"
    with pytest.raises(AuthError):
        decode_token(mint_token(SECRET, "u", audience="other"), SECRET, audience="collab")
    with pytest.raises(AuthError):
        decode_token(mint_token(SECRET, "u"), SECRET, audience="collab")


def test_audience_ignored_when_not_configured() -> None:
    # A token meant for some audience still works on a server that does not check audiences.
    assert decode_token(mint_token(SECRET, "u", audience="x"), SECRET).sub == "u"


def test_issuer_checked_when_configured() -> None:
    good = mint_token(SECRET, "u", issuer="https://issuer.example")
    assert decode_token(good, SECRET, issuer="https://issuer.example").sub == "u"
    with pytest.raises(AuthError):
        decode_token(mint_token(SECRET, "u", issuer="https://evil.example"), SECRET,
                     issuer="https://issuer.example")
    with pytest.raises(AuthError):
        decode_token(mint_token(SECRET, "u"), SECRET, issuer="https://issuer.example")
