"""Tokens (SPEC §2): HS256 JWTs with ``sub``, ``exp``, optional ``name`` and ``docs``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from collab.errors import CollabError
from collab.settings import Settings

Access = Literal["read", "write"]
ALGORITHMS = ["HS256"]  # fixed here, never taken from the token's header


class AuthError(CollabError):
    """The token is missing, malformed, badly signed, expired or otherwise unacceptable."""

    code = "unauthenticated"


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    name: str
    docs: dict[str, Access] | None
    expires_at: float

    def access(self, doc_id: str) -> Access | None:
        """What this token may do with ``doc_id``; a specific id wins over ``"*"``."""
        if self.docs is None:
            return "write"
        return self.docs.get(doc_id) or self.docs.get("*")

    def may(self, doc_id: str, needed: Access) -> bool:
        granted = self.access(doc_id)
        return granted == "write" or (granted == "read" and needed == "read")

    def readable_ids(self) -> set[str] | None:
        """The ids a listing may show; None when every document is readable."""
        if self.docs is None or "*" in self.docs:
            return None
        return set(self.docs)


def decode_token(
    token: str, secret: str, *, audience: str | None = None, issuer: str | None = None
) -> Principal:
    required = ["exp", "sub"]
    if audience is not None:
        required.append("aud")
    if issuer is not None:
        required.append("iss")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            options={"require": required, "verify_aud": audience is not None},
        )
    except jwt.PyJWTError as error:
        raise AuthError(f"invalid token: {error}") from None
    return _principal(claims)


def authenticate(token: str, settings: Settings) -> Principal:
    """The principal of ``token`` under the server's settings (secret, audience, issuer)."""
    if not settings.jwt_secret:
        raise AuthError("the server has no JWT secret")
    return decode_token(
        token, settings.jwt_secret, audience=settings.jwt_audience, issuer=settings.jwt_issuer
    )


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise AuthError("invalid token: 'sub' must be a non-empty string")
    name = claims.get("name", sub)
    if not isinstance(name, str):
        raise AuthError("invalid token: 'name' must be a string")
    docs = claims.get("docs")
    if docs is not None and (
        not isinstance(docs, dict)
        or not all(isinstance(k, str) and v in ("read", "write") for k, v in docs.items())
    ):
        raise AuthError("invalid token: 'docs' maps document ids to 'read' or 'write'")
    exp = claims["exp"]
    return Principal(sub=sub, name=name[:256], docs=docs, expires_at=float(exp))


def mint_token(
    secret: str,
    sub: str,
    *,
    name: str | None = None,
    docs: dict[str, Access] | None = None,
    ttl: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    if name is not None:
        claims["name"] = name
    if docs is not None:
        claims["docs"] = docs
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
