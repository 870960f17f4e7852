"""Yjs editors on a real ``collab serve``: real ``WebsocketProvider`` clients (Node, the pinned
npm packages) beside collab's OT clients and REST, over real sockets.

What each test proves is in its name; all of them end by checking the Y.Text of every Yjs
client, the OT clients' text, ``GET /documents/{id}`` and the replay of ``/history`` against
each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pycrdt
import pytest
import websockets

from collab import ot
from collab.client import CollabClient
from collab.errors import CloseCode
from collab.yjs import messages
from tests.support import ServerProcess, auth, token
from tests.yjs_harness import YjsNode

ALPHABET = ["a", "b", "é", "中", "😀", "👍🏽", "𝄞", " "]


@pytest.fixture
async def node() -> AsyncIterator[YjsNode]:
    process = await YjsNode.start()
    try:
        yield process
    finally:
        await process.stop()
        if process.stderr:
            print("--- node stderr ---\n" + "\n".join(process.stderr[-40:]))


def yjs_base(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/yjs"


async def rest(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        return await client.request(method, path, headers=auth("checker"), **kwargs)


async def create(server: ServerProcess, doc_id: str, content: str = "") -> None:
    res = await rest(server, "POST", "/documents", json={"id": doc_id, "content": content})
    assert res.status_code == 201, res.text


async def replay(server: ServerProcess, doc_id: str) -> tuple[int, str]:
    """The document's text rebuilt from its first content and its whole /history, and the
    last revision."""
    first = await rest(server, "GET", f"/documents/{doc_id}/content", params={"rev": 0})
    text, since, rev = first.json()["content"], 0, 0
    while True:
        res = await rest(server, "GET", f"/documents/{doc_id}/history", params={"since": since})
        body = res.json()
        for item in body["ops"]:
            text = ot.apply(text, item["op"])
            rev = item["rev"]
        if body["next"] is None:
            return rev, text
        since = body["next"]


async def yjs_text(server: ServerProcess, doc_id: str) -> str:
    res = await rest(server, "GET", f"/documents/{doc_id}/yjs")
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "application/octet-stream"
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(res.content)
    return str(doc.get("content", type=pycrdt.Text))


async def converged(
    server: ServerProcess,
    doc_id: str,
    node: YjsNode,
    yjs_names: list[str],
    ot_clients: list[CollabClient] = (),  # type: ignore[assignment]
) -> str:
    """Waits until every client shows the server's content; checks every view agrees."""
    for client in ot_clients:
        await client.wait_synced(timeout=30)
    for _ in range(20):
        body = (await rest(server, "GET", f"/documents/{doc_id}")).json()
        content = body["content"]
        try:
            for name in yjs_names:
                await node.call("waitText", name=name, text=content, timeoutMs=5000, timeout=10)
            for client in ot_clients:
                await client.wait_rev(body["rev"], timeout=10)
        except AssertionError:
            continue  # still moving: look again
        again = (await rest(server, "GET", f"/documents/{doc_id}")).json()
        if again["rev"] == body["rev"]:
            break
    else:
        raise AssertionError("the clients never settled")
    for client in ot_clients:
        assert client.text == content
    assert await replay(server, doc_id) == (body["rev"], content)
    assert await yjs_text(server, doc_id) == content
    return str(content)


async def open_yjs(
    node: YjsNode, server: ServerProcess, name: str, doc_id: str, **extra: Any
) -> None:
    params = extra.pop("params", {"token": token(name, name=name)})
    await node.call(
        "open",
        name=name,
        url=yjs_base(server),
        room=doc_id,
        params=params,
        user={"name": name},
        **extra,
    )


