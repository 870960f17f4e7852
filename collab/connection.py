"""The OT WebSocket edge: the handshake, a reader feeding the actor, a writer draining the outbox.

Each connection owns a bounded outbox, so a slow client only ever fills its own queue; when that
passes ``COLLAB_SEND_QUEUE_LIMIT`` it is closed with 1013 and catches up by reconnecting with
``?since=``. Everything is refused before ``accept()`` when the handshake is not acceptable
(the checks it shares with the Yjs socket are in collab.handshake), so no room, actor or
database work is spent on it.

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
from starlette.types import Receive, Scope, Send

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
from collab.protocol import OpFrame, PresenceFrame, ProtocolError
from collab.ratelimit import TokenBucket
from collab.services import Services

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


class Connection:
    """One accepted client connection; the actor's :class:`~collab.actor.Peer`.

    Two flags order the shutdown of the two halves. ``_close`` is the close the server asked
    for: nothing more is queued once it is set, and the writer ends by sending it. ``_done`` is
    set once the writer has sent that close (or could not): the reader, if it is still waiting
    for a frame, is then interrupted, as the old separate reader task used to be cancelled.
    """

    __slots__ = (
        "_close",
        "_direct",
        "_done",
        "_frames",
        "_op_bucket",
        "_presence",
        "_presence_bucket",
        "_presence_warned_at",
        "_reader",
        "_receive",
        "_send",
        "_sending",
        "_services",
        "_writer",
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
        self._receive = receive
        self._send = send
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
        self._close: tuple[int, str] | None = None
        self._done = False
        self._writer: asyncio.Task[None] | None = None
        self._sending = False
        # The task running the read loop while it runs, so that the writer can interrupt it.
        self._reader: asyncio.Task[object] | None = None

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

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        if self._close is not None:
            return
        self._close = (code, reason)
        if not flush:
            self._frames = self._presence = None
            if self._sending:
                # A stalled send would hold the close back; the cancelled writer still sends it.
                # A writer that has not started yet finds the queue empty and sends it anyway.
                assert self._writer is not None
                self._writer.cancel()
                return
        self._start_writer()

    # -- the writer -------------------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._writer is None and not self._done:
            self._writer = asyncio.create_task(self._write_loop(), name=f"writer:{self.client_id}")

    async def _write_loop(self) -> None:
        try:
            while True:
                if self._frames:
                    frame = self._frames.popleft()
                elif self._presence:
                    _, frame = self._presence.popitem()
                else:
                    break
                self._sending = True
                try:
                    await self._send({"type": "websocket.send", "text": frame.decode()})
                finally:
                    self._sending = False
        except asyncio.CancelledError:
            if self._close is None:
                raise
            # close(flush=False) cut the queue short; the close frame still goes out below.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            # The transport is gone: nothing more can be sent, the connection is over.
            log.debug("send to %s failed", self.client_id, exc_info=True)
            if self._close is None:
                self._close = (1000, "")
            self._finish()
            return
        if self._close is None:
            # Drained: the task ends and the next frame starts a new one; between two bursts
            # an idle connection holds no task at all.
            self._frames = self._presence = None
            self._writer = None
            return
        await self._send_close(*self._close)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._frames = self._presence = None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            # The peer is gone or stalled; the server drops the transport when we return.
            log.debug("close %s for %s did not complete", code, self.client_id)

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
            self._reader = None
            actor.leave(self)
            if self._close is None:
                self._close = (1000, "")
                self._start_writer()
            # Let the writer flush and send the close frame; a stalled one is cut short.
            writer = self._writer
            if writer is not None:
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await asyncio.gather(writer, return_exceptions=True)
                except TimeoutError:
                    writer.cancel()

    async def _read_loop(self, actor: DocumentActor) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._done:
            return
        self._reader = task
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
            if not self._done:
                raise
            # The writer finished the close while we waited for the client: stop reading.
            task.uncancel()
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
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, principal.expires_at - time.time()),
                connection.close,
                CloseCode.POLICY,
                "token expired",
            )
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
