"""The Yjs connection edge (collab.yjs.connection) against a fake actor endpoint and a fake
ASGI transport: what reaches the actor, what is refused before it, and which close code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from collab.errors import CloseCode
from collab.yjs import messages
from collab.yjs.connection import KEEPALIVE, YjsConnection, YjsLimits
from collab.yjs.messages import AwarenessEntry

LIMITS = YjsLimits(
    max_message_bytes=1000,
    send_queue_limit=4,
    messages_per_second=1.0,
    messages_burst=20.0,
    keepalive_seconds=3600.0,
)


class FakeEndpoint:
    """Records what the connection asked of the actor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.left = asyncio.Event()

    async def yjs_join(self, peer: YjsConnection, state_vector: bytes) -> None:
        self.calls.append(("join", state_vector))

    async def yjs_update(self, peer: YjsConnection, update: bytes) -> None:
        self.calls.append(("update", update))

    async def yjs_step1(self, peer: YjsConnection, state_vector: bytes) -> None:
        self.calls.append(("step1", state_vector))

    async def yjs_awareness(self, peer: YjsConnection, entries: Sequence[AwarenessEntry]) -> None:
        self.calls.append(("awareness", [e.client_id for e in entries]))

    async def yjs_query_awareness(self, peer: YjsConnection) -> None:
        self.calls.append(("query", None))

    def yjs_leave(self, peer: YjsConnection) -> None:
        self.calls.append(("leave", None))
        self.left.set()


