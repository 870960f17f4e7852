"""The WebSocket edge: handshake checks, a reader feeding the actor, a writer draining the outbox.

Each connection owns a bounded outbox and its own writer task, so a slow client only ever fills
its own queue; when that passes ``COLLAB_SEND_QUEUE_LIMIT`` it is closed with 1013 and catches up
by reconnecting with ``?since=``. Everything is refused before ``accept()`` when the handshake is
not acceptable, so no room, actor or database work is spent on it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from contextlib import AsyncExitStack

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from collab import ot, protocol
from collab.actor import DocumentActor, DocumentGone, DocumentNotFound, utcnow
from collab.auth import Access, AuthError, Principal
from collab.deps import DOC_ID_RE, authenticate
from collab.document import Submission
from collab.protocol import OpFrame, PresenceFrame, ProtocolError
from collab.ratelimit import TokenBucket
from collab.services import Services

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_TIMEOUT = 5.0


class Connection:
    """One client connection; the actor's :class:`~collab.actor.Peer`."""

    def __init__(
        self,
        websocket: WebSocket,
        principal: Principal,
        access: Access,
        services: Services,
    ) -> None:
        self.websocket = websocket
        self.client_id = secrets.token_hex(8)
        self.user_id = principal.sub
        self.name = principal.name
        self.access = access
        self.cursor: dict[str, int] | None = None
        self._services = services
        self._limit = services.settings.send_queue_limit
        self._frames: deque[bytes] = deque()
        self._presence: dict[str, bytes] = {}
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        now = time.monotonic()
        settings = services.settings
        self._op_bucket = TokenBucket(settings.ops_per_second, settings.ops_burst, now)
        self._presence_bucket = TokenBucket(
            settings.presence_per_second, settings.presence_burst, now
        )
        self._presence_warned_at = 0.0

    # -- Peer -------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._close is not None:
            return
        if len(self._frames) >= self._limit:
            self._services.metrics.send_queue_drops += 1
            self.close(CLOSE_TRY_AGAIN, "too slow: reconnect with ?since=", flush=False)
            return
        self._frames.append(frame)
        self._wakeup.set()

    def send_presence(self, client_id: str, frame: bytes) -> None:
        """Presence is lossy: only the newest cursor of each peer waits to be sent."""
        if self._close is None:
            self._presence[client_id] = frame
            self._wakeup.set()

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        if self._close is not None:
            return
        self._close = (code, reason)
        if not flush:
            self._frames.clear()
            self._presence.clear()
            if self._writer is not None:
                self._writer.cancel()
        self._wakeup.set()

    # -- tasks ------------------------------------------------------------------------------

    async def write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._frames or self._presence:
                    if self._frames:
                        frame = self._frames.popleft()
                    else:
                        _, frame = self._presence.popitem()
                    await self.websocket.send({"type": "websocket.send", "text": frame.decode()})
                if self._close is not None:
                    return
        finally:
            if self._close is not None:
                await self._send_close(*self._close)

    async def _send_close(self, code: int, reason: str) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.websocket.close(code, reason)
        except Exception:
            # The peer is gone or stalled; the server drops the transport when we return.
            log.debug("close %s for %s did not complete", code, self.client_id)

    async def read_loop(self, actor: DocumentActor) -> None:
        max_bytes = self._services.settings.max_message_bytes
        while self._close is None:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text: str | None = message.get("text")
            if text is None:
                self.send(protocol.error_frame("bad_message", "frames are JSON text, not binary"))
                continue
            if len(text) > max_bytes or (
                len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes
            ):
                self.close(CLOSE_TOO_BIG, f"frame larger than {max_bytes} bytes", flush=False)
                return
            try:
                await self._handle(text, actor)
            except ProtocolError as error:
                self.send(protocol.error_frame(error.code, error.message, error.seq))

    async def _handle(self, text: str, actor: DocumentActor) -> None:
        frame = protocol.decode_client_frame(text)
        if isinstance(frame, OpFrame):
            await self._handle_op(frame, actor)
        elif isinstance(frame, PresenceFrame):
            await self._handle_presence(frame, actor)

    async def _handle_op(self, frame: OpFrame, actor: DocumentActor) -> None:
        if self.access != "write":
            raise ProtocolError("read_only", "this connection may only read", frame.seq)
        if not self._op_bucket.take(time.monotonic()):
            raise ProtocolError("rate_limited", "too many ops; slow down", frame.seq)
        try:
            ot.check(frame.op)
        except ot.InvalidOp as error:
            raise ProtocolError("invalid_op", str(error), frame.seq) from None
        submission = Submission(frame.op, frame.rev, frame.src, frame.seq, self.user_id)
        await actor.submit_from_peer(submission, self)

    async def _handle_presence(self, frame: PresenceFrame, actor: DocumentActor) -> None:
        now = time.monotonic()
        if not self._presence_bucket.take(now):
            if now - self._presence_warned_at >= 1.0:
                self._presence_warned_at = now
                raise ProtocolError("rate_limited", "too many presence updates; some dropped")
            return
        cursor = None if frame.cursor is None else frame.cursor.model_dump()
        await actor.presence(self, cursor, frame.rev)

    async def run(self, actor: DocumentActor, since: int | None) -> None:
        self._writer = asyncio.create_task(self.write_loop(), name=f"writer:{self.client_id}")
        reader = asyncio.create_task(self.read_loop(actor), name=f"reader:{self.client_id}")
        try:
            await actor.join(self, since)
            await asyncio.wait({self._writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        except DocumentGone:
            self.close(1001, "document unloaded")
        finally:
            actor.leave(self)
            reader.cancel()
            if self._close is None:
                self._close = (1000, "")
                self._wakeup.set()
            # Let the writer flush and send the close frame; a stalled one is cut short.
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(self._writer, return_exceptions=True)
            except TimeoutError:
                self._writer.cancel()
            await asyncio.gather(reader, return_exceptions=True)


# -- the handshake ----------------------------------------------------------------------------


async def deny(websocket: WebSocket, status: int, detail: str) -> None:
    """Refuses the handshake with an HTTP status, before any work is done for it."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status))
    else:
        await websocket.close(CLOSE_POLICY, detail)


def origin_allowed(websocket: WebSocket, services: Services) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: tokens, not origins, protect those clients
    allowed = services.settings.origin_allowlist()
    if allowed is None:
        return True
    origin = origin.rstrip("/")
    host = websocket.headers.get("host", "")
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    return origin == f"{scheme}://{host}" or origin in allowed


async def _principal(websocket: WebSocket, doc_id: str, services: Services) -> Principal:
    params = websocket.query_params
    ticket = params.get("ticket")
    if ticket is not None:
        principal = await services.tickets.redeem(ticket, doc_id)
        if principal is None:
            raise AuthError("unknown, used or expired ticket")
        return principal
    token = params.get("token")
    if token is None:
        scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            raise AuthError("missing credentials: Authorization header, ?ticket= or ?token=")
        token = credentials.strip()
    return authenticate(token, services.settings)


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise ValueError(value)
    return int(value)


async def serve_socket(websocket: WebSocket, doc_id: str, services: Services) -> None:
    if services.draining:
        await deny(websocket, 503, "the server is shutting down")
        return
    if not DOC_ID_RE.match(doc_id):
        await deny(websocket, 404, "invalid document id")
        return
    if not origin_allowed(websocket, services):
        await deny(websocket, 403, "origin not allowed")
        return
    try:
        principal = await _principal(websocket, doc_id, services)
    except AuthError as error:
        await deny(websocket, 403, str(error))
        return
    access = principal.access(doc_id)
    if access is None:
        await deny(websocket, 403, f"this token may not open document {doc_id!r}")
        return
    try:
        since = _since(websocket.query_params.get("since"))
    except ValueError:
        await deny(websocket, 400, "since must be a revision number")
        return
    # A reader cannot create the document: refuse a missing one without starting an actor.
    if (
        access != "write"
        and services.registry.loaded(doc_id) is None
        and await services.store.get_document(doc_id) is None
    ):
        await deny(websocket, 404, f"no document {doc_id!r}")
        return

    async with AsyncExitStack() as stack:
        try:
            actor = await stack.enter_async_context(services.registry.lease(doc_id))
        except DocumentNotFound:
            if access != "write":
                await deny(websocket, 404, f"no document {doc_id!r}")
                return
            await services.store.create_document(doc_id, "", "", utcnow())
            # A concurrent first joiner may have started an actor whose load ran before the
            # row existed; it fails with DocumentNotFound, and a fresh lease then sees the row.
            for attempt in range(3):
                try:
                    actor = await stack.enter_async_context(services.registry.lease(doc_id))
                    break
                except DocumentNotFound:
                    if attempt == 2:
                        raise
        await websocket.accept()
        connection = Connection(websocket, principal, access, services)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, principal.expires_at - time.time()),
            connection.close,
            CLOSE_POLICY,
            "token expired",
        )
        try:
            await connection.run(actor, since)
        finally:
            expiry.cancel()
