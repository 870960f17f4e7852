"""What an open WebSocket costs the server, and that the lean pieces behave like asyncio's.

Memory per idle connection is a target (issue 8; ``benchmarks/run.py --scenario connections``).
RSS is too noisy for a test, so these pin the structure that keeps it low instead: one task per
idle connection (the ASGI handler's own), no writer task between bursts, no FastAPI layers on
the socket's stack, and uvicorn's per-connection queue, event and handshake objects replaced or
dropped. The frames and close codes themselves are covered by the end-to-end suites
(``test_realtime``, ``test_ws_errors``, ``test_limits``, ``test_shutdown``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from collab.app import create_app
from collab.cli import uvicorn_config
from collab.http_protocol import LEAN_PROTOCOL, SEND_TEXT_NOW, ws_protocol
from collab.settings import Settings
from collab.ws_protocol import (
    Flag,
    LeanWebSocketsSansIOProtocol,
    MessageQueue,
)
from tests.support import SECRET, free_port, recv_json, recv_until, token, wait_for

# -- the lean queue and flag ------------------------------------------------------------------


async def test_message_queue_is_fifo_and_wakes_its_reader() -> None:
    queue = MessageQueue()
    assert queue.empty() and queue.qsize() == 0
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.qsize() == 2
    assert await queue.get() == 1
    reader = asyncio.create_task(queue.get())
    assert await reader == 2
    assert queue.empty()

    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_message_queue_survives_a_cancelled_reader() -> None:
    queue = MessageQueue()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put_nowait("after")
    assert await asyncio.wait_for(queue.get(), 1) == "after"


async def test_message_queue_refuses_a_second_concurrent_reader() -> None:
    queue = MessageQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await queue.get()
    queue.put_nowait("x")
    assert await first == "x"


async def test_flag_waits_like_an_event() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    waiters[0].cancel()
    flag.set()
    assert await asyncio.gather(*waiters[1:]) == [True, True]
    assert flag.is_set() and await flag.wait()
    flag.clear()
    assert not flag.is_set()
    later = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not later.done()
    flag.set()
    assert await later


# -- a real server in this process, to look inside --------------------------------------------


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[uvicorn.Server]:
    app = create_app(settings)
    config = uvicorn_config(app, settings, "warning", host="127.0.0.1", port=free_port())
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), timeout=30)
        assert server.started
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def ws_url(server: uvicorn.Server, doc_id: str, **query: Any) -> str:
    url = f"ws://127.0.0.1:{server.config.port}/ws/documents/{doc_id}"
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def writer_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("writer:")]


def server_tasks() -> int:
    """Tasks of the server in this loop: not the test's, not the websockets clients'."""
    current = asyncio.current_task()
    count = 0
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if task is current or (code is not None and "websockets/asyncio" in code.co_filename):
            continue
        count += 1
    return count


@pytest.fixture
def lean_settings(sqlite_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=sqlite_url, jwt_secret=SECRET, doc_idle_seconds=600
    )


async def test_an_idle_connection_holds_one_task_and_no_handshake_state(
    lean_settings: Settings,
) -> None:
    async with serving(lean_settings) as server, AsyncExitStack() as stack:
        sockets: list[ClientConnection] = []

        async def join(i: int) -> None:
            ws = await stack.enter_async_context(
                connect(ws_url(server, f"lean-{i % 2}", token=token(f"u{i}")))
            )
            assert (await recv_json(ws))["type"] == "init"
            sockets.append(ws)

        for i in range(2):  # the documents' actors start here
            await join(i)
        await wait_for(lambda: not writer_tasks())
        before = server_tasks()
        for i in range(2, 6):
            await join(i)
        # The join announcements went out; every writer then ends with its empty outbox.
        await wait_for(lambda: not writer_tasks())
        # One task per connection: the ASGI handler's, reading.
        assert server_tasks() - before == 4

        protocols = list(server.server_state.connections)
        assert len(protocols) == 6
        for protocol in protocols:
            assert isinstance(protocol, LeanWebSocketsSansIOProtocol)
            assert isinstance(protocol.queue, MessageQueue)
            assert isinstance(protocol.writable, Flag)
            assert not hasattr(protocol, "request") and not hasattr(protocol, "response")

        # Neither FastAPI's router nor its middleware stays on the handler's stack.
        handlers = [t for t in asyncio.all_tasks() if "run_asgi" in repr(t.get_coro())]
        assert handlers
        for handler in handlers:
            stack_text = "".join(str(frame) for frame in handler.get_stack(limit=50))
            assert "starlette" not in stack_text and "fastapi" not in stack_text

        # A burst of frames starts a writer, which ends again once the outbox is empty.
        await sockets[0].send(
            json.dumps({"type": "op", "rev": 0, "op": ["hi"], "src": "s0", "seq": 1})
        )
        assert (await recv_until(sockets[0], "ack"))["rev"] == 1
        for peer in sockets[2::2]:
            assert (await recv_until(peer, "op"))["rev"] == 1
        await wait_for(lambda: not writer_tasks())


async def test_send_text_now_writes_at_once_unless_flow_control_or_close_says_wait(
    lean_settings: Settings,
) -> None:
    """The synchronous write the actor's fan-out uses for idle connections (no task, no
    str round trip), and the cases where it declines and the ASGI path must wait."""
    async with serving(lean_settings) as server, connect(
        ws_url(server, "direct", token=token("u"))
    ) as ws:
        assert (await recv_json(ws))["type"] == "init"
        [protocol] = list(server.server_state.connections)
        assert isinstance(protocol, LeanWebSocketsSansIOProtocol)
        assert protocol.scope["extensions"][SEND_TEXT_NOW] == protocol.send_text_now

        assert protocol.send_text_now('{"type":"note","text":"h\u00e9 😀"}'.encode())
        assert await recv_json(ws) == {"type": "note", "text": "hé 😀"}

        protocol.pause_writing()  # as the transport does past its high-water mark
        assert not protocol.send_text_now(b'{"type":"later"}')
        protocol.resume_writing()
        assert protocol.send_text_now(b'{"type":"now"}')
        assert await recv_json(ws) == {"type": "now"}

        await ws.close()
        await wait_for(lambda: protocol.disconnected or protocol.close_sent)
        assert not protocol.send_text_now(b'{"type":"gone"}')


async def test_a_server_side_close_ends_the_reading_handler(lean_settings: Settings) -> None:
    """The token expires while the handler waits for the client: the writer sends 1008 and the
    handler, interrupted in its read, returns; nothing is left behind."""
    async with serving(lean_settings) as server:
        async with connect(ws_url(server, "expiring", token=token("alice"))) as ws:
            assert (await recv_json(ws))["type"] == "init"  # the actor is up
            await wait_for(lambda: not writer_tasks())
            baseline = server_tasks()
        await wait_for(lambda: server_tasks() == baseline - 1)
        async with connect(ws_url(server, "expiring", token=token("bob", ttl=1))) as ws:
            assert (await recv_json(ws))["type"] == "init"
            with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed* from recv
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008
            assert ws.close_reason == "token expired"
        await wait_for(lambda: not server.server_state.connections, timeout=15)
        await wait_for(lambda: server_tasks() == baseline - 1)


async def test_other_websocket_paths_still_meet_the_router(lean_settings: Settings) -> None:
    """Only ``/ws/documents/{id}`` is served ahead of FastAPI; anything else is refused by
    Starlette's router exactly as before (403 during the handshake)."""
    from websockets.exceptions import InvalidStatus

    async with serving(lean_settings) as server:
        base = f"ws://127.0.0.1:{server.config.port}"
        for path in ("/ws/documents/a/b", "/ws/documents/", "/ws/other"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base + path + f"?token={token()}"):
                    pass
            assert refused.value.response.status_code == 403