class Socket:
    """The ASGI side: frames the client sends, and what the server sent back."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self.sent.put(message)

    def client_sends(self, data: bytes | str) -> None:
        key = "bytes" if isinstance(data, bytes) else "text"
        self.incoming.put_nowait({"type": "websocket.receive", key: data})

    async def next_sent(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return await self.sent.get()

    async def close_code(self) -> int:
        while True:
            message = await self.next_sent()
            if message["type"] == "websocket.close":
                return int(message["code"])


@pytest.fixture
async def running() -> AsyncIterator[Any]:
    started: list[tuple[asyncio.Task[None], Socket]] = []

    def start(
        writable: bool = True, limits: YjsLimits = LIMITS
    ) -> tuple[Socket, YjsConnection, FakeEndpoint]:
        socket = Socket()
        endpoint = FakeEndpoint()
        connection = YjsConnection(
            socket.receive, socket.send, user_id="u", name="U", writable=writable, limits=limits
        )
        task = asyncio.create_task(connection.run(endpoint))
        started.append((task, socket))
        return socket, connection, endpoint

    yield start
    for task, socket in started:
        socket.incoming.put_nowait({"type": "websocket.disconnect"})
        async with asyncio.timeout(5):
            await task


async def test_the_first_step1_joins_and_the_rest_is_dispatched(running: Any) -> None:
    socket, _, endpoint = running()
    socket.client_sends(messages.sync_step1(b"\x01\x07\x02"))
    awareness = messages.awareness([messages.awareness_entry(7, 1, "{}")])
    socket.client_sends(messages.sync_update(b"u1") + awareness + messages.query_awareness())
    socket.client_sends(messages.sync_step1(b"\x00"))
    socket.incoming.put_nowait({"type": "websocket.disconnect"})
    async with asyncio.timeout(5):
        await endpoint.left.wait()
    assert endpoint.calls == [
        ("join", b"\x01\x07\x02"),
        ("update", b"u1"),
        ("awareness", [7]),
        ("query", None),
        ("step1", b"\x00"),
        ("leave", None),
    ]


async def test_a_first_message_that_is_not_step1_joins_with_an_empty_state(
    running: Any,
) -> None:
    socket, _, endpoint = running()
    socket.client_sends(messages.sync_update(b"u"))
    socket.incoming.put_nowait({"type": "websocket.disconnect"})
    async with asyncio.timeout(5):
        await endpoint.left.wait()
    assert endpoint.calls[:2] == [("join", b"\x00"), ("update", b"u")]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("a text frame", CloseCode.BAD_MESSAGE),
        (b"\x00\x02\x80", CloseCode.BAD_MESSAGE),  # a truncated varUint
        (b"\x07", CloseCode.BAD_MESSAGE),  # an unknown message type
        (messages.sync_update(b"x" * 1000), CloseCode.MESSAGE_TOO_LARGE),
    ],
)
async def test_bad_frames_close_with_their_code_before_the_actor(
    running: Any, frame: bytes | str, code: int
) -> None:
    socket, _, endpoint = running()
    socket.client_sends(frame)
    assert await socket.close_code() == code
    async with asyncio.timeout(5):
        await endpoint.left.wait()
    assert endpoint.calls == [("leave", None)]


async def test_a_flood_closes_with_4429(running: Any) -> None:
    socket, _, endpoint = running()
    for _ in range(25):
        socket.client_sends(messages.query_awareness())
    assert await socket.close_code() == CloseCode.RATE_LIMITED
    queries = [c for c in endpoint.calls if c[0] == "query"]
    assert len(queries) <= 20


async def test_a_reader_gets_permission_denied_once_and_nothing_is_applied(
    running: Any,
) -> None:
    socket, _, endpoint = running(writable=False)
    socket.client_sends(messages.sync_step1(b"\x00"))
    for _ in range(3):
        socket.client_sends(messages.sync_update(b"u"))
        socket.client_sends(messages.sync_step2(b"u"))
    socket.client_sends(messages.query_awareness())
    sent = await socket.next_sent()
    assert sent == {"type": "websocket.send", "bytes": messages.permission_denied("read-only")}
    socket.incoming.put_nowait({"type": "websocket.disconnect"})
    async with asyncio.timeout(5):
        await endpoint.left.wait()
    assert [c[0] for c in endpoint.calls] == ["join", "query", "leave"]
    assert socket.sent.empty()


async def test_a_full_send_queue_closes_with_4408(running: Any) -> None:
    socket, connection, _ = running()
    stalled = asyncio.Event()
    real_send = socket.send

    async def stops_reading(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":  # a client that stopped reading
            stalled.set()
            await asyncio.Event().wait()
        await real_send(message)

    connection._send = stops_reading
    connection.send(b"first")
    async with asyncio.timeout(5):
        await stalled.wait()
    for index in range(LIMITS.send_queue_limit + 1):
        connection.send(bytes([index]))
    assert connection.closing
    # The stalled send is cut short and the close still goes out.
    assert await socket.close_code() == CloseCode.TOO_SLOW


async def test_a_queue_that_overflows_before_the_writer_ran_still_closes_with_4408(
    running: Any,
) -> None:
    socket, connection, _ = running()
    # All in one step: the writer task is created but has not run yet when the queue overflows.
    for index in range(LIMITS.send_queue_limit + 2):
        connection.send(bytes([index]))
    assert connection.closing
    # The queued frames are dropped: the close is the first thing sent.
    sent = await socket.next_sent()
    assert (sent["type"], sent["code"]) == ("websocket.close", CloseCode.TOO_SLOW)


async def test_awareness_waiting_for_a_receiver_is_coalesced(running: Any) -> None:
    socket, connection, _ = running()
    blocker = asyncio.Event()
    real_send = socket.send

    async def held_send(message: dict[str, Any]) -> None:
        await blocker.wait()
        await real_send(message)

    connection._send = held_send
    connection.send(b"first")
    for clock in range(1, 6):
        connection.send_awareness(9, messages.awareness_entry(9, clock, "{}"))
    blocker.set()
    assert (await socket.next_sent())["bytes"] == b"first"
    [update] = messages.decode_frame((await socket.next_sent())["bytes"])
    assert isinstance(update, messages.AwarenessUpdate)
    assert [(e.client_id, e.clock) for e in update.entries] == [(9, 5)]


async def test_an_idle_connection_gets_keepalives(running: Any) -> None:
    quick = YjsLimits(1000, 4, 100.0, 100.0, keepalive_seconds=0.05)
    socket, _, _ = running(limits=quick)
    for _ in range(2):
        assert (await socket.next_sent())["bytes"] == KEEPALIVE
    assert messages.decode_frame(KEEPALIVE) == [messages.AwarenessUpdate(())]
