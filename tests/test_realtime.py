"""Real-time editing end to end: real ``collab serve`` processes, real WebSocket connections.

Clients are :class:`collab.client.CollabClient` where the test is about convergence, and raw
``websockets`` connections where it is about the exact frames the server sends.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab import ot
from collab.client import ClientError, ClientEvent, CollabClient
from tests.support import ServerProcess, auth, migrate, recv_json, recv_until, token

Frame = dict[str, Any]
DELIVERY_BOUND = 2.0  # seconds within which each op must be acked or delivered


# -- helpers -----------------------------------------------------------------------------------


async def history(server: ServerProcess, doc: str) -> list[Frame]:
    """Every stored op of ``doc``, oldest first (following the pages)."""
    ops: list[Frame] = []
    since: int | None = 0
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
        while since is not None:
            page = await http.get(f"/documents/{doc}/history", params={"since": since,
                                                                      "limit": 1000})
            assert page.status_code == 200, page.text
            ops += page.json()["ops"]
            since = page.json()["next"]
    return ops


async def document(server: ServerProcess, doc: str) -> Frame:
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
        response = await http.get(f"/documents/{doc}")
        assert response.status_code == 200, response.text
        body: Frame = response.json()
        return body


async def assert_history_replays_to(server: ServerProcess, doc: str, content: str) -> list[Frame]:
    """History revisions are 1..N without gaps and, applied to "", give ``content``."""
    ops = await history(server, doc)
    assert [o["rev"] for o in ops] == list(range(1, len(ops) + 1))
    text = ""
    for item in ops:
        text = ot.apply(text, item["op"])
    assert text == content
    return ops


def raw(server: ServerProcess, doc: str, sub: str = "alice", **query: str | int) -> Any:
    """A raw WebSocket connection (an async context manager) authenticated as ``sub``."""
    return connect(server.ws_url(doc, **query),
                   additional_headers={"Authorization": f"Bearer {token(sub, name=sub.title())}"},
                   max_size=None)


def items(frame: Frame) -> list[Frame]:
    return list(frame["items"]) if frame["type"] == "ops" else [frame]


async def revisions_until(ws: ClientConnection, last: int, seen: list[Frame]) -> int:
    """Collects op/ack items into ``seen`` until revision ``last`` has arrived; returns how
    many frames carried them."""
    frames = 0
    while not seen or seen[-1]["rev"] < last:
        got = [item for item in items(await recv_json(ws)) if item["type"] in ("op", "ack")]
        frames += bool(got)
        seen.extend(got)
    return frames


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that need no settings of their own (each uses its own
    documents): starting ``collab serve`` costs seconds, so it is done once per module."""
    folder = tmp_path_factory.mktemp("realtime")
    url = f"sqlite+aiosqlite:///{folder / 'collab.db'}"
    migrate(url)
    server = ServerProcess(database_url=url, log_path=folder / "server.log")
    server.start()
    yield server
    if server.process is not None:
        server.stop()


@pytest.fixture
def server(shared_server: ServerProcess) -> ServerProcess:
    return shared_server


@pytest.fixture
async def clients(server: ServerProcess) -> AsyncIterator[Callable[..., Any]]:
    """Opens CollabClients on ``server``; all are closed at the end of the test."""
    opened: list[CollabClient] = []

    async def open_client(doc: str, sub: str = "alice", **kwargs: Any) -> CollabClient:
        client = await CollabClient.connect(server.base_url, doc, token(sub, name=sub.title()),
                                            **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


async def type_randomly(client: CollabClient, rng: random.Random, edits: int,
                        until: asyncio.Event | None = None) -> None:
    """Random inserts and deletes, yielding to the loop between them so clients interleave;
    ``edits`` of them, or as many as it takes for ``until`` to be set plus ``edits``."""
    done = 0
    while done < edits or (until is not None and not until.is_set()):
        done += 1
        text = client.text
        if text and rng.random() < 0.3:
            pos = rng.randrange(len(text))
            client.delete(pos, min(len(text) - pos, rng.randint(1, 4)))
        else:
            client.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "😀", "é ", "xyz"]))
        if rng.random() < 0.2:
            await client.wait_synced(30)
        else:
            await asyncio.sleep(0)  # a yield, not a wait: lets the socket tasks run