def test_only_the_default_backend_is_swapped_and_only_on_tested_uvicorns() -> None:
    assert ws_protocol("websockets-sansio", uvicorn.__version__) == LEAN_PROTOCOL
    assert ws_protocol("websockets-sansio") == LEAN_PROTOCOL  # the installed uvicorn is tested
    for untested in ("0.34.3", "0.55.0", "1.0.0", "0.54", "dev"):
        expected = LEAN_PROTOCOL if untested == "0.54" else "websockets-sansio"
        assert ws_protocol("websockets-sansio", untested) == expected, untested
    assert ws_protocol("websockets") == "websockets"
    assert ws_protocol("wsproto") == "wsproto"


async def test_an_untested_uvicorn_is_served_by_its_own_protocol(lean_settings: Settings) -> None:
    """The fallback path end to end: uvicorn's stock sans-I/O protocol, no synchronous send,
    and the editing session works the same."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    app = create_app(lean_settings)
    config = uvicorn_config(app, lean_settings, "warning", host="127.0.0.1", port=free_port())
    config.ws = ws_protocol("websockets-sansio", "9.9.9")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), timeout=30)
        async with connect(ws_url(server, "fallback", token=token())) as ws:
            init = json.loads(await ws.recv())
            assert init["type"] == "init"
            [protocol] = list(server.server_state.connections)
            assert type(protocol) is WebSocketsSansIOProtocol
            assert SEND_TEXT_NOW not in protocol.scope["extensions"]
            await ws.send(json.dumps({"type": "op", "rev": 0, "op": ["hi"], "src": "s", "seq": 1}))
            ack = json.loads(await ws.recv())
            assert (ack["type"], ack["rev"]) == ("ack", 1)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def test_the_transport_edge_needs_no_fastapi() -> None:
    """connection.py is plain ASGI: importing it loads neither FastAPI nor its dependencies."""
    import subprocess
    import sys

    probe = (
        "import sys, collab.connection; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi' "
        "or m in ('collab.deps', 'collab.ws_protocol')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_every_deliberate_error_shares_the_one_base() -> None:
    from collab.app import BodyTooLarge
    from collab.auth import AuthError
    from collab.errors import CollabError, ErrorCode
    from collab.protocol import ProtocolError

    for kind in (AuthError, BodyTooLarge, ProtocolError):
        assert issubclass(kind, CollabError), kind
    error = ProtocolError(ErrorCode.READ_ONLY, "no", 3)
    assert (error.code, error.message, error.seq) == ("read_only", "no", 3)
