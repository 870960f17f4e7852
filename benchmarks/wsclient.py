"""A lean WebSocket client for the load generator: websockets' sans-I/O protocol on a transport.

The ``websockets`` asyncio client wakes a task, a queue and an assembler for every message; in
the hot-document runs that per-message cost made the client processes, not the servers, the
limit, and it weighs most on the server that sends the most messages (ShareDB sends one per
op). Here a message is handed to a callback from ``data_received`` and a reply is written to
the transport in the same call: the same wire protocol (``websockets.client.ClientProtocol``
does the handshake, framing, masking, pings and closing), without the per-message machinery.
Messages arrive whole: neither server fragments them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class Closed(Exception):
    """The connection is closed (or never opened)."""


class LeanSocket(asyncio.Protocol):
    def __init__(self, uri: str) -> None:
        self.protocol = ClientProtocol(parse_uri(uri), max_size=None)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        # Until a callback is set (after the caller's own handshake), messages wait here.
        self.on_message: Callable[[bytes], None] | None = None
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.protocol.send_request(self.protocol.connect())
        self._write_out()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                error = self.protocol.handshake_exc
                if not self.opened.done():
                    if error is None:
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(error)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                if not event.fin:
                    raise RuntimeError("fragmented message: not expected from these servers")
                self._deliver(bytes(event.data))
        self._write_out()  # pongs, the answer to a close
        if self.protocol.close_expected() and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.closed):
            if not future.done():
                if future is self.opened:
                    future.set_exception(Closed("connection lost during the handshake"))
                else:
                    future.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the caller's side ------------------------------------------------------------------

    def _deliver(self, message: bytes) -> None:
        if self.on_message is not None:
            self.on_message(message)
            return
        self._messages.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def drain(self) -> list[bytes]:
        """The messages waiting (before ``on_message`` takes over), oldest first."""
        waiting = list(self._messages)
        self._messages.clear()
        return waiting

    async def recv(self) -> bytes:
        """The next message (for handshakes, before ``on_message`` is set)."""
        while not self._messages:
            if self.closed.done():
                raise Closed("connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._messages.popleft()

    def send_text(self, data: bytes | str) -> None:
        if self.transport is None or self.transport.is_closing():
            raise Closed("connection closed")
        self.protocol.send_text(data.encode() if isinstance(data, str) else data)
        self._write_out()

    async def send(self, data: bytes | str, text: bool = True) -> None:
        self.send_text(data)

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.protocol.send_close()
            self._write_out()
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(self.closed)
        except TimeoutError:
            if self.transport is not None:
                self.transport.close()

    def _write_out(self) -> None:
        data = self.protocol.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(data))


async def connect(uri: str, timeout: float) -> LeanSocket:  # noqa: ASYNC109
    wsuri = parse_uri(uri)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, socket = await loop.create_connection(
            lambda: LeanSocket(uri), wsuri.host, wsuri.port
        )
        await socket.opened
    return socket
