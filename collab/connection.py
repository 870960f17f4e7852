"""The OT WebSocket edge: the handshake, a reader feeding the actor, a writer draining the outbox.

Each connection owns a bounded outbox, so a slow client only ever fills its own queue; when that
passes ``COLLAB_SEND_QUEUE_LIMIT`` it is closed with 1013 and catches up by reconnecting with
``?since=``. Everything is refused before ``accept()`` when the handshake is not acceptable
(the checks it shares with the Yjs socket are in collab.handshake), so no room, actor or
database work is spent on it. The writer and the close are collab.outbox's, shared with the
Yjs connection too.

The socket is served as a plain ASGI application (``collab.app`` dispatches it before FastAPI's
middleware and router) and an idle connection holds as little as possible, because memory per
idle connection is what bounds how many editors one process can keep open: the reader runs in
the ASGI handler's own task, the writer task exists only while frames are queued, and the
outbox, presence slots and rate-limit buckets are created on first use.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable

from starlette.datastructures import Headers, QueryParams
from starlette.types import Message, Receive, Scope, Send

from collab import ot, protocol
from collab.actor import DocumentActor, DocumentGone
from collab.auth import Access, AuthError, Principal
from collab.document import Submission
from collab.errors import CloseCode, ErrorCode
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
from collab.http_protocol import SEND_TEXT_NOW
from collab.outbox import OutboxSocket
from collab.protocol import OpFrame, PresenceFrame, ProtocolError
from collab.ratelimit import TokenBucket
from collab.services import Services

log = logging.getLogger(__name__)


class Connection(OutboxSocket):
    """One accepted client connection; the actor's :class:`~collab.actor.Peer`.

    The outbox, the writer and the order of the close are :class:`~collab.outbox.OutboxSocket`'s;
    this class adds the two queues (ops in order, presence coalesced per peer), the direct
    write of an idle connection, and the reader of the OT protocol.
    """

    __slots__ = (
        "_direct",
        "_frames",
        "_op_bucket",
        "_presence",
        "_presence_bucket",
        "_presence_warned_at",
        "_services",
        "access",
        "client_id",
        "cursor",
        "name",
        "user_id",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send,
        principal: Principal,
        access: Access,
        services: Services,
        send_now: Callable[[bytes], bool] | None = None,
    ) -> None:
        super().__init__(receive, send)
        # The server's synchronous write (collab.ws_protocol), if it offers one: a frame for an
        # idle connection goes straight to the socket, with no writer task and no re-encoding.
        self._direct = send_now
        self.client_id = secrets.token_hex(8)
        self.user_id = principal.sub
        self.name = principal.name
        self.access = access
        self.cursor: dict[str, int] | None = None
        self._services = services
        # Created on first use: most connections are idle most of the time.
        self._frames: deque[bytes] | None = None
        self._presence: dict[str, bytes] | None = None
        self._op_bucket: TokenBucket | None = None
        self._presence_bucket: TokenBucket | None = None
        self._presence_warned_at = 0.0

    @property
    def label(self) -> str:
        return self.client_id

    # -- Peer -------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._close is not None:
            return
        frames = self._frames
        if self._writer is None and not frames and self._direct is not None and self._direct(frame):
            return
        if frames is None:
            frames = self._frames = deque()
        elif len(frames) >= self._services.settings.send_queue_limit:
            self._services.metrics.send_queue_drops += 1
            self.close(CloseCode.TRY_AGAIN, "too slow: reconnect with ?since=", flush=False)
            return
        frames.append(frame)
        self._start_writer()

    def send_presence(self, client_id: str, frame: bytes) -> None:
        """Presence is lossy: only the newest cursor of each peer waits to be sent."""
        if self._close is None:
            if self._writer is None and self._direct is not None and self._direct(frame):
                return
            if self._presence is None:
                self._presence = {}
            self._presence[client_id] = frame
            self._start_writer()

    # -- the outbox ---------------------------------------------------------------------------

    def _next_message(self) -> Message | None:
        if self._frames:
            frame = self._frames.popleft()
        elif self._presence:
            _, frame = self._presence.popitem()
        else:
            return None
        return {"type": "websocket.send", "text": frame.decode()}

    def _drop_queued(self) -> None:
        # Dropped rather than emptied: between two bursts an idle connection holds no queue.
        self._frames = self._presence = None

    # -- the reader -------------------------------------------------------------------------

    async def run(self, actor: DocumentActor, since: int | None) -> None:
        """Joins the document and reads the client's frames in the calling task until either
        side closes; returns once the close frame went out (or could not)."""
        try:
            try:
                await actor.join(self, since)
            except DocumentGone:
                self.close(CloseCode.GOING_AWAY, "document unloaded")
            else:
                await self._read_loop(actor)
        finally:
            actor.leave(self)
            await self._wind_down()

    async def _read_loop(self, actor: DocumentActor) -> None:
        task = self._start_reading()
        if task is None:
            return
        max_bytes = self._services.settings.max_message_bytes
        receive = self._receive
        try:
            while self._close is None:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text: str | None = message.get("text")
                if text is None:
                    self.send(
                        protocol.error_frame(
                            ErrorCode.BAD_MESSAGE, "frames are JSON text, not binary"
                        )
                    )
                    continue
                if len(text) > max_bytes or (
                    len(text) * 4 > max_bytes
                    and len(text.encode("utf-8", "surrogatepass")) > max_bytes
                ):
                    self.close(
                        CloseCode.TOO_LARGE, f"frame larger than {max_bytes} bytes", flush=False
                    )
                    return
                try:
                    await self._handle(text, actor)
                except ProtocolError as error:
                    self.send(protocol.error_frame(error.code, error.message, error.seq))
        except asyncio.CancelledError:
            # The writer finished the close while we waited for the client: stop reading.
            if not self._interrupted(task):
                raise
        except DocumentGone:
            pass  # the actor stopped; it closes its peers itself
        except Exception:
            log.exception("reading from %s failed", self.client_id)
        finally:
            self._reader = None

    async def _handle(self, text: str, actor: DocumentActor) -> None:
        frame = protocol.decode_client_frame(text)
        if isinstance(frame, OpFrame):
            await self._handle_op(frame, actor)
        elif isinstance(frame, PresenceFrame):
            await self._handle_presence(frame, actor)

    async def _handle_op(self, frame: OpFrame, actor: DocumentActor) -> None:
        if self.access != "write":
            raise ProtocolError(ErrorCode.READ_ONLY, "this connection may only read", frame.seq)
        now = time.monotonic()
        if self._op_bucket is None:
            settings = self._services.settings
            self._op_bucket = TokenBucket(settings.ops_per_second, settings.ops_burst, now)
        if not self._op_bucket.take(now):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many ops; slow down", frame.seq)
        if not self._services.limits.user_ops.take(self.user_id, now):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "too many ops from this user; slow down", frame.seq
            )
        try:
            ot.check(frame.op)
        except ot.InvalidOp as error:
            raise ProtocolError(ErrorCode.INVALID_OP, str(error), frame.seq) from None
        submission = Submission(frame.op, frame.rev, frame.src, frame.seq, self.user_id)
        await actor.submit_from_peer(submission, self)

    async def _handle_presence(self, frame: PresenceFrame, actor: DocumentActor) -> None:
        now = time.monotonic()
        if self._presence_bucket is None:
            settings = self._services.settings
            self._presence_bucket = TokenBucket(
                settings.presence_per_second, settings.presence_burst, now
            )
        if not self._presence_bucket.take(now):
            if now - self._presence_warned_at >= 1.0:
                self._presence_warned_at = now
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "too many presence updates; some dropped"
                )
            return
        cursor = None if frame.cursor is None else frame.cursor.model_dump()
        await actor.presence(self, cursor, frame.rev)


# -- the handshake ----------------------------------------------------------------------------


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10 or int(value) > protocol.MAX_INT:
        raise ValueError(value)
    return int(value)


async def serve_socket(
    scope: Scope, receive: Receive, send: Send, doc_id: str, services: Services
) -> None:
    """The ASGI application of ``/ws/documents/{doc_id}``."""
    if services.draining:
        await deny(scope, receive, send, 503, "the server is shutting down")
        return
    if not protocol.is_doc_id(doc_id):
        await deny(scope, receive, send, 404, "invalid document id")
        return
    # Parsed for the handshake only: the connection keeps none of it.
    headers = Headers(scope=scope)
    if not origin_allowed(scope, headers, services):
        await deny(scope, receive, send, 403, "origin not allowed")
        return
    params = QueryParams(scope["query_string"])
    try:
        principal = await socket_principal(headers, params, doc_id, services)
    except AuthError as error:
        await deny(scope, receive, send, 403, str(error))
        return
    access = principal.access(doc_id)
    if access is None:
        await deny(scope, receive, send, 403, f"this token may not open document {doc_id!r}")
        return
    try:
        since = _since(params.get("since"))
    except ValueError:
        await deny(scope, receive, send, 400, "since must be a revision number")
        return
    del headers, params
    limits = services.limits
    address = client_address(scope)
    refusal = take_connection(limits, principal.sub, address)
    if refusal is not None:
        await deny(scope, receive, send, TOO_MANY, refusal)
        return
    # Released in the finally below, however the connection ends; one function rather than a
    # helper, so an idle connection holds one coroutine frame here, not two.
    try:
        # A reader cannot create the document: refuse a missing one without starting an actor.
        if await reader_misses_document(services, doc_id, access):
            await deny(scope, receive, send, 404, f"no document {doc_id!r}")
            return

        leased = await lease_or_create(services, doc_id, access)
        if leased is None:
            await deny(scope, receive, send, 404, f"no document {doc_id!r}")
            return
        lease, actor = leased
        # The lease is left by hand rather than through `async with` or an AsyncExitStack: it is
        # taken inside lease_or_create, and a stack would stay allocated for the whole connection.
        try:
            message = await receive()
            if message["type"] != "websocket.connect":
                raise RuntimeError(f"expected websocket.connect, got {message['type']!r}")
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            send_now = scope.get("extensions", {}).get(SEND_TEXT_NOW)
            connection = Connection(receive, send, principal, access, services, send_now)
            expiry = connection.close_when_expired(principal.expires_at, CloseCode.POLICY)
            # Counted here, where the socket's life begins and ends, so that every way it can end
            # (the client leaves, a delete or unload closes it, the transport fails) uncounts it.
            services.metrics.connections += 1
            try:
                await connection.run(actor, since)
            finally:
                services.metrics.connections -= 1
                expiry.cancel()
        finally:
            await lease.__aexit__(None, None, None)
    finally:
        release_connection(limits, principal.sub, address)