async def test_yjs_and_ot_clients_converge_with_astral_text_and_reconnects(
    server: ServerProcess, node: YjsNode
) -> None:
    doc_id = "mixed"
    await create(server, doc_id, "seed 😀 text")
    names = ["y1", "y2", "y3"]
    for name in names:
        await open_yjs(node, server, name, doc_id)
    for name in names:
        await node.call("waitSynced", name=name)
        assert await node.call("text", name=name) == "seed 😀 text"
    ot_clients = [
        await CollabClient.connect(server.base_url, doc_id, token(f"o{i}")) for i in range(2)
    ]

    async def ot_typing(client: CollabClient, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            text = client.text
            if text and rng.random() < 0.3:
                at = rng.randrange(len(text))
                client.delete(at, min(len(text) - at, rng.randint(1, 3)))
            else:
                client.insert(rng.randint(0, len(text)), rng.choice(ALPHABET))
            await asyncio.sleep(rng.random() * 0.01)  # typing pace, not synchronisation

    async def reconnecting(name: str) -> None:
        await node.call("type", name=name, count=20, seed=91, delayMs=3)
        await node.call("disconnect", name=name)
        await node.call("type", name=name, count=10, seed=92)  # offline edits
        await node.call("connect", name=name, params={"token": token(name, name=name)})
        await node.call("type", name=name, count=20, seed=93, delayMs=3)

    await asyncio.gather(
        node.call("type", name="y1", count=60, seed=1, delayMs=4, timeout=60),
        node.call("type", name="y2", count=60, seed=2, delayMs=4, timeout=60),
        reconnecting("y3"),
        *(ot_typing(client, 10 + i) for i, client in enumerate(ot_clients)),
    )
    try:
        content = await converged(server, doc_id, node, names, ot_clients)
    finally:
        for client in ot_clients:
            await client.close()
    assert len(content) > 50


async def test_offline_yjs_edits_merge_once_across_restarts(
    server: ServerProcess, node: YjsNode
) -> None:
    doc_id = "offline"
    await create(server, doc_id, "base")
    await open_yjs(node, server, "away", doc_id)
    await node.call("waitSynced", name="away")
    await node.call("insert", name="away", index=4, text=" online")
    await node.call("disconnect", name="away")
    for _ in range(2):  # restart twice with the client's offline work pending
        server.stop()
        server.start()
    await node.call("insert", name="away", index=0, text="😀offline ")
    await node.call("connect", name="away", params={"token": token("away", name="away")})
    await node.call("waitSynced", name="away")
    await open_yjs(node, server, "fresh", doc_id)
    await node.call("waitSynced", name="fresh")
    content = await converged(server, doc_id, node, ["away", "fresh"])
    assert content == "😀offline base online"


async def test_every_relayed_update_survives_sigkill(server: ServerProcess, node: YjsNode) -> None:
    doc_id = "killed"
    await create(server, doc_id)
    await open_yjs(node, server, "writer", doc_id)
    await open_yjs(node, server, "watcher", doc_id)
    for name in ("writer", "watcher"):
        await node.call("waitSynced", name=name)
    typed = await node.call("type", name="writer", count=200, seed=5)
    # Once the watcher has it, the server relayed all of it, so it was committed first.
    await node.call("waitText", name="watcher", text=typed)
    await node.call("destroy", name="writer")
    await node.call("destroy", name="watcher")
    server.kill()
    server.start()
    await open_yjs(node, server, "after", doc_id)
    await node.call("waitSynced", name="after")
    assert await node.call("text", name="after") == typed
    assert await converged(server, doc_id, node, ["after"]) == typed


async def test_an_xml_fragment_persists_across_a_restart(
    server: ServerProcess, node: YjsNode
) -> None:
    doc_id = "prose"
    await create(server, doc_id)
    for name in ("p1", "p2"):
        await open_yjs(node, server, name, doc_id)
        await node.call("waitSynced", name=name)
    await node.call("xmlAppend", name="p1", root="prosemirror", tag="paragraph", text="one")
    await node.call("waitXml", name="p2", root="prosemirror", xml="<paragraph>one</paragraph>")
    xml = await node.call("xmlAppend", name="p2", root="prosemirror", tag="heading", text="two")
    # Relayed to the other client only once committed.
    await node.call("waitXml", name="p1", root="prosemirror", xml=xml)
    for name in ("p1", "p2"):
        await node.call("destroy", name=name)
    server.stop()
    server.start()
    await open_yjs(node, server, "p3", doc_id)
    await node.call("waitSynced", name="p3")
    assert await node.call("xml", name="p3", root="prosemirror") == xml
    assert xml == "<paragraph>one</paragraph><heading>two</heading>"
    assert (await rest(server, "GET", f"/documents/{doc_id}")).json()["content"] == ""


async def test_refusals_stop_the_provider_with_44xx(server: ServerProcess, node: YjsNode) -> None:
    await create(server, "guarded")
    cases = {
        "badtoken": ({"token": "not-a-jwt"}, "guarded", CloseCode.UNAUTHENTICATED),
        "noticket": ({"ticket": "unknown"}, "guarded", CloseCode.UNAUTHENTICATED),
        "forbidden": (
            {"token": token("f", docs={"other": "write"})},
            "guarded",
            CloseCode.FORBIDDEN,
        ),
        "missing": ({"token": token("r", docs={"*": "read"})}, "nope", CloseCode.DELETED),
        "badid": ({"token": token("b")}, "bad%20id", CloseCode.DELETED),
    }
    for name, (params, doc_id, _) in cases.items():
        await open_yjs(node, server, name, doc_id, params=params)
    for name, (_, _, code) in cases.items():
        terminal = await node.call("waitTerminal", name=name)
        assert terminal["code"] == code, name
        assert node.closes(name) == [code]  # once: the provider did not retry
    res = await rest(server, "GET", "/documents/nope")
    assert res.status_code == 404  # a reader's refusal created nothing


async def test_a_reader_is_denied_and_still_receives(server: ServerProcess, node: YjsNode) -> None:
    doc_id = "readonly"
    await create(server, doc_id, "keep")
    await open_yjs(node, server, "writer", doc_id)
    await open_yjs(
        node,
        server,
        "reader",
        doc_id,
        params={"token": token("reader", name="reader", docs={doc_id: "read"})},
    )
    for name in ("writer", "reader"):
        await node.call("waitSynced", name=name)
    await node.call("insert", name="reader", index=0, text="NO ")
    await node.call("waitDenied", name="reader")
    await node.call("insert", name="writer", index=4, text="!")
    await node.call("waitText", name="writer", text="keep!")
    # The reader's own text diverged locally; what the server holds and relays is the writer's.
    body = (await rest(server, "GET", f"/documents/{doc_id}")).json()
    assert body["content"] == "keep!"
    assert await yjs_text(server, doc_id) == "keep!"
    state = await node.call("state", name="reader")
    assert state["status"] == "connected" and state["denied"] == 1


async def test_awareness_names_and_departures(server: ServerProcess, node: YjsNode) -> None:
    doc_id = "aware"
    await create(server, doc_id)
    for name in ("ann", "bob", "cy"):
        await open_yjs(node, server, name, doc_id)
    await node.call("waitPeers", name="ann", names=["bob", "cy"])
    await node.call("waitPeers", name="cy", names=["ann", "bob"])
    await node.call("destroy", name="bob")
    await node.call("waitPeers", name="ann", names=["cy"])
    await node.call("waitPeers", name="cy", names=["ann"])


async def raw_yjs(server: ServerProcess, doc_id: str, name: str) -> Any:
    url = f"{yjs_base(server)}/{doc_id}?token={token(name)}"
    return await websockets.connect(url, max_size=None)


async def close_code_of(ws: Any) -> int:
    async with asyncio.timeout(10):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return int(closed.rcvd.code)


BAD_INPUTS: dict[str, tuple[Callable[[], bytes], int]] = {
    "truncated varint": (lambda: b"\x00\x02\x80", CloseCode.BAD_MESSAGE),
    "over-long varint": (lambda: b"\x00\x02" + b"\x80" * 9 + b"\x01", CloseCode.BAD_MESSAGE),
    "length past the end": (lambda: b"\x00\x02\x20abc", CloseCode.BAD_MESSAGE),
    "update that does not decode": (
        lambda: messages.sync_update(b"\xff\xff\xff\xff"),
        CloseCode.BAD_MESSAGE,
    ),
    "unknown message type": (lambda: b"\x09", CloseCode.BAD_MESSAGE),
    "awareness not JSON": (
        lambda: messages.awareness([messages.awareness_entry(5, 1, "{")]),
        CloseCode.BAD_MESSAGE,
    ),
    "oversized awareness state": (
        lambda: messages.awareness(
            [messages.awareness_entry(5, 1, '{"x":"' + "y" * 40_000 + '"}')]
        ),
        CloseCode.MESSAGE_TOO_LARGE,
    ),
    "oversized update": (
        lambda: messages.sync_update(b"\x00" * (17 * 1024 * 1024)),
        CloseCode.MESSAGE_TOO_LARGE,
    ),
}


async def test_bad_input_closes_with_its_code_and_changes_nothing(
    server: ServerProcess, node: YjsNode
) -> None:
    doc_id = "victim"
    await create(server, doc_id, "intact 😀")
    await open_yjs(node, server, "bystander", doc_id)
    await node.call("waitSynced", name="bystander")
    before = await yjs_text(server, doc_id)
    for label, (make, code) in BAD_INPUTS.items():
        ws = await raw_yjs(server, doc_id, "attacker")
        await ws.send(messages.sync_step1(b"\x00"))
        await ws.send(make())
        assert await close_code_of(ws) == code, label
    # The bystander carries on, and nothing reached the document.
    await node.call("insert", name="bystander", index=0, text="still ")
    content = await converged(server, doc_id, node, ["bystander"])
    assert content == "still intact 😀"
    assert before == "intact 😀"


async def test_an_awareness_flood_closes_with_4429(
    server_factory: Callable[..., ServerProcess], node: YjsNode
) -> None:
    # One message a second after a burst of 100: any machine sends 300 faster than that.
    server = server_factory(COLLAB_YJS_MESSAGES_PER_SECOND="1", COLLAB_YJS_MESSAGES_BURST="100")
    await create(server, "flooded", "calm")
    await open_yjs(node, server, "bystander", "flooded")
    await node.call("waitSynced", name="bystander")
    flood = await raw_yjs(server, "flooded", "flooder")
    await flood.send(messages.sync_step1(b"\x00"))
    with contextlib.suppress(websockets.ConnectionClosed):  # the close may come first
        for clock in range(1, 300):
            await flood.send(messages.awareness([messages.awareness_entry(77, clock, "{}")]))
    assert await close_code_of(flood) == CloseCode.RATE_LIMITED
    await node.call("insert", name="bystander", index=4, text="!")
    assert await converged(server, "flooded", node, ["bystander"]) == "calm!"


async def test_ot_and_rest_edits_reach_yjs_clients(server: ServerProcess, node: YjsNode) -> None:
    doc_id = "bridge"
    await create(server, doc_id, "a😀b")
    await open_yjs(node, server, "yjs", doc_id)
    await node.call("waitSynced", name="yjs")
    res = await rest(server, "POST", f"/documents/{doc_id}/ops", json={"rev": 0, "op": [2, "𝄞"]})
    assert res.status_code == 200, res.text
    await node.call("waitText", name="yjs", text="a😀𝄞b")
    await open_yjs(node, server, "watcher", doc_id)
    await node.call("waitSynced", name="watcher")
    await node.call("insert", name="yjs", index=0, text="中")
    # Relayed to the watcher only once committed: the history holds it by then.
    await node.call("waitText", name="watcher", text="中a😀𝄞b")
    body = (await rest(server, "GET", f"/documents/{doc_id}/history", params={"since": 0})).json()
    assert len(body["ops"]) == 2
    last = body["ops"][-1]
    assert last["op"] == ["中"]
    assert last["user"] == "yjs"
    assert last["src"].startswith("yjs:")
    state = base64.b64encode((await rest(server, "GET", f"/documents/{doc_id}/yjs")).content)
    assert await node.call("textOfUpdate", update=state.decode()) == "中a😀𝄞b"
    at_one = await rest(server, "GET", f"/documents/{doc_id}/yjs", params={"rev": 1})
    assert at_one.status_code == 200
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(at_one.content)
    assert str(doc.get("content", type=pycrdt.Text)) == "a😀𝄞b"


async def test_an_expiring_token_and_a_deleted_document_close_with_44xx(
    server: ServerProcess, node: YjsNode
) -> None:
    await create(server, "expiring")
    await create(server, "doomed")
    await open_yjs(node, server, "short", "expiring", params={"token": token("s", ttl=2)})
    await open_yjs(node, server, "victim", "doomed")
    for name in ("short", "victim"):
        await node.call("waitSynced", name=name)
    res = await rest(server, "DELETE", "/documents/doomed")
    assert res.status_code == 204
    assert (await node.call("waitTerminal", name="victim"))["code"] == CloseCode.DELETED
    assert (await node.call("waitTerminal", name="short"))["code"] == CloseCode.UNAUTHENTICATED
    assert node.closes("short") == [CloseCode.UNAUTHENTICATED]


async def test_ot_and_yjs_users_appear_in_each_others_rosters(
    server: ServerProcess, node: YjsNode
) -> None:
    doc_id = "rosters"
    await create(server, doc_id)
    otto = await CollabClient.connect(server.base_url, doc_id, token("otto", name="Otto"))
    events = otto.subscribe()

    async def next_event(kind: str) -> dict[str, Any]:
        async with asyncio.timeout(15):
            while True:
                event = await events.get()
                if event.kind == kind:
                    return dict(event.data)

    try:
        await open_yjs(node, server, "Yara", doc_id)
        # The Yjs editor sees the OT client by name in its awareness...
        await node.call("waitPeers", name="Yara", names=["Otto"])
        # ...and the OT client lists the Yjs editor as a peer.
        joined = await next_event("join")
        assert joined["name"] == "Yara" and joined["client"].startswith("yjs:")
        assert [p.name for p in otto.peers.values()] == ["Yara"]
        await node.call("destroy", name="Yara")
        assert (await next_event("leave"))["client"] == joined["client"]
        assert otto.peers == {}
    finally:
        await otto.close()
    await open_yjs(node, server, "Zed", doc_id)
    await open_yjs(node, server, "Ada", doc_id)
    await node.call("waitPeers", name="Zed", names=["Ada"])  # Otto left: gone from awareness


async def test_the_document_size_cap_closes_with_4413_and_stores_nothing(
    server_factory: Callable[..., ServerProcess], node: YjsNode
) -> None:
    server = server_factory(COLLAB_YJS_MAX_DOCUMENT_BYTES="4000")
    await create(server, "capped", "small")
    res = await rest(server, "GET", "/documents/capped/yjs")
    assert res.status_code == 404  # no Yjs client joined it yet: no Yjs state
    await open_yjs(node, server, "big", "capped")
    await open_yjs(node, server, "fine", "capped")
    for name in ("big", "fine"):
        await node.call("waitSynced", name=name)
    await node.call("insert", name="big", index=5, text="x" * 5000)
    assert (await node.call("waitTerminal", name="big"))["code"] == CloseCode.MESSAGE_TOO_LARGE
    await node.call("insert", name="fine", index=0, text="still ")
    assert await converged(server, "capped", node, ["fine"]) == "still small"


@pytest.mark.slow
async def test_an_idle_provider_stays_connected_past_its_watchdog(
    server: ServerProcess, node: YjsNode
) -> None:
    """y-websocket closes a socket that received nothing for 30 s (pings do not count); the
    server's keepalive must keep an idle editor connected. The wait is the point of the test."""
    await create(server, "idle")
    await open_yjs(node, server, "idler", "idle")
    await node.call("waitSynced", name="idler")
    await asyncio.sleep(40)
    state = await node.call("state", name="idler")
    assert state["closes"] == [] and state["status"] == "connected"