async def converge(clients: list[CollabClient], server: ServerProcess, doc: str) -> str:
    """Waits until every client is synchronised at the server's revision; returns the text."""
    for client in clients:
        await client.wait_synced(20)
    current = await document(server, doc)
    for client in clients:
        await client.wait_rev(current["rev"], 20)
    assert {client.text for client in clients} == {current["content"]}
    assert {client.rev for client in clients} == {current["rev"]}
    return str(current["content"])


# -- convergence -------------------------------------------------------------------------------


async def test_three_clients_typing_concurrently_converge(
    server: ServerProcess, clients: Callable[..., Any]
) -> None:
    doc = "race"
    writers = [await clients(doc, sub) for sub in ("alice", "bob", "carol")]
    rng = random.Random(20261124)
    await asyncio.gather(*(
        type_randomly(c, random.Random(rng.random()), 60) for c in writers
    ))
    content = await converge(writers, server, doc)
    ops = await assert_history_replays_to(server, doc, content)
    assert len(ops) > 60  # three writers' edits, some composed while awaiting acks
    for client in writers:
        seqs = [o["seq"] for o in ops if o["src"] == client.src]
        # Rising without repeats; an edit buffered and undone before it was sent goes out as an
        # empty op, acked without a revision (docs/protocol.md), so a seq may be missing.
        assert seqs == sorted(set(seqs))


# -- a slow client -----------------------------------------------------------------------------


