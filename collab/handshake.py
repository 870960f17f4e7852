"""What both WebSocket endpoints check and take before they accept a socket.

The OT socket (collab.connection) and the Yjs socket (collab.yjs.endpoint) check the same
things in the same order: the server is not draining, the document id is valid, the ``Origin``
is allowed, the credentials name a principal who may open the document, the user and the client
address have a connection to spare, and a reader's document exists. Each endpoint answers a
refusal its own way (an HTTP status on the OT socket; on the Yjs socket an accepted socket
closed with a 44xx code, where the provider must stop retrying), so these functions only
decide and count. Nothing here starts a room, an actor or a database transaction, except
:func:`lease_or_create`, called once every check has passed.

The connection limits are one budget per user and one per address, shared by both kinds of
socket: a user cannot open more sockets by switching protocol.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from collab.actor import DocumentActor, DocumentNotFound
from collab.auth import Access, AuthError, Principal, authenticate
from collab.errors import HTTP_STATUS, CloseCode, ErrorCode
from collab.ratelimit import Limits
from collab.services import Services
from collab.types import utcnow

TOO_MANY = HTTP_STATUS[ErrorCode.RATE_LIMITED]


async def deny(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    """Refuses the handshake with an HTTP status, before any work is done for it."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await JSONResponse({"detail": detail}, status)(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": CloseCode.POLICY, "reason": detail})


def origin_allowed(scope: Scope, headers: Headers, services: Services) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser: tokens, not origins, protect those clients
    allowed = services.settings.origin_allowlist()
    if allowed is None:
        return True
    origin = origin.rstrip("/")
    host = headers.get("host", "")
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return origin == f"{scheme}://{host}" or origin in allowed


async def socket_principal(
    headers: Headers, params: QueryParams, doc_id: str, services: Services
) -> Principal:
    """Who a WebSocket handshake's credentials name: a ``?ticket=`` for ``doc_id`` (redeemed,
    so it cannot be used again), a ``?token=``, or an ``Authorization: Bearer`` header, in that
    order. Raises :class:`~collab.auth.AuthError` when there are none or they do not hold."""
    ticket = params.get("ticket")
    if ticket is not None:
        principal = await services.tickets.redeem(ticket, doc_id)
        if principal is None:
            raise AuthError("unknown, used or expired ticket")
        if principal.expires_at <= time.time():
            # A ticket lives 30 s, but never longer than the token it was issued for.
            raise AuthError("the token this ticket was issued for has expired")
        return principal
    token = params.get("token")
    if token is None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            raise AuthError("missing credentials: Authorization header, ?ticket= or ?token=")
        token = credentials.strip()
    return authenticate(token, services.settings)


def client_address(scope: Scope) -> str:
    return str((scope.get("client") or ("unknown",))[0])


def take_connection(limits: Limits, user: str, address: str) -> str | None:
    """Counts one more open socket, of either kind, for ``user`` and for ``address``; or,
    when either has none to spare, counts nothing and returns why (the refusal's detail,
    answered with :data:`TOO_MANY`). Every socket taken is given back with
    :func:`release_connection`, however it ends."""
    if not limits.user_connections.acquire(user):
        return "too many connections for this user"
    if not limits.address_connections.acquire(address):
        limits.user_connections.release(user)
        return "too many connections from this address"
    return None


def release_connection(limits: Limits, user: str, address: str) -> None:
    limits.user_connections.release(user)
    limits.address_connections.release(address)


async def reader_misses_document(services: Services, doc_id: str, access: Access) -> bool:
    """Whether a token that may not create the document asks for one that does not exist:
    refused without starting an actor (one lookup, none when the document is loaded)."""
    return (
        access != "write"
        and services.registry.loaded(doc_id) is None
        and await services.store.get_document(doc_id) is None
    )


async def lease_or_create(
    services: Services, doc_id: str, access: Access
) -> tuple[AbstractAsyncContextManager[DocumentActor], DocumentActor] | None:
    """The document's entered lease and its actor, creating the document (empty) first when
    it does not exist and the token may write it; None when it does not exist and may not be
    created. The caller leaves the lease (``__aexit__``) when its socket ends."""
    lease = services.registry.lease(doc_id)
    try:
        return lease, await lease.__aenter__()
    except DocumentNotFound:
        if access != "write":
            return None
    await services.store.create_document(doc_id, "", "", utcnow())
    # A concurrent first joiner may have started an actor whose load ran before the row
    # existed; it fails with DocumentNotFound, and a fresh lease then sees the row.
    for attempt in range(3):
        lease = services.registry.lease(doc_id)
        try:
            return lease, await lease.__aenter__()
        except DocumentNotFound:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
