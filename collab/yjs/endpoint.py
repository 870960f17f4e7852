"""``/ws/yjs/{doc_id}``: the handshake of a Yjs socket, then its connection on the document's actor.

Credentials, Origin and document ids are checked as on the OT socket (collab.handshake), but a
refusal is an accepted socket closed at once with 4401 / 4403 / 4404: y-websocket's provider
retries a refused upgrade forever and stops only on 4400-4499. Either way no room, actor or
database work is spent on a refused socket (a reader's missing document costs one lookup, as
on the OT socket). A token that expires during the session closes it with 4401. What must pass
rather than stop the provider is refused with an HTTP status: 503 while the server drains, 429
when the user or the address has no connection to spare (one budget with the OT socket's).
An accepted socket counts in ``collab_connections`` until it ends.
"""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope, Send

from collab.auth import AuthError
from collab.errors import CloseCode
from collab.handshake import (
    TOO_MANY,
    client_address,
    deny,
    lease_or_create,
    origin_allowed,
    reader_misses_document,
    release_connection,
    socket_principal,
    take_connection,
)
from collab.protocol import is_doc_id
from collab.services import Services
from collab.yjs.connection import YjsConnection, YjsLimits


async def refuse(receive: Receive, send: Send, code: CloseCode, reason: str) -> None:
    """Accepts the socket and closes it with ``code`` (what makes the provider stop)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send({"type": "websocket.close", "code": int(code), "reason": reason[:120]})


def limits(services: Services) -> YjsLimits:
    settings = services.settings
    return YjsLimits(
        max_message_bytes=settings.yjs_max_message_bytes,
        send_queue_limit=settings.send_queue_limit,
        messages_per_second=settings.yjs_messages_per_second,
        messages_burst=settings.yjs_messages_burst,
        keepalive_seconds=settings.yjs_keepalive_seconds,
    )


async def serve_yjs_socket(
    scope: Scope, receive: Receive, send: Send, doc_id: str, services: Services
) -> None:
    """The ASGI application of ``/ws/yjs/{doc_id}``."""
    if services.draining:
        # Not a 44xx: the provider should come back once the server (or another) is up.
        await deny(scope, receive, send, 503, "the server is shutting down")
        return
    if not is_doc_id(doc_id):
        await refuse(receive, send, CloseCode.DELETED, "invalid document id")
        return
    headers = Headers(scope=scope)
    if not origin_allowed(scope, headers, services):
        await refuse(receive, send, CloseCode.FORBIDDEN, "origin not allowed")
        return
    try:
        principal = await socket_principal(
            headers, QueryParams(scope["query_string"]), doc_id, services
        )
    except AuthError as error:
        await refuse(receive, send, CloseCode.UNAUTHENTICATED, str(error))
        return
    del headers
    access = principal.access(doc_id)
    if access is None:
        await refuse(receive, send, CloseCode.FORBIDDEN, f"this token may not open {doc_id!r}")
        return
    address = client_address(scope)
    refusal = take_connection(services.limits, principal.sub, address)
    if refusal is not None:
        # One budget with the OT socket's. Not a 44xx: the provider should come back once one
        # of the user's (or the address's) sockets has closed.
        await deny(scope, receive, send, TOO_MANY, refusal)
        return
    try:
        if await reader_misses_document(services, doc_id, access):
            await refuse(receive, send, CloseCode.DELETED, f"no document {doc_id!r}")
            return
        leased = await lease_or_create(services, doc_id, access)
        if leased is None:
            await refuse(receive, send, CloseCode.DELETED, f"no document {doc_id!r}")
            return
        lease, actor = leased
        try:
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            connection = YjsConnection(
                receive,
                send,
                user_id=principal.sub,
                name=principal.name,
                writable=access == "write",
                limits=limits(services),
            )
            expiry = connection.close_when_expired(principal.expires_at, CloseCode.UNAUTHENTICATED)
            # Counted where the socket's life begins and ends, as on the OT socket: every way
            # it ends (the client leaves, a 44xx close, a delete, a failed transport) uncounts it.
            services.metrics.connections += 1
            try:
                await connection.run(actor)
            finally:
                services.metrics.connections -= 1
                expiry.cancel()
        finally:
            await lease.__aexit__(None, None, None)
    finally:
        release_connection(services.limits, principal.sub, address)