async def metric(http: httpx.AsyncClient, name: str) -> float:
    body = (await http.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found is not None, body
    return float(found.group(1))


def small_buffer_socket(server: ServerProcess) -> socket.socket:
    """A connected socket with a small receive buffer, so a stalled reader fills up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    return sock


def replay(text: str, rev: int, frame: Frame) -> tuple[str, int]:
    """Applies the op items of ``frame`` (a client with no edits of its own)."""
    for item in items(frame):
        if item["type"] == "op":
            assert item["rev"] == rev + 1, (item["rev"], rev)
            text, rev = ot.apply(text, item["op"]), item["rev"]
    return text, rev


async def test_a_stalled_reader_does_not_delay_others_and_is_closed_with_1013(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(COLLAB_SEND_QUEUE_LIMIT="50")
    doc = "slow"
    writer = await CollabClient.connect(server.base_url, doc, token("alice"))
    reader = await CollabClient.connect(server.base_url, doc, token("bob"))
    # Two readers stall: a raw connection, to check the frames, and a CollabClient, to check
    # that it reconnects by itself.
    stalled = await connect(server.ws_url(doc), sock=small_buffer_socket(server), max_size=None,
                            max_queue=1,
                            additional_headers={"Authorization": f"Bearer {token('carol')}"})
    sleeper = await CollabClient.connect(server.base_url, doc, token("dave"))
    sleeper_events = sleeper.subscribe()
    http = httpx.AsyncClient(base_url=server.base_url)
    try:
        first = await recv_json(stalled)
        assert first["type"] == "init"
        stalled.transport.pause_reading()  # stop reading: the server's writes back up
        assert sleeper.connection is not None
        sleeper_socket = sleeper.connection
        sleeper_socket.transport.pause_reading()
        chunk = "0123456789abcdef" * 4096  # 64 KiB, inserted then deleted by text
        ops = 0
        while await metric(http, "collab_send_queue_drops_total") < 2:
            assert ops < 2000, "the stalled clients were never disconnected"
            if writer.text:
                writer.delete(0, len(chunk))
            else:
                writer.insert(0, chunk)
            ops += 1
            await writer.wait_synced(DELIVERY_BOUND)  # acked promptly...
            await reader.wait_rev(writer.rev, DELIVERY_BOUND)  # ...and delivered promptly
            assert reader.text == writer.text
        assert ops > 50  # the queue limit was passed, so at least that many were sent
        # Read again: what was queued before the limit arrives, then the close.
        stalled.transport.resume_reading()
        sleeper_socket.transport.resume_reading()
        text, rev = first["content"], first["rev"]
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                text, rev = replay(text, rev, await recv_json(stalled))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        await stalled.close()
        await http.aclose()
    # Reconnect with since: init lists exactly the ops missed, and they give the server's text.
    async with raw(server, doc, "carol", since=rev) as again:
        init = await recv_json(again)
        assert [o["rev"] for o in init["ops"]] == list(range(rev + 1, init["rev"] + 1))
        for item in init["ops"]:
            text = ot.apply(text, item["op"])
        assert text == init["content"] == writer.text
    # The CollabClient did the same on its own.
    status = await next_event(sleeper_events, "status")
    assert status.data == {"status": "offline", "code": 1013}
    await converge([writer, reader, sleeper], server, doc)
    assert sleeper.connection is not sleeper_socket
    for client in (writer, reader, sleeper):
        await client.close()


# -- resends, order, presence, REST ------------------------------------------------------------


async def test_unacknowledged_op_resent_after_reconnect_is_applied_once(
    server: ServerProcess,
) -> None:
    doc = "resend"
    async with raw(server, doc, "olga") as observer:
        await recv_json(observer)
        async with raw(server, doc) as editor:
            assert (await recv_json(editor))["rev"] == 0
            await editor.send(json.dumps(
                {"type": "op", "rev": 0, "op": ["abc"], "src": "editor-1", "seq": 1}))
        # Gone before any ack could arrive. The server still applied the op it had read:
        applied = await recv_until(observer, "op")
        assert (applied["rev"], applied["src"], applied["seq"]) == (1, "editor-1", 1)
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth("bob")) as http:
            response = await http.post(f"/documents/{doc}/ops", json={"rev": 1, "op": [3, "!"]})
            assert response.json() == {"rev": 2}
        # Back with since=0: the init lists our op by (src, seq), so a client knows it landed...
        async with raw(server, doc, since=0) as editor:
            init = await recv_json(editor)
            listed = [(o["rev"], o["src"], o["seq"]) for o in init["ops"]]
            assert listed == [(1, "editor-1", 1), (2, listed[1][1], 1)]
            # ...and a resend of the same (src, seq), even made at an old revision, is acked
            # with the original revision and not applied again.
            for base in (0, 2):
                await editor.send(json.dumps(
                    {"type": "op", "rev": base, "op": ["abc"], "src": "editor-1", "seq": 1}))
                assert await recv_until(editor, "ack") == {"type": "ack", "seq": 1, "rev": 1}
            # The next op of that editor is sequenced normally after everything.
            await editor.send(json.dumps(
                {"type": "op", "rev": 2, "op": [4, "?"], "src": "editor-1", "seq": 2}))
            assert await recv_until(editor, "ack") == {"type": "ack", "seq": 2, "rev": 3}
    ops = await assert_history_replays_to(server, doc, "abc!?")
    assert [(o["src"], o["seq"]) for o in ops].count(("editor-1", 1)) == 1


async def test_each_client_sees_revisions_in_order_with_acks_after_earlier_ops(
    server: ServerProcess,
) -> None:
    doc = "order"
    per_client = 30
    async with raw(server, doc, "alice") as a, raw(server, doc, "bob") as b, \
            raw(server, doc, "carol") as c:
        sockets = [a, b, c]
        for ws in sockets:
            assert (await recv_json(ws))["type"] == "init"
        total = per_client * len(sockets)

        async def fire(ws: ClientConnection, src: str) -> None:
            # All made at revision 0: inserts at 0 stay valid however they are transformed.
            for seq in range(1, per_client + 1):
                await ws.send(json.dumps(
                    {"type": "op", "rev": 0, "op": [f"{src}{seq};"], "src": src, "seq": seq}))

        seen: list[list[Frame]] = [[], [], []]
        async with asyncio.timeout(30):
            await asyncio.gather(
                *(fire(ws, f"s{i}") for i, ws in enumerate(sockets)),
                *(revisions_until(ws, total, seen[i]) for i, ws in enumerate(sockets)),
            )
    for i, frames in enumerate(seen):
        assert [f["rev"] for f in frames] == list(range(1, total + 1))
        acks = [f for f in frames if f["type"] == "ack"]
        assert [f["seq"] for f in acks] == list(range(1, per_client + 1))
        assert all(f["src"] != f"s{i}" for f in frames if f["type"] == "op")
    content = (await document(server, doc))["content"]
    await assert_history_replays_to(server, doc, content)


async def test_a_paced_room_gets_fewer_fuller_frames_in_the_same_order(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # A room of 3 is sent what was committed at most once a second.
    paced_server = server_factory(COLLAB_BROADCAST_FRAMES_PER_SECOND="3")
    doc = "paced"
    ops = 10
    async with raw(paced_server, doc, "alice") as typist, raw(paced_server, doc, "bob") as b, \
            raw(paced_server, doc, "carol") as c:
        for ws in (typist, b, c):
            assert (await recv_json(ws))["type"] == "init"

        async def type_slowly() -> None:
            for seq in range(1, ops + 1):
                await typist.send(json.dumps(
                    {"type": "op", "rev": 0, "op": [f"{seq};"], "src": "t", "seq": seq}))
                # Keystrokes 20 ms apart (load, not synchronisation): each would be committed
                # and sent on its own, ten frames, without pacing.
                await asyncio.sleep(0.02)

        seen: list[list[Frame]] = [[], [], []]
        async with asyncio.timeout(30):
            _, *frames = await asyncio.gather(
                type_slowly(),
                *(revisions_until(ws, ops, seen[i]) for i, ws in enumerate((typist, b, c))),
            )
    for received in seen:
        assert [f["rev"] for f in received] == list(range(1, ops + 1))
    assert [f["type"] for f in seen[0]] == ["ack"] * ops
    assert [f["op"] for f in seen[1]] == [[f"{seq};"] for seq in range(1, ops + 1)]
    # The 200 ms of typing fit in one or two ticks (plus the first, unpaced delivery); six
    # frames would mean the typing had stretched over five seconds.
    assert max(frames) <= 6, frames


async def test_presence_join_and_leave_reach_peers(server: ServerProcess) -> None:
    doc = "presence"
    async with raw(server, doc, "alice") as a, raw(server, doc, "bob") as b:
        init_a = await recv_json(a)
        assert init_a["peers"] == []
        init_b = await recv_json(b)
        assert init_b["peers"] == [
            {"client": init_a["client"], "user": "alice", "name": "Alice", "cursor": None}
        ]
        joined = await recv_until(a, "join")
        assert joined == {"type": "join", "client": init_b["client"], "user": "bob",
                          "name": "Bob"}

        await a.send(json.dumps({"type": "op", "rev": 0, "op": ["hello world"], "src": "a",
                                 "seq": 1}))
        assert (await recv_until(a, "ack"))["rev"] == 1
        await a.send(json.dumps({"type": "presence", "cursor": {"anchor": 2, "head": 5},
                                 "rev": 1}))
        assert await recv_until(b, "presence") == {
            "type": "presence", "client": init_a["client"], "user": "alice", "name": "Alice",
            "cursor": {"anchor": 2, "head": 5}, "rev": 1,
        }
        # Bob inserts in front; a cursor Alice made before seeing it is moved over it.
        await b.send(json.dumps({"type": "op", "rev": 1, "op": ["XYZ"], "src": "b", "seq": 1}))
        assert (await recv_until(a, "op"))["rev"] == 2
        await a.send(json.dumps({"type": "presence", "cursor": {"anchor": 6, "head": 0},
                                 "rev": 1}))
        moved = await recv_until(b, "presence")
        assert (moved["cursor"], moved["rev"]) == ({"anchor": 9, "head": 0}, 2)
        # More text in front after that cursor: a newcomer's init (at rev 3) lists it moved.
        await b.send(json.dumps({"type": "op", "rev": 2, "op": ["12"], "src": "b", "seq": 2}))
        assert (await recv_until(a, "op"))["rev"] == 3

        async with raw(server, doc, "carol") as c:
            init_c = await recv_json(c)
            assert sorted((p["client"], p["user"], p["name"]) for p in init_c["peers"]) == sorted(
                [(init_a["client"], "alice", "Alice"), (init_b["client"], "bob", "Bob")])
            assert init_c["rev"] == 3
            listed = {p["client"]: p["cursor"] for p in init_c["peers"]}
            assert listed[init_a["client"]] == {"anchor": 11, "head": 0}
            for ws in (a, b):
                assert (await recv_until(ws, "join"))["client"] == init_c["client"]
        for ws in (a, b):
            left = await recv_until(ws, "leave")
            assert left == {"type": "leave", "client": init_c["client"], "user": "carol",
                            "name": "Carol"}


async def test_client_peers_and_events_follow_presence(clients: Callable[..., Any]) -> None:
    doc = "client-presence"
    alice: CollabClient = await clients(doc, "alice")
    events = alice.subscribe()
    bob: CollabClient = await clients(doc, "bob")
    assert alice.client_id in bob.peers
    joined = await next_event(events, "join")
    assert joined.data["client"] == bob.client_id
    bob.insert(0, "abcdef")
    await bob.wait_synced(5)
    bob.set_cursor(2, 4)
    presence = await next_event(events, "presence")
    assert presence.data["cursor"] == {"anchor": 2, "head": 4}
    assert alice.peers[str(bob.client_id)].cursor == {"anchor": 2, "head": 4}
    await bob.close()
    left = await next_event(events, "leave")
    assert left.data["client"] == bob.client_id
    assert alice.peers == {}


async def next_event(queue: asyncio.Queue[ClientEvent], kind: str,
                     passed: list[ClientEvent] | None = None) -> ClientEvent:
    """The next event of ``kind``; the ones before it are appended to ``passed``."""
    async with asyncio.timeout(10):
        while True:
            event = await queue.get()
            if event.kind == kind:
                return event
            if passed is not None:
                passed.append(event)


async def test_rest_ops_are_broadcast_to_websocket_clients(
    server: ServerProcess, clients: Callable[..., Any]
) -> None:
    doc = "rest-broadcast"
    watcher: CollabClient = await clients(doc, "bob")
    async with raw(server, doc, "carol") as ws:
        await recv_json(ws)
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
            response = await http.post(f"/documents/{doc}/ops", json={
                "rev": 0, "op": ["from REST"], "src": "script", "seq": 1})
            assert response.status_code == 200 and response.json() == {"rev": 1}
        frame = await recv_until(ws, "op")
        assert frame == {"type": "op", "rev": 1, "op": ["from REST"], "src": "script", "seq": 1,
                         "user": "alice"}
    await watcher.wait_rev(1, 5)
    assert watcher.text == "from REST"


@pytest.mark.parametrize("mode", ["ticket", "query"])
async def test_client_connects_with_a_ticket_or_a_token_in_the_url(
    server: ServerProcess, clients: Callable[..., Any], mode: str
) -> None:
    doc = f"auth-{mode}"
    client: CollabClient = await clients(doc, "alice", auth=mode)
    client.insert(0, "signed in")
    await client.wait_synced(5)
    assert (await document(server, doc))["content"] == "signed in"


async def test_client_stops_when_its_document_is_deleted(
    server: ServerProcess, clients: Callable[..., Any]
) -> None:
    doc = "doomed"
    client: CollabClient = await clients(doc)
    events = client.subscribe()
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
        assert (await http.delete(f"/documents/{doc}")).status_code == 204
    status = await next_event(events, "status")
    assert status.data == {"status": "deleted", "code": 4404}
    assert client.status == "deleted"


async def test_client_stops_when_its_token_expires(server: ServerProcess) -> None:
    client = await CollabClient.connect(server.base_url, "expiring", token("alice", ttl=2))
    events = client.subscribe()
    try:
        status = await next_event(events, "status")
        assert status.data == {"status": "forbidden", "code": 1008}
        with pytest.raises(ClientError):
            client.insert(0, "too late")
    finally:
        await client.close()
    assert client.status == "forbidden"


# -- restart -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 1001), (signal.SIGKILL, 1006)])
async def test_restart_loses_no_acknowledged_op_and_clients_catch_up(
    server_factory: Callable[..., ServerProcess], sig: int, code: int
) -> None:
    """A graceful stop closes clients with 1001; a crash just drops them (1006 on their side).
    Either way every acknowledged op is in the database, and clients rebase on init.ops."""
    server = server_factory()
    doc = "restart"
    writers = [await CollabClient.connect(server.base_url, doc, token(sub))
               for sub in ("alice", "bob", "carol")]
    queues = [w.subscribe() for w in writers]
    before: list[list[ClientEvent]] = [[], [], []]
    rng = random.Random(7)
    try:
        restarted = asyncio.Event()
        typing = asyncio.gather(*(type_randomly(w, random.Random(rng.random()), 10, restarted)
                                  for w in writers))
        await writers[0].wait_rev(30, 10)
        await asyncio.to_thread(server.stop, sig)  # mid-typing
        for queue, passed in zip(queues, before, strict=True):
            status = await next_event(queue, "status", passed)
            assert status.data == {"status": "offline", "code": code}
        await asyncio.to_thread(server.start)  # same port, same database
        restarted.set()
        await typing
        content = await converge(writers, server, doc)
    finally:
        for w in writers:
            await w.close()
    ops = await assert_history_replays_to(server, doc, content)
    stored = {o["rev"]: (o["src"], o["seq"]) for o in ops}
    for writer, queue, passed in zip(writers, queues, before, strict=True):
        events = passed + drain(queue)
        acks = [e.data for e in events if e.kind == "ack"]
        assert acks, "every writer had ops acknowledged"
        for item in acks:
            assert stored[item["rev"]] == (writer.src, item["seq"])
        # Rebased over init.ops: no edit was dropped for want of history.
        assert not [e for e in events if e.kind == "error"]
        assert not [e for e in events if e.kind == "reset"]


def drain(queue: asyncio.Queue[ClientEvent]) -> list[ClientEvent]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events
