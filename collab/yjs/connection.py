"""One Yjs client's WebSocket: a reader feeding the document's actor, a writer draining a queue.

Binary frames only, each decoded with :func:`collab.yjs.messages.decode_frame` before anything
reaches the actor, so a malformed message costs the actor nothing; the socket is closed with
the 44xx code docs/yjs.md gives (the provider stops retrying on those). The connection owns a
bounded queue of frames and, separately, the newest awareness entry per Yjs client waiting for
it (coalesced, as OT presence is). A keepalive keeps the provider's 30-second "no message"
watchdog quiet: an empty awareness update when nothing was sent for ``keepalive`` seconds.
The writer task and the order of the close are :class:`collab.outbox.OutboxSocket`'s, as on the
OT socket.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Message, Receive, Send

from collab.errors import CloseCode, CollabError
from collab.outbox import OutboxSocket
from collab.ratelimit import TokenBucket
from collab.yjs import messages
from collab.yjs.awareness import AwarenessOutbox
from collab.yjs.codec import DecodeError
from collab.yjs.messages import (
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)

log = logging.getLogger(__name__)

EMPTY_STATE_VECTOR = b"\x00"
# An awareness update with no entries: a message for the provider's watchdog, a no-op otherwise.
KEEPALIVE = messages.awareness(())


@dataclass(frozen=True, slots=True)
class YjsLimits:
    max_message_bytes: int
    send_queue_limit: int
    messages_per_second: float
    messages_burst: float
    keepalive_seconds: float


class YjsEndpoint(Protocol):
    """What a Yjs connection asks of its document's actor. The async calls queue a message for
    the actor (waiting while its inbox is full); the actor answers through the connection's
    ``send``/``send_awareness``/``close``."""

    async def yjs_join(self, peer: YjsConnection, state_vector: bytes) -> None: ...

    async def yjs_update(self, peer: YjsConnection, update: bytes) -> None: ...

    async def yjs_step1(self, peer: YjsConnection, state_vector: bytes) -> None: ...

    async def yjs_awareness(
        self, peer: YjsConnection, entries: Sequence[AwarenessEntry]
    ) -> None: ...

    async def yjs_query_awareness(self, peer: YjsConnection) -> None: ...

    def yjs_leave(self, peer: YjsConnection) -> None: ...


class YjsConnection(OutboxSocket):
    """An accepted Yjs socket; the actor's Yjs peer. ``src`` and :meth:`next_seq` name the
    OT ops its text changes become (a fresh ``src`` per connection, so a reconnect can never
    collide with an earlier ``(src, seq)``). The writer and the order of the close are
    :class:`~collab.outbox.OutboxSocket`'s."""

    WRITER_PREFIX = "yjs-writer"

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        user_id: str,
        name: str,
        writable: bool,
        limits: YjsLimits,
    ) -> None:
        super().__init__(receive, send)
        self.user_id = user_id
        self.name = name
        self.writable = writable
        self._limits = limits
        self.src = f"yjs:{secrets.token_hex(8)}"
        self._seq = 0
        self._frames: deque[bytes] = deque()
        self._awareness = AwarenessOutbox()
        self._denied = False
        self._last_sent = time.monotonic()
        self._keepalive: asyncio.TimerHandle | None = None

    @property
    def label(self) -> str:
        return self.src

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- what the actor calls ----------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._close is not None:
            return
        if len(self._frames) >= self._limits.send_queue_limit:
            self.close(CloseCode.TOO_SLOW, "too slow: send queue full", flush=False)
            return
        self._frames.append(frame)
        self._start_writer()

    def send_awareness(self, client_id: int, entry: bytes) -> None:
        if self._close is None:
            self._awareness.put(client_id, entry)
            self._start_writer()

    # -- the outbox --------------------------------------------------------------------------

    def _next_message(self) -> Message | None:
        # The keepalive's clock: the writer asks as each send completes (and as a burst starts).
        self._last_sent = time.monotonic()
        if self._frames:
            frame = self._frames.popleft()
        else:
            taken = self._awareness.take()
            if taken is None:
                return None
            frame = taken
        return {"type": "websocket.send", "bytes": frame}

    def _drop_queued(self) -> None:
        self._frames.clear()
        self._awareness.clear()

    def _schedule_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._last_sent + self._limits.keepalive_seconds
        self._keepalive = loop.call_at(loop.time() + max(0.0, due - time.monotonic()), self._tick)

    def _tick(self) -> None:
        if self._close is not None:
            return
        if time.monotonic() - self._last_sent >= self._limits.keepalive_seconds * 0.9:
            self.send(KEEPALIVE)
            self._last_sent = time.monotonic()
        self._schedule_keepalive()

    # -- the reader --------------------------------------------------------------------------

    async def run(self, endpoint: YjsEndpoint) -> None:
        """Reads the client's frames until either side closes; returns once the close went
        out (or could not)."""
        self._schedule_keepalive()
        try:
            await self._read_loop(endpoint)
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()
            endpoint.yjs_leave(self)
            await self._wind_down()

    async def _read_loop(self, endpoint: YjsEndpoint) -> None:
        task = self._start_reading()
        if task is None:
            return
        limits = self._limits
        bucket = TokenBucket(limits.messages_per_second, limits.messages_burst, time.monotonic())
        joined = False
        try:
            while self._close is None:
                message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    return
                data: bytes | None = message.get("bytes")
                if data is None:
                    self.close(CloseCode.BAD_MESSAGE, "y-websocket messages are binary frames")
                    return
                if len(data) > limits.max_message_bytes:
                    self.close(
                        CloseCode.MESSAGE_TOO_LARGE,
                        f"message larger than {limits.max_message_bytes} bytes",
                        flush=False,
                    )
                    return
                if not bucket.take(time.monotonic()):
                    self.close(CloseCode.RATE_LIMITED, "too many messages", flush=False)
                    return
                try:
                    decoded = messages.decode_frame(data)
                except DecodeError as error:
                    self.close(CloseCode.BAD_MESSAGE, error.message[:120])
                    return
                for item in decoded:
                    if not joined:
                        joined = True
                        if isinstance(item, SyncStep1):
                            await endpoint.yjs_join(self, item.state_vector)
                            continue
                        await endpoint.yjs_join(self, EMPTY_STATE_VECTOR)
                    await self._dispatch(item, endpoint)
        except asyncio.CancelledError:
            if not self._interrupted(task):
                raise
        except CollabError:
            # The actor stopped (shutdown, unload, deletion); it closes its peers itself.
            self.close(CloseCode.GOING_AWAY, "document unloaded")
        except Exception:
            log.exception("reading from Yjs connection %s failed", self.src)
        finally:
            self._reader = None

    async def _dispatch(self, item: messages.Message, endpoint: YjsEndpoint) -> None:
        if isinstance(item, SyncStep2 | SyncUpdate):
            if not self.writable:
                if not self._denied:
                    self._denied = True
                    self.send(messages.permission_denied("read-only"))
                return
            await endpoint.yjs_update(self, item.update)
        elif isinstance(item, SyncStep1):
            await endpoint.yjs_step1(self, item.state_vector)
        elif isinstance(item, AwarenessUpdate):
            await endpoint.yjs_awareness(self, item.entries)
        elif isinstance(item, QueryAwareness):
            await endpoint.yjs_query_awareness(self)
        # A permission-denied auth message from a client means nothing to the server.
