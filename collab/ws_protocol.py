"""uvicorn's sans-I/O WebSocket protocol with less state kept per open connection.

uvicorn's ``WebSocketsSansIOProtocol`` keeps, for every open socket, an ``asyncio.Queue`` of
received messages (four ``collections.deque`` of about 760 bytes each, and an ``asyncio.Event``)
and an ``asyncio.Event`` for write flow control (one more deque), and it holds on to the parsed
handshake request and response, headers and all, for the life of the connection. Together that
is about 6 KiB of a connection that does nothing. This subclass keeps the same code and swaps
those objects for equivalents sized for their one use: a list-backed queue with a single
reader (ASGI's ``receive``) and a flag with lazily created waiters; the handshake objects are
dropped once the handshake is over. Every frame and close code on the wire is uvicorn's own.

The swaps happen only when uvicorn built the objects this module expects, so a uvicorn that
changes its internals degrades to its own protocol rather than breaking. Beyond that, the class
is only chosen on the uvicorn versions it is tested on (``collab.http_protocol.ws_protocol``,
``LEAN_PROTOCOL_TESTED``); any other version is served by uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

from collab.http_protocol import SEND_TEXT_NOW


class MessageQueue:
    """``asyncio.Queue``'s ``put_nowait``/``get``/``empty``/``qsize`` for one consumer."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head == len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while self._head == len(self._items):
            if self._waiter is not None:
                raise RuntimeError("MessageQueue.get has one consumer at a time")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = self._items[self._head]
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        return item


class Flag:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait``; waiters only while waiting."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None


class LeanWebSocketsSansIOProtocol(WebSocketsSansIOProtocol):
    """uvicorn's protocol, leaner per connection, with a synchronous send for the app.

    ASGI's ``send`` is a coroutine, so a server that fans a frame out to hundreds of sockets
    needs a task per socket to await it, and hands each frame over as ``str`` for uvicorn to
    encode back to bytes. ``send_text_now`` writes already-encoded UTF-8 to the transport at
    once when nothing stands in the way (the handshake is done, no close was sent, the
    transport is not paused by flow control), exactly as ``send`` would write it; otherwise it
    says no and the app takes the ASGI path, which waits for flow control.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if type(self.queue) is asyncio.Queue and self.queue.empty():
            self.queue = MessageQueue()  # type: ignore[assignment]
        if type(self.writable) is asyncio.Event:
            writable = Flag()
            if self.writable.is_set():
                writable.set()
            self.writable = writable  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_TEXT_NOW] = self.send_text_now

    def send_text_now(self, data: bytes) -> bool:
        """Writes one text frame of UTF-8 ``data`` now; False if it has to wait or can't go."""
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        try:
            self.conn.send_text(data)
        except InvalidState:
            return False  # the peer is closing: the ASGI path reports the disconnect
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Once the handshake is answered uvicorn never reads the request or the response
            # again. The request's headers are emptied too, not only let go of: websockets'
            # frame parser, a generator, keeps the request as a local for as long as it runs.
            request = self.__dict__.pop("request", None)
            if isinstance(request, Request):
                request.headers.clear()
            self.__dict__.pop("response", None)
