"""FastAPI dependencies: route signatures name only what they need."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from collab.auth import Access, AuthError, Principal, decode_token
from collab.services import Services
from collab.settings import Settings
from collab.storage import Store

DOC_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
DOC_ID_RE = re.compile(DOC_ID_PATTERN)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_store(services: ServicesDep) -> Store:
    return services.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False)


def authenticate(token: str, settings: Settings) -> Principal:
    if not settings.jwt_secret:
        raise AuthError("the server has no JWT secret")
    return decode_token(
        token, settings.jwt_secret, audience=settings.jwt_audience, issuer=settings.jwt_issuer
    )


def get_principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", unauthorized)
    try:
        return authenticate(credentials.credentials, settings)
    except AuthError as error:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(error), unauthorized) from None


PrincipalDep = Annotated[Principal, Depends(get_principal)]
DocIdPath = Annotated[str, Path(pattern=DOC_ID_PATTERN, description="1-128 of A-Z a-z 0-9 . _ -")]


def require(principal: Principal, doc_id: str, needed: Access) -> None:
    if not principal.may(doc_id, needed):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this token may not {needed} document {doc_id!r}"
        )
